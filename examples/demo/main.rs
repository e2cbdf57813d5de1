//! The demo: the example registry and the gate in front of it, with the shipped policies, the
//! sample cases and demo keys; prints ready-to-paste curl commands with valid tokens. Also the
//! auditor console over the demo's audit log, behind the example identity provider, and the
//! console's URL with a login.
//!
//! `cargo run --example demo [-- --listen 127.0.0.1:8080 --console 127.0.0.1:8081 --idp 127.0.0.1:8082]`
//!
//! The console and the IdP listen next to the gate (its port + 1 and + 2) unless told otherwise;
//! port `0` picks a free one.

#[path = "../common/idp.rs"]
mod idp;
#[path = "../common/registry.rs"]
mod registry;
#[path = "../common/tokens.rs"]
mod tokens;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::Value;

use purpose_gate::config::Config;

/// The day the sample cases' dates are written for; the demo shifts them to today.
const CASES_WRITTEN_FOR: (i32, u32, u32) = (2026, 11, 29);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let mut listen = "127.0.0.1:8080".to_string();
    let mut console_listen = None;
    let mut idp_listen = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().ok_or("`--listen` needs an address")?,
            "--console" => {
                console_listen = Some(args.next().ok_or("`--console` needs an address")?)
            }
            "--idp" => idp_listen = Some(args.next().ok_or("`--idp` needs an address")?),
            "-h" | "--help" => {
                println!(
                    "usage: cargo run --example demo [-- --listen ADDR] [--console ADDR] [--idp ADDR]"
                );
                return Ok(());
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let gate_addr: SocketAddr = listen
        .parse()
        .map_err(|e| format!("`--listen {listen}`: {e}"))?;
    let console_addr = beside(&gate_addr, console_listen.as_deref(), 1, "--console")?;
    let idp_addr = beside(&gate_addr, idp_listen.as_deref(), 2, "--idp")?;
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = repo.join("target/demo");
    std::fs::create_dir_all(&work)
        .map_err(|e| format!("cannot create `{}`: {e}", work.display()))?;
    write_shifted_cases(
        &repo.join("examples/demo/cases.json"),
        &work.join("cases.json"),
    )?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async move {
        let data = registry::load_data(&repo.join("examples/data"))?;
        let (reg_addr, reg_task) = registry::spawn(data)
            .await
            .map_err(|e| format!("cannot start the example registry: {e}"))?;
        // The example IdP for the console's login (users `auditor`/`auditor`, `medewerker`/`medewerker`).
        let idp_listener = tokio::net::TcpListener::bind(idp_addr)
            .await
            .map_err(|e| format!("cannot listen on `{idp_addr}` for the example IdP: {e}"))?;
        let (idp_issuer, idp_task) = idp::spawn(
            idp_listener,
            CONSOLE_CLIENT,
            CONSOLE_SECRET,
            idp::demo_users(),
        )
        .await?;
        let console_addr = free_if_zero(console_addr)?;
        std::fs::write(work.join("console-session.key"), rand::random::<[u8; 32]>())
            .map_err(|e| format!("cannot write the console's session key: {e}"))?;
        std::fs::write(work.join("console-client.secret"), CONSOLE_SECRET)
            .map_err(|e| format!("cannot write the console's client secret: {e}"))?;
        let config = format!(
            r#"# Written by the demo; examples/demo/config.toml is the hand-written equivalent.
gate_id = "demo-gate"
[server]
listen = "{listen}"
[auth]
issuer = "{issuer}"
audience = "{audience}"
jwks_file = "{jwks}"
[policies]
dir = "{policies}"
[cases]
file = "cases.json"
[audit]
dir = "audit"
[upstreams.brp]
url = "http://{reg_addr}"
headers = {{ "X-Api-Key" = "demo-upstream-key" }}
[upstreams.rdw]
url = "http://{reg_addr}"
[console]
listen = "{console_addr}"
name = "demo-console"
issuer = "{idp_issuer}"
client_id = "{CONSOLE_CLIENT}"
client_secret_file = "console-client.secret"
redirect_url = "http://{console_addr}/callback"
session_key_file = "console-session.key"
"#,
            issuer = tokens::DEMO_ISSUER,
            audience = tokens::DEMO_AUDIENCE,
            jwks = repo.join("examples/demo/keys/jwks.json").display(),
            policies = repo.join("policies").display(),
        );
        let config_path = work.join("gate.toml");
        std::fs::write(&config_path, config)
            .map_err(|e| format!("cannot write `{}`: {e}", config_path.display()))?;
        let cfg = Config::load(&config_path).map_err(|e| e.to_string())?;
        let running = purpose_gate::listener::start(&cfg)
            .await
            .map_err(|e| e.to_string())?;
        // The console appends its access records through the gate's writer (the spool), so it
        // starts after the gate holds the log.
        let console = purpose_gate::console::start(&cfg).await?;
        let key = std::fs::read(repo.join("examples/demo/keys/demo-signing-key.pem"))
            .map_err(|e| format!("cannot read the demo signing key: {e}"))?;
        print_guide(&format!("http://{}", running.addr), reg_addr, &key, &work)?;
        print_console(&format!("http://{}", console.addr), &idp_issuer, &work);
        purpose_gate::listener::shutdown_signal().await;
        println!("\nstopping: flushing the audit log");
        console.shutdown().await;
        running.shutdown().await;
        reg_task.abort();
        idp_task.abort();
        Ok(())
    })
}

