//! `purpose-gate`: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of the C library's allocator: a request allocates and frees many small
/// objects on two runtime threads (Cedar values, JSON, headers), and glibc's malloc took about
/// 9 % of the gate's CPU under load (`perf`, see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = purpose_gate::cli::Cli::parse();
    if !cli.runs_a_server() {
        end_quietly_when_the_reader_goes();
    }
    purpose_gate::cli::run(cli)
}

/// EPIPE on Linux: the error of a write into a pipe whose reader has gone.
const EPIPE: i32 = 32;

/// A one-shot command whose reader closes the pipe early (`audit query … | head`) ends as a Unix
/// tool killed by SIGPIPE does: no message, exit code 141 (128 + SIGPIPE). Rust ignores SIGPIPE
/// (so that a closed socket is an error the program sees, which the store connections of
/// `--db` commands rely on) and `println!` panics when its write fails; this turns that one
/// panic, and no other, into the quiet exit.
fn end_quietly_when_the_reader_goes() {
    let report = std::panic::take_hook();
    let closed = std::io::Error::from_raw_os_error(EPIPE).to_string();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        // std's message: "failed printing to stdout: Broken pipe (os error 32)".
        if msg.starts_with("failed printing to std") && msg.ends_with(closed.as_str()) {
            std::process::exit(141);
        }
        report(info);
    }));
}
