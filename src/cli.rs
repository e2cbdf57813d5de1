//! The command line: `serve`, `policy check|test`, `audit verify|keygen|prove|check-proof|…`.
//!
//! Exit codes: 0 ok, 1 a check failed, 2 usage or configuration error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::store::cli::LogSource;

/// Purpose-bound, audited reverse proxy for Dutch registry APIs.
#[derive(Debug, Parser)]
#[command(name = "purpose-gate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// `serve` and `console` run until stopped; every other command does its work and exits.
    pub fn runs_a_server(&self) -> bool {
        matches!(
            self.command,
            Command::Serve { .. } | Command::Console { .. }
        )
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gate.
    Serve {
        /// The TOML config file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run the auditor console (`[console]` in the config): the audit log in the browser.
    Console {
        /// The TOML config file (its `[console]` and `[audit]` sections).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate and test Cedar policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Verify and query the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The central store on PostgreSQL (`docs/scale-out.md`).
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Create or upgrade the store's schema (versioned; running it again does nothing).
    Migrate {
        /// The store (`postgres://…`).
        #[arg(long, value_name = "URL")]
        db: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate schema, policies and entities strictly.
    Check(PolicyArgs),
    /// Run the policy tests in `<dir>/tests/*.json` (cedar run-tests format).
    Test {
        #[command(flatten)]
        args: PolicyArgs,
        /// Also report, per policy, the tests that made it determining and the conditions no
        /// test made false.
        #[arg(long)]
        coverage: bool,
    },
    /// Prove the properties in `<dir>/properties/*.toml` for every schema-valid request
    /// (Cedar's symbolic compiler and cvc5). Exit 0: all hold; 1: one fails; 2: no answer.
    Prove {
        #[command(flatten)]
        args: PolicyArgs,
        /// The SMT solver executable (cvc5, or scripts/cvc5-smt); default `$CVC5`, else `cvc5`.
        #[arg(long, value_name = "FILE")]
        solver: Option<PathBuf>,
    },
    /// Decide the recorded decisions of an audit log again under candidate policies and report
    /// the flips (allow->deny, deny->allow). Exit 1 when a flip is not in the accept file.
    Replay {
        /// The candidate policy directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The audit directory.
        #[arg(
            long,
            value_name = "DIR",
            required_unless_present = "db",
            conflicts_with = "db"
        )]
        audit: Option<PathBuf>,
        /// The central store (`postgres://…`): replay every gate's shipped decisions.
        #[arg(long, value_name = "URL")]
        db: Option<String>,
        /// With `--db`: only this gate.
        #[arg(long, value_name = "ID", requires = "db")]
        gate: Option<String>,
        #[command(flatten)]
        period: PeriodArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = TableFormat::Table)]
        format: TableFormat,
        /// Intended changes: a JSON array of {direction?, policy?, code?, seq?, note?}.
        #[arg(long, value_name = "FILE")]
        accept: Option<PathBuf>,
    },
    /// Explain one recorded decision: the request, each policy for its action, and which
    /// condition held or failed.
    Explain {
        /// The audit directory.
        #[arg(
            long,
            value_name = "DIR",
            required_unless_present = "db",
            conflicts_with = "db"
        )]
        audit: Option<PathBuf>,
        /// The central store (`postgres://…`).
        #[arg(long, value_name = "URL")]
        db: Option<String>,
        /// With `--db`: the gate whose record `--seq` is (needed when the store holds several).
        #[arg(long, value_name = "ID", requires = "db")]
        gate: Option<String>,
        /// The decision record.
        #[arg(long, value_name = "N")]
        seq: u64,
        /// The policy directory to evaluate with (default `policies`).
        #[arg(long, value_name = "DIR", default_value = "policies")]
        dir: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    /// The policy directory.
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    pub dir: Option<PathBuf>,
    /// Take the policy directory from this config file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain and every signed checkpoint of the log (`--db`: of every gate).
    Verify {
        #[command(flatten)]
        source: LogSource,
        /// Check checkpoint signatures with this public key (SPKI PEM from `audit keygen`).
        #[arg(long, value_name = "FILE")]
        pubkey: Option<PathBuf>,
    },
    /// Write an Ed25519 key pair for signing checkpoints (private key mode 0600).
    Keygen {
        /// Directory for the key files (created when absent; existing keys are kept).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Print an inclusion proof (JSON) of a record against the latest checkpoint.
    Prove {
        /// The audit directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The record to prove.
        #[arg(long, value_name = "N")]
        seq: u64,
    },
    /// Decisions joined with their outcomes, filtered.
    Query {
        #[command(flatten)]
        filter: Box<FilterArgs>,
        /// Output format (`json`: JSON Lines, one row per line).
        #[arg(long, value_enum, default_value_t = TableFormat::Table)]
        format: TableFormat,
    },
    /// A citizen's access report (GDPR art. 15): every lookup of and disclosure about a person.
    SubjectReport {
        #[command(flatten)]
        source: LogSource,
        /// The person's BSN (in the clear, also for a pseudonymised log).
        #[arg(long)]
        bsn: String,
        #[command(flatten)]
        period: PeriodArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
        /// The `[audit] subject_key` file, for a log with pseudonymised subjects.
        #[arg(long, value_name = "FILE")]
        subject_key: Option<PathBuf>,
    },
    /// Every person and vehicle whose data an employee obtained.
    IncidentReport {
        #[command(flatten)]
        source: LogSource,
        /// The employee id.
        #[arg(long)]
        employee: String,
        #[command(flatten)]
        period: PeriodArgs,
        /// Output format (`json`: one document).
        #[arg(long, value_enum, default_value_t = TableFormat::Table)]
        format: TableFormat,
    },
    /// Snooping signals per employee, ranked, each with the seqs that support it.
    Signals {
        #[command(flatten)]
        source: LogSource,
        #[command(flatten)]
        period: PeriodArgs,
        /// Working hours, e.g. `Mon-Fri 07:00-19:00 +01:00` (default: from `--config`, else
        /// `Mon-Fri 07:00-19:00` UTC).
        #[arg(long, value_name = "SPEC")]
        working_hours: Option<String>,
        /// Take `[audit] working_hours` and `employee_directory` from this gate config.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Employees' surnames (JSON `{"id": "surname"}` or CSV with columns `employee`,
        /// `surname`), for the shared-surname signal; default `[audit] employee_directory`.
        #[arg(long, value_name = "FILE")]
        employee_directory: Option<PathBuf>,
        /// The looked-up persons' surnames, exported from the BRP (JSON `{"bsn": "surname"}`
        /// or CSV with columns `bsn`, `surname`), for the shared-surname signal.
        #[arg(long, value_name = "FILE")]
        subject_names: Option<PathBuf>,
        /// The `[audit] subject_key` file, for a log with pseudonymised subjects.
        #[arg(long, value_name = "FILE")]
        subject_key: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
    },
    /// Append a review of a decision (the log is never edited). With `--db`: to the store's
    /// own review chain (`--gate` names the reviewed gate when the store holds several).
    Review {
        #[command(flatten)]
        source: LogSource,
        /// The seq of the reviewed decision record.
        #[arg(long, value_name = "N")]
        seq: u64,
        /// The reviewer's id.
        #[arg(long, value_name = "AUDITOR")]
        by: String,
        /// The verdict.
        #[arg(long, value_enum)]
        verdict: VerdictArg,
        /// A note.
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
        /// Seconds to wait for a running gate to append the review.
        #[arg(long, value_name = "SECS", default_value_t = 30)]
        timeout: u64,
    },
    /// Ship an audit directory into the central store by hand (e.g. a decommissioned gate).
    Ship {
        /// The audit directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The store (`postgres://…`).
        #[arg(long, value_name = "URL")]
        db: String,
        /// The gate id to ship under (default: the `gate` of the directory's decisions).
        #[arg(long, value_name = "ID")]
        gate: Option<String>,
    },
    /// Check an inclusion proof without access to the log.
    CheckProof {
        /// The proof file written by `audit prove`.
        #[arg(value_name = "FILE")]
        proof: PathBuf,
        /// The log's public key (SPKI PEM).
        #[arg(long, value_name = "FILE")]
        pubkey: PathBuf,
    },
}

