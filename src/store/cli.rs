//! The command-line side of the store: `store migrate`, `audit ship`, and the `--db` variants of
//! the auditor commands. Long runs show progress on standard error when it is a terminal and
//! stay quiet when piped.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::{StoreConfig, StoreError};
use crate::audit::query::{Filter, QueryResult};

/// Where an auditor command reads the log: one directory, or the central store.
#[derive(Debug, Clone, clap::Args)]
pub struct LogSource {
    /// The audit directory.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "db",
        conflicts_with = "db"
    )]
    pub dir: Option<PathBuf>,
    /// The central store (`postgres://…`): answer over every gate's shipped records.
    #[arg(long, value_name = "URL")]
    pub db: Option<String>,
    /// With `--db`: only this gate.
    #[arg(long, value_name = "ID", requires = "db")]
    pub gate: Option<String>,
}

/// A single-threaded runtime for one command.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::from(1)
        })
}

async fn connect(url: &str) -> Result<deadpool_postgres::Client, StoreError> {
    let pool = super::pool(&StoreConfig::from_url(url))?;
    Ok(pool.get().await?)
}

fn store_failed(e: &StoreError) -> ExitCode {
    eprintln!("error: {e}");
    match e {
        StoreError::Config(_) | StoreError::Usage(_) => ExitCode::from(2),
        _ => ExitCode::from(1),
    }
}

/// Progress on standard error, at most a few times a second, only when it is a terminal.
pub struct Progress {
    on: bool,
    last: Instant,
    what: &'static str,
}

impl Progress {
    pub fn new(what: &'static str) -> Progress {
        Progress {
            on: std::io::stderr().is_terminal(),
            last: Instant::now(),
            what,
        }
    }

    pub fn update(&mut self, n: u64) {
        if self.on && self.last.elapsed() >= Duration::from_millis(250) {
            self.last = Instant::now();
            let _ = write!(std::io::stderr(), "\r{} {n} records", self.what);
        }
    }

    pub fn done(&self) {
        if self.on {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// `purpose-gate store migrate --db URL`.
pub fn migrate(url: &str) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let mut client = match connect(url).await {
            Ok(c) => c,
            Err(e) => return store_failed(&e),
        };
        match super::schema::migrate(&mut client).await {
            Ok(applied) if applied.is_empty() => {
                println!(
                    "ok: schema version {} is current, nothing to do",
                    super::schema::SCHEMA_VERSION
                );
                ExitCode::SUCCESS
            }
            Ok(applied) => {
                for v in applied {
                    println!("applied migration {v}");
                }
                println!("ok: schema version {}", super::schema::SCHEMA_VERSION);
                ExitCode::SUCCESS
            }
            Err(e) => store_failed(&e),
        }
    })
}

/// `audit ship --dir D --db URL [--gate ID]`: ships a directory by hand.
pub fn ship(dir: &Path, url: &str, gate: Option<&str>) -> ExitCode {
    if !dir.is_dir() {
        eprintln!("error: audit directory `{}` does not exist", dir.display());
        return ExitCode::from(2);
    }
    let gate_id = match gate.map(str::to_string).or_else(|| gate_of(dir)) {
        Some(g) => g,
        None => {
            eprintln!(
                "error: `{}` holds no decision record naming its gate; give `--gate ID`",
                dir.display()
            );
            return ExitCode::from(2);
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let pool = match super::pool(&StoreConfig::from_url(url)) {
            Ok(p) => p,
            Err(e) => return store_failed(&e),
        };
        if let Err(e) = async { super::schema::check(&pool.get().await?).await }.await {
            return store_failed(&e);
        }
        let mut progress = Progress::new("shipped up to seq");
        let result =
            super::ship::ship_dir(&pool, &gate_id, dir, 5000, |seq| progress.update(seq)).await;
        progress.done();
        match result {
            Ok((n, at)) => {
                // Snapshots of records shipped before schema version 2 (idempotent).
                let snapshots = match super::ship::ship_snapshots(&pool, &gate_id, dir).await {
                    Ok(k) => k,
                    Err(e) => return store_failed(&e),
                };
                println!(
                    "ok: gate `{gate_id}`: shipped {n} records, the store holds seq 1..={}; {snapshots} case snapshots stored",
                    at.seq
                );
                ExitCode::SUCCESS
            }
            Err(super::ship::ShipDirError::Store(e)) => store_failed(&e),
            Err(e) => {
                println!("FAILED: gate `{gate_id}`: {e}");
                ExitCode::from(1)
            }
        }
    })
}

