//! The records in PostgreSQL, for several nodes over one database.
//!
//! The record traits are synchronous (the embedded store answers from memory-mapped pages, so
//! a call is a short blocking step), while the PostgreSQL client is asynchronous. A
//! [`PgStore`] owns a small runtime on a thread of its own that drives every connection of its
//! pool; a trait method sends its query there and waits for the answer on a channel. The
//! calling thread blocks exactly as it does on the embedded store's disk reads, and nothing
//! depends on the caller's runtime: the blocking `postgres` client would start a runtime
//! inside the web server's (which panics), and a connection driven by one web worker would
//! stall whenever that worker blocks.
//!
//! Records are rows keyed by their identity, with the model's JSON form in a `jsonb` column;
//! counters are columns, changed in the statement or transaction that changes what they count.
//!
//! A warm render hit asks the database nothing: the change generation is pushed to every node
//! and held in memory under a lease ([`lease`]), and stored renders are kept in a node-local
//! cache ([`cache`]) whose entries hold while the generation they were read at holds. Every
//! write that moves the generation returns only once every live node has applied it.

mod accounts;
mod aliases;
mod cache;
mod edge;
mod images;
mod index;
mod lease;
#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod listing_tests;
mod records;
#[cfg(test)]
mod records_tests;
mod renders;
mod schema;
mod stacks;

use super::driver::Driver;
use super::{Bytes, RecordsLock, Result, StorageError};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::cell::Cell;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use tokio::sync::Notify;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

pub use schema::SCHEMA_VERSION;

/// Parameters of one statement, owned so that they can travel to the driver thread.
pub(crate) type Params = Vec<Box<dyn ToSql + Send + Sync>>;