/// Filters shared by the auditor commands.
#[derive(Debug, clap::Args)]
pub struct FilterArgs {
    #[command(flatten)]
    pub source: LogSource,
    /// A person (BSN, in the clear; pseudonymised with `--subject-key`).
    #[arg(long, value_name = "BSN")]
    pub subject: Option<String>,
    /// A vehicle (hyphens and lowercase are normalised).
    #[arg(long)]
    pub kenteken: Option<String>,
    /// An employee id.
    #[arg(long)]
    pub employee: Option<String>,
    /// An organisation id.
    #[arg(long)]
    pub org: Option<String>,
    /// A case id.
    #[arg(long = "case")]
    pub case_id: Option<String>,
    /// A Cedar action (`brp:lookup`, `brp:search`, `rdw:vehicle`, `rdw:holder`).
    #[arg(long)]
    pub action: Option<String>,
    /// `allow` or `deny`.
    #[arg(long, value_enum)]
    pub decision: Option<DecisionArg>,
    /// Only break-glass requests.
    #[arg(long)]
    pub break_glass: bool,
    /// From this time (RFC 3339, or a date `YYYY-MM-DD` meaning 00:00 UTC), inclusive.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Up to this time (RFC 3339, or a date meaning 00:00 UTC), exclusive.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// The `[audit] subject_key` file, for a log with pseudonymised subjects.
    #[arg(long, value_name = "FILE")]
    pub subject_key: Option<PathBuf>,
    /// The request with this FSC TransactionID (`Fsc-Transaction-Id`, from an FSC
    /// TransactionLog record).
    #[arg(long, value_name = "ID")]
    pub fsc_transaction_id: Option<String>,
}

