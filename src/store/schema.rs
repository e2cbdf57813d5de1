//! Versioned schema migrations, compiled into the binary (`purpose-gate store migrate`).
//!
//! Each migration runs in its own transaction together with the row that records it in
//! `pg_schema_version`, so a migration is applied entirely or not at all; running `migrate`
//! again applies nothing. A gate refuses a schema newer than [`SCHEMA_VERSION`] (an older
//! binary must not write into a schema it does not understand) and one older than it needs.

use deadpool_postgres::GenericClient;

use super::StoreError;

/// The schema version this binary reads and writes.
pub const SCHEMA_VERSION: i32 = 3;

/// `(version, SQL)`, in order. Never edit a released migration: add the next one.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
CREATE TABLE pg_gates (
    gate_id      text PRIMARY KEY,
    shipped_seq  bigint NOT NULL DEFAULT 0,
    -- SHA-256 of line `shipped_seq` (32 zero bytes before the first record).
    shipped_hash bytea NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000',
    shipped_at   timestamptz,
    first_seen   timestamptz NOT NULL DEFAULT now(),
    -- Set when an equivocation stopped shipping for this gate.
    stopped      boolean NOT NULL DEFAULT false
);

-- Every gate's log lines, verbatim; partitioned by month of the record time.
CREATE TABLE pg_records (
    gate_id    text NOT NULL,
    seq        bigint NOT NULL,
    rec_time   timestamptz NOT NULL,
    kind       text NOT NULL,
    request_id text NOT NULL DEFAULT '',
    employee   text,
    subjects   text[] NOT NULL DEFAULT '{}',
    line       bytea NOT NULL,
    PRIMARY KEY (gate_id, seq, rec_time)
) PARTITION BY RANGE (rec_time);
CREATE INDEX pg_records_subjects ON pg_records USING gin (subjects);
CREATE INDEX pg_records_employee ON pg_records (employee, rec_time) WHERE employee IS NOT NULL;
CREATE INDEX pg_records_request ON pg_records (gate_id, request_id) WHERE request_id <> '';
CREATE INDEX pg_records_kind ON pg_records (gate_id, kind) WHERE kind IN ('checkpoint', 'review');

CREATE TABLE pg_checkpoints (
    gate_id   text NOT NULL,
    seq       bigint NOT NULL,
    tree_size bigint NOT NULL,
    note      text NOT NULL,
    PRIMARY KEY (gate_id, seq)
);

CREATE TABLE pg_lookup_counts (
    gate_id  text NOT NULL,
    employee text NOT NULL,
    minute   bigint NOT NULL,
    n        bigint NOT NULL,
    PRIMARY KEY (gate_id, employee, minute)
);
CREATE INDEX pg_lookup_counts_minute ON pg_lookup_counts (minute);

CREATE TABLE pg_equivocations (
    id           bigserial PRIMARY KEY,
    gate_id      text NOT NULL,
    seq          bigint NOT NULL,
    stored_hash  bytea,
    offered_hash bytea,
    detail       text NOT NULL,
    detected_at  timestamptz NOT NULL DEFAULT now()
);
"#,
    ),
    (
        2,
        r#"
-- Case snapshots (`cases/<sha256>.json` beside each gate's log), keyed by the lowercase hex
-- SHA-256 of their bytes, shipped with the first record that names them: `policy replay --db`
-- and `policy explain --db` decide again with the case as it was.
CREATE TABLE pg_case_snapshots (
    hash       text PRIMARY KEY,
    snapshot   bytea NOT NULL,
    first_gate text NOT NULL,
    stored_at  timestamptz NOT NULL DEFAULT now()
);
"#,
    ),
    (
        3,
        r#"
-- Reviews made against the store (`audit review --db`): their own hash chain, with the same
-- framing and chain rule as a gate's log (`seq` gap-free from 1, `prev` = SHA-256 of the
-- previous line's exact bytes). One row per chain holds its head, locked by each append.
CREATE TABLE pg_review_chains (
    chain     text PRIMARY KEY,
    head_seq  bigint NOT NULL DEFAULT 0,
    head_hash bytea NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000'
);
CREATE TABLE pg_reviews (
    chain       text NOT NULL,
    seq         bigint NOT NULL,
    rec_time    timestamptz NOT NULL,
    target_gate text NOT NULL,
    target_seq  bigint NOT NULL,
    line        bytea NOT NULL,
    PRIMARY KEY (chain, seq)
);
CREATE INDEX pg_reviews_target ON pg_reviews (target_gate, target_seq);
"#,
    ),
];

