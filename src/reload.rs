//! Reload without restart: SIGHUP and polling of the policy directory.
//!
//! Guarantees: a new policy set (schema, policies, static entities) is loaded and validated in
//! full before it replaces the old one, in one atomic swap; a request reads one snapshot, so it
//! is decided entirely by the old or entirely by the new set. Every swap is preceded by a
//! durable `config` record in the audit log naming the old and new `policy_version`.
//! Refuses: an invalid policy set (the old one stays, the error is logged and counted), and a
//! swap whose `config` record could not be made durable (the old set stays).
//!
//! SIGHUP also rereads the case file (when cases come from one), `auth.jwks_file` and the
//! listener's TLS certificate, key and client CA files (`[server.tls]`); the poller also reloads
//! `auth.jwks_file` and the TLS files when their contents change. An invalid new certificate or key is refused and
//! the old one keeps serving new handshakes.
//! Polling compares the name, length and modification time of the files in the policy
//! directory, like the case file watcher; two edits within the file system's timestamp
//! granularity that keep the length are only seen on the next SIGHUP.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::Utc;

use crate::audit::{ConfigKind, ConfigRecord, RecordBody};
use crate::gate::{Gate, timestamp};
use crate::policy::PolicyEngine;
use crate::tls::ServerTls;

/// A reload that did not happen; the old snapshot stays in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    /// The new files do not load or validate.
    #[error("policies in `{dir}` not reloaded: {message}")]
    Invalid { dir: String, message: String },
    /// The `config` record could not be written.
    #[error("policies not reloaded: the config record could not be written: {0}")]
    Audit(String),
}

/// What a successful policy reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The files load to the version already in force; nothing was swapped or recorded.
    Unchanged,
    /// A new policy set is in force.
    Swapped { old: String, new: String },
}

/// File name, length and modification time of every file in the policy directory.
type DirStamp = Vec<(String, u64, Option<SystemTime>)>;