/// A time window.
#[derive(Debug, clap::Args)]
pub struct PeriodArgs {
    /// From this time (RFC 3339, or `YYYY-MM-DD` meaning 00:00 UTC), inclusive.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Up to this time, exclusive.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
}

/// Output of reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
    Html,
}

/// A review verdict.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum VerdictArg {
    Ok,
    Suspicious,
}

/// `allow` or `deny`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DecisionArg {
    Allow,
    Deny,
}

/// Output of row-shaped commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TableFormat {
    Table,
    Json,
    Csv,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config } => serve(&config),
        Command::Console { config } => console(&config),
        Command::Policy(cmd) => policy(cmd),
        Command::Audit(cmd) => audit(cmd),
        Command::Store(StoreCommand::Migrate { db }) => crate::store::cli::migrate(&db),
    }
}

fn init_logging(cfg: &crate::config::LogConfig) -> Result<(), ExitCode> {
    crate::logging::init(cfg, std::io::stderr).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

fn load_config(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

/// The multi-threaded runtime of a long-running command; exit code 2 when it cannot start.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::from(2)
        })
}

fn serve(config: &Path) -> ExitCode {
    let cfg = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(code) = init_logging(&cfg.log) {
        return code;
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let running = match crate::listener::start(&cfg).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        tracing::info!(addr = %running.addr, gate = %cfg.gate_id, "purpose-gate listening");
        crate::listener::shutdown_signal().await;
        running.shutdown().await;
        ExitCode::SUCCESS
    })
}

fn console(config: &Path) -> ExitCode {
    let cfg = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if cfg.console.is_none() {
        eprintln!(
            "error: `{}`: missing section `[console]`: the console needs `issuer`, `client_id`, `redirect_url` and `session_key_file`",
            config.display()
        );
        return ExitCode::from(2);
    }
    if let Err(code) = init_logging(&cfg.log) {
        return code;
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let running = match crate::console::start(&cfg).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: `{}`: {e}", config.display());
                return ExitCode::from(2);
            }
        };
        tracing::info!(addr = %running.addr, "auditor console listening");
        crate::listener::shutdown_signal().await;
        running.shutdown().await;
        ExitCode::SUCCESS
    })
}

fn policy_dir(args: &PolicyArgs) -> Result<PathBuf, ExitCode> {
    match (&args.dir, &args.config) {
        (Some(d), _) => Ok(d.clone()),
        (None, Some(c)) => load_config(c).map(|cfg| cfg.policies.dir),
        (None, None) => {
            eprintln!("error: give `--dir DIR` or `--config FILE`");
            Err(ExitCode::from(2))
        }
    }
}

