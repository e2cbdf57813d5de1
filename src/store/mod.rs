//! The central audit store on PostgreSQL (`[store]`, `docs/scale-out.md`): many gates, one
//! audit trail and cluster-wide counters.
//!
//! INVARIANT: the local audit log stays the write-ahead log. Nothing here is on the request
//! path: the [`ship`] follower copies durable records into the store in the background, and the
//! [`counters`] refresher reads other gates' counts in the background. A store that is slow or
//! gone never stops a lookup (unless `max_backlog_age` is set and exceeded).
//!
//! Guarantees: a row `(gate_id, seq)` holds exactly the bytes of that gate's line `seq`; rows and
//! the shipped position commit in one transaction; a second history for shipped keys is recorded
//! as an equivocation and never overwrites a row. Refuses: a schema newer than this binary knows.

pub mod cli;
pub mod counters;
pub mod policy;
pub mod prove;
pub mod query;
pub mod review;
pub mod schema;
pub mod ship;
pub mod verify;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

pub use crate::config::{SslMode, StoreConfig};

/// The store could not be reached, or answered something this gate cannot accept.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Connecting, or a statement, failed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The schema is not the one this binary works with.
    #[error("store schema: {0}")]
    Schema(String),
    /// A configuration value cannot be used.
    #[error("store config: {0}")]
    Config(String),
    /// The command asks for something the store cannot answer as asked (an unknown gate, a
    /// missing `--gate`, a record that is no decision).
    #[error("{0}")]
    Usage(String),
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        StoreError::Unavailable(one_line(&e))
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> StoreError {
        StoreError::Unavailable(one_line(&e))
    }
}

/// An error with its source chain on one line (tokio-postgres puts the server's message there).
fn one_line(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text.replace('\n', " ")
}

/// Builds the connection pool (connections are opened lazily, on first use).
pub fn pool(cfg: &StoreConfig) -> Result<Pool, StoreError> {
    let mut pg: tokio_postgres::Config = cfg
        .url
        .parse()
        .map_err(|_| StoreError::Config("`store.url` is not a PostgreSQL URL".into()))?;
    if let Some(path) = &cfg.password_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            StoreError::Config(format!(
                "cannot read `store.password_file` `{}`: {e}",
                path.display()
            ))
        })?;
        pg.password(text.lines().next().unwrap_or_default());
    }
    pg.connect_timeout(Duration::from_secs(5));
    if pg.get_application_name().is_none() {
        pg.application_name("purpose-gate");
    }
    let loopback = pg.get_hosts().iter().all(|h| match h {
        tokio_postgres::config::Host::Tcp(name) => {
            name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        tokio_postgres::config::Host::Unix(_) => true,
    });
    let mode = cfg.sslmode.unwrap_or(if loopback {
        SslMode::Disable
    } else {
        SslMode::VerifyFull
    });
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match mode {
        SslMode::Disable => {
            pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
            Manager::from_config(pg, tokio_postgres::NoTls, manager_config)
        }
        SslMode::VerifyFull => {
            pg.ssl_mode(tokio_postgres::config::SslMode::Require);
            let tls = tls_config(cfg.ca_file.as_deref())?;
            Manager::from_config(
                pg,
                tokio_postgres_rustls::MakeRustlsConnect::new(tls),
                manager_config,
            )
        }
    };
    Pool::builder(manager)
        .max_size(4)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Config(format!("cannot build the connection pool: {e}")))
}

fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, StoreError> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Config(format!("tls: {e}")))?;
    let roots = match ca_file {
        Some(path) => crate::tls::load_roots(path, "store.ca_file").map_err(StoreError::Config)?,
        None => {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            roots
        }
    };
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// Connects and checks the schema version: the gate's start.
pub async fn open(cfg: &StoreConfig) -> Result<Pool, StoreError> {
    let pool = pool(cfg)?;
    let client = pool.get().await?;
    schema::check(&client).await?;
    drop(client);
    Ok(pool)
}

