//! The example registry as a program: BRP Personen (`POST /personen`) and RDW
//! (`GET /voertuigen/{kenteken}[/tenaamstelling]`) on one port, from fictitious data.
//!
//! `cargo run --example example_registry -- --listen 127.0.0.1:9001 --data examples/data`

#[path = "common/registry.rs"]
mod registry;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

/// Serves fictitious BRP and RDW data for the purpose-gate demo.
#[derive(Debug, Parser)]
#[command(name = "example_registry")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Directory with `personen.json` and `voertuigen.json`.
    #[arg(long, default_value = "examples/data")]
    data: PathBuf,
    /// Print one line per request received (method, path, case and request id headers).
    #[arg(long)]
    verbose: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let data = match registry::load_data(&args.data) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("example_registry: {e}");
            return ExitCode::from(2);
        }
    };
    // The registry only serves, so it keeps no request log beyond the printed lines.
    let mut data = data.with_log_limit(0);
    if args.verbose {
        data = data.with_on_request(Arc::new(|r: &registry::SeenRequest| {
            eprintln!(
                "{} {} x-request-id={} x-doelbinding={}",
                r.method,
                r.path,
                r.header("x-request-id").unwrap_or("-"),
                r.header("x-doelbinding").unwrap_or("-"),
            );
        }));
    }
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("example_registry: cannot listen on `{}`: {e}", args.listen);
            return ExitCode::from(2);
        }
    };
    let addr = listener.local_addr().unwrap_or(args.listen);
    println!(
        "example registry: {} persons, {} vehicles",
        data.bsns().len(),
        data.kentekens().len()
    );
    println!("  BRP  POST http://{addr}/personen");
    println!("  RDW  GET  http://{addr}/voertuigen/{{kenteken}}[/tenaamstelling]");
    tokio::select! {
        () = registry::serve(listener, data) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    ExitCode::SUCCESS
}