fn dir_stamp(dir: &Path) -> DirStamp {
    let mut out: DirStamp = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let md = e.metadata().ok()?;
                    md.is_file().then(|| {
                        (
                            e.file_name().to_string_lossy().into_owned(),
                            md.len(),
                            md.modified().ok(),
                        )
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Reloads the snapshots of one gate.
pub struct Reloader {
    gate: Arc<Gate>,
    dir: PathBuf,
    /// The directory as last seen; also serialises reloads (SIGHUP and the poller).
    seen: tokio::sync::Mutex<DirStamp>,
    /// The listener's TLS settings, when `[server.tls]` is configured.
    tls: Option<Arc<ServerTls>>,
}

impl Reloader {
    /// A reloader for `gate`, whose policies come from `dir`, and for the listener's TLS
    /// settings when it has them.
    pub fn new(gate: Arc<Gate>, dir: &Path, tls: Option<Arc<ServerTls>>) -> Arc<Reloader> {
        Arc::new(Reloader {
            gate,
            dir: dir.to_path_buf(),
            seen: tokio::sync::Mutex::new(dir_stamp(dir)),
            tls,
        })
    }

    /// Rereads the listener's certificate, key and client CA files and swaps them in when
    /// valid; `Ok(false)` when the listener has no TLS. New handshakes use the new certificate.
    pub async fn reload_tls(&self) -> Result<bool, String> {
        let Some(tls) = &self.tls else {
            return Ok(false);
        };
        let tls = Arc::clone(tls);
        let result = tokio::task::spawn_blocking(move || tls.reload())
            .await
            .map_err(|e| format!("the tls loader stopped: {e}"))
            .and_then(|r| r);
        self.count_tls(&result);
        result.map(|()| true)
    }

    /// Reloads the TLS files when their contents changed since the last look.
    pub async fn reload_tls_if_changed(&self) -> Option<Result<(), String>> {
        let tls = Arc::clone(self.tls.as_ref()?);
        let result = tokio::task::spawn_blocking(move || tls.reload_if_changed())
            .await
            .unwrap_or_else(|e| Some(Err(format!("the tls loader stopped: {e}"))))?;
        self.count_tls(&result);
        Some(result)
    }

    fn count_tls(&self, result: &Result<(), String>) {
        let metrics = self.gate.metrics();
        match result {
            Ok(()) => {
                metrics.reload("tls", true);
                if let Some(tls) = &self.tls {
                    tracing::info!(cert_file = %tls.cert_file().display(), "tls certificate reloaded");
                }
            }
            Err(e) => {
                metrics.reload("tls", false);
                tracing::error!(error = %e, "tls certificate not reloaded; keeping the previous one");
            }
        }
    }

    /// Loads the policy directory and swaps it in when valid and different.
    pub async fn reload_policies(&self) -> Result<Reloaded, ReloadError> {
        let mut seen = self.seen.lock().await;
        *seen = dir_stamp(&self.dir);
        let result = self.swap_policies().await;
        let metrics = self.gate.metrics();
        match &result {
            Ok(Reloaded::Swapped { old, new }) => {
                metrics.reload("policies", true);
                tracing::info!(old_version = %old, new_version = %new, "policies reloaded");
            }
            Ok(Reloaded::Unchanged) => {
                metrics.reload("policies", true);
                tracing::info!("policies reloaded: unchanged");
            }
            Err(e) => {
                metrics.reload("policies", false);
                tracing::error!(error = %e, "keeping the previous policies");
            }
        }
        result
    }

    async fn swap_policies(&self) -> Result<Reloaded, ReloadError> {
        let dir = self.dir.clone();
        // The evaluator is configuration, not part of the policy files: the new set keeps it.
        let evaluator = self.gate.policy().load().evaluator();
        let loaded = tokio::task::spawn_blocking(move || {
            PolicyEngine::load(&dir).map(|e| e.with_evaluator(evaluator))
        })
        .await
        .map_err(|e| ReloadError::Invalid {
            dir: self.dir.display().to_string(),
            message: format!("the loader stopped: {e}"),
        })?
        .map_err(|e| ReloadError::Invalid {
            dir: self.dir.display().to_string(),
            message: e.to_string(),
        })?;
        let old = self.gate.policy().load_full();
        if old.version() == loaded.version() {
            return Ok(Reloaded::Unchanged);
        }
        let record = ConfigRecord {
            time: timestamp(Utc::now()),
            kind: ConfigKind::Config,
            gate: self.gate.gate_id().to_string(),
            changed: "policies".into(),
            old_version: old.version().to_string(),
            new_version: loaded.version().to_string(),
        };
        // INVARIANT: the config record is durable before any decision uses the new set.
        self.gate
            .audit()
            .append(vec![RecordBody::Config(record)])
            .await
            .map_err(|e| ReloadError::Audit(e.to_string()))?;
        let new = loaded.version().to_string();
        self.gate.policy().store(Arc::new(loaded));
        Ok(Reloaded::Swapped {
            old: old.version().to_string(),
            new,
        })
    }

    /// Reloads the policies when a file of the directory changed since the last look.
    pub async fn reload_policies_if_changed(&self) -> Option<Result<Reloaded, ReloadError>> {
        {
            let seen = self.seen.lock().await;
            if *seen == dir_stamp(&self.dir) {
                return None;
            }
        }
        Some(self.reload_policies().await)
    }

    /// What SIGHUP does: policies, then the case file, then the JWKS file, then the listener's
    /// TLS files. Each is reloaded or kept on its own; failures are logged and counted.
    pub async fn reload_all(&self) {
        let _ = self.reload_policies().await;
        let metrics = self.gate.metrics();
        if let Some(cases) = self.gate.case_file() {
            match cases.reload_if_changed() {
                Ok(changed) => {
                    metrics.reload("cases", true);
                    tracing::info!(changed, cases = cases.len(), "case file reloaded");
                }
                Err(e) => {
                    metrics.reload("cases", false);
                    tracing::error!(error = %e, "case file not reloaded; keeping the previous cases");
                }
            }
        }
        self.reload_jwks().await;
        let _ = self.reload_tls().await;
    }

    /// Rereads `auth.jwks_file` when configured; changed, valid keys replace the old ones.
    async fn reload_jwks(&self) {
        let metrics = self.gate.metrics();
        match self.gate.auth().reload_jwks_file().await {
            Ok(false) => {}
            Ok(true) => {
                metrics.reload("jwks", true);
                tracing::info!(keys = self.gate.auth().key_count(), "jwks file reloaded");
            }
            Err(e) => {
                metrics.reload("jwks", false);
                tracing::error!(error = %e, "jwks file not reloaded; keeping the previous keys");
            }
        }
    }

    /// Polls the policy directory, the JWKS file and the TLS files every `interval` until the
    /// task is aborted.
    pub fn spawn_poller(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let _ = me.reload_policies_if_changed().await;
                me.reload_jwks().await;
                let _ = me.reload_tls_if_changed().await;
            }
        })
    }

    /// Runs [`Reloader::reload_all`] on every SIGHUP until the task is aborted.
    pub fn spawn_sighup(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                let mut hup = match signal(SignalKind::hangup()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for SIGHUP; reload by polling only");
                        return;
                    }
                };
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading");
                    me.reload_all().await;
                }
            }
            #[cfg(not(unix))]
            {
                let _ = me;
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn dir_stamp_sees_a_changed_length_and_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.cedar"), "x").unwrap();
        let before = dir_stamp(dir.path());
        assert_eq!(before.len(), 1);
        std::fs::write(dir.path().join("a.cedar"), "xy").unwrap();
        let longer = dir_stamp(dir.path());
        assert_ne!(before, longer);
        std::fs::write(dir.path().join("b.cedar"), "").unwrap();
        assert_eq!(dir_stamp(dir.path()).len(), 2);
        std::fs::create_dir(dir.path().join("tests")).unwrap();
        assert_eq!(
            dir_stamp(dir.path()).len(),
            2,
            "directories are not stamped"
        );
    }

    #[test]
    fn missing_directory_has_an_empty_stamp() {
        assert!(dir_stamp(Path::new("/nonexistent/purpose-gate/policies")).is_empty());
    }
}
