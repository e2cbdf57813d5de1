//! TLS and mTLS: real rustls handshakes on 127.0.0.1:0 with certificates made here (rcgen).
//!
//! The listener: https with a client that trusts the test CA (HTTP/1.1 and h2 by ALPN), plain
//! HTTP refused, a stalled handshake dropped, client certificates required or optional, the
//! certificate reloaded (SIGHUP-equivalent and by polling) with an invalid replacement kept out,
//! bad files at start (exit 2 naming the key and the file). The upstreams: https with a custom
//! CA, and an upstream that requires a client certificate. And the token-cache metric.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Harness, Options, raadpleeg, raw_http, registry, repo};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

// ---------------------------------------------------------------------------------------------
// Certificates

/// A test certificate authority.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, PEM, plus the certificate's DER.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    fn server(&self, cn: &str, serial: u64) -> Leaf {
        self.leaf(cn, serial, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate.
    fn client(&self, cn: &str) -> Leaf {
        self.leaf(cn, 7, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(&self, cn: &str, serial: u64, usage: ExtendedKeyUsagePurpose) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.serial_number = Some(SerialNumber::from(serial));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        roots
    }
}

impl Leaf {
    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

// ---------------------------------------------------------------------------------------------
// A TLS client

/// Client settings trusting `ca`, with an optional client certificate and ALPN protocols.
fn client_config(ca: &Ca, cert: Option<&Leaf>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let b = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots());
    let mut c = match cert {
        Some(l) => b
            .with_client_auth_cert(vec![l.der.clone()], l.key_der())
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(c)
}

/// What an https exchange gave: the status, the body, the gate's certificate, the ALPN choice.
#[derive(Debug)]
struct TlsAnswer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
    peer: CertificateDer<'static>,
    alpn: Option<Vec<u8>>,
}

/// One request over a new TLS connection; `Err` when the handshake or the exchange failed.
async fn https(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<TlsAnswer, String> {
    let exchange = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from("localhost").unwrap();
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let (_, conn) = tls.get_ref();
        let peer = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .cloned()
            .ok_or("no server certificate")?;
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        let mut req = Request::builder().method(method).uri(path);
        if alpn.as_deref() == Some(b"h2") {
            req = req.uri(format!("https://localhost:{}{path}", addr.port()));
        } else {
            req = req.header("host", "localhost");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        let io = TokioIo::new(tls);
        let resp = if alpn.as_deref() == Some(b"h2") {
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("h2: {e}"))?;
            tokio::spawn(conn);
            send.send_request(req).await
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("http1: {e}"))?;
            tokio::spawn(conn);
            send.send_request(req).await
        }
        .map_err(|e| format!("request: {e}"))?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok(TlsAnswer {
            status: parts.status,
            headers: parts.headers,
            body,
            peer,
            alpn,
        })
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .map_err(|_| "no answer in time".to_string())?
}

/// A BRP lookup of 999993653 under Z-OPEN as emp-042, over TLS.
async fn brp_over_tls(h: &Harness, config: Arc<ClientConfig>) -> Result<TlsAnswer, String> {
    let auth = format!("Bearer {}", h.emp042());
    let body = raadpleeg(&["999993653"], &["naam"]).to_string();
    https(
        h.addr,
        config,
        "POST",
        "/haalcentraal/api/brp/personen",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
            ("x-case-id", "Z-OPEN"),
        ],
        &body,
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// A gate with TLS on its listener

struct TlsGate {
    h: Harness,
    ca: Ca,
    dir: tempfile::TempDir,
}

/// A gate whose listener serves `cert` (from `ca`); `extra` goes into `[server.tls]`.
async fn tls_gate(ca: Ca, cert: &Leaf, tls_extra: &str, policies_extra: &str) -> TlsGate {
    let dir = tempfile::tempdir().unwrap();
    let cert_file = write(dir.path(), "gate.crt", &cert.cert_pem);
    let key_file = write(dir.path(), "gate.key", &cert.key_pem);
    let h = Harness::start_with(Options {
        server_extra: format!(
            "header_read_timeout = \"1s\"\n[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n{tls_extra}",
            cert_file.display(),
            key_file.display()
        ),
        policies_extra: policies_extra.into(),
        extra_config: "[admin]\nlisten = \"127.0.0.1:0\"\n".into(),
        ..Options::default()
    })
    .await;
    TlsGate { h, ca, dir }
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn tls_listener_answers_https_for_a_client_that_trusts_the_ca() {
    let ca = Ca::new("gate test ca");
    let cert = ca.server("gate-1", 1);
    let g = tls_gate(ca, &cert, "", "").await;
    let config = client_config(&g.ca, None, &[b"http/1.1"]);
    let a = brp_over_tls(&g.h, config).await.unwrap();
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.peer, cert.der, "the configured certificate is served");
    assert_eq!(a.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let id = a.headers["x-request-id"].to_str().unwrap();
    assert_eq!(g.h.record_of(id, "decision")["decision"], "allow");
    assert_eq!(g.h.record_of(id, "outcome")["status"], 200);

    // A client that trusts another CA refuses the gate's certificate.
    let other = Ca::new("other ca");
    let err = brp_over_tls(&g.h, client_config(&other, None, &[]))
        .await
        .unwrap_err();
    assert!(err.starts_with("handshake"), "{err}");
}

#[tokio::test]
async fn tls_listener_speaks_h2_when_alpn_chooses_it() {
    let ca = Ca::new("gate test ca");
    let cert = ca.server("gate-1", 1);
    let g = tls_gate(ca, &cert, "", "").await;
    let config = client_config(&g.ca, None, &[b"h2", b"http/1.1"]);
    let a = brp_over_tls(&g.h, config).await.unwrap();
    assert_eq!(a.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(a.status, 200, "{:?}", a.body);
    let id = a.headers["x-request-id"].to_str().unwrap();
    assert_eq!(g.h.record_of(id, "outcome")["status"], 200);
}

#[tokio::test]
async fn plain_http_to_a_tls_listener_gets_no_http_answer() {
    let ca = Ca::new("gate test ca");
    let cert = ca.server("gate-1", 1);
    let g = tls_gate(ca, &cert, "", "").await;
    let out = raw_http(
        g.h.addr,
        b"GET /rdw/voertuigen/XX999X HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    assert!(!out.contains("HTTP/1."), "plain HTTP was answered: {out:?}");
    // The hyper client over plain HTTP fails as well.
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let req = Request::get(format!("http://{}/rdw/voertuigen/XX999X", g.h.addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("the gate closes the connection");
    assert!(res.is_err(), "plain HTTP got an answer: {res:?}");
}

#[tokio::test]
async fn stalled_handshake_is_dropped_after_the_header_read_timeout() {
    let ca = Ca::new("gate test ca");
    let cert = ca.server("gate-1", 1);
    let g = tls_gate(ca, &cert, "", "").await;
    let mut s = TcpStream::connect(g.h.addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    // Never send a ClientHello: the gate drops the connection after 1 s (header_read_timeout).
    let read = tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was still open after 8 s");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "dropped before the timeout: {:?}",
        started.elapsed()
    );
    assert!(buf.is_empty());
}

#[tokio::test]
async fn required_client_certificate_is_checked_against_the_client_ca() {
    let ca = Ca::new("gate test ca");
    let cert = ca.server("gate-1", 1);
    let client_ca = Ca::new("client ca");
    let dir = tempfile::tempdir().unwrap();
    let client_ca_file = write(dir.path(), "clients.pem", &client_ca.pem());
    let g = tls_gate(
        ca,
        &cert,
        &format!(
            "client_ca_file = \"{}\"\nrequire_client_cert = true\n",
            client_ca_file.display()
        ),
        "",
    )
    .await;

    // Without a client certificate: refused.
    let err = brp_over_tls(&g.h, client_config(&g.ca, None, &[]))
        .await
        .unwrap_err();
    assert!(!err.is_empty());

    // With a certificate of the client CA: served.
    let good = client_ca.client("case-system");
    let a = brp_over_tls(&g.h, client_config(&g.ca, Some(&good), &[]))
        .await
        .unwrap();
    assert_eq!(a.status, 200);

    // With a certificate of another CA: refused, also over h2.
    let rogue = Ca::new("rogue ca").client("case-system");
    for alpn in [&[][..], &[&b"h2"[..]][..]] {
        let err = brp_over_tls(&g.h, client_config(&g.ca, Some(&rogue), alpn))
            .await
            .unwrap_err();
        assert!(!err.is_empty());
    }
    // Only the one request with a good certificate reached the policies.
    let decisions =
        g.h.records()
            .into_iter()
            .filter(|r| r["kind"] == "decision")
            .count();
    assert_eq!(decisions, 1);
}

#[tokio::test]
async fn optional_client_certificate_is_checked_when_presented() {
    let ca = Ca::new("gate test ca");
    let cert = ca.server("gate-1", 1);
    let client_ca = Ca::new("client ca");
    let dir = tempfile::tempdir().unwrap();
    let client_ca_file = write(dir.path(), "clients.pem", &client_ca.pem());
    let g = tls_gate(
        ca,
        &cert,
        &format!("client_ca_file = \"{}\"\n", client_ca_file.display()),
        "",
    )
    .await;
    let none = brp_over_tls(&g.h, client_config(&g.ca, None, &[]))
        .await
        .unwrap();
    assert_eq!(none.status, 200);
    let good = client_ca.client("case-system");
    let a = brp_over_tls(&g.h, client_config(&g.ca, Some(&good), &[]))
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    let rogue = Ca::new("rogue ca").client("case-system");
    assert!(
        brp_over_tls(&g.h, client_config(&g.ca, Some(&rogue), &[]))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn reload_serves_the_new_certificate_and_keeps_the_old_one_when_invalid() {
    let ca = Ca::new("gate test ca");
    let first = ca.server("gate-first", 1);
    // Polling off: only the explicit reloads below (what SIGHUP runs) change the certificate.
    let g = tls_gate(ca, &first, "", "poll_interval = \"0s\"").await;
    let config = client_config(&g.ca, None, &[]);
    let a = brp_over_tls(&g.h, Arc::clone(&config)).await.unwrap();
    assert_eq!(a.peer, first.der);

    // A valid new pair: new handshakes see it.
    let second = g.ca.server("gate-second", 2);
    write(g.dir.path(), "gate.crt", &second.cert_pem);
    write(g.dir.path(), "gate.key", &second.key_pem);
    g.h.running().reload().reload_all().await;
    let a = brp_over_tls(&g.h, Arc::clone(&config)).await.unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(
        a.peer, second.der,
        "the new certificate (serial 2) is served"
    );
    assert_ne!(a.peer, first.der);

    // A key that does not fit the certificate: refused, the second pair stays.
    let third = g.ca.server("gate-third", 3);
    write(g.dir.path(), "gate.crt", &third.cert_pem);
    let err = g.h.running().reload().reload_tls().await.unwrap_err();
    assert!(err.contains("server.tls.key_file"), "{err}");
    let a = brp_over_tls(&g.h, Arc::clone(&config)).await.unwrap();
    assert_eq!(a.peer, second.der, "the previous certificate stays");

    // Garbage: refused as well.
    write(
        g.dir.path(),
        "gate.key",
        "-----BEGIN PRIVATE KEY-----\nnot base64!\n",
    );
    g.h.running().reload().reload_all().await;
    let a = brp_over_tls(&g.h, Arc::clone(&config)).await.unwrap();
    assert_eq!(a.peer, second.der);

    let (_, metrics) = g.h.admin_get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "purpose_gate_reloads_total{what=\"tls\",result=\"ok\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "purpose_gate_reloads_total{what=\"tls\",result=\"failed\"}"
        ),
        Some(2.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn changed_certificate_files_are_picked_up_by_polling() {
    let ca = Ca::new("gate test ca");
    let first = ca.server("gate-first", 1);
    let g = tls_gate(ca, &first, "", "poll_interval = \"100ms\"").await;
    let config = client_config(&g.ca, None, &[]);
    assert_eq!(
        brp_over_tls(&g.h, Arc::clone(&config)).await.unwrap().peer,
        first.der
    );
    let second = g.ca.server("gate-second", 2);
    write(g.dir.path(), "gate.key", &second.key_pem);
    write(g.dir.path(), "gate.crt", &second.cert_pem);
    let mut seen = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let a = brp_over_tls(&g.h, Arc::clone(&config)).await.unwrap();
        if a.peer == second.der {
            seen = Some(a);
            break;
        }
    }
    assert!(
        seen.is_some(),
        "the new certificate was not served within 10 s"
    );
}

#[test]
fn bad_certificate_files_stop_the_start_with_exit_2_naming_key_and_file() {
    let ca = Ca::new("gate test ca");
    let cert = ca.server("gate-1", 1);
    let other = ca.server("gate-2", 2);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cases.json"),
        serde_json::to_vec(&common::test_cases()).unwrap(),
    )
    .unwrap();
    let cert_file = write(dir.path(), "gate.crt", &cert.cert_pem);
    let key_file = write(dir.path(), "gate.key", &other.key_pem);
    let empty = write(dir.path(), "empty.pem", "");
    let config = |cert: &Path, key: &Path| {
        format!(
            r#"[server]
listen = "127.0.0.1:0"
[server.tls]
cert_file = "{}"
key_file = "{}"
[auth]
issuer = "{}"
audience = "{}"
jwks_file = "{}"
[policies]
dir = "{}"
[audit]
dir = "audit"
"#,
            cert.display(),
            key.display(),
            common::ISSUER,
            common::AUDIENCE,
            repo().join("examples/demo/keys/jwks.json").display(),
            repo().join("policies").display(),
        )
    };
    let run = |text: String| {
        let path = write(dir.path(), "gate.toml", &text);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_purpose-gate"))
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // A key that does not fit the certificate.
    let (code, err) = run(config(&cert_file, &key_file));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("`server.tls.key_file`") && err.contains("gate.key"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    // No certificate in the file.
    let (code, err) = run(config(&empty, &key_file));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("`server.tls.cert_file`") && err.contains("empty.pem"),
        "{err}"
    );
    // A missing file.
    let (code, err) = run(config(&cert_file, &dir.path().join("absent.key")));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("`server.tls.key_file`") && err.contains("absent.key"),
        "{err}"
    );
    assert!(
        !dir.path().join("audit").exists(),
        "the audit log is not opened when the certificate is bad"
    );
}

// ---------------------------------------------------------------------------------------------
// TLS to upstreams

/// A TLS front for a plain example registry: terminates TLS (HTTP/1.1 only) and pipes the bytes.
/// Remembers the client certificate of each handshake.
struct TlsUpstream {
    url: String,
    seen_client_certs: Arc<Mutex<Vec<Option<CertificateDer<'static>>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn tls_upstream(ca: &Ca, client_ca: Option<&Ca>) -> TlsUpstream {
    let data = registry::load_data(&repo().join("examples/data")).unwrap();
    let (plain, reg_task) = registry::spawn(data).await.unwrap();
    let cert = ca.server("registry", 9);
    let b = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let b = match client_ca {
        Some(cca) => b.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(cca.roots()),
                provider(),
            )
            .build()
            .unwrap(),
        ),
        None => b.with_no_client_auth(),
    };
    let mut sc = b
        .with_single_cert(vec![cert.der.clone()], cert.key_der())
        .unwrap();
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(sc));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", l.local_addr().unwrap());
    let seen: Arc<Mutex<Vec<Option<CertificateDer<'static>>>>> = Arc::default();
    let seen2 = Arc::clone(&seen);
    let front = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let seen = Arc::clone(&seen2);
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .cloned();
                seen.lock().unwrap().push(peer);
                let Ok(mut up) = TcpStream::connect(plain).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    TlsUpstream {
        url,
        seen_client_certs: seen,
        tasks: vec![reg_task, front],
    }
}

#[tokio::test]
async fn https_upstream_with_a_custom_ca_answers_through_the_gate() {
    let ca = Ca::new("registry ca");
    let up = tls_upstream(&ca, None).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "registry-ca.pem", &ca.pem());
    let h = Harness::start_with(Options {
        upstream_url: Some(up.url.clone()),
        upstream_extra: format!("ca_file = \"{}\"\n", ca_file.display()),
        ..Options::default()
    })
    .await;
    let a = h
        .brp(
            &h.emp042(),
            Some("Z-OPEN"),
            &raadpleeg(&["999993653"], &["naam"]),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert!(a.json()["personen"][0]["naam"].is_object(), "{}", a.json());
    assert_eq!(up.seen_client_certs.lock().unwrap().len(), 1);

    // The same upstream without `ca_file`: the webpki roots do not know the test CA → 502.
    let h2 = Harness::start_with(Options {
        upstream_url: Some(up.url.clone()),
        ..Options::default()
    })
    .await;
    let a = h2
        .brp(
            &h2.emp042(),
            Some("Z-OPEN"),
            &raadpleeg(&["999993653"], &["naam"]),
        )
        .await;
    assert_eq!(a.status, 502);
    assert_eq!(a.code(), "upstreamUnavailable");
}

#[tokio::test]
async fn upstream_requiring_a_client_certificate_gets_the_configured_one() {
    let ca = Ca::new("registry ca");
    let client_ca = Ca::new("pkioverheid-like client ca");
    let up = tls_upstream(&ca, Some(&client_ca)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "registry-ca.pem", &ca.pem());
    let client = client_ca.client("gemeente gate");
    let cert_file = write(dir.path(), "client.crt", &client.cert_pem);
    let key_file = write(dir.path(), "client.key", &client.key_pem);

    let with = Harness::start_with(Options {
        upstream_url: Some(up.url.clone()),
        upstream_extra: format!(
            "ca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
            ca_file.display(),
            cert_file.display(),
            key_file.display()
        ),
        ..Options::default()
    })
    .await;
    let q = raadpleeg(&["999993653"], &["naam"]);
    let a = with.brp(&with.emp042(), Some("Z-OPEN"), &q).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(
        up.seen_client_certs.lock().unwrap().as_slice(),
        &[Some(client.der.clone())],
        "the upstream saw the gate's client certificate"
    );

    let without = Harness::start_with(Options {
        upstream_url: Some(up.url.clone()),
        upstream_extra: format!("ca_file = \"{}\"\n", ca_file.display()),
        ..Options::default()
    })
    .await;
    let a = without.brp(&without.emp042(), Some("Z-OPEN"), &q).await;
    assert_eq!(a.status, 502, "{:?}", a.body);
    assert_eq!(a.code(), "upstreamUnavailable");
    assert!(a.is_problem());
    let id = a.headers["x-request-id"].to_str().unwrap();
    assert_eq!(without.record_of(id, "decision")["decision"], "allow");
    let outcome = without.record_of(id, "outcome");
    assert_eq!(outcome["status"], 502);
    assert_eq!(outcome["disclosed"], serde_json::json!([]));
}

#[test]
fn upstream_tls_keys_are_refused_on_plain_http_and_half_a_client_pair() {
    let base = r#"
[auth]
issuer = "https://idp.example"
audience = "purpose-gate"
jwks_file = "jwks.json"
"#;
    let plain =
        format!("{base}[upstreams.brp]\nurl = \"http://127.0.0.1:1\"\nca_file = \"ca.pem\"\n");
    let err = purpose_gate::config::Config::parse(&plain, Path::new(".")).unwrap_err();
    assert!(err.contains("`upstreams.brp.ca_file`"), "{err}");
    let half = format!(
        "{base}[upstreams.brp]\nurl = \"https://127.0.0.1:1\"\nclient_cert_file = \"c.pem\"\n"
    );
    let err = purpose_gate::config::Config::parse(&half, Path::new(".")).unwrap_err();
    assert!(err.contains("`upstreams.brp.client_key_file`"), "{err}");
    let no_ca = format!(
        "{base}[upstreams.brp]\nurl = \"http://127.0.0.1:1\"\n[server.tls]\ncert_file = \"c\"\nkey_file = \"k\"\nrequire_client_cert = true\n"
    );
    let err = purpose_gate::config::Config::parse(&no_ca, Path::new(".")).unwrap_err();
    assert!(err.contains("`server.tls.client_ca_file`"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Token-cache metric

#[tokio::test]
async fn token_cache_metric_counts_one_miss_then_hits_for_the_same_token() {
    let h = Harness::start_with(Options {
        extra_config: "[admin]\nlisten = \"127.0.0.1:0\"\n".into(),
        ..Options::default()
    })
    .await;
    let token = h.emp042();
    let q = raadpleeg(&["999993653"], &["naam"]);
    assert_eq!(h.brp(&token, Some("Z-OPEN"), &q).await.status, 200);
    assert_eq!(h.brp(&token, Some("Z-OPEN"), &q).await.status, 200);
    let (status, text) = h.admin_get("/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        metric(&text, "purpose_gate_token_cache_total{result=\"miss\"}"),
        Some(1.0),
        "{text}"
    );
    let hits = metric(&text, "purpose_gate_token_cache_total{result=\"hit\"}").unwrap();
    assert!(hits >= 1.0, "{text}");
}
