//! Hardening: parser differentials and request smuggling over real HTTP (raw bytes on a socket).
//!
//! Proves that a BRP body the gate might read one way and the registry another (duplicate keys,
//! non-UTF-8, deep nesting, huge arrays, wrong types, trailing garbage) is refused with 400 and
//! never forwarded; that framing tricks (`Content-Length` with `Transfer-Encoding`, conflicting
//! `Content-Length`, obs-fold, bare LF, a space before the colon) are refused or the connection
//! closed, with nothing forwarded; that the registry receives exactly the bytes decided on; and
//! that non-canonical request targets (this file plus `tests/gate_paths.rs`: more than 40
//! variants) never reach a registry.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use common::Harness;

const BRP: &str = "/haalcentraal/api/brp/personen";
const GOOD: &str = r#"{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":["999993653"],"fields":["naam"]}"#;

/// A raw HTTP/1.1 request with a valid token and case; `extra` lines are sent verbatim
/// (each must end in `\r\n`), and `Content-Length` is added unless `extra` frames the body.
fn request(h: &Harness, method: &str, target: &[u8], extra: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: gate\r\n");
    out.extend_from_slice(format!("Authorization: Bearer {}\r\n", h.emp042()).as_bytes());
    out.extend_from_slice(b"X-Case-Id: Z-OPEN\r\nContent-Type: application/json\r\n");
    out.extend_from_slice(b"Connection: close\r\n");
    let lower = extra.to_ascii_lowercase();
    if !lower.contains("content-length") && !lower.contains("transfer-encoding") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(extra.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// The status code of a raw answer, `None` when the gate closed the connection without one.
fn status(resp: &str) -> Option<u16> {
    resp.strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
}

/// Like `common::raw_http`, but ends the stream after writing (the peer sees end of input).
async fn send_then_eof(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
    common::foutbericht::assert_valid_raw(&out, "raw HTTP, then end of input");
    String::from_utf8_lossy(&out).into_owned()
}

fn is_problem(resp: &str) -> bool {
    resp.to_ascii_lowercase()
        .contains("content-type: application/problem+json")
}

fn code(resp: &str) -> String {
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[tokio::test]
async fn ambiguous_brp_bodies_get_400_and_are_never_forwarded() {
    let h = Harness::start().await;
    let deep_array = format!(
        r#"{{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":["999993653"],"fields":{}"naam"{}}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    // Deep enough to overflow a naive recursive parser, small enough for the 64 KiB body limit.
    let very_deep = format!(
        r#"{{"type":{}1{}}}"#,
        "[".repeat(30_000),
        "]".repeat(30_000)
    );
    let deep_objects = format!(
        r#"{{"type":"RaadpleegMetBurgerservicenummer","fields":["naam"],"burgerservicenummer":["999993653"],"x":{}1{}}}"#,
        r#"{"a":"#.repeat(10_000),
        "}".repeat(10_000)
    );
    let many_bsns = format!(
        r#"{{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":[{}],"fields":["naam"]}}"#,
        vec![r#""999993653""#; 5_000].join(",")
    );
    let many_fields = format!(
        r#"{{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":["999993653"],"fields":[{}]}}"#,
        vec![r#""naam""#; 300].join(",")
    );
    let twenty_one: Vec<String> = (0..21).map(|_| r#""999993653""#.to_string()).collect();
    let too_many_bsns = format!(
        r#"{{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":[{}],"fields":["naam"]}}"#,
        twenty_one.join(",")
    );
    let many_keys = format!(
        r#"{{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":["999993653"],"fields":["naam"],{}}}"#,
        (0..200)
            .map(|i| format!(r#""k{i}":1"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        // Duplicate keys: first-wins and last-wins parsers would disagree.
        ("duplicate burgerservicenummer", br#"{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":["999991802"],"fields":["naam"],"burgerservicenummer":["999993653"]}"#.to_vec()),
        ("duplicate type", br#"{"type":"ZoekMetPostcodeEnHuisnummer","type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":["999993653"],"fields":["naam"]}"#.to_vec()),
        ("duplicate type by escape", br#"{"type":"RaadpleegMetBurgerservicenummer","ty\u0070e":"ZoekMetPostcodeEnHuisnummer","burgerservicenummer":["999993653"],"fields":["naam"]}"#.to_vec()),
        ("duplicate fields", br#"{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":["999993653"],"fields":["naam"],"fields":["verblijfplaats"]}"#.to_vec()),
        ("duplicate bsn by escape", br#"{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":["999993653"],"fields":["naam"],"burgerservicenumme\u0072":["999991802"]}"#.to_vec()),
        // Not UTF-8.
        ("invalid utf-8 in a value", b"{\"type\":\"RaadpleegMetBurgerservicenummer\",\"burgerservicenummer\":[\"999993653\"],\"fields\":[\"na\xffam\"]}".to_vec()),
        ("overlong utf-8 in a key", b"{\"type\":\"RaadpleegMetBurgerservicenummer\",\"burgerservicenummer\":[\"999993653\"],\"fields\":[\"naam\"],\"\xc0\xae\":1}".to_vec()),
        ("latin-1 body", b"{\"type\":\"ZoekMetGeslachtsnaamEnGeboortedatum\",\"geslachtsnaam\":\"M\xfcller\",\"geboortedatum\":\"1980-01-01\",\"fields\":[\"naam\"]}".to_vec()),
        ("utf-16 body", GOOD.encode_utf16().flat_map(u16::to_le_bytes).collect()),
        ("lone surrogate escape", br#"{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":["999993653"],"fields":["na\ud800am"]}"#.to_vec()),
        ("byte order mark", [b"\xef\xbb\xbf".as_slice(), GOOD.as_bytes()].concat()),
        // Nesting and size.
        ("nested fields", deep_array.into_bytes()),
        ("30000 nested arrays", very_deep.into_bytes()),
        ("10000 nested objects", deep_objects.into_bytes()),
        ("5000 bsns", many_bsns.into_bytes()),
        ("21 bsns", too_many_bsns.into_bytes()),
        ("300 fields", many_fields.into_bytes()),
        ("200 unknown keys", many_keys.into_bytes()),
        // Wrong types.
        ("bsn as a string", br#"{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":"999993653","fields":["naam"]}"#.to_vec()),
        ("bsn as a number", br#"{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":[999993653],"fields":["naam"]}"#.to_vec()),
        ("bsn as an object", br#"{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":[{"bsn":"999993653"}],"fields":["naam"]}"#.to_vec()),
        ("bsn with a nul", b"{\"type\":\"RaadpleegMetBurgerservicenummer\",\"burgerservicenummer\":[\"99999365\\u00003\"],\"fields\":[\"naam\"]}".to_vec()),
        ("bsn with spaces", br#"{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":[" 999993653"],"fields":["naam"]}"#.to_vec()),
        ("bsn failing the 11-proef", br#"{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":["999993654"],"fields":["naam"]}"#.to_vec()),
        ("full-width digits", "{\"type\":\"RaadpleegMetBurgerservicenummer\",\"burgerservicenummer\":[\"９９９９９３６５３\"],\"fields\":[\"naam\"]}".as_bytes().to_vec()),
        ("type as a number", br#"{"type":1,"burgerservicenummer":["999993653"],"fields":["naam"]}"#.to_vec()),
        ("type as an array", br#"{"type":["RaadpleegMetBurgerservicenummer"],"burgerservicenummer":["999993653"],"fields":["naam"]}"#.to_vec()),
        ("type in another case", br#"{"type":"raadpleegmetburgerservicenummer","burgerservicenummer":["999993653"],"fields":["naam"]}"#.to_vec()),
        ("key in another case", br#"{"Type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":["999993653"],"fields":["naam"]}"#.to_vec()),
        ("fields as a string", br#"{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":["999993653"],"fields":"naam"}"#.to_vec()),
        ("fields empty", br#"{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":["999993653"],"fields":[]}"#.to_vec()),
        ("huisnummer as a string", br#"{"type":"ZoekMetPostcodeEnHuisnummer","postcode":"1234AB","huisnummer":"12","fields":["naam"]}"#.to_vec()),
        ("huisnummer as a float", br#"{"type":"ZoekMetPostcodeEnHuisnummer","postcode":"1234AB","huisnummer":12.0,"fields":["naam"]}"#.to_vec()),
        ("huisnummer huge", br#"{"type":"ZoekMetPostcodeEnHuisnummer","postcode":"1234AB","huisnummer":1e400,"fields":["naam"]}"#.to_vec()),
        ("unknown key", br#"{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":["999993653"],"fields":["naam"],"gemeenteVanInschrijving":"0363","x":1}"#.to_vec()),
        ("a search key on a lookup", br#"{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":["999993653"],"fields":["naam"],"postcode":"1234AB"}"#.to_vec()),
        ("top-level array", format!("[{GOOD}]").into_bytes()),
        ("top-level null", b"null".to_vec()),
        ("top-level string", format!("{:?}", GOOD).into_bytes()),
        // Trailing garbage and non-JSON.
        ("trailing garbage", format!("{GOOD}x").into_bytes()),
        ("two objects", format!("{GOOD}{GOOD}").into_bytes()),
        ("trailing nul", [GOOD.as_bytes(), b"\0"].concat()),
        ("trailing comma", br#"{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":["999993653"],"fields":["naam"],}"#.to_vec()),
        ("comment", br#"{"type":"RaadpleegMetBurgerservicenummer",/*x*/"burgerservicenummer":["999993653"],"fields":["naam"]}"#.to_vec()),
        ("single quotes", br#"{'type':'RaadpleegMetBurgerservicenummer','burgerservicenummer':['999993653'],'fields':['naam']}"#.to_vec()),
        ("NaN", br#"{"type":"ZoekMetPostcodeEnHuisnummer","postcode":"1234AB","huisnummer":NaN,"fields":["naam"]}"#.to_vec()),
        ("truncated", GOOD.as_bytes()[..GOOD.len() - 3].to_vec()),
        ("empty", Vec::new()),
        ("form encoded", b"type=RaadpleegMetBurgerservicenummer&burgerservicenummer=999993653&fields=naam".to_vec()),
    ];
    let n = bodies.len();
    for (what, body) in bodies {
        let resp = common::raw_http(h.addr, &request(&h, "POST", BRP.as_bytes(), "", &body)).await;
        assert_eq!(status(&resp), Some(400), "{what}: {resp}");
        assert!(is_problem(&resp), "{what}: {resp}");
        assert_eq!(h.registry.seen_count(), 0, "{what}: forwarded");
    }
    assert!(n >= 40);
    // Every refusal has its decision record.
    let denied = h
        .records()
        .iter()
        .filter(|r| r["decision"] == "deny")
        .count();
    assert_eq!(denied, n, "one deny record per refused body");

    // The control: the same gate forwards a good body, byte for byte.
    let resp = common::raw_http(
        h.addr,
        &request(&h, "POST", BRP.as_bytes(), "", GOOD.as_bytes()),
    )
    .await;
    assert_eq!(status(&resp), Some(200), "{resp}");
    assert_eq!(h.registry.seen_count(), 1);
}

#[tokio::test]
async fn the_registry_receives_exactly_the_bytes_decided_on() {
    let h = Harness::start().await;
    // Odd but valid JSON: whitespace, escapes, key order. Re-serialising would change it. It
    // asks for `burgerservicenummer` itself, so the gate has no release field to add.
    let body = "{ \"fields\" : [ \"naam\", \"burgerservicenummer\" ] ,\n\t\"burgerservicenummer\":[\"99999\\u0033653\"],\"type\":\"RaadpleegMetBurgerservicenummer\"  }";
    let resp = common::raw_http(
        h.addr,
        &request(&h, "POST", BRP.as_bytes(), "", body.as_bytes()),
    )
    .await;
    assert_eq!(status(&resp), Some(200), "{resp}");
    let seen = h.registry.last_seen().unwrap();
    assert_eq!(seen.body.as_ref(), body.as_bytes());

    // A chunked body is refused (400, recorded, not forwarded): request bodies must carry a
    // `Content-Length`, so no framing ambiguity can reach the decision.
    let chunked = format!(
        "{:x}\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        10,
        &GOOD[..10],
        GOOD.len() - 10,
        &GOOD[10..]
    );
    let resp = common::raw_http(
        h.addr,
        &request(
            &h,
            "POST",
            BRP.as_bytes(),
            "Transfer-Encoding: chunked\r\n",
            chunked.as_bytes(),
        ),
    )
    .await;
    assert_eq!(status(&resp), Some(400), "{resp}");
    assert!(resp.contains("\"badRequest\""), "{resp}");
    assert!(resp.contains("transfer-encoding"), "{resp}");
    assert_eq!(h.registry.seen_count(), 1);
}

#[tokio::test]
async fn smuggling_shapes_are_refused_and_never_forwarded() {
    let h = Harness::start().await;
    let len = GOOD.len();
    // A second request hidden behind the first: whoever reads the framing differently sees it.
    let smuggled = "GET /rdw/voertuigen/XX999X HTTP/1.1\r\nHost: gate\r\n\r\n";
    let chunked_good = format!("{len:x}\r\n{GOOD}\r\n0\r\n\r\n");
    // `Content-Length` with `Transfer-Encoding`: hyper (1.12, `proto/h1/role.rs`) drops the
    // length, reads the body by the chunked coding alone and closes the connection after the
    // answer (RFC 9112 section 6.1), so nothing after the body is ever read as a request; the
    // gate then refuses the request because it carries `Transfer-Encoding` (400, recorded).
    let te_wins: Vec<(&str, String, String)> = vec![
        (
            "content-length then transfer-encoding",
            format!("Content-Length: {len}\r\nTransfer-Encoding: chunked\r\n"),
            format!("{chunked_good}{smuggled}"),
        ),
        (
            "transfer-encoding then content-length",
            format!(
                "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
                chunked_good.len()
            ),
            format!("{chunked_good}{smuggled}"),
        ),
        (
            "equal content-lengths around transfer-encoding",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n".to_string(),
            format!("{chunked_good}{smuggled}"),
        ),
    ];
    for (what, headers, body) in &te_wins {
        let before = h.registry.seen_count();
        let req = request(&h, "POST", BRP.as_bytes(), headers, body.as_bytes());
        let resp = common::raw_http(h.addr, &req).await;
        assert_eq!(
            resp.matches("HTTP/1.1 ").count(),
            1,
            "{what}: the bytes after the body were read as a second request: {resp}"
        );
        assert_eq!(status(&resp), Some(400), "{what}: {resp}");
        assert!(resp.contains("\"badRequest\""), "{what}: {resp}");
        assert!(
            resp.to_ascii_lowercase().contains("connection: close"),
            "{what}: {resp}"
        );
        assert_eq!(h.registry.seen_count(), before, "{what}: forwarded");
    }
    let forwarded_by_te = h.registry.seen_count();
    assert_eq!(forwarded_by_te, 0);

    // Everything else is refused outright.
    let cases: Vec<(&str, String, String)> = vec![
        (
            "content-length with the body chunked but no transfer-encoding",
            format!("Content-Length: {}\r\n", chunked_good.len()),
            format!("{chunked_good}{smuggled}"),
        ),
        (
            "two different content-lengths",
            format!("Content-Length: {len}\r\nContent-Length: {}\r\n", len + 5),
            format!("{GOOD}xxxxx"),
        ),
        (
            "a list content-length",
            format!("Content-Length: {len}, {}\r\n", len + 5),
            format!("{GOOD}xxxxx"),
        ),
        (
            "a signed content-length",
            format!("Content-Length: +{len}\r\n"),
            GOOD.to_string(),
        ),
        (
            "a hex content-length",
            format!("Content-Length: 0x{len:x}\r\n"),
            GOOD.to_string(),
        ),
        (
            "transfer-encoding not ending in chunked",
            "Transfer-Encoding: chunked, identity\r\n".to_string(),
            chunked_good.clone(),
        ),
        (
            "transfer-encoding gzip",
            "Transfer-Encoding: gzip\r\n".to_string(),
            GOOD.to_string(),
        ),
        (
            "obs-fold transfer-encoding",
            "Transfer-Encoding:\r\n chunked\r\n".to_string(),
            chunked_good.clone(),
        ),
        (
            "obs-fold on a purpose header",
            format!("X-Doelbinding: a\r\n b\r\nContent-Length: {len}\r\n"),
            GOOD.to_string(),
        ),
        (
            "space before the colon",
            format!("Content-Length : {len}\r\n"),
            GOOD.to_string(),
        ),
        (
            "space before the colon of transfer-encoding",
            format!("Transfer-Encoding : chunked\r\nContent-Length: {len}\r\n"),
            GOOD.to_string(),
        ),
        (
            "tab before the colon",
            format!("Content-Length\t: {len}\r\n"),
            GOOD.to_string(),
        ),
        (
            "bad chunk size",
            "Transfer-Encoding: chunked\r\n".to_string(),
            format!("zz\r\n{GOOD}\r\n0\r\n\r\n"),
        ),
        (
            "chunk size too short",
            "Transfer-Encoding: chunked\r\n".to_string(),
            format!("{:x}\r\n{GOOD}\r\n0\r\n\r\n", len - 10),
        ),
    ];
    for (what, headers, body) in &cases {
        let req = request(&h, "POST", BRP.as_bytes(), headers, body.as_bytes());
        let resp = common::raw_http(h.addr, &req).await;
        let st = status(&resp);
        assert!(
            st.is_none_or(|s| (400..500).contains(&s)),
            "{what}: expected a refusal or a closed connection: {resp}"
        );
        assert_eq!(
            h.registry.seen_count(),
            forwarded_by_te,
            "{what}: forwarded: {resp}"
        );
    }
    // A body shorter than its `Content-Length`, then end of stream: never decided on.
    let req = request(
        &h,
        "POST",
        BRP.as_bytes(),
        &format!("Content-Length: {}\r\n", len + 100),
        GOOD.as_bytes(),
    );
    let resp = send_then_eof(h.addr, &req).await;
    assert!(
        status(&resp).is_none_or(|s| (400..500).contains(&s)),
        "short body: {resp}"
    );
    assert_eq!(
        h.registry.seen_count(),
        forwarded_by_te,
        "short body: forwarded"
    );

    // Bare LF as line terminator, with a smuggled request in the body: whatever the reading,
    // the registry never sees the hidden GET.
    let req = request(&h, "POST", BRP.as_bytes(), "", GOOD.as_bytes());
    let head_end = req.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let (head, body) = req.split_at(head_end);
    let mut lf: Vec<u8> = String::from_utf8_lossy(head)
        .replace("\r\n", "\n")
        .into_bytes();
    lf.extend_from_slice(b"\nTransfer-Encoding: chunked\n\n");
    lf.extend_from_slice(&body[4..]);
    lf.extend_from_slice(smuggled.as_bytes());
    let resp = common::raw_http(h.addr, &lf).await;
    assert!(
        status(&resp).is_none_or(|s| (400..500).contains(&s)),
        "bare lf: {resp}"
    );
    assert!(
        h.registry.last_seen().is_none_or(|s| s.method == "POST"),
        "the hidden GET reached the registry"
    );
}

#[tokio::test]
async fn bare_lf_header_lines_never_carry_a_request_past_the_gate() {
    let h = Harness::start().await;
    // Every line ends in a bare LF; a strict front proxy would see one header block, a lenient
    // one another. The gate either refuses or reads it with the same headers a strict reader sees.
    let req = format!(
        "GET /rdw/voertuigen/XX999X HTTP/1.1\nHost: gate\nAuthorization: Bearer {}\nX-Case-Id: Z-OPEN\nConnection: close\n\n",
        h.emp042()
    );
    let resp = common::raw_http(h.addr, req.as_bytes()).await;
    let st = status(&resp);
    assert!(st.is_none() || st == Some(400) || st == Some(200), "{resp}");
    if st == Some(200) {
        // Accepted: then it was decided on and recorded like any other request.
        let seen = h.registry.last_seen().unwrap();
        assert_eq!(seen.path, "/voertuigen/XX999X");
        assert!(h.records().iter().any(|r| r["decision"] == "allow"));
    } else {
        assert_eq!(h.registry.seen_count(), 0);
    }
    // A header hidden behind a bare CR is not a header.
    let req = format!(
        "GET /rdw/voertuigen/XX999X HTTP/1.1\r\nHost: gate\r\nX-Case-Id: Z-OPEN\rAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        h.emp042()
    );
    let resp = common::raw_http(h.addr, req.as_bytes()).await;
    assert!(
        status(&resp).is_none_or(|s| (400..500).contains(&s)),
        "bare cr: {resp}"
    );
    assert!(
        h.registry.seen_count() <= 1,
        "the bare-cr request was forwarded"
    );
}

#[tokio::test]
async fn more_path_confusion_variants_never_reach_a_registry() {
    let h = Harness::start().await;
    // Targets the gate itself refuses with a problem+json answer (status, code).
    let gate_refused: &[(&str, &[u8])] = &[
        ("GET", b"/rdw/voertuigen/%2E%2E/voertuigen/XX999X"),
        ("GET", b"/rdw/voertuigen/XX999X/%2e"),
        ("GET", b"/rdw/voertuigen/XX999X/."),
        ("GET", b"/rdw/voertuigen/XX999X/.."),
        ("GET", b"/rdw/voertuigen/XX999X%20"),
        ("GET", b"/rdw/voertuigen/XX999X%09"),
        ("GET", b"/rdw/voertuigen/XX%2d999%2dX"),
        ("GET", b"/rdw/voertuigen/XX999X%2500"),
        ("GET", b"/rdw/voertuigen/XX999X%252f..%252ftenaamstelling"),
        ("GET", b"/rdw/voertuigen/%u0058X999X"),
        ("GET", b"/rdw/voertuigen/XX999X/tenaamstelling;.css"),
        ("GET", b"/rdw/voertuigen/XX999X%3ftenaamstelling"),
        ("GET", b"/rdw/voertuigen/XX999X%23"),
        ("GET", b"/./rdw/voertuigen/XX999X"),
        ("GET", b"/rdw/voertuigen/XX999X/tenaamstelling/.."),
        ("GET", b"/rdw/%76oertuigen/XX999X"),
        ("GET", b"/rdw/voertuigen/%%32%66"),
        ("GET", b"/rdw/voertuigen/XX999X%0d%0aX-Injected:%201"),
        ("GET", b"/rdw/voertuigen/XX999X?"),
        ("GET", b"/rdw/voertuigen/%ef%bd%98x999x"),
        ("GET", b"/rdw/voertuigen/%e0%80%aeXX999X"),
        ("GET", b"/rdw/voertuigen/XX999X%c0%80"),
        ("POST", b"/haalcentraal/api/brp/personen;a=b"),
        ("POST", b"/haalcentraal/api/brp/personen%00"),
        ("POST", b"/haalcentraal/api/brp/personen/."),
        ("POST", b"//haalcentraal/api/brp/personen"),
        ("POST", b"/haalcentraal/api/brp/personen/..;/personen"),
        ("POST", b"/haalcentraal/api/brp/%70ersonen"),
        ("POST", b"/haalcentraal/api/brp/personen.json"),
        // Case variants of the prefix: no route.
        ("GET", b"/Rdw/voertuigen/XX999X"),
        ("GET", b"/rdw/voertuigen/XX999X/TENAAMSTELLING"),
        ("POST", b"/HAALCENTRAAL/api/brp/personen"),
        ("POST", b"/haalcentraal/API/brp/personen"),
        ("POST", b"/haalcentraal/api/brp/PERSONEN"),
        // Absolute-form with another scheme or case.
        ("GET", b"HTTP://gate/rdw/voertuigen/XX999X"),
        ("GET", b"https://gate/rdw/voertuigen/XX999X"),
        ("POST", b"http://gate/haalcentraal/api/brp/personen"),
        (
            "POST",
            b"http://registry.internal:80/haalcentraal/api/brp/personen",
        ),
    ];
    // Targets the HTTP parser refuses before the gate sees them (raw non-ASCII, NUL, controls,
    // no leading slash): any 4xx or a closed connection.
    let parser_refused: &[(&str, &[u8])] = &[
        ("GET", b"/rdw/voertuigen/\xef\xbc\xb8X999X"),
        ("GET", b"/rdw/voertuigen/\xc0\xaeXX999X"),
        ("GET", b"/rdw/voertuigen/XX999X\x00"),
        ("GET", b"/rdw/voertuigen/XX999X\x00/tenaamstelling"),
        ("GET", b"/rdw/voertuigen/XX999X\t"),
        ("GET", b"/rdw\\voertuigen\\XX999X"),
        ("GET", b"rdw/voertuigen/XX999X"),
        ("POST", b"/haalcentraal/api/brp/personen\xff"),
        ("POST", b"/haalcentraal/api/brp/\xef\xbd\x90ersonen"),
    ];
    for (method, target) in gate_refused {
        let body = if *method == "POST" {
            GOOD.as_bytes()
        } else {
            b""
        };
        let resp = common::raw_http(h.addr, &request(&h, method, target, "", body)).await;
        let shown = String::from_utf8_lossy(target);
        let st = status(&resp);
        assert!(
            st.is_some_and(|s| matches!(s, 400 | 404 | 405)),
            "{method} {shown}: {resp}"
        );
        assert!(is_problem(&resp), "{method} {shown}: {resp}");
        assert!(
            matches!(
                code(&resp).as_str(),
                "invalidPath" | "notFound" | "methodNotAllowed"
            ),
            "{method} {shown}: {resp}"
        );
        assert_eq!(h.registry.seen_count(), 0, "{method} {shown}: forwarded");
    }
    for (method, target) in parser_refused {
        let body = if *method == "POST" {
            GOOD.as_bytes()
        } else {
            b""
        };
        let resp = common::raw_http(h.addr, &request(&h, method, target, "", body)).await;
        let shown = String::from_utf8_lossy(target);
        assert!(
            status(&resp).is_none_or(|s| (400..500).contains(&s)),
            "{method} {shown}: {resp}"
        );
        if !resp.is_empty() && !resp.ends_with("\r\n\r\n") {
            assert!(
                is_problem(&resp),
                "{method} {shown}: a body that is not problem+json"
            );
        }
        assert_eq!(h.registry.seen_count(), 0, "{method} {shown}: forwarded");
    }
    // tests/gate_paths.rs covers 26 other variants; together well over 40.
    assert!(gate_refused.len() + parser_refused.len() >= 40);

    // Controls: the canonical targets pass through the same gate.
    let resp = common::raw_http(
        h.addr,
        &request(&h, "GET", b"/rdw/voertuigen/XX999X", "", b""),
    )
    .await;
    assert_eq!(status(&resp), Some(200), "{resp}");
    let resp = common::raw_http(
        h.addr,
        &request(&h, "POST", BRP.as_bytes(), "", GOOD.as_bytes()),
    )
    .await;
    assert_eq!(status(&resp), Some(200), "{resp}");
    assert_eq!(h.registry.seen_count(), 2);
}

#[tokio::test]
async fn a_stalled_or_trickled_body_gets_408_and_is_recorded() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start_with(common::Options {
        server_extra: "body_timeout = \"1s\"".into(),
        ..common::Options::default()
    })
    .await;
    let req = request(&h, "POST", BRP.as_bytes(), "", GOOD.as_bytes());
    let head_len = req.len() - GOOD.len();

    // Stalled: the head and half the body, then nothing (the connection stays open).
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    s.write_all(&req[..head_len + GOOD.len() / 2])
        .await
        .unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "the gate kept a stalled body's connection open"
    );
    let resp = String::from_utf8_lossy(&out).into_owned();
    assert_eq!(status(&resp), Some(408), "{resp}");
    assert!(is_problem(&resp), "{resp}");
    assert_eq!(code(&resp), "requestTimeout");
    assert!(
        resp.to_ascii_lowercase().contains("connection: close"),
        "{resp}"
    );

    // Trickled: one byte every 100 ms (the whole body would take about 9 s).
    let s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    wr.write_all(&req[..head_len]).await.unwrap();
    let body = GOOD.as_bytes().to_vec();
    let writer = tokio::spawn(async move {
        for b in body {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), rd.read_to_end(&mut out)).await;
    writer.abort();
    assert!(read.is_ok(), "the gate waited for a trickled body");
    let resp = String::from_utf8_lossy(&out).into_owned();
    assert_eq!(status(&resp), Some(408), "{resp}");
    assert_eq!(code(&resp), "requestTimeout");

    // Nothing was forwarded; each refusal has its decision record, like every refusal after
    // authentication.
    assert_eq!(h.registry.seen_count(), 0);
    let timeouts: Vec<_> = h
        .records()
        .into_iter()
        .filter(|r| r["kind"] == "decision" && r["code"] == "requestTimeout")
        .collect();
    assert_eq!(timeouts.len(), 2, "{timeouts:?}");
    for r in &timeouts {
        assert_eq!(r["decision"], "deny");
        assert_eq!(r["principal"]["id"], "emp-042");
    }

    // A body sent in time is still accepted on the same gate.
    let resp = common::raw_http(h.addr, &req).await;
    assert_eq!(status(&resp), Some(200), "{resp}");
}
