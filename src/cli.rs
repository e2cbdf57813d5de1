//! The command line: `serve`, `policy check|test`, `audit verify|keygen|prove|check-proof|…`.
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
    /// Verify the hash chain and every signed checkpoint of the log.
    Verify {
        /// The audit directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
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

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config } => serve(&config),
        Command::Policy(cmd) => policy(cmd),
        Command::Audit(cmd) => audit(cmd),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

fn load_config(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

fn serve(config: &Path) -> ExitCode {
    init_logging();
    let cfg = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
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
    if test {
        crate::policy::cli_test(&dir)
    } else {
        crate::policy::cli_check(&dir)
    }
}

fn audit(cmd: AuditCommand) -> ExitCode {
    match cmd {
        AuditCommand::Verify { dir, pubkey } => audit_verify(&dir, pubkey.as_deref()),
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

fn audit_verify(dir: &Path, pubkey: Option<&Path>) -> ExitCode {
    if let Err(code) = existing_dir(dir) {
        return code;
    }
    let key = match pubkey.map(load_pubkey).transpose() {
        Ok(k) => k,
        Err(code) => return code,
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
