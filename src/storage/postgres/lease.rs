//! The change generation held in memory by every node, kept strict by leases.
//!
//! A warm render hit reads the generation ([`crate::storage::Records::generation`]) before
//! anything else; on PostgreSQL that was a query per hit. Here each node holds the generation
//! in an atomic and answers from it while it may trust it, which this protocol makes exact:
//!
//! - **Pushed.** Every transaction that moves the `generation` row announces the new value on
//!   a channel of its schema (a trigger, migration 4), delivered when it commits, in commit
//!   order. Each node keeps one connection of its own ([`watch`]) that `LISTEN`s there (and on
//!   the edge queue's channel), raises its atomic to every value announced, and *then*
//!   acknowledges it: `UPDATE nodes SET seen = …`.
//! - **Leased.** The same connection beats every [`BEAT`]: in one transaction it reads the
//!   generation `FOR SHARE`, raises the atomic to it, and renews its row of `nodes` with
//!   `seen` and `lease_until = now() + LEASE` (database clock). A lost notification costs at
//!   most one beat. After a beat that started at local instant `t0` commits, the node trusts
//!   its atomic until `t0 + TRUST` by its monotonic clock; `TRUST` is half of `LEASE`, so a
//!   node stops trusting well before the database sees its lease end. While the connection is
//!   down (at start-up, after an error, when a beat fails or times out) nothing is trusted and
//!   `generation()` queries the row as before; the lease is given up through the pool.
//! - **Settled.** A transaction that moved the generation to `G` commits, then waits before
//!   the change returns ([`settle`]) until every *other* node whose lease has not ended has
//!   acknowledged at least `G`; its own node applies `G` itself. The wait is bounded: a node
//!   that died stops renewing, and its lease ends within `LEASE`. After `LEASE` (plus a
//!   margin) from the commit the condition holds whatever the writer can read, since every
//!   lease granted before the commit has ended and every one granted after it was granted
//!   with a read of at least `G`; so the wait also ends then when the database cannot be read.
//!
//! Why a node that returns a generation from memory is never behind a change that returned:
//! at the writer's check, the node's lease either had not ended, so its `seen` (written only
//! after its atomic was raised) was at least `G`; or it had ended, so its trust (which ends
//! `LEASE - TRUST` earlier) had too, and any later trust comes from a beat whose read of the
//! generation either committed before the writer's increment (then the writer, blocked on the
//! `FOR SHARE` lock until that beat committed, saw the renewed lease and waited for it) or
//! followed the writer's commit (and read at least `G`).

use super::{PgStore, Result};
use deadpool_postgres::Pool;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};
use tokio_postgres::{AsyncMessage, NoTls};

/// How often a node renews its lease and re-reads the generation.
pub(crate) const BEAT: Duration = Duration::from_millis(250);
/// How long a renewed lease lasts, by the database's clock.
const LEASE: Duration = Duration::from_secs(2);
/// How long after a beat started its node trusts the generation it holds.
const TRUST: Duration = Duration::from_secs(1);
/// The lease as SQL (must equal [`LEASE`]).
const LEASE_SQL: &str = "interval '2 seconds'";
/// Rows of nodes whose lease ended this long ago are removed by a beat.
const FORGET_SQL: &str = "interval '10 minutes'";
/// A beat or an acknowledgement that takes longer than this counts as a lost connection.
const STALL: Duration = Duration::from_secs(1);

/// The channel on which new generations are announced, one per schema: an SQL expression (the
/// trigger of migration 4 names it the same way).
pub(crate) const GENERATION_CHANNEL: &str = "'darkroom_generation_' || md5(current_schema())";

/// What a node knows of the generation, shared by its hits, its writers and its [`watch`].
pub(crate) struct Watch {
    /// This node's row in `nodes`.
    pub(crate) id: String,
    /// The highest generation this node has applied: always one the database committed.
    generation: AtomicU64,
    /// Nanoseconds after `origin` until which `generation` may be trusted; 0 = not at all.
    trusted_until: AtomicU64,
    origin: Instant,
    /// Generation queries made because nothing was trusted (see [`PgStore::generation`]).
    fallbacks: AtomicU64,
    /// How long the watch waits before connecting again after losing its connection.
    reconnect_ms: AtomicU64,
    /// Set when the store is dropped: the watch gives up its lease and stops.
    closed: AtomicBool,
}

