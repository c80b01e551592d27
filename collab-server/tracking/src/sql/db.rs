//! One way for the tracking store to speak SQL to either database it lives in:
//! SQLite (a file beside the data; the embedded server and the kernel's local
//! tracking) or PostgreSQL (replicas sharing one database). Statements are
//! written once, with `?N` placeholders and the SQL both databases read; a
//! transaction ([`Tx`]) runs them on whichever it holds.
//!
//! SQLite: one connection behind a lock, so every transaction is serial.
//! PostgreSQL: a few connections, each transaction on one of them; writes take
//! advisory locks so that replicas see the same order SQLite would give
//! ([`Lock`]), and reads see one snapshot. The store's calls arrive on blocking
//! threads (the server runs them in `spawn_blocking`); each connection has a
//! small runtime of its own, and the calling thread drives the connection itself
//! while it waits for an answer (as the `postgres` crate does), so a statement's
//! round trip costs no hand-over between threads.

use crate::store::{Result, TrackingError};
use futures::future::BoxFuture;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A value a statement takes: something both databases can bind.
pub(crate) trait Arg: Sync {
    fn lite(&self) -> &dyn rusqlite::ToSql;
    fn pg(&self) -> &(dyn tokio_postgres::types::ToSql + Sync);
}

impl<T: rusqlite::ToSql + tokio_postgres::types::ToSql + Sync> Arg for T {
    fn lite(&self) -> &dyn rusqlite::ToSql {
        self
    }
    fn pg(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        self
    }
}

/// A statement's values: `args![a, b]`.
macro_rules! args {
    () => { &[] as &[&dyn $crate::sql::db::Arg] };
    ($($value:expr),+ $(,)?) => { &[$(&$value as &dyn $crate::sql::db::Arg),+] as &[&dyn $crate::sql::db::Arg] };
}
pub(crate) use args;

/// A column value read back, from either database (the PostgreSQL schema keeps
/// every number as BIGINT or DOUBLE PRECISION, so `i64` and `f64` read them).
pub(crate) trait Col: Sized {
    fn lite(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Self>;
    fn pg(row: &tokio_postgres::Row, i: usize) -> std::result::Result<Self, tokio_postgres::Error>;
}

macro_rules! plain_col {
    ($($t:ty),*) => {$(
        impl Col for $t {
            fn lite(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Self> {
                row.get(i)
            }
            fn pg(row: &tokio_postgres::Row, i: usize) -> std::result::Result<Self, tokio_postgres::Error> {
                row.try_get(i)
            }
        }
    )*};
}
plain_col!(String, Option<String>, i64, Option<i64>, f64, Option<f64>);

/// One row of a result.
pub(crate) enum Row<'a> {
    Lite(&'a rusqlite::Row<'a>),
    Pg(&'a tokio_postgres::Row),
}

impl Row<'_> {
    /// Column `i`.
    pub fn get<T: Col>(&self, i: usize) -> Result<T> {
        match self {
            Row::Lite(row) => Ok(T::lite(row, i)?),
            Row::Pg(row) => Ok(T::pg(row, i)?),
        }
    }
}

/// How a transaction keeps out of the others' way (PostgreSQL; SQLite runs every
/// transaction alone).
#[derive(Clone, Copy)]
pub(crate) enum Lock<'a> {
    /// Reads only, from one snapshot.
    Read,
    /// Writes to one run's rows (params, tags, metrics, status): alone on that
    /// run, beside writes to other runs.
    Run(&'a str),
    /// Anything else: alone.
    Store,
}

/// A transaction on either database.
pub(crate) enum Tx<'a> {
    Lite(rusqlite::Transaction<'a>),
    Pg {
        tx: tokio_postgres::Transaction<'a>,
        statements: RefCell<&'a mut HashMap<String, tokio_postgres::Statement>>,
        link: Link<'a>,
    },
}

/// What a PostgreSQL transaction waits on: the connection's runtime, and the
/// connection, driven while a statement's answer is awaited.
#[derive(Clone, Copy)]
pub(crate) struct Link<'a> {
    runtime: &'a tokio::runtime::Runtime,
    connection: &'a RefCell<Connection>,
}

