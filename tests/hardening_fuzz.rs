//! Hardening: the stand-in for the cargo-fuzz targets in `fuzz/` that runs in every `cargo test`
//! (the libFuzzer runs are long; see `fuzz/README.md`). Seeded, bounded random mutation of the committed corpora
//! (`fuzz/corpus/*`) fed to every parser that takes outside input: the BRP body parser, BSN and
//! kenteken parsing, the purpose headers, config parsing, the audit line parser, and opening and
//! verifying an audit directory whose segment files were mutated. Each must answer `Ok` or `Err`
//! and never panic; an accepted BRP body must still satisfy the parser's documented limits.
//!
//! `HARDENING_FUZZ_ITERS` (default 3000) and `HARDENING_FUZZ_SEED` (default 1) tune a run;
//! `FUZZ_STABLE_ONLY=1 scripts/fuzz.sh` runs it long.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};

use http::{HeaderMap, HeaderName, HeaderValue};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use purpose_gate::audit::{AuditLog, AuditOptions, parse_record, verify};
use purpose_gate::config::{Config, HeadersConfig};
use purpose_gate::model::{Action, Bsn, Kenteken, Resource};
use purpose_gate::purpose::parse_purpose;
use purpose_gate::resource::{MAX_BSNS, MAX_FIELDS, parse_brp_body};

fn iters() -> usize {
    std::env::var("HARDENING_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000)
}

fn rng(salt: u64) -> StdRng {
    let seed: u64 = std::env::var("HARDENING_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    StdRng::seed_from_u64(seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = common::repo().join("fuzz/corpus").join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let out: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(!out.is_empty(), "empty corpus {name}");
    out
}

/// Tokens that make mutations reach deeper into JSON, TOML and header grammars.
const DICT: &[&[u8]] = &[
    b"\"type\"",
    b"\"burgerservicenummer\"",
    b"\"fields\"",
    b"RaadpleegMetBurgerservicenummer",
    b"ZoekMetPostcodeEnHuisnummer",
    b"999993653",
    b"\\u0000",
    b"\\ud800",
    b"\\u0070",
    b"[",
    b"]",
    b"{",
    b"}",
    b",",
    b":",
    b"\"",
    b"null",
    b"1e999",
    b"-0",
    b"\xc0\xae",
    b"\xef\xbc\xb8",
    b"\xff",
    b"\n",
    b"\r\n",
    b"[audit]",
    b" = ",
    b"\"\"\"",
    b"seq",
    b"\"prev\"",
    b"\"kind\":\"decision\"",
    b"\"kind\":\"outcome\"",
    b"0000000000000000000000000000000000000000000000000000000000000000",
];

/// One random mutation of `input` (several, stacked, now and then).
fn mutate(rng: &mut StdRng, input: &[u8], pool: &[Vec<u8>]) -> Vec<u8> {
    let mut v = input.to_vec();
    let rounds = 1 + rng.gen_range(0..4);
    for _ in 0..rounds {
        let len = v.len();
        match rng.gen_range(0..9) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                v[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                v[i] = rng.r#gen();
            }
            2 if len > 0 => {
                let a = rng.gen_range(0..len);
                let b = (a + rng.gen_range(1..=16)).min(len);
                v.drain(a..b);
            }
            3 => {
                let i = rng.gen_range(0..=len);
                let t = DICT[rng.gen_range(0..DICT.len())];
                v.splice(i..i, t.iter().copied());
            }
            4 if len > 0 => {
                // Duplicate a slice (repeats keys, nests brackets).
                let a = rng.gen_range(0..len);
                let b = (a + rng.gen_range(1..=64)).min(len);
                let chunk = v[a..b].to_vec();
                let i = rng.gen_range(0..=v.len());
                v.splice(i..i, chunk);
            }
            5 => {
                // Splice in part of another corpus entry.
                let other = &pool[rng.gen_range(0..pool.len())];
                if !other.is_empty() {
                    let a = rng.gen_range(0..other.len());
                    let i = rng.gen_range(0..=len);
                    v.splice(i..i, other[a..].iter().copied());
                }
            }
            6 => v.truncate(rng.gen_range(0..=len)),
            7 => {
                let n = rng.gen_range(1..200);
                let open = if rng.gen_bool(0.5) { b'[' } else { b'{' };
                let i = rng.gen_range(0..=len);
                v.splice(i..i, std::iter::repeat_n(open, n));
            }
            _ => {
                let i = rng.gen_range(0..=len);
                let b: u8 = rng.r#gen();
                v.insert(i, b);
            }
        }
    }
    v
}

#[test]
fn brp_body_parser_never_panics_and_accepts_only_within_its_limits() {
    let pool = corpus("brp_body");
    let mut rng = rng(1);
    let mut accepted = 0;
    for i in 0..iters() * 4 {
        let input = mutate(&mut rng, &pool[i % pool.len()], &pool);
        if let Ok(s) = parse_brp_body(&input) {
            accepted += 1;
            assert!(std::str::from_utf8(&input).is_ok(), "accepted non-UTF-8");
            assert!(!s.fields.is_empty() && s.fields.len() <= MAX_FIELDS);
            assert!(!s.resources.is_empty());
            if s.action == Action::BRP_LOOKUP {
                assert!(s.resources.len() <= MAX_BSNS);
                for r in &s.resources {
                    let Resource::Person(b) = r else {
                        panic!("a lookup with a non-person resource")
                    };
                    assert!(Bsn::parse(b.as_str()).is_ok());
                }
            }
            // Whatever was accepted must parse the same way as plain JSON (no differential).
            let v: serde_json::Value = serde_json::from_slice(&input).unwrap();
            assert!(v.is_object());
        }
    }
    // The seeds themselves parse (except the duplicate-key one), so mutations did explore.
    assert!(accepted > 0, "no mutated body was ever accepted");
}

#[test]
fn bsn_and_kenteken_parsers_never_panic() {
    let pool = corpus("bsn_kenteken");
    let mut rng = rng(2);
    for i in 0..iters() * 10 {
        let input = mutate(&mut rng, &pool[i % pool.len()], &pool);
        let s = String::from_utf8_lossy(&input);
        if let Ok(b) = Bsn::parse(&s) {
            assert_eq!(b.as_str().len(), 9);
            assert!(b.as_str().bytes().all(|c| c.is_ascii_digit()));
        }
        if let Ok(k) = Kenteken::parse(&s) {
            assert_eq!(k.as_str().len(), 6, "{s:?}");
            assert!(
                k.as_str()
                    .bytes()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            );
        }
    }
}

#[test]
fn purpose_header_parser_never_panics() {
    let pool = corpus("purpose");
    let names = HeadersConfig::default();
    let mut rng = rng(3);
    for i in 0..iters() * 4 {
        let input = mutate(&mut rng, &pool[i % pool.len()], &pool);
        let mut headers = HeaderMap::new();
        for line in input.split(|b| *b == b'\n') {
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                continue;
            };
            let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(line[..colon].trim_ascii()),
                HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
            ) else {
                continue;
            };
            headers.append(n, v);
        }
        if let Ok(p) = parse_purpose(&headers, &names) {
            if let Some(id) = &p.case_id {
                assert!(!id.is_empty() && id.len() <= 64);
            }
            if let Some(r) = &p.break_glass_reason {
                assert!(r.chars().count() >= 20);
            }
        }
    }
}