/// The store attached to a running gate: the shipper and the counter refresher.
pub struct Attached {
    pub status: std::sync::Arc<ship::ShipStatus>,
    /// 1 while the cluster counters could not be refreshed.
    pub counters_stale: std::sync::Arc<std::sync::atomic::AtomicBool>,
    max_backlog_age: Option<Duration>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Attached {
    /// Starts shipping `audit`'s durable records and refreshing `counters`. A store that cannot
    /// be reached at start is no reason to refuse lookups (the shipper retries); a reachable
    /// store with another schema version is.
    pub async fn start(
        cfg: &StoreConfig,
        gate_id: &str,
        dir: &std::path::Path,
        audit: &crate::audit::AuditLog,
        counters: std::sync::Arc<crate::counters::LookupCounters>,
    ) -> Result<Attached, StoreError> {
        use std::sync::Arc;
        let pool = pool(cfg)?;
        match tokio::time::timeout(Duration::from_secs(5), pool.get()).await {
            Ok(Ok(client)) => schema::check(&client).await?,
            Ok(Err(e)) => {
                tracing::warn!(error = %one_line(&e), "store: unreachable at start; lookups continue, records are shipped once it is back")
            }
            Err(_) => tracing::warn!(
                "store: no connection within 5s at start; lookups continue, records are shipped once it is back"
            ),
        }
        let status = Arc::new(ship::ShipStatus::default());
        let counters_stale = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let shipper = ship::Shipper {
            pool: pool.clone(),
            gate_id: gate_id.to_string(),
            dir: dir.to_path_buf(),
            batch: cfg.ship_batch,
            linger: cfg
                .max_backlog_age
                .map_or(ship::SHIP_LINGER, |max| ship::SHIP_LINGER.min(max.0 / 4)),
            status: Arc::clone(&status),
            tap: audit.tap(ship::TAP_MAX_BYTES),
        };
        let log = audit.clone();
        let durable: Arc<dyn Fn() -> u64 + Send + Sync> = Arc::new(move || log.durable_seq());
        let mut tasks = vec![tokio::spawn(shipper.run(durable, stop_rx))];
        tasks.push(tokio::spawn(counters::refresh_loop(
            pool,
            gate_id.to_string(),
            counters,
            cfg.counter_refresh.0,
            Arc::clone(&counters_stale),
        )));
        Ok(Attached {
            status,
            counters_stale,
            max_backlog_age: cfg.max_backlog_age.map(|d| d.0),
            stop,
            tasks,
        })
    }

    /// Whether `max_backlog_age` is set and the oldest unshipped record is older.
    pub fn backlog_exceeded(&self) -> bool {
        self.max_backlog_age
            .is_some_and(|max| self.status.backlog_age() > max)
    }

    /// One line for `/readyz`.
    pub fn readiness(&self) -> String {
        use std::sync::atomic::Ordering;
        format!(
            "store: shipped seq {}, backlog {} records, oldest {} ms{}{}",
            self.status.shipped_seq.load(Ordering::Relaxed),
            self.status.backlog(),
            self.status.backlog_age().as_millis(),
            if self.status.stopped.load(Ordering::Relaxed) {
                ", SHIPPING STOPPED (equivocation)"
            } else {
                ""
            },
            if self.backlog_exceeded() {
                ", backlog older than max_backlog_age: refusing lookups"
            } else {
                ""
            }
        )
    }

    /// The store's lines for `/metrics` (Prometheus text format).
    pub fn render_metrics(&self) -> String {
        use std::fmt::Write;
        use std::sync::atomic::Ordering;
        let s = &self.status;
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "purpose_gate_store_shipped_seq",
            "gauge",
            "Last audit seq committed to the central store.",
            s.shipped_seq.load(Ordering::Relaxed).to_string(),
        );
        metric(
            "purpose_gate_store_backlog_records",
            "gauge",
            "Durable audit records not yet in the central store.",
            s.backlog().to_string(),
        );
        metric(
            "purpose_gate_store_backlog_age_seconds",
            "gauge",
            "Age of the oldest audit record not yet in the central store.",
            format!("{:.3}", s.backlog_age().as_secs_f64()),
        );
        metric(
            "purpose_gate_store_shipped_records_total",
            "counter",
            "Audit records shipped by this process.",
            s.shipped_records.load(Ordering::Relaxed).to_string(),
        );
        metric(
            "purpose_gate_store_ship_errors_total",
            "counter",
            "Failed shipping attempts (retried).",
            s.errors.load(Ordering::Relaxed).to_string(),
        );
        metric(
            "purpose_gate_store_equivocations_total",
            "counter",
            "Local histories found to differ from the shipped one (shipping stops).",
            s.equivocations.load(Ordering::Relaxed).to_string(),
        );
        metric(
            "purpose_gate_store_counters_stale",
            "gauge",
            "1 while other gates' counts could not be read from the store.",
            u8::from(self.counters_stale.load(Ordering::Relaxed)).to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP purpose_gate_store_lines_read_total Audit lines the shipper took: as the writer handed them over in memory, or read back from the segments.\n\
             # TYPE purpose_gate_store_lines_read_total counter\n\
             purpose_gate_store_lines_read_total{{from=\"memory\"}} {}\n\
             purpose_gate_store_lines_read_total{{from=\"segments\"}} {}",
            s.read_from_memory.load(Ordering::Relaxed),
            s.read_from_segments.load(Ordering::Relaxed),
        );
        crate::metrics::RenderHistogram::render(
            &s.lag_seconds,
            &mut out,
            "purpose_gate_store_ship_lag_seconds",
            "Per shipped record: seconds from its time to the commit that stored it.",
        );
        out
    }

    /// Gives the shipper up to `grace` to ship what is durable, then stops both tasks.
    pub async fn drain(&self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        while self.status.backlog() > 0
            && !self
                .status
                .stopped
                .load(std::sync::atomic::Ordering::Relaxed)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.stop.send(true);
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
