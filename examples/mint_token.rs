//! Prints one ES256 employee token signed with the demo identity provider's key, for the load
//! benchmark (`bench/proxy.sh`) and for trying the gate by hand.
//!
//! `cargo run --example mint_token -- --sub emp-042 --org 0363 --roles vergunningverlener`
//! (`--department Vergunningen` adds the department claim)
//!
//! Guarantees: the token carries the demo `kid`, issuer and audience and is valid from now for
//! `--ttl` seconds. Refuses: a key file that is not a P-256 PKCS#8 PEM (exit code 2). Test and
//! demo equipment only: the demo key is public.

#[path = "common/tokens.rs"]
mod tokens;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Mints a demo employee token (ES256) and prints it on standard output.
#[derive(Debug, Parser)]
#[command(name = "mint_token")]
struct Args {
    /// The employee id (`sub`).
    #[arg(long, default_value = "emp-042")]
    sub: String,
    /// The organisation code (`org`).
    #[arg(long, default_value = "0363")]
    org: String,
    /// Roles, comma-separated (`roles`).
    #[arg(long, default_value = "vergunningverlener", value_delimiter = ',')]
    roles: Vec<String>,
    /// The department (`department`), recorded with the principal; none when absent.
    #[arg(long)]
    department: Option<String>,
    /// Seconds the token stays valid.
    #[arg(long, default_value_t = 3600)]
    ttl: i64,
    /// The signing key (P-256, PKCS#8 PEM).
    #[arg(long, default_value = "examples/demo/keys/demo-signing-key.pem")]
    key: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let pem = match std::fs::read(&args.key) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mint_token: cannot read `{}`: {e}", args.key.display());
            return ExitCode::from(2);
        }
    };
    let roles: Vec<&str> = args.roles.iter().map(String::as_str).collect();
    let mut claims = tokens::employee_claims(
        tokens::DEMO_ISSUER,
        tokens::DEMO_AUDIENCE,
        &args.sub,
        &args.org,
        &roles,
        args.ttl,
    );
    if let Some(d) = &args.department {
        claims["department"] = serde_json::Value::String(d.clone());
    }
    match tokens::mint(&pem, tokens::DEMO_KID, &claims) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mint_token: {e}");
            ExitCode::from(2)
        }
    }
}
