//! The command line: `serve`, `policy check|test`, `audit verify|query`.
//!
//! Exit codes: 0 ok, 1 a check failed, 2 usage or configuration error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

/// Purpose-bound, audited reverse proxy for Dutch registry APIs.
#[derive(Debug, Parser)]
#[command(name = "purpose-gate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gate.
    Serve {
        /// The TOML config file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate and test Cedar policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Verify and query the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate schema, policies and entities strictly.
    Check(PolicyArgs),
    /// Run the policy tests in `<dir>/tests/*.json` (cedar run-tests format).
    Test(PolicyArgs),
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
    /// Verify the hash chain of the whole log.
    Verify {
        /// The audit directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config } => serve(&config),
        Command::Policy(cmd) => policy(cmd),
        Command::Audit(AuditCommand::Verify { dir }) => audit_verify(&dir),
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

fn serve(config: &Path) -> ExitCode {
    let cfg = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(code) = init_logging(&cfg.log) {
        return code;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
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
        PolicyCommand::Test(a) => (a, true),
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

fn audit_verify(dir: &Path) -> ExitCode {
    if !dir.is_dir() {
        eprintln!("error: audit directory `{}` does not exist", dir.display());
        return ExitCode::from(2);
    }
    match crate::audit::verify(dir) {
        Ok(s) => {
            println!(
                "ok: {} records in {} segments, chain intact",
                s.records, s.segments
            );
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
