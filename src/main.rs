//! `purpose-gate`: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    purpose_gate::cli::run(purpose_gate::cli::Cli::parse())
}