impl Watch {
    pub(crate) fn new() -> Result<Watch> {
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| super::StorageError::Sql(format!("node id: {e}")))?;
        Ok(Watch {
            id: hex::encode(id),
            generation: AtomicU64::new(0),
            trusted_until: AtomicU64::new(0),
            origin: Instant::now(),
            fallbacks: AtomicU64::new(0),
            reconnect_ms: AtomicU64::new(1000),
            closed: AtomicBool::new(false),
        })
    }

    /// The generation held in memory, while it may be trusted.
    pub(crate) fn trusted(&self) -> Option<u64> {
        let until = self.trusted_until.load(Ordering::SeqCst);
        if until == 0 || self.nanos(Instant::now()) >= until {
            return None;
        }
        Some(self.generation.load(Ordering::SeqCst))
    }

    /// Raises the generation held in memory to `g`, a value the database committed.
    pub(crate) fn apply(&self, g: u64) {
        self.generation.fetch_max(g, Ordering::SeqCst);
    }

    fn held(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Trusts the generation held until [`TRUST`] after `beat_started`.
    fn trust_from(&self, beat_started: Instant) {
        let until = self.nanos(beat_started + TRUST).max(1);
        self.trusted_until.store(until, Ordering::SeqCst);
    }

    /// Trusts nothing until the next successful beat.
    pub(crate) fn distrust(&self) {
        self.trusted_until.store(0, Ordering::SeqCst);
    }

    /// Counts a generation query made because nothing was trusted.
    pub(crate) fn fell_back(&self) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
    }

    #[cfg(test)]
    pub(crate) fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(crate) fn reconnect_after(&self, pause: Duration) {
        self.reconnect_ms
            .store(pause.as_millis() as u64, Ordering::SeqCst);
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.distrust();
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Distrusts the generation when the watch's connection is gone, however its task ends.
struct DownOnDrop<'a>(&'a Watch);

impl Drop for DownOnDrop<'_> {
    fn drop(&mut self) {
        self.0.distrust();
    }
}

/// The node's own connection: `LISTEN`s for new generations and edge jobs, acknowledges
/// generations and beats ([`BEAT`]); connects again after any failure. Runs on the driver
/// thread until the store is dropped.
pub(crate) async fn watch(
    config: tokio_postgres::Config,
    pool: Pool,
    watch: Arc<Watch>,
    edge: Arc<Notify>,
) {
    let mut config = config;
    config.application_name(format!("darkroom watch {}", watch.id));
    while !watch.closed.load(Ordering::SeqCst) {
        if let Err(e) = watch_once(&config, &watch, &edge).await {
            log::warn!("database watch connection lost ({e}); generation read per request");
        }
        // Nothing is trusted once the connection is gone; then the lease goes too, so that
        // writers do not wait for this node until it expires.
        watch.distrust();
        let id = watch.id.clone();
        let _ = tokio::time::timeout(STALL, async {
            let client = pool.get().await?;
            client
                .execute(
                    "UPDATE nodes SET lease_until = LEAST(lease_until, now()) WHERE id = $1",
                    &[&id],
                )
                .await?;
            Ok::<_, super::StorageError>(())
        })
        .await;
        let pause = watch.reconnect_ms.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// One connection's life: until it fails, or the store is dropped.
async fn watch_once(
    config: &tokio_postgres::Config,
    watch: &Watch,
    edge: &Notify,
) -> std::result::Result<(), tokio_postgres::Error> {
    let _down = DownOnDrop(watch);
    let (mut client, mut connection) = config.connect(NoTls).await?;
    let (tx, mut notes) = mpsc::unbounded_channel();
    let driven = tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = tx.send(Some((n.channel().to_string(), n.payload().to_string())));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        // The end of the connection, as a message.
        let _ = tx.send(None);
    });
    let _abort = AbortOnDrop(driven);
    let row = client
        .query_one(
            &format!("SELECT {}, {}", super::EDGE_CHANNEL, GENERATION_CHANNEL),
            &[],
        )
        .await?;
    let (edge_channel, generation_channel): (String, String) = (row.try_get(0)?, row.try_get(1)?);
    client
        .batch_execute(&format!(
            "LISTEN \"{edge_channel}\"; LISTEN \"{generation_channel}\""
        ))
        .await?;
    let statements = Statements::prepare(&client).await?;
    // Jobs may have been queued while this node was not listening.
    edge.notify_one();
    let mut beats = tokio::time::interval(BEAT);
    beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut acked = 0u64;
    let mut count = 0u64;
    loop {
        if watch.closed.load(Ordering::SeqCst) {
            return Ok(());
        }
        tokio::select! {
            note = notes.recv() => {
                let Some(Some((channel, payload))) = note else {
                    return Ok(());
                };
                if channel == edge_channel {
                    edge.notify_one();
                } else if channel == generation_channel {
                    if let Ok(g) = payload.parse::<u64>() {
                        watch.apply(g);
                    }
                }
                // Acknowledge once for everything announced meanwhile: applied first, then
                // written, so that `seen` never runs ahead of the atomic.
                while let Ok(more) = notes.try_recv() {
                    match more {
                        Some((channel, payload)) if channel == generation_channel => {
                            if let Ok(g) = payload.parse::<u64>() {
                                watch.apply(g);
                            }
                        }
                        Some(_) => edge.notify_one(),
                        None => return Ok(()),
                    }
                }
                let held = watch.held();
                if held > acked {
                    let seen = super::to_i64(held);
                    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
                        [&watch.id, &seen];
                    let ack = client.execute(&statements.ack, &params);
                    match tokio::time::timeout(STALL, ack).await {
                        Ok(done) => {
                            done?;
                            acked = held;
                        }
                        Err(_) => return Ok(()),
                    }
                }
            }
            _ = beats.tick() => {
                let started = Instant::now();
                let forget = count % 240 == 0;
                count += 1;
                let renewal = beat(&mut client, &statements, watch, forget);
                match tokio::time::timeout(STALL, renewal).await {
                    Ok(Ok(seen)) => {
                        acked = acked.max(seen);
                        watch.trust_from(started);
                    }
                    Ok(Err(e)) => return Err(e),
                    // A beat stuck behind the database: trust ends on its own; start over.
                    Err(_) => return Ok(()),
                }
            }
        }
    }
}

