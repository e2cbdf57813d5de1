//! `purpose-gate`: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of the C library's allocator: a request allocates and frees many small
/// objects on two runtime threads (Cedar values, JSON, headers), and glibc's malloc took about
/// 9 % of the gate's CPU under load (`perf`, see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    purpose_gate::cli::run(purpose_gate::cli::Cli::parse())
}