/// The console's client at the example IdP.
const CONSOLE_CLIENT: &str = "purpose-gate-console";
/// The demo client's secret (a demo value, written to `target/demo/console-client.secret`).
const CONSOLE_SECRET: &str = "demo-console-secret";

/// The address given, or the gate's with its port moved by `offset`.
fn beside(
    gate: &SocketAddr,
    given: Option<&str>,
    offset: u16,
    flag: &str,
) -> Result<SocketAddr, String> {
    match given {
        Some(a) => a.parse().map_err(|e| format!("`{flag} {a}`: {e}")),
        None if gate.port() == 0 => Ok(SocketAddr::new(gate.ip(), 0)),
        None => {
            let port = gate
                .port()
                .checked_add(offset)
                .ok_or_else(|| format!("no port beside {gate}: give `{flag}`"))?;
            Ok(SocketAddr::new(gate.ip(), port))
        }
    }
}

/// `addr`, or a free port on its address when its port is `0` (the console's callback URL must
/// name the port before the console listens).
fn free_if_zero(addr: SocketAddr) -> Result<SocketAddr, String> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    std::net::TcpListener::bind(addr)
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("cannot find a free port on `{}`: {e}", addr.ip()))
}

fn print_console(console: &str, issuer: &str, work: &Path) {
    println!("\nauditor console (the audit log in the browser)");
    println!("  console:           {console}/");
    println!("  example IdP:       {issuer}");
    println!("  login:             auditor / auditor   (role `auditor`)");
    println!("                     medewerker / medewerker   (no console role: 403)");
    println!(
        "  or by hand:        cargo run --quiet -- console --config {}",
        work.join("gate.toml").display()
    );
    println!("                     (stop the demo first: it serves the same port)");
}

/// Copies the sample cases, moving every date by the days since they were written, so that
/// open cases are open and ended cases have ended whenever the demo runs.
fn write_shifted_cases(from: &Path, to: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(from)
        .map_err(|e| format!("cannot read `{}`: {e}", from.display()))?;
    let mut doc: Value =
        serde_json::from_str(&text).map_err(|e| format!("`{}`: {e}", from.display()))?;
    let (y, m, d) = CASES_WRITTEN_FOR;
    let written = NaiveDate::from_ymd_opt(y, m, d).ok_or("bad anchor date")?;
    let shift = Utc::now()
        .date_naive()
        .signed_duration_since(written)
        .num_days();
    if let Some(cases) = doc.get_mut("cases").and_then(Value::as_array_mut) {
        for case in cases {
            for key in ["opened", "closes"] {
                if let Some(s) = case.get(key).and_then(Value::as_str)
                    && let Ok(t) = DateTime::parse_from_rfc3339(s)
                {
                    let moved = t.with_timezone(&Utc) + Duration::days(shift);
                    case[key] = Value::String(moved.to_rfc3339());
                }
            }
        }
    }
    let out = serde_json::to_vec_pretty(&doc).map_err(|e| e.to_string())?;
    std::fs::write(to, out).map_err(|e| format!("cannot write `{}`: {e}", to.display()))
}

fn token(key: &[u8], sub: &str, org: &str, roles: &[&str]) -> Result<String, String> {
    let claims = tokens::employee_claims(
        tokens::DEMO_ISSUER,
        tokens::DEMO_AUDIENCE,
        sub,
        org,
        roles,
        8 * 3600,
    );
    tokens::mint(key, tokens::DEMO_KID, &claims)
}

