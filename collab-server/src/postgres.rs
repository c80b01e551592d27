//! Document chunks in PostgreSQL (`ferrolab collab serve --database postgres://…`).
//!
//! The storage model is samod's, as on disk: one row per storage key (a
//! document's incremental changes and compacted snapshots), the key's components
//! joined by `/`. A chunk is acknowledged only once its transaction has committed,
//! so the durability rule of the embedded store holds: a client that sees its
//! change in the server's heads may rely on it surviving a crash of the server.
//!
//! One connection, shared by every request (tokio-postgres pipelines queries on
//! it); when it breaks, the next query opens a new one.

use anyhow::Context;
use samod::storage::StorageKey;
use std::sync::Arc;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS ferrolab_chunks (
    key TEXT PRIMARY KEY,
    data BYTEA NOT NULL
)";

pub struct PgChunks {
    url: String,
    client: Mutex<Option<Arc<Client>>>,
}

impl PgChunks {
    /// Connects (failing with what went wrong when the database cannot be
    /// reached) and creates the table the chunks live in, if it is missing.
    pub async fn connect(url: &str) -> anyhow::Result<PgChunks> {
        let chunks = PgChunks {
            url: url.to_string(),
            client: Mutex::new(None),
        };
        let client = chunks.client().await.with_context(|| {
            format!(
                "cannot connect to the database {} (is PostgreSQL running, and does the URL \
                 name its host, port, user and database?)",
                redacted(url)
            )
        })?;
        client
            .batch_execute(SCHEMA)
            .await
            .context("cannot create the table ferrolab_chunks")?;
        Ok(chunks)
    }

    async fn client(&self) -> Result<Arc<Client>, tokio_postgres::Error> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                log::warn!("the database connection ended: {error}");
            }
        });
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    pub async fn load(&self, key: &StorageKey) -> Result<Option<Vec<u8>>, tokio_postgres::Error> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT data FROM ferrolab_chunks WHERE key = $1",
                &[&key.to_string()],
            )
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    /// Every chunk whose key starts with `prefix`'s components.
    pub async fn load_range(
        &self,
        prefix: &StorageKey,
    ) -> Result<Vec<(StorageKey, Vec<u8>)>, tokio_postgres::Error> {
        let exact = prefix.to_string();
        let below = format!("{exact}/");
        let rows = self
            .client()
            .await?
            .query(
                "SELECT key, data FROM ferrolab_chunks WHERE key = $1 OR starts_with(key, $2)",
                &[&exact, &below],
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let key: String = row.get(0);
                let key = StorageKey::from_parts(key.split('/')).ok()?;
                Some((key, row.get(1)))
            })
            .collect())
    }

    /// Stores `data` under `key`; returns once the row is committed.
    pub async fn put(&self, key: &StorageKey, data: &[u8]) -> Result<(), tokio_postgres::Error> {
        self.client()
            .await?
            .execute(
                "INSERT INTO ferrolab_chunks (key, data) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET data = EXCLUDED.data",
                &[&key.to_string(), &data],
            )
            .await
            .map(|_| ())
    }

    pub async fn delete(&self, key: &StorageKey) -> Result<(), tokio_postgres::Error> {
        self.client()
            .await?
            .execute(
                "DELETE FROM ferrolab_chunks WHERE key = $1",
                &[&key.to_string()],
            )
            .await
            .map(|_| ())
    }
}

/// The URL (or `key=value` connection string) without its password, for
/// messages and logs.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url
            .split_whitespace()
            .map(|part| match part.split_once('=') {
                Some(("password", _)) => "password=***".to_string(),
                _ => part.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ");
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_a_message() {
        assert_eq!(
            redacted("postgres://ada:s3cret@db.example:5432/ferrolab"),
            "postgres://ada:***@db.example:5432/ferrolab"
        );
        assert_eq!(
            redacted("postgres://ada@db/ferrolab"),
            "postgres://ada@db/ferrolab"
        );
        assert_eq!(redacted("host=db user=ada"), "host=db user=ada");
        assert_eq!(
            redacted("host=db user=ada password=s3cret"),
            "host=db user=ada password=***"
        );
    }
}