/// The records in one PostgreSQL database.
pub struct PgStore {
    pool: Pool,
    /// Whether invalidations queue paths for the edge ([`super::EdgeQueue::enable_edge`]).
    pub(super) edge_on: std::sync::atomic::AtomicBool,
    /// Woken when any node commits edge jobs (a `NOTIFY` on [`EDGE_CHANNEL`]).
    edge_notify: Arc<Notify>,
    /// Where the bodies of large renders live ([`PgStore::keep_render_bodies_in`]).
    bodies: OnceLock<Arc<dyn Bytes>>,
    /// The generation this node holds, and its lease ([`lease`]).
    watch: Arc<lease::Watch>,
    /// Stored renders read lately ([`PgStore::with_render_cache`]); `None` when disabled.
    cache: Option<cache::RenderCache>,
    /// Organization and image records read lately ([`cache::RecordCache`]).
    records: cache::RecordCache,
    driver: Driver,
    /// The schema the records are in: advisory locks are named after it, since they are
    /// shared by every schema of the database.
    schema: String,
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`) with a pool of at most `max_size`
    /// connections, and brings the schema up to date ([`schema::migrate`]); a database written
    /// by a newer version is refused.
    pub fn open(url: &str, max_size: usize) -> Result<PgStore> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StorageError::Schema(format!("storage.database_url: {e}")))?;
        let listen = config.clone();
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_size.max(1))
            .build()
            .map_err(|e| StorageError::Schema(format!("database pool: {e}")))?;
        let store = PgStore {
            pool,
            edge_on: Default::default(),
            edge_notify: Arc::new(Notify::new()),
            bodies: OnceLock::new(),
            watch: Arc::new(lease::Watch::new()?),
            cache: cache::RenderCache::new(cache::DEFAULT_BYTES),
            records: cache::RecordCache::new(),
            driver: Driver::start("postgres")?,
            schema: String::new(),
        };
        store.run(schema::migrate)?;
        let mut store = store;
        store.schema = store.run(|pool| async move {
            let client = pool.get().await?;
            Ok(client
                .query_one("SELECT current_schema()", &[])
                .await?
                .try_get::<_, String>(0)?)
        })?;
        store.driver.handle.spawn(lease::watch(
            listen,
            store.pool.clone(),
            store.watch.clone(),
            store.edge_notify.clone(),
        ));
        Ok(store)
    }

    /// Keeps at most `bytes` of stored renders in this node's memory (0: none), in place of
    /// the default of [`cache::DEFAULT_BYTES`].
    pub fn with_render_cache(mut self, bytes: u64) -> PgStore {
        self.cache = cache::RenderCache::new(bytes);
        self
    }

    /// Keeps the bodies of renders larger than [`super::renders::INLINE_MAX`] in `bytes`, as
    /// the embedded store keeps them in its data folder; set once, before the first render is
    /// stored. Without it, such a render is answered but not kept (it is made again).
    pub fn keep_render_bodies_in(&self, bytes: Arc<dyn Bytes>) {
        let _ = self.bodies.set(bytes);
    }

    /// A lock that one node at a time holds ([`super::Records::exclusive`]): a session advisory
    /// lock taken without waiting on a pooled connection that the guard keeps. `None` while
    /// another connection (of this node or another) holds it; a node that dies loses its
    /// connection, and the lock with it.
    pub fn exclusive(&self, name: &str) -> Result<Option<RecordsLock<'_>>> {
        let key = self.lock_key(&format!("exclusive {name}"));
        let client = self.run(move |pool| async move {
            let client = pool.get().await?;
            let granted: bool = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                .await?
                .try_get(0)?;
            Ok(granted.then_some(client))
        })?;
        Ok(client.map(|client| {
            RecordsLock::new(AdvisoryLock {
                client: Some(client),
                handle: self.driver.handle.clone(),
                key,
            })
        }))
    }

    /// Runs `work` with the pool on the driver thread and waits for its answer. When `work`
    /// moved the change generation ([`bump_generation`]), the answer waits until every live
    /// node has applied the new one ([`lease::settle`]): a change returns only once no node
    /// can answer from what it replaced.
    pub(crate) fn run<T, F, Fut>(&self, work: F) -> Result<T>
    where
        F: FnOnce(Pool) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.pool.clone();
        let watch = self.watch.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.driver.handle.spawn(async move {
            let (answer, bumped) = BUMPED
                .scope(Cell::new(0), async {
                    let answer = work(pool.clone()).await;
                    (answer, BUMPED.with(Cell::get))
                })
                .await;
            if bumped > 0 {
                lease::settle(&pool, &watch, bumped).await;
            }
            let _ = tx.send(answer);
        });
        rx.recv()
            .map_err(|_| StorageError::Sql("the database driver stopped".into()))?
    }

    /// The rows of one statement.
    pub(crate) fn query(&self, sql: &'static str, params: Params) -> Result<Vec<Row>> {
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let statement = client.prepare_cached(sql).await?;
            Ok(client.query(&statement, &refs(&params)).await?)
        })
    }

    /// Runs one statement; returns the number of rows it changed.
    pub(crate) fn execute(&self, sql: &'static str, params: Params) -> Result<u64> {
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let statement = client.prepare_cached(sql).await?;
            Ok(client.execute(&statement, &refs(&params)).await?)
        })
    }

    /// The change generation ([`super::Records::generation`]): a counter row moved in the
    /// transaction of every change that render URLs resolve against, held in memory while
    /// this node's lease says it may be trusted ([`lease`]), else read.
    pub fn generation(&self) -> Result<u64> {
        if let Some(g) = self.watch.trusted() {
            return Ok(g);
        }
        self.watch.fell_back();
        let rows = self.query("SELECT value FROM generation", Vec::new())?;
        let value: i64 = rows.first().map(|r| r.try_get(0)).transpose()?.unwrap_or(0);
        Ok(to_u64(value))
    }

    /// The blob removal lock ([`super::Records::blob_removal_lock`]) that every node over the
    /// database takes: a session advisory lock held by one pooled connection until the guard
    /// is dropped.
    pub fn blob_removal_lock(&self) -> Result<RecordsLock<'_>> {
        let key = self.lock_key("blob removal");
        let client = self.run(move |pool| async move {
            let client = pool.get().await?;
            client
                .execute("SELECT pg_advisory_lock($1)", &[&key])
                .await?;
            Ok(client)
        })?;
        Ok(RecordsLock::new(AdvisoryLock {
            client: Some(client),
            handle: self.driver.handle.clone(),
            key,
        }))
    }

    /// The advisory lock key of the lock `name` of these records (of this schema).
    fn lock_key(&self, name: &str) -> i64 {
        let hash = blake3::hash(format!("darkroom {} {name}", self.schema).as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        i64::from_be_bytes(first)
    }

    /// The layout version the database holds.
    pub fn schema_version(&self) -> Result<Option<u32>> {
        self.run(|pool| async move {
            let client = pool.get().await?;
            schema::current_version(&**client).await
        })
    }
}

/// The channel on which committed edge jobs are announced, one per schema (installations in
/// other schemas of the database do not wake this one): an SQL expression.
pub(crate) const EDGE_CHANNEL: &str = "'darkroom_edge_' || md5(current_schema())";

impl Drop for PgStore {
    fn drop(&mut self) {
        self.leave();
    }
}

/// A session advisory lock, released when dropped.
struct AdvisoryLock {
    client: Option<deadpool_postgres::Object>,
    handle: tokio::runtime::Handle,
    key: i64,
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let key = self.key;
            let (done, released) = std::sync::mpsc::sync_channel::<()>(1);
            self.handle.spawn(async move {
                let unlocked = client
                    .query_one("SELECT pg_advisory_unlock($1)", &[&key])
                    .await
                    .and_then(|row| row.try_get::<_, bool>(0));
                if !matches!(unlocked, Ok(true)) {
                    // A connection that may still hold the lock never goes back to the pool:
                    // closing it releases the lock.
                    drop(deadpool_postgres::Object::take(client));
                }
                let _ = done.send(());
            });
            // Released when the guard is gone, so that the holder's next turn (or another
            // caller in this process) finds it free; bounded, since closing the connection
            // releases it anyway.
            let _ = released.recv_timeout(std::time::Duration::from_secs(5));
        }
    }
}

/// Borrowed views of owned parameters, as the client takes them.
pub(crate) fn refs(params: &Params) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect()
}

tokio::task_local! {
    /// The highest generation the work of one [`PgStore::run`] moved the records to.
    static BUMPED: Cell<u64>;
}

/// Moves the change generation, inside the transaction of the change; the change's
/// [`PgStore::run`] settles the new value once the work is done.
pub(crate) async fn bump_generation(client: &tokio_postgres::Transaction<'_>) -> Result<()> {
    let value: i64 = client
        .query_one(
            "UPDATE generation SET value = value + 1 RETURNING value",
            &[],
        )
        .await?
        .try_get(0)?;
    let _ = BUMPED.try_with(|bumped| bumped.set(bumped.get().max(to_u64(value))));
    Ok(())
}

/// A record's JSON form, for a `jsonb` column.
pub(crate) fn to_json<T: Serialize>(v: &T) -> Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| StorageError::Sql(format!("record to JSON: {e}")))
}

/// A record read back from a `jsonb` column of `table`.
pub(crate) fn from_row<T: DeserializeOwned>(
    table: &'static str,
    row: &Row,
    col: usize,
) -> Result<T> {
    let value: serde_json::Value = row.try_get(col)?;
    serde_json::from_value(value).map_err(|e| StorageError::Corrupt {
        tree: table,
        message: e.to_string(),
    })
}

/// Counters are `bigint` columns; a count never goes below zero.
pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
pub(crate) mod testing {
    use super::PgStore;

    /// A store over a fresh schema of the database named by `DATABASE_URL`, or `None` (with a
    /// message) when it is not set: these tests need a real PostgreSQL (`.ci/postgres`).
    pub fn store(test: &str) -> Option<PgStore> {
        pair(test).map(|(store, _)| store)
    }

    /// Two stores (two pools, as two nodes have) over one fresh schema, or `None` as
    /// [`store`] says.
    pub fn pair(test: &str) -> Option<(PgStore, impl Fn() -> PgStore)> {
        let Ok(url) = std::env::var("DATABASE_URL") else {
            eprintln!("{test}: skipped, DATABASE_URL is not set (start one with .ci/postgres)");
            return None;
        };
        // Each test gets a schema of its own, so that tests run in parallel on one database.
        let schema = format!("t_{}_{}", test, std::process::id());
        let admin = PgStore::open(&url, 1).unwrap();
        admin
            .run({
                let schema = schema.clone();
                move |pool| async move {
                    let client = pool.get().await?;
                    client
                        .batch_execute(&format!(
                            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
                        ))
                        .await?;
                    Ok(())
                }
            })
            .unwrap();
        let sep = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{sep}options=-csearch_path%3D{schema}");
        let store = PgStore::open(&url, 4).unwrap();
        Some((store, move || PgStore::open(&url, 4).unwrap()))
    }
}

#[cfg(test)]
mod tests {
    use super::testing;
    use std::time::Duration;

    #[test]
    #[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
    fn the_blob_removal_lock_is_held_across_connections_until_dropped() {
        let Some(store) = testing::store("blob_lock") else {
            return;
        };
        let store = std::sync::Arc::new(store);
        let held = store.blob_removal_lock().unwrap();
        let (taken, taken_rx) = std::sync::mpsc::channel();
        let other = store.clone();
        let waiter = std::thread::spawn(move || {
            let _lock = other.blob_removal_lock().unwrap();
            taken.send(()).unwrap();
        });
        assert!(
            taken_rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "a second connection waits while the lock is held"
        );
        drop(held);
        taken_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        waiter.join().unwrap();
        // Released again: a third taker gets it at once.
        drop(store.blob_removal_lock().unwrap());
    }
}

#[cfg(test)]
mod exclusive_tests {
    use super::testing;
    use std::time::{Duration, Instant};

    #[test]
    #[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
    fn one_node_at_a_time_holds_an_exclusive_lock() {
        let Some((one, open_other)) = testing::pair("exclusive") else {
            return;
        };
        let other = open_other();
        let held = one.exclusive("gc").unwrap().expect("free at first");
        assert!(
            other.exclusive("gc").unwrap().is_none(),
            "refused while held"
        );
        assert!(
            one.exclusive("gc").unwrap().is_none(),
            "also on another connection"
        );
        assert!(
            other.exclusive("evict").unwrap().is_some(),
            "names are apart"
        );
        drop(held);
        // The release runs on the driver thread; it is granted once it has.
        let deadline = Instant::now() + Duration::from_secs(5);
        let granted = loop {
            if let Some(lock) = other.exclusive("gc").unwrap() {
                break lock;
            }
            assert!(Instant::now() < deadline, "granted after the holder let go");
            std::thread::sleep(Duration::from_millis(20));
        };
        // A node that dies loses its connection, and the lock with it.
        drop(granted);
        let taken = one.exclusive("gc").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut taken = taken;
        while taken.is_none() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(20));
            taken = one.exclusive("gc").unwrap();
        }
        // The holder never lets go; its process ends (its runtime and connections go).
        std::mem::forget(taken);
        drop(one);
        let deadline = Instant::now() + Duration::from_secs(10);
        while other.exclusive("gc").unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "taken over once the holder is gone"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
