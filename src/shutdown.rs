//! Graceful shutdown of every channel a server made: see [`Shutdown`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use crate::shared::Shared;

/// A registry of live channels that can close them all. Cheap to clone; clones share the
/// registry.
///
/// Graceful shutdown of every channel a server made.
///
/// hyper-util's `GracefulShutdown` does not see upgraded HTTP/1 WebSockets (the connection
/// future ends at the upgrade while the socket lives on) and waits forever on endless streams.
/// So webchan keeps its own registry: give a [`Shutdown`] to the [`Config`](crate::Config) of
/// the channels it should cover, and [`Shutdown::shutdown`] then
///
/// 1. refuses new channels (`503 Service Unavailable`; stop the accept loop too — see
///    [`Shutdown::is_shutting_down`]),
/// 2. closes every WebSocket with 1001 "going away" and ends every HTTP stream cleanly (an SSE
///    stream first gets a `retry:` of a few seconds with jitter, so that clients do not all
///    reconnect at once) — after what is already queued,
/// 3. waits up to the deadline for the peers,
/// 4. drops what is left: a WebSocket's connection; an HTTP stream's channel, which closes at
///    once, and its response, aborted when hyper next polls it (a client that reads nothing
///    holds its connection, which is hyper's, until it reads, or until a timeout of yours
///    around `serve_connection`). Sends still in hyper's buffer then are reported `Closed`
///    though they may reach the client, which sees the response cut short over HTTP/1.1 and
///    HTTP/2, after what hyper had buffered (sometimes every byte sent); an HTTP/1.0 response
///    ends with its connection either way, and a proxy that speaks HTTP/1.0 to the server (as
///    nginx does by default) passes it on as complete. Then it waits (up to a second) for the
///    forced WebSockets to report `Closed` on their tasks, and reports how many channels ended
///    before the deadline and how many were forced.
///
/// "Before the deadline" is however the channel ended: a client that answers the 1001 with
/// a TCP reset (`Closed` with 1006) or a close handshake cut by
/// [`Config::close_timeout`](crate::Config::close_timeout) counts there too; each channel's
/// own `Closed` event says how it ended. A channel forced by a concurrent call (with a shorter
/// deadline) counts as forced in every call's report. Dropping the `shutdown` future before it
/// returns (a `timeout` around it, say) leaves the channels asked to close and the refusal in
/// place, but forces nothing.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// # async fn f() {
/// let shutdown = webchan::Shutdown::new();
/// let config = webchan::Config::default().shutdown(&shutdown);
/// // ... serve requests with `config` ...
/// # let _ = config;
/// let report = shutdown.shutdown(Duration::from_secs(10)).await;
/// println!("{} ended before the deadline, {} forced", report.clean, report.forced);
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Registry>,
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("live", &self.live())
            .field("shutting_down", &self.is_shutting_down())
            .finish()
    }
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    next: AtomicU64,
    shutting_down: AtomicBool,
    /// `as_channel` calls past the shutdown check and not yet registered (see [`Entering`]).
    entering: std::sync::atomic::AtomicUsize,
    live: Mutex<HashMap<u64, Weak<Shared>>>,
    changed: Notify,
}

/// What [`Shutdown::shutdown`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Channels that ended before the deadline, however they ended (see [`Shutdown`]).
    pub clean: usize,
    /// Channels still open at the deadline (this call's or a concurrent call's), dropped.
    pub forced: usize,
}