#[test]
fn config_parser_never_panics() {
    let pool = corpus("config");
    let base = common::repo().join("examples/demo");
    let mut rng = rng(4);
    for i in 0..iters() {
        let input = mutate(&mut rng, &pool[i % pool.len()], &pool);
        let text = String::from_utf8_lossy(&input);
        if let Err(e) = Config::parse(&text, &base) {
            assert!(!e.is_empty());
        }
    }
}

/// A real audit log: a few requests through a gate.
async fn seed_log() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let h = common::Harness::start_with(common::Options {
        audit_dir: Some(dir.path().join("audit")),
        audit_extra: "segment_max_bytes = 2048".into(),
        ..common::Options::default()
    })
    .await;
    let q = common::raadpleeg(&["999993653"], &["naam"]);
    for case in [Some("Z-OPEN"), None, Some("Z-CLOSED"), Some("Z-OPEN")] {
        h.brp(&h.emp042(), case, &q).await;
    }
    let mut h = h;
    h.stop().await;
    dir
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn audit_reader_and_recovery_never_panic_on_mutated_segments() {
    let seed = seed_log().await;
    let src = seed.path().join("audit");
    let segs = segments(&src);
    assert!(segs.len() >= 2, "the seed log rotated");
    assert!(verify(&src).is_ok(), "the seed log verifies");
    let mut pool: Vec<Vec<u8>> = segs.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let corpus_dir = common::repo().join("fuzz/corpus/audit_segment");
    if std::env::var_os("HARDENING_FUZZ_WRITE_CORPUS").is_some() {
        for s in &segs {
            std::fs::copy(s, corpus_dir.join(s.file_name().unwrap())).unwrap();
        }
    }
    pool.extend(corpus("audit_segment"));

    // Line parser.
    let mut rng = rng(5);
    let lines: Vec<Vec<u8>> = pool
        .iter()
        .flat_map(|s| s.split(|b| *b == b'\n').map(<[u8]>::to_vec))
        .filter(|l| !l.is_empty())
        .collect();
    for i in 0..iters() * 4 {
        let input = mutate(&mut rng, &lines[i % lines.len()], &lines);
        let _ = parse_record(&input);
    }

    // Directory open (recovery) and verify, one mutated segment at a time.
    let rounds = (iters() / 15).max(50);
    for i in 0..rounds {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("audit");
        std::fs::create_dir(&dir).unwrap();
        for s in &segs {
            std::fs::copy(s, dir.join(s.file_name().unwrap())).unwrap();
        }
        let victim = &segs[i % segs.len()];
        let bytes = std::fs::read(victim).unwrap();
        let mutated = mutate(&mut rng, &bytes, &pool);
        std::fs::write(dir.join(victim.file_name().unwrap()), &mutated).unwrap();
        let _ = verify(&dir);
        let opened = AuditLog::open(&AuditOptions {
            dir: dir.clone(),
            segment_max_bytes: 2048,
            max_batch: 64,
        });
        if let Ok(log) = opened {
            log.close().await;
        }
    }
}