/// Creates the version table when absent and applies every missing migration; returns the
/// versions applied now (empty when the schema was current).
pub async fn migrate(client: &mut deadpool_postgres::Client) -> Result<Vec<i32>, StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS pg_schema_version (
                 version    integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS {
        let tx = client.transaction().await?;
        // One migrator at a time: a second `migrate` waits here, then sees the version.
        tx.batch_execute("LOCK TABLE pg_schema_version IN EXCLUSIVE MODE")
            .await?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM pg_schema_version WHERE version = $1",
                &[version],
            )
            .await?
            .is_some();
        if done {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO pg_schema_version (version) VALUES ($1)",
            &[version],
        )
        .await?;
        tx.commit().await?;
        applied.push(*version);
    }
    Ok(applied)
}

/// The highest applied version (0 when none).
pub async fn current_version(client: &impl GenericClient) -> Result<i32, StoreError> {
    let exists = client
        .query_one("SELECT to_regclass('pg_schema_version') IS NOT NULL", &[])
        .await?
        .try_get::<_, bool>(0)?;
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM pg_schema_version",
            &[],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// Accepts exactly [`SCHEMA_VERSION`].
pub async fn check(client: &impl GenericClient) -> Result<(), StoreError> {
    let version = current_version(client).await?;
    match version.cmp(&SCHEMA_VERSION) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Greater => Err(StoreError::Schema(format!(
            "the store has schema version {version}, newer than this gate knows ({SCHEMA_VERSION}); upgrade the gate"
        ))),
        std::cmp::Ordering::Less => Err(StoreError::Schema(format!(
            "the store has schema version {version}, this gate needs {SCHEMA_VERSION}; run `purpose-gate store migrate --db URL`"
        ))),
    }
}

/// The name of the monthly partition of `pg_records` for a time, and its bounds (RFC 3339).
pub fn month_partition(year: i32, month: u32) -> (String, String, String) {
    let (ny, nm) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    (
        format!("pg_records_{year:04}{month:02}"),
        format!("{year:04}-{month:02}-01T00:00:00Z"),
        format!("{ny:04}-{nm:02}-01T00:00:00Z"),
    )
}

/// Creates the partition for `(year, month)` when absent.
pub async fn ensure_partition(
    client: &impl GenericClient,
    year: i32,
    month: u32,
) -> Result<(), StoreError> {
    let (name, from, to) = month_partition(year, month);
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {name} PARTITION OF pg_records FOR VALUES FROM ('{from}') TO ('{to}')"
    );
    match client.batch_execute(&sql).await {
        Ok(()) => Ok(()),
        // Two shippers creating the same month at once: the loser's catalog insert conflicts.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => Ok(()),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_TABLE) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn december_partition_ends_in_january() {
        let (name, from, to) = month_partition(2026, 12);
        assert_eq!(name, "pg_records_202612");
        assert_eq!(from, "2026-12-01T00:00:00Z");
        assert_eq!(to, "2027-01-01T00:00:00Z");
    }

    #[test]
    fn migrations_are_numbered_in_order_up_to_the_known_version() {
        let versions: Vec<i32> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
        let expected: Vec<i32> = (1..=SCHEMA_VERSION).collect();
        assert_eq!(versions, expected);
    }
}