fn policy(cmd: PolicyCommand) -> ExitCode {
    let (args, test) = match &cmd {
        PolicyCommand::Check(a) => (a, false),
        PolicyCommand::Test { args, coverage } => {
            if *coverage {
                return policy_coverage(args);
            }
            (args, true)
        }
        PolicyCommand::Prove { args, solver } => return policy_prove(args, solver.as_deref()),
        PolicyCommand::Replay {
            dir,
            audit,
            db,
            gate,
            period,
            format,
            accept,
        } => {
            let source = match (audit, db) {
                (Some(a), _) => ReplaySource::Dir(a),
                (None, Some(url)) => ReplaySource::Db(url, gate.as_deref()),
                (None, None) => return usage_error("give `--audit DIR` or `--db URL`"),
            };
            return policy_replay(dir, source, period, *format, accept.as_deref());
        }
        PolicyCommand::Explain {
            audit,
            db: Some(url),
            gate,
            seq,
            dir,
        } if audit.is_none() => {
            return crate::store::cli::explain(url, gate.as_deref(), dir, *seq);
        }
        PolicyCommand::Explain {
            audit, seq, dir, ..
        } => {
            let Some(audit) = audit else {
                return usage_error("give `--audit DIR` or `--db URL`");
            };
            let actions = crate::registry::Registries::standard().actions();
            return match crate::policy::explain::explain(dir, audit, *seq, &actions) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => usage_error(&e),
            };
        }
    };
    let dir = match policy_dir(args) {
        Ok(d) => d,
        Err(code) => return code,
    };
    if !dir.is_dir() {
        eprintln!("error: policy directory `{}` does not exist", dir.display());
        return ExitCode::from(2);
    }
    if test {
        match crate::policy::run_tests(&dir) {
            Ok(report) => {
                println!("{report}");
                if report.ok() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        }
    } else {
        match crate::policy::check(&dir) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        }
    }
}