fn print_guide(
    gate: &str,
    registry: std::net::SocketAddr,
    key: &[u8],
    work: &Path,
) -> Result<(), String> {
    let emp042 = token(key, "emp-042", "0363", &["vergunningverlener"])?;
    let emp900 = token(key, "emp-900", "0363", &["noodtoegang"])?;
    let emp107 = token(key, "emp-107", "0363", &["handhaver"])?;
    let brp = format!("{gate}/haalcentraal/api/brp/personen");
    let body = |bsn: &str| {
        format!(
            r#"'{{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":["{bsn}"],"fields":["naam","verblijfplaats"]}}'"#
        )
    };
    println!("purpose-gate demo");
    println!("  gate:              {gate}");
    println!("  example registry:  http://{registry} (BRP Personen v2 + RDW)");
    println!("  audit log:         {}", work.join("audit").display());
    println!("  config:            {}", work.join("gate.toml").display());
    println!("  tokens are valid for 8 hours; Ctrl-C stops the demo\n");
    println!("export T042={emp042}");
    println!("export T900={emp900}");
    println!("export T107={emp107}\n");
    println!("# 1. allowed: emp-042 looks up the subject of their open parking-permit case");
    println!(
        "curl -s -i {brp} -H \"Authorization: Bearer $T042\" -H 'X-Case-Id: Z-2026-000123' -H 'Content-Type: application/json' -d {}\n",
        body("999993653")
    );
    println!("# 2. denied (subjectNotInCase): a person who is not in that case");
    println!(
        "curl -s {brp} -H \"Authorization: Bearer $T042\" -H 'X-Case-Id: Z-2026-000123' -H 'Content-Type: application/json' -d {}\n",
        body("999993872")
    );
    println!("# 3. denied (caseClosed): a closed case");
    println!(
        "curl -s {brp} -H \"Authorization: Bearer $T042\" -H 'X-Case-Id: Z-2026-000087' -H 'Content-Type: application/json' -d {}\n",
        body("999991802")
    );
    println!("# 4. break-glass: emp-900 (noodtoegang) looks up a protected person without a case");
    println!(
        "curl -s -i {brp} -H \"Authorization: Bearer $T900\" -H 'X-Break-Glass: police report of acute danger, ref 2026-4471' -H 'Content-Type: application/json' -d {}\n",
        body("999990639")
    );
    println!("# 5. holder lookup: emp-042 asks who holds the vehicle named in their case");
    println!(
        "curl -s -i {gate}/rdw/voertuigen/XX-999-X/tenaamstelling -H \"Authorization: Bearer $T042\" -H 'X-Case-Id: Z-2026-000123'\n"
    );
    let search = |pc: &str, nr: u32| {
        format!(
            r#"'{{"type":"ZoekMetPostcodeEnHuisnummer","postcode":"{pc}","huisnummer":{nr},"fields":["naam"]}}'"#
        )
    };
    println!(
        "# 6. address search: emp-107 searches the address their enforcement case names; the residents are released"
    );
    println!(
        "curl -s -i {brp} -H \"Authorization: Bearer $T107\" -H 'X-Case-Id: Z-2026-000201' -H 'Content-Type: application/json' -d {}\n",
        search("1094HH", 88)
    );
    println!(
        "# 7. denied (addressNotInCase): an address the case does not name; nothing is forwarded"
    );
    println!(
        "curl -s {brp} -H \"Authorization: Bearer $T107\" -H 'X-Case-Id: Z-2026-000201' -H 'Content-Type: application/json' -d {}\n",
        search("1017CB", 502)
    );
    println!(
        "# 8. denied (protectedPerson): the holder of GZ-123-K is protected; the release decision refuses the answer"
    );
    println!(
        "curl -s {gate}/rdw/voertuigen/GZ-123-K/tenaamstelling -H \"Authorization: Bearer $T107\" -H 'X-Case-Id: Z-2026-000201'\n"
    );
    println!(
        "# 9. BRP Bewoning: who lives at the address the enforcement case names (each resident decided)"
    );
    println!(
        "curl -s -i {gate}/haalcentraal/api/bewoning/bewoningen -H \"Authorization: Bearer $T107\" -H 'X-Case-Id: Z-2026-000201' -H 'Content-Type: application/json' -d '{{\"type\":\"BewoningMetPeildatum\",\"peildatum\":\"{}\",\"adresseerbaarObjectIdentificatie\":\"0363010000088001\"}}'\n",
        chrono::Utc::now().date_naive()
    );
    println!("# then: is the audit log intact?");
    println!(
        "cargo run --quiet -- audit verify --dir {}",
        work.join("audit").display()
    );
    Ok(())
}