impl Link<'_> {
    fn wait<T>(
        &self,
        request: impl std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    ) -> Result<T> {
        let mut connection = self.connection.borrow_mut();
        self.runtime.block_on(drive(&mut connection, request))
    }
}

/// A connection's own half (the socket), to be polled for its client's requests
/// to make progress.
pub type Connection = BoxFuture<'static, std::result::Result<(), tokio_postgres::Error>>;

/// Polls `request`, driving `connection` meanwhile.
async fn drive<T>(
    connection: &mut Connection,
    request: impl std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
) -> Result<T> {
    use std::task::Poll;
    let mut request = std::pin::pin!(request);
    futures::future::poll_fn(|cx| {
        if let Poll::Ready(out) = request.as_mut().poll(cx) {
            return Poll::Ready(out.map_err(TrackingError::from));
        }
        match connection.as_mut().poll(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Err(TrackingError::Internal(
                "the database closed the connection".into(),
            ))),
            Poll::Ready(Err(error)) => Poll::Ready(Err(error.into())),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

impl Tx<'_> {
    fn commit(self) -> Result<()> {
        match self {
            Tx::Lite(tx) => Ok(tx.commit()?),
            Tx::Pg { tx, link, .. } => link.wait(tx.commit()),
        }
    }

    /// Runs a statement; the number of rows it changed.
    pub fn execute(&self, sql: &str, args: &[&dyn Arg]) -> Result<u64> {
        match self {
            Tx::Lite(tx) => {
                let mut stmt = tx.prepare_cached(sql)?;
                let values: Vec<&dyn rusqlite::ToSql> = args.iter().map(|a| a.lite()).collect();
                Ok(stmt.execute(values.as_slice())? as u64)
            }
            Tx::Pg { tx, link, .. } => {
                let stmt = self.statement(sql)?;
                let values: Vec<_> = args.iter().map(|a| a.pg()).collect();
                link.wait(tx.execute(&stmt, &values))
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Tx::Pg { .. })
    }

    /// Runs a statement only PostgreSQL reads (arrays, say), with values only it
    /// takes; callers check [`Tx::is_postgres`] first.
    pub fn execute_postgres(
        &self,
        sql: &str,
        values: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64> {
        match self {
            Tx::Lite(_) => Err(TrackingError::Internal(
                "a PostgreSQL statement on SQLite".into(),
            )),
            Tx::Pg { tx, link, .. } => {
                let stmt = self.statement(sql)?;
                link.wait(tx.execute(&stmt, values))
            }
        }
    }

    /// Statements without values, one after the other (a schema).
    pub fn batch(&self, sql: &str) -> Result<()> {
        match self {
            Tx::Lite(tx) => Ok(tx.execute_batch(sql)?),
            Tx::Pg { tx, link, .. } => link.wait(tx.batch_execute(sql)),
        }
    }

    /// Every row of a query, each read by `f`.
    pub fn query<T>(
        &self,
        sql: &str,
        args: &[&dyn Arg],
        mut f: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        match self {
            Tx::Lite(tx) => {
                let mut stmt = tx.prepare_cached(sql)?;
                let values: Vec<&dyn rusqlite::ToSql> = args.iter().map(|a| a.lite()).collect();
                let mut rows = stmt.query(values.as_slice())?;
                while let Some(row) = rows.next()? {
                    out.push(f(&Row::Lite(row))?);
                }
            }
            Tx::Pg { tx, link, .. } => {
                let stmt = self.statement(sql)?;
                let values: Vec<_> = args.iter().map(|a| a.pg()).collect();
                for row in link.wait(tx.query(&stmt, &values))? {
                    out.push(f(&Row::Pg(&row))?);
                }
            }
        }
        Ok(out)
    }

    /// The first row of a query, if there is one.
    pub fn query_opt<T>(
        &self,
        sql: &str,
        args: &[&dyn Arg],
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut f = Some(f);
        let mut first = None;
        // Reads every row, like rusqlite's query_row; the queries here return one.
        let _ = self.query(sql, args, |row| {
            if let Some(f) = f.take() {
                first = Some(f(row)?);
            }
            Ok(())
        })?;
        Ok(first)
    }

    /// The row of a query that always returns one (an aggregate, say).
    pub fn query_one<T>(
        &self,
        sql: &str,
        args: &[&dyn Arg],
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T> {
        self.query_opt(sql, args, f)?.ok_or_else(|| {
            TrackingError::Internal(format!("the query returned no row: {}", first_line(sql)))
        })
    }

    /// A prepared statement, from this connection's cache.
    fn statement(&self, sql: &str) -> Result<tokio_postgres::Statement> {
        let Tx::Pg {
            tx,
            statements,
            link,
        } = self
        else {
            return Err(TrackingError::Internal(
                "a PostgreSQL statement on SQLite".into(),
            ));
        };
        if let Some(stmt) = statements.borrow().get(sql) {
            return Ok(stmt.clone());
        }
        let stmt = link.wait(tx.prepare(&dollar_placeholders(sql)))?;
        statements
            .borrow_mut()
            .insert(sql.to_string(), stmt.clone());
        Ok(stmt)
    }
}

impl<'a> Tx<'a> {
    /// A statement to run (or query) with values.
    pub fn prepare<'t>(&'t self, sql: &str) -> Result<Stmt<'t, 'a>> {
        Ok(Stmt {
            tx: self,
            sql: sql.to_string(),
        })
    }
}

/// A statement of a transaction (prepared, and kept, on first use).
pub(crate) struct Stmt<'t, 'a> {
    tx: &'t Tx<'a>,
    sql: String,
}

impl Stmt<'_, '_> {
    /// Each row read by `f`.
    pub fn query_map<T>(
        &mut self,
        args: &[&dyn Arg],
        mut f: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        Ok(self
            .tx
            .query(&self.sql, args, |row| Ok(f(row)))?
            .into_iter())
    }
}

fn first_line(sql: &str) -> &str {
    sql.trim().lines().next().unwrap_or_default()
}

/// `?N` placeholders as PostgreSQL's `$N` (outside quoted text).
pub(crate) fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                out.push(c);
            }
            (Some(_), c) => out.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                out.push(c);
            }
            (None, '?') if chars.peek().is_some_and(|d| d.is_ascii_digit()) => out.push('$'),
            (None, c) => out.push(c),
        }
    }
    out
}