fn policy_coverage(args: &PolicyArgs) -> ExitCode {
    let dir = match policy_dir(args) {
        Ok(d) => d,
        Err(code) => return code,
    };
    match crate::policy::coverage::run(&dir) {
        Ok((tests, coverage)) => {
            println!("{tests}");
            println!("{coverage}");
            if tests.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn policy_prove(args: &PolicyArgs, solver: Option<&Path>) -> ExitCode {
    let dir = match policy_dir(args) {
        Ok(d) => d,
        Err(code) => return code,
    };
    if !dir.is_dir() {
        eprintln!("error: policy directory `{}` does not exist", dir.display());
        return ExitCode::from(2);
    }
    match crate::policy::prove::prove(&dir, solver) {
        Ok(report) => {
            println!("{report}");
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Where `policy replay` reads the recorded decisions.
enum ReplaySource<'a> {
    Dir(&'a Path),
    Db(&'a str, Option<&'a str>),
}

fn policy_replay(
    dir: &Path,
    source: ReplaySource<'_>,
    period_args: &PeriodArgs,
    format: TableFormat,
    accept: Option<&Path>,
) -> ExitCode {
    use crate::policy::replay;
    let (since, until) = match period(period_args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if !dir.is_dir() {
        eprintln!("error: directory `{}` does not exist", dir.display());
        return ExitCode::from(2);
    }
    if let ReplaySource::Dir(audit) = source
        && !audit.is_dir()
    {
        eprintln!("error: directory `{}` does not exist", audit.display());
        return ExitCode::from(2);
    }
    let accept = match accept.map(replay::load_accept).transpose() {
        Ok(a) => a.unwrap_or_default(),
        Err(e) => return usage_error(&e),
    };
    let opts = replay::ReplayOptions {
        since,
        until,
        accept,
        actions: crate::registry::Registries::standard().actions(),
    };
    let report = match source {
        ReplaySource::Dir(audit) => match replay::replay(dir, audit, &opts) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        ReplaySource::Db(url, gate) => match crate::store::cli::replay(url, gate, dir, &opts) {
            Ok(r) => r,
            Err(code) => return code,
        },
    };
    match format {
        TableFormat::Table => print!("{}", replay::render_table(&report)),
        TableFormat::Csv => print!("{}", replay::render_csv(&report)),
        TableFormat::Json => {
            if print_json(&report) != ExitCode::SUCCESS {
                return ExitCode::from(2);
            }
        }
    }
    if report.unaccepted() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn audit(cmd: AuditCommand) -> ExitCode {
    match cmd {
        AuditCommand::Verify { source, pubkey } => audit_verify(&source, pubkey.as_deref()),
        AuditCommand::Ship { dir, db, gate } => crate::store::cli::ship(&dir, &db, gate.as_deref()),
        AuditCommand::Keygen { out } => match crate::audit::checkpoint::keygen(&out) {
            Ok((private, public)) => {
                println!("private key: {}", private.display());
                println!("public key: {}", public.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        AuditCommand::Prove { dir, seq } => audit_prove(&dir, seq),
        AuditCommand::CheckProof { proof, pubkey } => audit_check_proof(&proof, &pubkey),
        AuditCommand::Query { filter, format } => audit_query(&filter, format),
        AuditCommand::SubjectReport {
            source,
            bsn,
            period,
            format,
            subject_key,
        } => audit_subject_report(&source, &bsn, &period, format, subject_key.as_deref()),
        AuditCommand::IncidentReport {
            source,
            employee,
            period,
            format,
        } => audit_incident_report(&source, &employee, &period, format),
        AuditCommand::Signals {
            source,
            period,
            working_hours,
            config,
            employee_directory,
            subject_names,
            subject_key,
            format,
        } => audit_signals(
            &source,
            &period,
            working_hours,
            config.as_deref(),
            SurnameFiles {
                employee_directory,
                subject_names,
                subject_key,
            },
            format,
        ),
        AuditCommand::Review {
            source,
            seq,
            by,
            verdict,
            note,
            timeout,
        } => audit_review(&source, seq, &by, verdict, note, timeout),
    }
}

type Period = (
    Option<chrono::DateTime<chrono::Utc>>,
    Option<chrono::DateTime<chrono::Utc>>,
);

fn period(p: &PeriodArgs) -> Result<Period, ExitCode> {
    let time = |s: &Option<String>| {
        s.as_deref()
            .map(parse_time)
            .transpose()
            .map_err(|e| usage_error(&e))
    };
    Ok((time(&p.since)?, time(&p.until)?))
}

fn run_query(
    source: &LogSource,
    filter: &crate::audit::query::Filter,
) -> Result<crate::audit::query::QueryResult, ExitCode> {
    let Some(dir) = &source.dir else {
        let db = source.db.as_deref().unwrap_or_default();
        return crate::store::cli::query(db, source.gate.as_deref(), filter);
    };
    crate::audit::query::query(dir, filter).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(1)
    })
}

fn print_json<T: serde::Serialize>(value: &T) -> ExitCode {
    match serde_json::to_string_pretty(value) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot encode the report: {e}");
            ExitCode::from(1)
        }
    }
}

fn audit_subject_report(
    source: &LogSource,
    bsn: &str,
    p: &PeriodArgs,
    format: ReportFormat,
    subject_key: Option<&Path>,
) -> ExitCode {
    if let Err(code) = existing_source(source) {
        return code;
    }
    let (since, until) = match period(p) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let key = match subject_key
        .map(crate::audit::pseudonym::SubjectKey::load)
        .transpose()
    {
        Ok(k) => k,
        Err(e) => return usage_error(&e),
    };
    let bsn = bsn.trim();
    let stored = crate::audit::pseudonym::subject_id(key.as_ref(), "Person", bsn);
    let filter = crate::audit::query::Filter {
        subject: Some(stored.clone()),
        since,
        until,
        ..Default::default()
    };
    let result = match run_query(source, &filter) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let mut report = crate::audit::report::subject_report(&result, bsn, &stored, since, until);
    // The case types from the case snapshots beside the log, or in the central store.
    match (&source.dir, source.db.as_deref()) {
        (Some(dir), _) => {
            report.fill_case_types(|hash| crate::audit::snapshots::read_snapshot(dir, hash).ok())
        }
        (None, Some(db)) => {
            let hashes = report
                .entries
                .iter()
                .filter_map(|e| e.case_snapshot.clone())
                .collect();
            let cases = match crate::store::cli::case_snapshots(db, &hashes) {
                Ok(c) => c,
                Err(code) => return code,
            };
            report.fill_case_types(|hash| cases.get(hash).cloned());
        }
        (None, None) => {}
    }
    match format {
        ReportFormat::Text => {
            print!("{}", report.text());
            ExitCode::SUCCESS
        }
        ReportFormat::Html => {
            print!("{}", report.html());
            ExitCode::SUCCESS
        }
        ReportFormat::Json => print_json(&report),
    }
}

fn audit_incident_report(
    source: &LogSource,
    employee: &str,
    p: &PeriodArgs,
    format: TableFormat,
) -> ExitCode {
    if let Err(code) = existing_source(source) {
        return code;
    }
    let (since, until) = match period(p) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let filter = crate::audit::query::Filter {
        employee: Some(employee.to_string()),
        since,
        until,
        ..Default::default()
    };
    let result = match run_query(source, &filter) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let report = crate::audit::report::incident_report(&result, employee);
    match format {
        TableFormat::Table => {
            print!("{}", report.text());
            ExitCode::SUCCESS
        }
        TableFormat::Csv => {
            print!(
                "{}",
                crate::audit::query::csv(&crate::audit::report::INCIDENT_COLUMNS, &report.cells())
            );
            ExitCode::SUCCESS
        }
        TableFormat::Json => print_json(&report),
    }
}

/// The files of the shared-surname signal, as given on the command line.
struct SurnameFiles {
    employee_directory: Option<PathBuf>,
    subject_names: Option<PathBuf>,
    subject_key: Option<PathBuf>,
}

/// Loads the names for the shared-surname signal; `None` when it is off. The directory without
/// the subjects' names (or the reverse) is a usage error when given on the command line; a
/// directory from the config without `--subject-names` only switches the signal off (noted).
fn surname_inputs(
    files: SurnameFiles,
    from_config: Option<PathBuf>,
) -> Result<Option<crate::audit::report::SurnameInputs>, String> {
    use crate::audit::surname::NameTable;
    let explicit = files.employee_directory.is_some();
    let directory = files.employee_directory.or(from_config);
    let (directory, names) = match (directory, files.subject_names) {
        (None, None) => return Ok(None),
        (Some(_), None) if !explicit => {
            eprintln!(
                "note: shared_surname is off: the log holds no names, give `--subject-names FILE`"
            );
            return Ok(None);
        }
        (Some(_), None) => {
            return Err(
                "`--employee-directory` needs `--subject-names FILE`: the log holds no names of persons"
                    .into(),
            );
        }
        (None, Some(_)) => {
            return Err(
                "`--subject-names` needs `--employee-directory FILE` (or `[audit] employee_directory` with `--config`)"
                    .into(),
            );
        }
        (Some(d), Some(n)) => (d, n),
    };
    let employees = NameTable::load(&directory, "employee")?;
    let key = files
        .subject_key
        .as_deref()
        .map(crate::audit::pseudonym::SubjectKey::load)
        .transpose()?;
    let subjects = NameTable::load(&names, "bsn")?
        .iter()
        .map(|(bsn, surname)| {
            (
                crate::audit::pseudonym::subject_id(key.as_ref(), "Person", bsn),
                (bsn.to_string(), surname.to_string()),
            )
        })
        .collect();
    Ok(Some(crate::audit::report::SurnameInputs {
        employees,
        subjects,
    }))
}

fn audit_signals(
    source: &LogSource,
    p: &PeriodArgs,
    working_hours: Option<String>,
    config: Option<&Path>,
    surname_files: SurnameFiles,
    format: ReportFormat,
) -> ExitCode {
    if let Err(code) = existing_source(source) {
        return code;
    }
    let (since, until) = match period(p) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let audit_config = match config.map(load_config).transpose() {
        Ok(c) => c.map(|c| c.audit),
        Err(code) => return code,
    };
    let spec = working_hours
        .or_else(|| audit_config.as_ref().map(|a| a.working_hours.clone()))
        .unwrap_or_else(|| crate::config::AuditConfig::default().working_hours);
    let hours = match crate::audit::report::WorkingHours::parse(&spec) {
        Ok(h) => h,
        Err(e) => return usage_error(&e),
    };
    let surnames = match surname_inputs(
        surname_files,
        audit_config.and_then(|a| a.employee_directory),
    ) {
        Ok(s) => s,
        Err(e) => return usage_error(&e),
    };
    let filter = crate::audit::query::Filter {
        since,
        until,
        ..Default::default()
    };
    let result = match run_query(source, &filter) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let mut opts = crate::audit::report::SignalOptions::new(hours);
    opts.surnames = surnames;
    let list = crate::audit::report::signals(&result, &opts);
    match format {
        ReportFormat::Text => {
            print!("{}", crate::audit::report::signals_text(&list));
            ExitCode::SUCCESS
        }
        ReportFormat::Html => {
            print!("{}", crate::audit::report::signals_html(&list));
            ExitCode::SUCCESS
        }
        ReportFormat::Json => print_json(&list),
    }
}

fn audit_review(
    source: &LogSource,
    seq: u64,
    by: &str,
    verdict: VerdictArg,
    note: Option<String>,
    timeout: u64,
) -> ExitCode {
    let verdict = match verdict {
        VerdictArg::Ok => crate::audit::ReviewVerdict::Ok,
        VerdictArg::Suspicious => crate::audit::ReviewVerdict::Suspicious,
    };
    let Some(dir) = &source.dir else {
        let db = source.db.as_deref().unwrap_or_default();
        return crate::store::cli::review(
            db,
            source.gate.as_deref(),
            seq,
            by,
            verdict,
            note.as_deref(),
        );
    };
    if let Err(code) = existing_dir(dir) {
        return code;
    }
    let timeout = std::time::Duration::from_secs(timeout);
    match crate::audit::review::append_review(dir, seq, by, verdict, note, timeout) {
        Ok(done) => {
            if done.by_gate {
                eprintln!("note: a running gate holds the log; its writer appended the review");
            }
            println!("ok: review of seq {seq} appended as seq {}", done.seq);
            ExitCode::SUCCESS
        }
        Err(crate::audit::review::ReviewError::Usage(m)) => usage_error(&m),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Parses `--since`/`--until`: RFC 3339, or a date meaning 00:00 UTC.
fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("`{s}` is not a time: expected RFC 3339 or `YYYY-MM-DD`"))
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

/// Builds the query filter (deriving the pseudonym of `--subject` when a key is given).
fn build_filter(args: &FilterArgs) -> Result<crate::audit::query::Filter, ExitCode> {
    existing_source(&args.source)?;
    let key = args
        .subject_key
        .as_deref()
        .map(crate::audit::pseudonym::SubjectKey::load)
        .transpose()
        .map_err(|e| usage_error(&e))?;
    let time = |s: &Option<String>| {
        s.as_deref()
            .map(parse_time)
            .transpose()
            .map_err(|e| usage_error(&e))
    };
    Ok(crate::audit::query::Filter {
        subject: args
            .subject
            .as_deref()
            .map(|b| crate::audit::pseudonym::subject_id(key.as_ref(), "Person", b.trim())),
        kenteken: args
            .kenteken
            .as_deref()
            .map(crate::audit::query::normalise_kenteken),
        employee: args.employee.clone(),
        org: args.org.clone(),
        case: args.case_id.clone(),
        action: args.action.clone(),
        decision: args.decision.map(|d| match d {
            DecisionArg::Allow => crate::audit::Verdict::Allow,
            DecisionArg::Deny => crate::audit::Verdict::Deny,
        }),
        break_glass: args.break_glass.then_some(true),
        since: time(&args.since)?,
        until: time(&args.until)?,
        fsc_transaction_id: args
            .fsc_transaction_id
            .as_deref()
            .map(|id| id.trim().to_string()),
    })
}

fn audit_query(args: &FilterArgs, format: TableFormat) -> ExitCode {
    use crate::audit::query;
    let filter = match build_filter(args) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let result = match run_query(&args.source, &filter) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let out = match format {
        TableFormat::Json => {
            let mut out = String::new();
            for row in &result.rows {
                match serde_json::to_string(row) {
                    Ok(line) => {
                        out.push_str(&line);
                        out.push('\n');
                    }
                    Err(e) => {
                        eprintln!("error: cannot encode a row: {e}");
                        return ExitCode::from(1);
                    }
                }
            }
            out
        }
        TableFormat::Table | TableFormat::Csv => {
            let rows: Vec<Vec<String>> = result.rows.iter().map(query::cells).collect();
            if format == TableFormat::Csv {
                query::csv(&query::COLUMNS, &rows)
            } else {
                let mut t = query::table(&query::COLUMNS, &rows);
                t.push_str(&format!(
                    "{} decisions of {} records\n",
                    result.rows.len(),
                    result.records
                ));
                t
            }
        }
    };
    print!("{out}");
    ExitCode::SUCCESS
}

/// A `--dir` must exist; a `--db` is checked when connecting.
fn existing_source(source: &LogSource) -> Result<(), ExitCode> {
    match &source.dir {
        Some(dir) => existing_dir(dir),
        None => Ok(()),
    }
}

fn existing_dir(dir: &Path) -> Result<(), ExitCode> {
    if dir.is_dir() {
        Ok(())
    } else {
        eprintln!("error: audit directory `{}` does not exist", dir.display());
        Err(ExitCode::from(2))
    }
}

fn load_pubkey(path: &Path) -> Result<ed25519_dalek::VerifyingKey, ExitCode> {
    crate::audit::checkpoint::load_verifying_key(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

fn audit_verify(source: &LogSource, pubkey: Option<&Path>) -> ExitCode {
    if let Err(code) = existing_source(source) {
        return code;
    }
    let key = match pubkey.map(load_pubkey).transpose() {
        Ok(k) => k,
        Err(code) => return code,
    };
    let Some(dir) = &source.dir else {
        let db = source.db.as_deref().unwrap_or_default();
        return crate::store::cli::verify(db, source.gate.as_deref(), key.as_ref());
    };
    match crate::audit::integrity::verify_log(dir, key.as_ref()) {
        Ok(s) => {
            println!(
                "ok: {} records in {} segments, chain intact",
                s.records, s.segments
            );
            let signatures = if s.signatures_checked {
                "signatures valid"
            } else {
                "signatures not checked (no --pubkey)"
            };
            match &s.latest {
                Some((size, _)) => println!(
                    "ok: {} checkpoints match the records, {signatures}; latest covers seq 1..={size}",
                    s.checkpoints
                ),
                None => println!("note: no checkpoints (no `[audit] signing_key`)"),
            }
            ExitCode::SUCCESS
        }
        Err(f) => {
            match f.seq {
                Some(seq) => println!("FAILED at seq {seq}: {}", f.message),
                None => println!("FAILED: {}", f.message),
            }
            ExitCode::from(1)
        }
    }
}

fn audit_prove(dir: &Path, seq: u64) -> ExitCode {
    if let Err(code) = existing_dir(dir) {
        return code;
    }
    match crate::audit::integrity::prove(dir, seq) {
        Ok(proof) => match serde_json::to_string_pretty(&proof) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot encode the proof: {e}");
                ExitCode::from(1)
            }
        },
        Err(f) => {
            println!("FAILED: {}", f.message);
            ExitCode::from(1)
        }
    }
}

fn audit_check_proof(path: &Path, pubkey: &Path) -> ExitCode {
    let key = match load_pubkey(pubkey) {
        Ok(k) => k,
        Err(code) => return code,
    };
    let proof: crate::audit::integrity::InclusionProof = match std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: proof file `{}`: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    match crate::audit::integrity::check_proof(&proof, &key) {
        Ok(c) => {
            println!(
                "ok: record seq {} is included in checkpoint `{}` of {} records (signature valid)",
                proof.seq, c.origin, c.tree_size
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("FAILED: {e}");
            ExitCode::from(1)
        }
    }
}
