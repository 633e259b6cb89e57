//! The PostgreSQL schema of the trust store, as numbered migrations.
//!
//! `yonexus_schema_version` holds one row per applied migration; the schema's version is the
//! highest. [`migrate`] applies every missing migration in one transaction, under a
//! transaction-scoped advisory lock so that hosts starting at once do not race, and is
//! idempotent. A database whose version is newer than [`LATEST`] is refused: an older host must
//! not write records in a shape it does not know.
//!
//! Never edit a released migration: add the next one.

use tokio_postgres::GenericClient;

/// One schema step.
pub struct Migration {
    pub version: i32,
    pub description: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "followers, auth_nonces, rate_counts, sessions",
    sql: r#"
CREATE TABLE followers (
    identifier text PRIMARY KEY,
    -- The TrustRecord as JSON, the same shape as one entry of trust.json's "followers".
    record jsonb NOT NULL,
    -- When a host last wrote the row (trust change or liveness), for operators.
    written_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT followers_record_is_an_object CHECK (jsonb_typeof(record) = 'object'),
    CONSTRAINT followers_record_identifier CHECK (record->>'identifier' = identifier)
);

CREATE TABLE auth_nonces (
    identifier text NOT NULL,
    nonce text NOT NULL,
    seen_at bigint NOT NULL,
    PRIMARY KEY (identifier, nonce)
);
CREATE INDEX auth_nonces_seen_at ON auth_nonces (seen_at);

CREATE TABLE rate_counts (
    key text PRIMARY KEY,
    window_start bigint NOT NULL,
    window_secs bigint NOT NULL,
    count integer NOT NULL
);

CREATE SEQUENCE session_epochs AS bigint;
CREATE TABLE sessions (
    identifier text PRIMARY KEY,
    node text NOT NULL,
    conn_id bigint NOT NULL,
    epoch bigint NOT NULL,
    connected_since bigint NOT NULL,
    remote text NOT NULL,
    lease_until bigint NOT NULL
);
CREATE INDEX sessions_node ON sessions (node);
"#,
}];

/// The newest schema version this host knows.
pub const LATEST: i32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// Key of the advisory lock taken while migrating ("yonexus" in ASCII).
const LOCK_KEY: i64 = 0x0079_6f6e_6578_7573;

/// What [`migrate`] or [`version`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The schema's version (0: no schema yet).
    Version(i32),
    /// The database is at a version newer than [`LATEST`].
    Newer(i32),
}

/// The schema version of the database (0 when it has none), read without changing anything.
pub async fn version(client: &impl GenericClient) -> Result<Found, tokio_postgres::Error> {
    let exists: Option<String> = client
        .query_one("SELECT to_regclass('yonexus_schema_version')::text", &[])
        .await?
        .get(0);
    if exists.is_none() {
        return Ok(Found::Version(0));
    }
    let v: Option<i32> = client
        .query_one("SELECT max(version) FROM yonexus_schema_version", &[])
        .await?
        .get(0);
    let v = v.unwrap_or(0);
    Ok(if v > LATEST {
        Found::Newer(v)
    } else {
        Found::Version(v)
    })
}

/// Bring the schema to [`LATEST`] in one transaction. Returns the versions before and after;
/// `Found::Newer` (and nothing changed) when the database is ahead of this host.
pub async fn migrate(
    client: &mut tokio_postgres::Client,
) -> Result<(Found, i32), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    // Another host migrating waits here, then finds the work done.
    tx.execute("SET LOCAL statement_timeout = '60s'", &[])
        .await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await?;
    let before = version(&tx).await?;
    let current = match before {
        Found::Newer(_) => {
            tx.rollback().await?;
            return Ok((before, LATEST));
        }
        Found::Version(v) => v,
    };
    if current == LATEST {
        tx.commit().await?;
        return Ok((before, current));
    }
    if current == 0 {
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS yonexus_schema_version (
                 version integer PRIMARY KEY,
                 description text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        tx.batch_execute(m.sql).await?;
        tx.execute(
            "INSERT INTO yonexus_schema_version (version, description) VALUES ($1, $2)",
            &[&m.version, &m.description],
        )
        .await?;
    }
    tx.commit().await?;
    Ok((before, LATEST))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.description);
        }
        assert_eq!(LATEST as usize, MIGRATIONS.len());
    }
}