/// Opens a new connection to PostgreSQL (the server knows how: URL and TLS): its
/// client, and its connection to drive, neither spawned anywhere.
pub type Connect = Arc<
    dyn Fn() -> BoxFuture<'static, anyhow::Result<(tokio_postgres::Client, Connection)>>
        + Send
        + Sync,
>;

/// The database a store keeps its rows in.
pub(crate) enum Db {
    Lite(Mutex<rusqlite::Connection>),
    Pg(Pool),
}

/// A few PostgreSQL connections, each with its prepared statements; a broken
/// one is opened again on its next use.
pub(crate) struct Pool {
    connect: Connect,
    slots: Vec<Mutex<Option<PgConn>>>,
    next: AtomicUsize,
    /// The schema the tables are in.
    schema: String,
}

struct PgConn {
    client: tokio_postgres::Client,
    statements: HashMap<String, tokio_postgres::Statement>,
    connection: RefCell<Connection>,
    /// Its own runtime (one thread: whoever waits), shut down without waiting.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for PgConn {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

type Slot<'p> = std::sync::MutexGuard<'p, Option<PgConn>>;

/// A poisoned slot's guard, its connection dropped (it may be mid-transaction).
fn healed(poisoned: std::sync::PoisonError<Slot<'_>>) -> Slot<'_> {
    let mut guard = poisoned.into_inner();
    *guard = None;
    guard
}

/// Advisory lock keys: the whole store, and (hashed) one run.
pub(crate) const STORE_LOCK: i64 = 0x6665_7272_6f6c_6162;

fn run_lock(run_id: &str) -> i64 {
    let hash = blake3::hash(run_id.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash.as_bytes()[..8]);
    i64::from_le_bytes(bytes)
}

impl Pool {
    pub fn new(connect: Connect, size: usize, schema: &str) -> Pool {
        Pool {
            connect,
            slots: (0..size.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            schema: schema.to_string(),
        }
    }

    /// A free connection's slot, or (all busy) the next one's, waited for. A slot
    /// whose last user panicked may be mid-transaction: its connection is dropped.
    fn slot(&self) -> Slot<'_> {
        for slot in &self.slots {
            match slot.try_lock() {
                Ok(guard) => return guard,
                Err(std::sync::TryLockError::Poisoned(poisoned)) => return healed(poisoned),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        self.slots[i].lock().unwrap_or_else(healed)
    }

    fn open(&self) -> Result<PgConn> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TrackingError::Internal(format!("cannot start a runtime: {e}")))?;
        let (client, connection) = runtime
            .block_on((self.connect)())
            .map_err(|e| TrackingError::Internal(format!("{e:#}")))?;
        let mut conn = PgConn {
            client,
            statements: HashMap::new(),
            connection: RefCell::new(connection),
            runtime: Some(runtime),
        };
        let set_path = format!("SET search_path TO {}", self.schema);
        if let PgConn {
            client,
            connection,
            runtime: Some(runtime),
            ..
        } = &mut conn
        {
            runtime.block_on(drive(connection.get_mut(), client.batch_execute(&set_path)))?;
        }
        Ok(conn)
    }

    fn transaction<T>(&self, lock: Lock<'_>, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        let mut guard = self.slot();
        if guard.as_ref().is_none_or(|c| c.client.is_closed()) {
            *guard = Some(self.open()?);
        }
        let Some(PgConn {
            client,
            statements,
            connection,
            runtime: Some(runtime),
        }) = guard.as_mut()
        else {
            return Err(TrackingError::Internal("no database connection".into()));
        };
        let link = Link {
            runtime,
            connection,
        };
        let result = Self::run(client, statements, link, lock, f);
        if result.is_err() {
            // A failed transaction's ROLLBACK is only queued when it is dropped; the
            // connection goes back to the pool only once it is done (and the
            // transaction's locks are released), or not at all.
            if link.wait(client.batch_execute("ROLLBACK")).is_err() {
                *guard = None;
            }
        }
        result
    }

    fn run<T>(
        client: &mut tokio_postgres::Client,
        statements: &mut HashMap<String, tokio_postgres::Statement>,
        link: Link<'_>,
        lock: Lock<'_>,
        f: impl FnOnce(&Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut builder = client.build_transaction();
        if let Lock::Read = lock {
            builder = builder
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true);
        }
        let tx = link.wait(builder.start())?;
        match lock {
            Lock::Read => {}
            Lock::Run(run_id) => {
                link.wait(tx.execute(
                    "SELECT pg_advisory_xact_lock_shared($1), pg_advisory_xact_lock($2)",
                    &[&STORE_LOCK, &run_lock(run_id)],
                ))?;
            }
            Lock::Store => {
                link.wait(tx.execute("SELECT pg_advisory_xact_lock($1)", &[&STORE_LOCK]))?;
            }
        }
        let tx = Tx::Pg {
            tx,
            statements: RefCell::new(statements),
            link,
        };
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

impl Db {
    /// Runs `f` in one transaction, committed when it returns Ok (rolled back
    /// otherwise).
    pub fn transaction<T>(
        &self,
        lock: Lock<'_>,
        f: impl FnOnce(&Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        match self {
            Db::Lite(conn) => {
                let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
                let tx = Tx::Lite(conn.transaction()?);
                let out = f(&tx)?;
                tx.commit()?;
                Ok(out)
            }
            Db::Pg(pool) => pool.transaction(lock, f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::dollar_placeholders;

    #[test]
    fn placeholders_become_dollars_outside_quotes() {
        assert_eq!(
            dollar_placeholders("SELECT a FROM t WHERE b = ?1 AND c = '?2' AND d = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND d = $12"
        );
        assert_eq!(dollar_placeholders("SELECT '?' || ?3"), "SELECT '?' || $3");
    }
}