/// The `gate` of the first decision record of a directory.
fn gate_of(dir: &Path) -> Option<String> {
    let mut records = crate::audit::read_records(dir).ok()?;
    while let Some(Ok((_, record))) = records.next_ref() {
        if let crate::audit::Record::Decision(d) = record {
            return Some(d.gate);
        }
    }
    None
}

/// `audit verify --db URL [--gate ID] [--pubkey FILE]`.
pub fn verify(
    url: &str,
    gate: Option<&str>,
    key: Option<&ed25519_dalek::VerifyingKey>,
) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let client = match connect(url).await {
            Ok(c) => c,
            Err(e) => return store_failed(&e),
        };
        let mut progress = Progress::new("verified");
        let result = super::verify::verify_store(&client, key, gate, |n| progress.update(n)).await;
        progress.done();
        match result {
            Ok(gates) => {
                for g in &gates {
                    println!(
                        "ok: gate `{}`: {} records, chain intact, {} checkpoints match",
                        g.gate_id, g.records, g.checkpoints
                    );
                }
                match super::review::verify_reviews(&client).await {
                    Ok(Ok(n)) => println!(
                        "ok: review chain: {n} reviews made against the store, chain intact"
                    ),
                    Ok(Err(failure)) => {
                        println!("FAILED: {failure}");
                        return ExitCode::from(1);
                    }
                    Err(e) => return store_failed(&e),
                }
                if gates.is_empty() {
                    println!("note: the store holds no gate");
                }
                if key.is_none() {
                    println!("note: checkpoint signatures not checked (no --pubkey)");
                }
                ExitCode::SUCCESS
            }
            Err(super::verify::VerifyError::Failed(f)) => {
                println!("FAILED: {f}");
                ExitCode::from(1)
            }
            Err(super::verify::VerifyError::Store(e)) => store_failed(&e),
        }
    })
}

/// The query over the store, for `audit query --db` and the reports.
pub fn query(url: &str, gate: Option<&str>, filter: &Filter) -> Result<QueryResult, ExitCode> {
    let rt = runtime()?;
    rt.block_on(async {
        let client = connect(url).await.map_err(|e| store_failed(&e))?;
        let per_gate = super::query::query_store(&client, filter, gate)
            .await
            .map_err(|e| store_failed(&e))?;
        Ok(super::query::merge(per_gate))
    })
}

/// The case snapshots `hashes` from the store (`audit report subject --db`: the case types).
pub fn case_snapshots(
    url: &str,
    hashes: &std::collections::BTreeSet<String>,
) -> Result<std::collections::HashMap<String, crate::model::Case>, ExitCode> {
    let rt = runtime()?;
    rt.block_on(async {
        let client = connect(url).await.map_err(|e| store_failed(&e))?;
        super::query::case_snapshots(&client, hashes)
            .await
            .map_err(|e| store_failed(&e))
    })
}

/// The policy tools' exit when the store gives no answer: 2, as for any replay or explain that
/// cannot answer (1 means flips found).
fn no_answer(e: &StoreError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

/// `policy replay --db URL [--gate ID]`: the store's decisions replayed under `candidate`.
pub fn replay(
    url: &str,
    gate: Option<&str>,
    candidate: &Path,
    opts: &crate::policy::replay::ReplayOptions,
) -> Result<crate::policy::replay::ReplayReport, ExitCode> {
    let rt = runtime()?;
    rt.block_on(async {
        let client = connect(url).await.map_err(|e| no_answer(&e))?;
        super::policy::replay_store(&client, candidate, gate, opts)
            .await
            .map_err(|e| no_answer(&e))
    })
}

/// `policy explain --db URL [--gate ID] --seq N`.
pub fn explain(url: &str, gate: Option<&str>, dir: &Path, seq: u64) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let client = match connect(url).await {
            Ok(c) => c,
            Err(e) => return no_answer(&e),
        };
        match super::policy::explain_store(&client, dir, gate, seq).await {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => no_answer(&e),
        }
    })
}

/// `audit review --db URL [--gate ID] --seq N --by ID --verdict V`: a review appended to the
/// store's review chain.
pub fn review(
    url: &str,
    gate: Option<&str>,
    seq: u64,
    by: &str,
    verdict: crate::audit::ReviewVerdict,
    note: Option<&str>,
) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let mut client = match connect(url).await {
            Ok(c) => c,
            Err(e) => return store_failed(&e),
        };
        match super::review::append_review(&mut client, gate, seq, by, verdict, note).await {
            Ok(done) => {
                println!(
                    "ok: review of gate `{}` seq {seq} stored as seq {} of the store's review chain",
                    done.gate, done.seq
                );
                ExitCode::SUCCESS
            }
            Err(e) => store_failed(&e),
        }
    })
}
