//! The example ZGW Zaken API on its own, for the demo with the case registry switched to it
//! (`examples/zaken-demo/config.toml`, `docs/zgw.md`).
//!
//! `cargo run --example zaken-demo [-- --listen 127.0.0.1:9002] [--data FILE] [--secret-file FILE]
//! [--client-id ID] [--page-size N]`
//!
//! The dates in the data file are written for 2026-11-29 and moved to today, so that open zaken
//! are open and ended windows have ended whenever the demo runs.

#[path = "../common/zaken.rs"]
mod zaken;

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{Days, NaiveDate, Utc};
use serde_json::Value;

/// The day the sample zaken's dates are written for.
const WRITTEN_FOR: (i32, u32, u32) = (2026, 11, 29);

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
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut listen = "127.0.0.1:9002".to_string();
    let mut data = repo.join("examples/zaken-demo/zaken.json");
    let mut secret_file = repo.join("examples/zaken-demo/zgw.secret");
    let mut client_id = "purpose-gate".to_string();
    let mut page_size = zaken::DEFAULT_PAGE_SIZE;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("`{a}` needs a value"));
        match a.as_str() {
            "--listen" => listen = value()?,
            "--data" => data = PathBuf::from(value()?),
            "--secret-file" => secret_file = PathBuf::from(value()?),
            "--client-id" => client_id = value()?,
            "--page-size" => {
                let v = value()?;
                page_size = v
                    .parse()
                    .map_err(|_| format!("`--page-size` = `{v}`: expected a number"))?;
            }
            "-h" | "--help" => {
                println!(
                    "usage: cargo run --example zaken-demo -- [--listen ADDR] [--data FILE] \
                     [--secret-file FILE] [--client-id ID] [--page-size N]"
                );
                return Ok(());
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let secret = std::fs::read(&secret_file)
        .map_err(|e| format!("cannot read `{}`: {e}", secret_file.display()))?;
    let text = std::fs::read_to_string(&data)
        .map_err(|e| format!("cannot read `{}`: {e}", data.display()))?;
    let mut doc: Value =
        serde_json::from_str(&text).map_err(|e| format!("`{}`: {e}", data.display()))?;
    shift_dates(&mut doc)?;
    let zaken = zaken::ZakenData::from_json(&doc, &client_id, secret.trim_ascii())
        .map_err(|e| format!("`{}`: {e}", data.display()))?;
    zaken.set_page_size(page_size);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| format!("cannot listen on `{listen}`: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        println!("example Zaken API at {}", zaken::base_url(addr));
        println!(
            "  client id `{client_id}`, secret from `{}`",
            secret_file.display()
        );
        println!("  try: GET /zaken?identificatie=Z-2026-000123 with a ZGW JWT");
        tokio::select! {
            () = zaken::serve(listener, zaken) => {}
            _ = tokio::signal::ctrl_c() => println!("stopping"),
        }
        Ok(())
    })
}

/// Moves every `startdatum`, `einddatum` and `einddatumGepland` by the days since the data was
/// written.
fn shift_dates(doc: &mut Value) -> Result<(), String> {
    let (y, m, d) = WRITTEN_FOR;
    let written = NaiveDate::from_ymd_opt(y, m, d).ok_or("bad anchor date")?;
    let shift = Utc::now()
        .date_naive()
        .signed_duration_since(written)
        .num_days();
    let Some(zaken) = doc.get_mut("zaken").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    for zaak in zaken {
        for key in ["startdatum", "einddatum", "einddatumGepland"] {
            let Some(date) = zaak
                .get(key)
                .and_then(Value::as_str)
                .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
            else {
                continue;
            };
            let moved = if shift >= 0 {
                date.checked_add_days(Days::new(shift.unsigned_abs()))
            } else {
                date.checked_sub_days(Days::new(shift.unsigned_abs()))
            };
            if let Some(moved) = moved {
                zaak[key] = Value::String(moved.to_string());
            }
        }
    }
    Ok(())
}