impl Shutdown {
    /// A new, empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Has [`shutdown`](Self::shutdown) been called? An accept loop can check this (or
    /// `select!` on something of its own) to stop taking connections.
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Acquire)
    }

    /// How many registered channels are open now.
    #[must_use]
    pub fn live(&self) -> usize {
        self.inner.live.lock().map_or(0, |l| l.len())
    }

    /// Closes every registered channel gracefully, waits up to `deadline` for them, then drops
    /// the rest. New channels are refused from the first moment. When it returns, every channel
    /// it saw has reported `Closed` (unless its runtime no longer runs its task: it waits a
    /// second for those).
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        // Channels being made now (past the check, see `Entering`) register first: then the
        // snapshot has them all. Before 2026-12-05 one made just as the shutdown began could
        // miss both the 503 and the snapshot: never asked to close, forced at the deadline,
        // and the report one clean channel short.
        loop {
            let mut notified = std::pin::pin!(self.inner.changed.notified());
            notified.as_mut().enable();
            if self.inner.entering.load(Ordering::SeqCst) == 0 {
                break;
            }
            notified.await;
        }
        let channels: Vec<Arc<Shared>> = self.snapshot();
        for (i, shared) in channels.iter().enumerate() {
            shared.shutdown_close(i);
        }
        // `Duration::MAX` ("wait for them all") must not overflow.
        let now = tokio::time::Instant::now();
        let deadline =
            now.checked_add(deadline).unwrap_or(now + Duration::from_secs(86_400 * 365 * 30));
        self.wait_for_none_live(deadline).await;
        for shared in self.snapshot() {
            shared.force_close();
        }
        // A forced WebSocket ends on its own task, woken just now: wait for it, so that when
        // this returns every channel has reported `Closed` (a server that exits next would
        // lose those events). Its task runs at once unless the runtime is busy; the bound only
        // keeps a runtime that no longer runs it from holding this call.
        self.wait_for_none_live(tokio::time::Instant::now() + FORCED_GRACE).await;
        // Forced by this call or by a concurrent one (whose shorter deadline came first):
        // before stop 29 (2026-12-05) the channels a concurrent call forced counted as clean.
        let forced = channels.iter().filter(|shared| shared.was_shut_off()).count();
        let clean = channels.len() - forced;
        if forced > 0 {
            tracing::warn!(clean, forced, "channels shut down: some were forced at the deadline");
        } else {
            tracing::info!(clean, forced, "channels shut down");
        }
        ShutdownReport { clean, forced }
    }

    /// Waits until no registered channel is live, or `until`.
    async fn wait_for_none_live(&self, until: tokio::time::Instant) {
        loop {
            // Registered before the count is read, so a close in between is not missed.
            let mut notified = std::pin::pin!(self.inner.changed.notified());
            notified.as_mut().enable();
            if self.live() == 0 {
                return;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return;
            }
        }
    }

    fn snapshot(&self) -> Vec<Arc<Shared>> {
        let live = self.inner.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        live.values().filter_map(Weak::upgrade).collect()
    }

    pub(crate) fn registry(&self) -> &Arc<Registry> {
        &self.inner
    }

    /// A channel is being made: `None` once the shutdown has begun (the caller answers 503).
    /// Held until the channel is registered.
    pub(crate) fn enter(&self) -> Option<Entering> {
        // SeqCst with the flag's store in `shutdown`: either this sees the flag, or the
        // shutdown sees this count and waits for the registration.
        self.inner.entering.fetch_add(1, Ordering::SeqCst);
        let entering = Entering(Arc::clone(&self.inner));
        if self.inner.shutting_down.load(Ordering::SeqCst) {
            return None;
        }
        Some(entering)
    }
}

/// An `as_channel` call between its shutdown check and its channel's registration.
pub(crate) struct Entering(Arc<Registry>);

impl Drop for Entering {
    fn drop(&mut self) {
        self.0.entering.fetch_sub(1, Ordering::SeqCst);
        // Only a shutdown waits on this (notifying takes a lock: not at every channel made).
        if self.0.shutting_down.load(Ordering::SeqCst) {
            self.0.changed.notify_waiters();
        }
    }
}

impl Registry {
    pub(crate) fn add(&self, shared: &Arc<Shared>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut live = self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        live.insert(id, Arc::downgrade(shared));
        id
    }

    pub(crate) fn remove(&self, id: u64) {
        let mut live = self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        live.remove(&id);
        drop(live);
        self.changed.notify_waiters();
    }
}

/// How long [`Shutdown::shutdown`] waits, after its deadline, for the WebSockets it forced to
/// report `Closed` (each on its own task, which normally runs within microseconds).
const FORCED_GRACE: Duration = Duration::from_secs(1);

/// A reconnect delay of 2 to 5 seconds, different for each channel.
pub(crate) fn jittered_retry(index: usize) -> Duration {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize);
    let spread = (index.wrapping_mul(2_654_435_761).wrapping_add(seed)) % 3000;
    Duration::from_millis(2000 + spread as u64)
}
