//! Cluster-wide counters: every `counter_refresh` a gate reads the other gates' lookup counts
//! per employee (last hour, last day) from `pg_lookup_counts`, which the shippers fill in the
//! shipping transaction. Its own lookups it counts exactly, in memory.
//!
//! When the store cannot be read, the last counts read stay in use, `stale` is set (a metric)
//! and the gate keeps deciding.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{GenericClient, Pool};

use super::StoreError;
use crate::counters::LookupCounters;
use crate::model::Counters;

/// Reads the other gates' counts per employee at `now_minute` (Unix minutes).
pub async fn others(
    client: &impl GenericClient,
    gate_id: &str,
    now_minute: i64,
) -> Result<HashMap<String, Counters>, StoreError> {
    let rows = client
        .query(
            "SELECT employee,
                    coalesce(sum(n) FILTER (WHERE minute > $2::bigint - 60), 0)::bigint,
                    coalesce(sum(n), 0)::bigint
             FROM pg_lookup_counts
             WHERE gate_id <> $1 AND minute > $2::bigint - 1440 AND minute <= $2::bigint
             GROUP BY employee",
            &[&gate_id, &now_minute],
        )
        .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        out.insert(
            r.try_get::<_, String>(0)?,
            Counters {
                lookups_last_hour: r.try_get(1)?,
                lookups_last_day: r.try_get(2)?,
            },
        );
    }
    Ok(out)
}

/// Refreshes `counters` from the store every `every` until the task is aborted.
pub async fn refresh_loop(
    pool: Pool,
    gate_id: String,
    counters: Arc<LookupCounters>,
    every: Duration,
    stale: Arc<AtomicBool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now_minute = chrono::Utc::now().timestamp().div_euclid(60);
        let read = async {
            let client = pool.get().await?;
            others(&client, &gate_id, now_minute).await
        };
        match tokio::time::timeout(every.max(Duration::from_secs(2)), read).await {
            Ok(Ok(map)) => {
                counters.set_others(map);
                if stale.swap(false, Ordering::Relaxed) {
                    tracing::info!("store: cluster counters are current again");
                }
            }
            Ok(Err(e)) => {
                if !stale.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "store: cannot read other gates' counts; using the last ones read");
                }
            }
            Err(_) => {
                if !stale.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "store: reading other gates' counts timed out; using the last ones read"
                    );
                }
            }
        }
    }
}
