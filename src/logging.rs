//! Operational logs (`[log]` and `RUST_LOG`): human text or one JSON object per line.
//!
//! Guarantees: every line logged while a request is handled carries that request's span
//! (`request_id`, `trace_id`). Refuses to be a second audit log: the gate never logs a token,
//! a BSN, a request body or a request path (which can hold a BSN); the audit log is the only
//! place those appear.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber writing to `writer`. `RUST_LOG` wins over `[log] level`;
/// with neither the level is `info`.
pub fn init<W>(cfg: &LogConfig, writer: W) -> Result<(), String>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = match EnvFilter::try_from_default_env() {
        Ok(f) => f,
        Err(_) => {
            let level = cfg.level.as_deref().unwrap_or("info");
            EnvFilter::try_new(level)
                .map_err(|e| format!("`log.level` = `{level}` is not a valid filter: {e}"))?
        }
    };
    // `log_internal_errors(false)`: a log line that cannot be written (stderr on a full disk)
    // is dropped. With `true`, tracing-subscriber reports the failure with `eprintln!`, which
    // panics when stderr fails too, and so ended whichever thread logged: the audit writer
    // thread, when it logged its own write failure on a full disk.
    let installed = match cfg.format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_target(false)
            .with_writer(writer)
            .log_internal_errors(false)
            .try_init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .log_internal_errors(false)
            .try_init(),
    };
    installed.map_err(|e| format!("cannot install the log subscriber: {e}"))
}