/// The statements of the lease connection, prepared once when it opens: a beat is then four
/// round trips (begin, read, renew, commit) with nothing parsed or planned, four times a second
/// on every node.
struct Statements {
    read: tokio_postgres::Statement,
    renew: tokio_postgres::Statement,
    forget: tokio_postgres::Statement,
    ack: tokio_postgres::Statement,
}

impl Statements {
    async fn prepare(
        client: &tokio_postgres::Client,
    ) -> std::result::Result<Statements, tokio_postgres::Error> {
        Ok(Statements {
            read: client
                .prepare("SELECT value FROM generation FOR SHARE")
                .await?,
            renew: client
                .prepare(&format!(
                    "INSERT INTO nodes (id, seen, lease_until) VALUES ($1, $2, now() + {LEASE_SQL}) \
                     ON CONFLICT (id) DO UPDATE SET seen = GREATEST(nodes.seen, EXCLUDED.seen), \
                     lease_until = EXCLUDED.lease_until"
                ))
                .await?,
            forget: client
                .prepare(&format!(
                    "DELETE FROM nodes WHERE lease_until < now() - {FORGET_SQL}"
                ))
                .await?,
            ack: client
                .prepare("UPDATE nodes SET seen = GREATEST(seen, $2) WHERE id = $1")
                .await?,
        })
    }
}

/// Renews the node's lease with the generation read under a share lock of its row, applied
/// before it is written; returns the generation acknowledged.
async fn beat(
    client: &mut tokio_postgres::Client,
    statements: &Statements,
    watch: &Watch,
    forget: bool,
) -> std::result::Result<u64, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let read: i64 = tx.query_one(&statements.read, &[]).await?.try_get(0)?;
    watch.apply(super::to_u64(read));
    let held = watch.held();
    tx.execute(&statements.renew, &[&watch.id, &super::to_i64(held)])
        .await?;
    if forget {
        tx.execute(&statements.forget, &[]).await?;
    }
    tx.commit().await?;
    Ok(held)
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits, after a transaction that moved the generation to `g` committed, until every other
/// node whose lease has not ended has acknowledged `g`, or until that cannot matter any more
/// (see the module documentation); applies the committed generation to this node first.
pub(crate) async fn settle(pool: &Pool, watch: &Watch, g: u64) {
    let bound = Instant::now() + LEASE + STALL / 2;
    let mut pause = Duration::from_micros(500);
    let target = super::to_i64(g);
    loop {
        let check = tokio::time::timeout(STALL, async {
            let client = pool.get().await?;
            let row = client
                .query_one(
                    "SELECT (SELECT value FROM generation), (SELECT count(*) FROM nodes \
                     WHERE id <> $1 AND lease_until > now() AND seen < $2)",
                    &[&watch.id, &target],
                )
                .await?;
            Ok::<_, super::StorageError>((row.try_get::<_, i64>(0)?, row.try_get::<_, i64>(1)?))
        })
        .await;
        if let Ok(Ok((current, behind))) = check {
            watch.apply(super::to_u64(current));
            // Below `g`: the transaction did not commit after all; nobody waits for it.
            if current < target || behind == 0 {
                return;
            }
        }
        if Instant::now() >= bound {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

impl PgStore {
    /// Gives up this node's lease when the store is dropped (bounded; a node that cannot
    /// reach the database loses it when it ends anyway).
    pub(super) fn leave(&self) {
        self.watch.close();
        let pool = self.pool.clone();
        let id = self.watch.id.clone();
        let (done, left) = std::sync::mpsc::sync_channel::<()>(1);
        self.driver.handle.spawn(async move {
            let _ = tokio::time::timeout(STALL, async {
                if let Ok(client) = pool.get().await {
                    let _ = client
                        .execute("DELETE FROM nodes WHERE id = $1", &[&id])
                        .await;
                }
            })
            .await;
            let _ = done.send(());
        });
        let _ = left.recv_timeout(STALL * 2);
    }
}
