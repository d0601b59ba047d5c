//! The WebSocket transport: one task per connection moves frames between hyper's upgraded IO
//! and the channel's shared state, so pings are answered and closes noticed whatever the
//! application is doing.
//!
//! The connection's state sits behind a mutex that its task and the channel's handles share:
//! a sender flushing its messages runs the connection on its own task (with the task's waker,
//! so every readiness still wakes the connection's task), instead of waking the task and
//! waiting to be woken back. The task remains the one that always runs: reads, pings,
//! timers and closes do not depend on the application polling anything.
//!
//! Each wake-up decodes every frame that is ready (up to a budget), takes every queued
//! message, encodes them all into one buffer, and writes it at once. Both buffers go back (to
//! a small per-thread pool) once the connection is idle with them empty, so an idle connection
//! holds no buffer, whatever size its last message had: with keepalive on (the default) when a
//! sweep of the keepalive thread finds the peer silent (within two sweeps, two seconds at
//! most; until then a conversation keeps them from one message to the next), else whenever
//! the connection goes idle.
//!
//! What a round trip costs on a busy core is mostly the cache lines it touches (~3-7 ns each,
//! benches/HISTORY.md, "What a cache line costs a round trip"), stack lines included: the
//! functions every round trip goes through keep small stack frames, and whatever needs a large
//! one (a `Conn` moved out, an array of slices) is out of line (`start`, `end`,
//! `write_vectored`).

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWrite;
use tokio::time::{Instant, Sleep};

use crate::frame::{self, Decoded, Decoder, Violation};
use crate::message::{Piece, Pump};
use crate::shared::{Inline, Item, Queued, Shared, KEPT_SLOTS, SSE_ON_WEBSOCKET};
use crate::{bufpool, keepalive};
use crate::{CloseInfo, Error, Event, Incoming, Message};

/// Frames decoded per wake-up before the task lets others run.
const READ_BUDGET: usize = 64;
/// The most the read buffer grows ahead of the bytes that came: a frame of the default
/// largest size, whole (see `Conn::poll_read`).
const RESERVE_MAX: usize = (16 << 20) + 64;
/// The most read and dropped after we failed a connection (see `Conn::linger`).
const DRAIN_MAX: usize = 16 << 20;
/// Encoded bytes gathered before they are written out.
const WRITE_HIGH: usize = 64 * 1024;
/// Payloads at least this large are written from their own buffer (vectored), not copied.
const LARGE_PAYLOAD: usize = 16 * 1024;
/// The most one write hands hyper over HTTP/2 (an HTTP/2 DATA frame's default size). hyper's
/// upgraded HTTP/2 stream takes any write whole, copied into a queue of two that ignores the
/// stream's flow control: one write of a large frame "completed" at once, whatever the client
/// took. In pieces of this size hyper holds at most ~4 of them (its queue, the piece waiting
/// for window, the one in h2), and a write waits as a socket's would. Before stop 28
/// (2026-12-05) three 8 MiB sends completed to a client that had taken 64 KiB, and keepalive
/// and the idle timeout, which look at writes that wait, dropped a client reading slowly.
const H2_WRITE_MAX: usize = 16 * 1024;
/// The largest frame a read is sized for in advance (see `Conn::expect`).
const EXPECT_MAX: usize = 64 * 1024;
/// Buffers given to one vectored write at most.
const MAX_SLICES: usize = 32;
/// Buffers of the common vectored write (a header and its payload, or a few of them).
const FEW_SLICES: usize = 4;

#[derive(Debug)]
struct NoUpgrade;

impl std::fmt::Display for NoUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "the request carries no hyper upgrade handle (`hyper::upgrade::OnUpgrade`): was it \
             served by hyper, and did every layer before `as_channel` keep its extensions?",
        )
    }
}

impl std::error::Error for NoUpgrade {}

/// hyper's own error for an upgrade it will not give: a connection served without upgrades
/// (hyper's "upgrade expected but low level API in use"). Before stop 30 (2026-12-06) the
/// error said only that, at debug level: every WebSocket of such a server failed after its
/// `101` with nothing that named the fix.
#[derive(Debug)]
struct WithoutUpgrades(hyper::Error);

impl std::fmt::Display for WithoutUpgrades {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "hyper gave no upgrade ({}): serve the connection with upgrades on (hyper-util's \
             `serve_connection_with_upgrades`, or hyper's `http1::Builder::serve_connection(..)\
             .with_upgrades()`)",
            self.0
        )
    }
}

impl std::error::Error for WithoutUpgrades {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0)
    }
}

/// The error of an upgrade that failed. A server set up wrong (served without upgrades, or a
/// layer that drops the request's extensions) fails each of its WebSockets alike: the first
/// such failure in the process is a warning, the rest are logged at debug with every other.
#[cold]
fn upgrade_failed(error: hyper::Error) -> Error {
    if error.is_user() {
        return misconfigured(WithoutUpgrades(error));
    }
    Error::Upgrade(Arc::new(error))
}

#[cold]
fn misconfigured(error: impl std::error::Error + Send + Sync + 'static) -> Error {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(%error, "websocket upgrade failed: the server is set up wrong");
    }
    Error::Upgrade(Arc::new(error))
}

/// A channel whose connection has not started: dropped before [`drive`] hands it over (the
/// task never polled, as when `tokio::spawn` panics outside a runtime, or dropped with its
/// runtime while it waited for hyper), it closes the channel (1006). Before stop 30
/// (2026-12-06) nothing did: its sends and `closed()` waited for good, and it stayed in its
/// `Shutdown`'s registry (a shutdown then waited its whole deadline for it).
pub(crate) struct Unstarted(Option<Arc<Shared>>);

impl Unstarted {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self(Some(shared))
    }
}

impl Drop for Unstarted {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            shared.finish(CloseInfo::websocket(1006, ""), None);
        }
    }
}

/// Waits for hyper's upgrade, then runs the connection until it is closed.
pub(crate) async fn drive(
    mut unstarted: Unstarted,
    on_upgrade: Option<OnUpgrade>,
    deflate: Option<crate::deflate::Agreed>,
) {
    let Some(shared) = unstarted.0.clone() else { return };
    let upgraded = match on_upgrade {
        None => Err(misconfigured(NoUpgrade)),
        // A channel closed first (the handler refused the upgrade, a shutdown dropped it)
        // stops waiting: hyper gives the upgrade only when the client upgrades or its
        // connection ends, and a client that got a 403 may keep the connection for more
        // requests. Before stop 30 (2026-12-06) this task stayed as long, holding the channel.
        Some(mut on_upgrade) => {
            let upgrade = poll_fn(|cx| match shared.poll_closed(cx) {
                Poll::Ready(()) => Poll::Ready(None),
                Poll::Pending => Pin::new(&mut on_upgrade).poll(cx).map(Some),
            });
            match upgrade.await {
                None => return,
                Some(upgraded) => upgraded.map_err(upgrade_failed),
            }
        }
    };
    unstarted.0 = None;
    let upgraded = match upgraded {
        // The handler refused the upgrade (the channel is closed already).
        Ok(_) if shared.is_closed() => return,
        Ok(upgraded) => upgraded,
        Err(error) => {
            tracing::debug!(%error, "websocket upgrade failed");
            shared.finish(CloseInfo::websocket(1006, ""), Some(error));
            return;
        }
    };
    shared.open();
    let core = EndOnDrop(start(shared, upgraded, deflate));
    poll_fn(|cx| core.run(cx)).await;
}

/// The connection's state, made once the upgrade completed. Out of line: the `Conn` is built
/// in this function's stack frame, not in that of the task's future, which every poll of the
/// task goes through (1,624 bytes of frame before, 240 after).
#[inline(never)]
fn start(
    shared: Arc<Shared>,
    upgraded: Upgraded,
    deflate: Option<crate::deflate::Agreed>,
) -> Arc<Core> {
    let config = &shared.config;
    let timeout = config.get().timeout;
    let io = TokioIo::new(upgraded);
    let conn = Conn {
        runtime: tokio::runtime::Handle::current(),
        vectored: io.is_write_vectored(),
        write_max: if shared.request.version() == http::Version::HTTP_2 {
            H2_WRITE_MAX
        } else {
            usize::MAX
        },
        io,
        rbuf: BytesMut::new(),
        need: 0,
        read_chunk: config.get().read_buffer_size,
        expect: 0,
        wbuf: BytesMut::new(),
        out: VecDeque::new(),
        out_len: 0,
        decoder: Decoder::new(config.get().max_message_size, config.get().max_frame_size)
            .with_deflate(deflate),
        compress: deflate.is_some_and(|agreed| agreed.compress),
        batch: VecDeque::new(),
        current: None,
        fed_upto: 0,
        fed_bytes: 0,
        reported: 0,
        failures: Vec::new(),
        events: VecDeque::new(),
        pong: None,
        paused: false,
        read_closed: false,
        close_sent: None,
        peer_close: None,
        fatal: None,
        abnormal: false,
        shutting_down: false,
        shut_down: false,
        eof: false,
        drain_left: usize::MAX,
        write_waited: false,
        close_timer: None,
        idle: (!timeout.is_zero()).then(|| Idle {
            timeout,
            last: Instant::now(),
            sleep: Box::pin(tokio::time::sleep(timeout)),
        }),
        keepalive: config
            .get()
            .keepalive
            .and_then(|(interval, timeout)| keepalive::watch(interval, timeout)),
        pings_sent: 0,
        keepalive_expired: false,
        carried: false,
        finished: false,
        driver: None,
        dispatch: None,
        readiness: None,
        to_receiver: false,
        read_inline: false,
        shared: Arc::clone(&shared),
    };
    let core = Arc::new(Core {
        conn: Mutex::new(Some(conn)),
        task: Mutex::new(None),
        readiness: std::sync::OnceLock::new(),
    });
    shared.set_inline(core.clone());
    core
}

/// The connection, shared by its task and the channel's handles (see [`Inline`]). The task
/// takes it out when it ends, which also breaks the cycle `Shared -> Core -> Conn -> Shared`.
#[derive(Debug)]
struct Core {
    conn: Mutex<Option<Conn>>,
    /// The connection's task, for a receiver that finds the connection busy (see
    /// [`Inline::read`]); set with `Conn::driver`, so only when the task's waker changes.
    task: Mutex<Option<Waker>>,
    /// Readiness of the socket for reads by the receiver (see [`Dispatch`]): made at the
    /// first such read, here as well as in the `Conn` so that a receiver can tell whether a
    /// read is owed without the connection's lock ([`Inline::armed`]). Only the counts: the
    /// dispatching waker, which holds the keepalive watch, is the `Conn`'s and goes with it
    /// (kept here, it kept the watch, swept for nothing, as long as any handle lived).
    readiness: std::sync::OnceLock<Arc<Readiness>>,
}

/// Reads on the receiver's task. While a connection receives large messages, a receiver that
/// finds no event reads the socket itself ([`Inline::read`]) instead of waiting for the
/// connection's task to read and wake it. The reason is the order in which a runtime runs
/// tasks, not the hand-off's own cost: when many connections become readable at once, the
/// connection tasks all read (a 16 KiB message each) before any handler runs, so each message
/// has left the cache by the time its handler sends it on, and the kernel's copies cost ~15 %
/// more (a fastwebsockets server made to yield between its read and its write lost as much:
/// benches/HISTORY.md, 2026-12-04). Read by the receiver, a message is read, handled and written
/// in one go.
///
/// The waker such a read leaves with the socket is this one: the next readiness wakes the
/// receiver if it is parked waiting for events, and else the connection's task. The task
/// reads as before unless the receiver's read left this waker registered with nothing read
/// since (`armed`).
///
/// Reads never depend on the application polling: a receiver woken and then not polled (a
/// `select!` that took another branch) leaves the reading to the task. With keepalive on (the
/// default), a readiness that woke the receiver marks the connection's keepalive watch as
/// owed, and the keepalive sweeper wakes the task at its next look unless a read settled it
/// first (at most a second later by default, sooner with shorter keepalive intervals: see
/// `keepalive`). Before, every readiness woke the task too, which then found the socket read
/// by the receiver: a task poll and a wake for nothing per large message (16 KiB echo: 970
/// instructions of 11,000 and 48 code lines per message). Without keepalive there is no
/// sweeper, and the task is still woken at every readiness.
///
/// What the receiver reads goes straight into its own queue, not through the shared state,
/// unless the task pushed events since the receiver found none (those come first: see
/// [`Inline::read`]). A receiver whose read is armed parks without taking the connection's
/// lock ([`Inline::armed`]).
///
/// Atomic read-modify-write instructions are few on this path: each waits for the core's
/// store buffer to drain (~7 ns on the Intel host of 2026-12-06: benches/HISTORY.md, "Atomic
/// instructions per message"). A readiness is one `fetch_add`; arming is a store. Stop 34
/// (2026-12-06) took a 16 KiB message's count from 64.7 to 37.6.
#[derive(Debug)]
struct Dispatch {
    readiness: Arc<Readiness>,
    /// Strong, not `Weak`: a `Weak` upgraded and dropped at every readiness cost two atomic
    /// instructions per large message. Every copy of this waker is held by the `Conn` or its
    /// IO (its `dispatch`; the socket's registration, whose wakers tokio drops with the socket;
    /// over HTTP/2 the stream's, which h2 drops once the stream, reset at the latest when
    /// its handle is dropped, is released), so the reference goes with the connection, as the
    /// `Conn`'s own does.
    shared: Arc<Shared>,
    /// The connection's keepalive watch: the sweeper wakes the task when a readiness given to
    /// the receiver was not acted on (see above). None: keepalive off.
    watch: Option<Arc<keepalive::Watch>>,
}

/// The readinesses of the socket that went to the dispatching waker, and whether the
/// receiver's last read is armed (see [`Dispatch`]).
#[derive(Debug, Default)]
struct Readiness {
    /// Readinesses so far: each adds one.
    generation: AtomicUsize,
    /// `generation + 1` as it was when a receiver's read began, stored when that read ended
    /// waiting for the socket (0: never): "armed" while no readiness came since.
    armed_at: AtomicUsize,
}

impl Readiness {
    /// A read of the receiver's ended waiting for the socket, with the dispatching waker, and
    /// no readiness came since: nothing to read.
    fn armed(&self) -> bool {
        self.armed_at.load(Ordering::Acquire)
            == self.generation.load(Ordering::Acquire).wrapping_add(1)
    }

    /// The generation a read begins at (for [`Readiness::arm`]).
    fn generation(&self) -> usize {
        self.generation.load(Ordering::Acquire)
    }

    /// The read that began at `generation` ended waiting for the socket: armed, unless a
    /// readiness came meanwhile (then the generation moved on, and the read is owed).
    fn arm(&self, generation: usize) {
        self.armed_at.store(generation.wrapping_add(1), Ordering::Release);
    }
}

impl Dispatch {
    /// The dispatching waker of a connection, with its readiness counts.
    fn waker(readiness: &Arc<Readiness>, conn: &Conn) -> Waker {
        Waker::from(Arc::new(Self {
            readiness: Arc::clone(readiness),
            shared: Arc::clone(&conn.shared),
            watch: conn.keepalive.clone(),
        }))
    }
}

impl std::task::Wake for Dispatch {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.readiness.generation.fetch_add(1, Ordering::AcqRel);
        // Owed before the receiver is woken, so that its read settles it (a receiver that
        // reads on another thread could read before a mark made after the wake).
        if let Some(watch) = &self.watch {
            watch.owe();
        }
        if self.shared.wake_parked_receiver() && self.watch.is_some() {
            // The receiver reads; the sweeper wakes the task if it does not.
            return;
        }
        // No parked receiver (or no sweeper): the task reads, which settles what is owed.
        self.shared.wake_transport();
    }
}

impl Core {
    /// The connection ended: its task's waker is not kept for the handles that outlive it.
    fn forget_task(&self) {
        *self.task.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn lock(&self) -> MutexGuard<'_, Option<Conn>> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One poll of the connection's task.
    fn run(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut slot = self.lock();
        let Some(conn) = slot.as_mut() else { return Poll::Ready(()) };
        if !conn.driver.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            conn.driver = Some(cx.waker().clone());
            *self.task.lock().unwrap_or_else(PoisonError::into_inner) = conn.driver.clone();
            // The transport's waker registered with the queue is an old one: register anew.
            conn.shared.unsettle();
            if let Some(watch) = &conn.keepalive {
                watch.set_waker(cx.waker());
            }
        }
        if conn.poll(cx).is_ready() {
            end(slot);
            self.forget_task();
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// Is this thread running a tokio task? A handle's inline step or read may start timers (the
/// close timer) and open files, which need a runtime: from a plain thread (`block_on` on a
/// `std::thread`) the connection's task does the work instead. Before stop 27 (2026-12-05) a
/// `send_and_close` from such a thread panicked in the connection ("there is no reactor
/// running"), leaving a close with no timer, and a file sent from one failed `Panicked`.
fn on_a_task() -> bool {
    tokio::task::try_id().is_some()
}

impl Inline for Core {
    fn wake(&self) {
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(task) = task {
            task.wake();
        }
    }

    fn step(&self) -> bool {
        if !on_a_task() {
            return false;
        }
        let mut slot = match self.conn.try_lock() {
            Ok(slot) => slot,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            // The task (or another handle) is running it right now.
            Err(TryLockError::WouldBlock) => return false,
        };
        let Some(conn) = slot.as_mut() else { return false };
        // Moved out for the step and back, not cloned: an atomic increment and decrement saved.
        let Some(waker) = conn.driver.take() else { return false };
        // Everything this step waits for (socket readiness, the queue) wakes the connection's
        // task, exactly as if the task had run it.
        if conn.poll_send(&mut Context::from_waker(&waker)).is_ready() {
            end(slot);
            self.forget_task();
            // Let the task see that it is over.
            waker.wake();
        } else {
            conn.driver = Some(waker);
        }
        true
    }

    fn armed(&self) -> bool {
        self.readiness.get().is_some_and(|readiness| readiness.armed())
    }

    fn read(&self, out: &mut VecDeque<Event>, pushes: u64) {
        if !on_a_task() {
            return;
        }
        let mut slot = match self.conn.try_lock() {
            Ok(slot) => slot,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => {
                // Busy: the task past its read, or a sender's step, which never reads. The
                // readiness that woke this receiver went to it alone, so the task must read.
                // Before stop 27 (2026-12-05) nobody did until keepalive's sweeper woke the
                // task, ~1 s later (1 close in ~280 under load took 1.01 s).
                self.wake();
                return;
            }
        };
        let Some(conn) = slot.as_mut() else { return };
        if !conn.read_inline {
            // Small messages again: the task reads those (it batches them).
            return;
        }
        if conn.shared.pushes() != pushes {
            // The task read since the receiver found no event: those events come first.
            return;
        }
        // Made on first use: most connections never get a large message (~0.8 KiB more per
        // idle connection when every connection had one).
        let readiness = self.readiness.get_or_init(Arc::default);
        if conn.dispatch.is_none() {
            conn.dispatch = Some(Dispatch::waker(readiness, conn));
            conn.readiness = Some(Arc::clone(readiness));
        }
        let generation = readiness.generation();
        if readiness.armed() {
            // Nothing came since the last read of ours.
            return;
        }
        if conn.read_closed || conn.abnormal || conn.paused || conn.shutting_down {
            return;
        }
        // Moved out for the read and back (the read borrows the `Conn`), not cloned.
        let Some(waker) = conn.dispatch.take() else { return };
        // The events go straight to the receiver, which found none waiting (`pushes`: nor
        // did the task push any since), not through the shared state and its lock.
        conn.to_receiver = true;
        let spent = conn.poll_read(&mut Context::from_waker(&waker));
        conn.to_receiver = false;
        conn.dispatch = Some(waker);
        // Swapped, not moved event by event: the receiver's queue is empty when it reads.
        if out.is_empty() {
            std::mem::swap(out, &mut conn.events);
        } else {
            out.append(&mut conn.events);
        }
        if spent
            || conn.pending_out() > 0
            || conn.pong.is_some()
            || conn.read_closed
            || conn.abnormal
            || conn.paused
            || conn.shutting_down
        {
            // Something for the connection's task: pongs, a close, the rest of a burst.
            let driver = conn.driver.clone();
            drop(slot);
            if let Some(driver) = driver {
                driver.wake();
            }
            return;
        }
        // The read ended waiting for the socket, with the dispatching waker: armed, unless a
        // readiness came meanwhile (then the task, woken by it, reads).
        readiness.arm(generation);
        if conn.rbuf.is_empty() {
            let keep = conn.keeps_buffers();
            idle_buffer(&mut conn.rbuf, keep);
        }
    }
}

/// Ends the connection if the task is dropped before it did (a runtime shutting down).
struct EndOnDrop(Arc<Core>);

impl std::ops::Deref for EndOnDrop {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.0
    }
}

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        end(self.0.lock());
        self.0.forget_task();
    }
}

/// Takes the connection out of its slot and drops it once the lock is released (its drop
/// reports `Closed`, which may run code that takes the lock). Out of line: the `Conn` moved
/// out sits in this function's stack frame, not in those of the task's poll and of
/// [`Inline::step`], which run every round trip (each ~700 bytes of stack deeper otherwise).
#[cold]
#[inline(never)]
fn end(mut slot: MutexGuard<'_, Option<Conn>>) {
    let conn = slot.take();
    drop(slot);
    drop(conn);
}

/// An empty buffer of a connection going idle: kept for the next message (made whole again,
/// see [`bufpool::rewind`]) or given back to the thread's pool. (An empty `BytesMut` can still
/// hold its allocation: after `advance` or `split_to` its capacity reads 0 while the buffer
/// stays alive. Either way it is replaced or rewound, never left so.)
fn idle_buffer(buf: &mut BytesMut, keep: bool) {
    if keep {
        bufpool::rewind(buf);
    } else {
        bufpool::give(std::mem::take(buf));
    }
}

/// `buf`, given a pooled allocation first if it has none.
fn wbuf(buf: &mut BytesMut) -> &mut BytesMut {
    if buf.capacity() == 0 {
        *buf = bufpool::take(bufpool::SIZE);
    }
    buf
}

/// A sealed piece of the output (see `Conn::out`).
enum Chunk {
    /// A run of encoded frames, or a large payload as it came.
    Bytes(bytes::Bytes),
    /// The header of a large frame queued when nothing else waited to be written (a large
    /// message per wake-up: the common case), held here. In the write buffer, it had to be
    /// split off from it as a `Bytes` of its own: a buffer taken from the pool and given back,
    /// a shared allocation made the first time, and two atomic reference counts, per message
    /// (benches/HISTORY.md, "Atomic instructions per message").
    Header { bytes: [u8; frame::MAX_HEADER], start: u8, end: u8 },
}

impl Chunk {
    fn header(opcode: u8, len: usize) -> Self {
        let mut bytes = [0; frame::MAX_HEADER];
        let mut rest = &mut bytes[..];
        frame::encode_header(&mut rest, opcode, len);
        let end = (frame::MAX_HEADER - rest.len()) as u8;
        Self::Header { bytes, start: 0, end }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Bytes(bytes) => bytes,
            Self::Header { bytes, start, end } => &bytes[usize::from(*start)..usize::from(*end)],
        }
    }

    /// `n` bytes of it went out (fewer than it holds).
    fn advance(&mut self, n: usize) {
        match self {
            Self::Bytes(bytes) => bytes.advance(n),
            // `n` < its length, at most 10.
            Self::Header { start, .. } => *start += n as u8,
        }
    }
}

struct Idle {
    timeout: Duration,
    last: Instant,
    sleep: Pin<Box<Sleep>>,
}

struct Conn {
    shared: Arc<Shared>,
    /// The runtime of the connection's task. A handle's step may run on a task of another
    /// runtime: what it makes that needs one (the close timer, a file's blocking reads) is
    /// made in this one (see [`Conn::on_own_runtime`]).
    runtime: tokio::runtime::Handle,
    io: TokioIo<Upgraded>,
    /// Bytes read and not yet decoded.
    rbuf: BytesMut,
    /// How many bytes `rbuf` must hold before the decoder can tell more: the frame being read
    /// whole, or while its header is incomplete the header's length bytes (see
    /// `Decoder::decode`; 0: unknown).
    need: usize,
    read_chunk: usize,
    /// The size of the last frame larger than `read_chunk` and at most `EXPECT_MAX` (0 after
    /// a small or a larger one): a read that
    /// starts a frame takes room for that much at once, so a peer that sends large messages
    /// gets one read per message, not a small read, the rest, and a read that finds nothing.
    expect: usize,
    /// Encoded frames not yet written.
    wbuf: BytesMut,
    /// Sealed buffers waiting for the socket, in order: runs of small frames, and large
    /// payloads as they came (no copy).
    out: VecDeque<Chunk>,
    out_len: usize,
    /// The IO writes several buffers at once: large payloads need no copy.
    vectored: bool,
    /// The most one write hands the IO (see [`H2_WRITE_MAX`]).
    write_max: usize,
    decoder: Decoder,
    /// Messages are sent compressed (permessage-deflate, see `deflate`).
    compress: bool,
    /// Items taken from the shared queue, not yet started.
    batch: VecDeque<Queued>,
    /// The item being sent (sequence number, queued size, its pieces).
    current: Option<(u64, usize, Pump)>,
    /// Every item up to this one was encoded into `wbuf`; done once `wbuf` is written.
    fed_upto: u64,
    fed_bytes: usize,
    reported: u64,
    failures: Vec<(u64, Error)>,
    /// Received events not yet handed to the stream.
    events: VecDeque<Event>,
    /// A ping that came while the output was over `WRITE_HIGH` (the peer reads slowly or not
    /// at all): its pong is encoded once the output is under it again, and a later ping
    /// meanwhile replaces it (RFC 6455 §5.5.3 allows answering only the most recent). Before
    /// 2026-12-05 each ping's pong was encoded at once whatever the backlog: a client that
    /// sent pings and read nothing had the server buffer every pong (96 MiB in 1.5 s,
    /// whatever the queue limit). While the output flows, every ping is answered at once.
    pong: Option<bytes::Bytes>,
    /// The application has too much unread: stop reading until it catches up.
    paused: bool,
    /// Nothing more is read: the peer's close frame came, or the connection failed or ended.
    read_closed: bool,
    /// We started the closing handshake (or failed the connection) with this code and reason.
    close_sent: Option<CloseInfo>,
    /// The peer sent a close frame with this code and reason.
    peer_close: Option<CloseInfo>,
    /// The error that made us fail the connection.
    fatal: Option<Error>,
    /// The connection broke (I/O error, or the end of the stream without a closing handshake).
    abnormal: bool,
    /// Write what is buffered, shut the TCP connection down, and end.
    shutting_down: bool,
    /// Our side is shut down (TCP FIN, or END_STREAM over HTTP/2): the peer's end is awaited.
    shut_down: bool,
    /// The peer's side ended (EOF read).
    eof: bool,
    /// Bytes of what the peer still sends that may yet be read and dropped once our side is
    /// shut down (see [`Conn::linger`]): `DRAIN_MAX` after we failed the connection, else no
    /// bound (`usize::MAX`).
    drain_left: usize,
    /// The last write found the socket full: the next one that takes bytes shows the peer
    /// took some (its TCP acknowledged them), which keepalive counts as life.
    write_waited: bool,
    close_timer: Option<Pin<Box<Sleep>>>,
    idle: Option<Idle>,
    /// Dead-peer detection (see [`keepalive`]): the sweeper asks for pings, this sends them.
    keepalive: Option<Arc<keepalive::Watch>>,
    /// The pings asked for that were sent (one per request, see [`keepalive::Watch::pings`]).
    pings_sent: u32,
    /// The connection was dropped because the peer stopped answering pings.
    keepalive_expired: bool,
    /// Bytes were read or written since the connection last went idle (see
    /// [`Conn::keeps_buffers`]).
    carried: bool,
    /// `Closed` was reported.
    finished: bool,
    /// The waker of the connection's task, for handles that run it (see [`Inline`]).
    driver: Option<Waker>,
    /// The dispatching waker, made at the receiver's first read (see [`Dispatch`]).
    dispatch: Option<Waker>,
    /// Its readiness counts (also in `Core`).
    readiness: Option<Arc<Readiness>>,
    /// A read of the receiver's: the events go to it, not to the shared state (see
    /// [`Inline::read`]).
    to_receiver: bool,
    /// The receiver is asked to read (large messages), as last told to the shared state.
    read_inline: bool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").finish_non_exhaustive()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if !self.finished {
            // The task was cancelled (runtime shutting down) or a panic unwinds through it:
            // still give the channel its `Closed` and fail what is queued.
            self.abnormal = true;
            self.finish();
        }
    }
}

impl Conn {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.shared.is_forced() {
            // A shutdown's deadline passed: drop the connection now.
            if !self.finished {
                self.finish();
            }
            return Poll::Ready(());
        }
        if self.shut_down {
            // Closed, waiting for the peer's end (see `linger`).
            return self.linger(cx);
        }
        loop {
            let mut again = false;
            // Not when the receiver's read left its waker with the socket and nothing came
            // since: then there is nothing to read, and a read here would take the socket's
            // readiness back from the receiver (see `Dispatch`).
            let armed = self.readiness.as_ref().is_some_and(|readiness| readiness.armed());
            if !self.read_closed && !self.abnormal && !armed {
                again |= self.poll_read(cx);
            }
            if !self.abnormal {
                let closing = self.close_sent.is_some();
                again |= self.poll_write(cx);
                if self.paused && !closing && self.close_sent.is_some() {
                    // Our close went out while reading was paused: the pause allows a second
                    // limit's worth now; reading again (no read of the socket is pending to
                    // wake us for the client's answer) if that lifts it. Before 2026-12-05 a
                    // close with the application behind always took the whole close timeout.
                    self.paused = self.shared.closing_pause();
                    again |= !self.paused;
                }
            }
            if self.abnormal {
                self.finish();
                return Poll::Ready(());
            }
            if self.shutting_down && self.pending_out() == 0 {
                // Server side closes TCP first (RFC 6455 §7.1.1).
                if !self.shut_down && Pin::new(&mut self.io).poll_shutdown(cx).is_ready() {
                    self.shut_down = true;
                }
                if self.shut_down {
                    return self.linger(cx);
                }
            }
            if let Some(timer) = &mut self.close_timer {
                if timer.as_mut().poll(cx).is_ready() {
                    tracing::debug!(
                        "closing handshake not done within the close timeout; dropping"
                    );
                    self.finish();
                    return Poll::Ready(());
                }
            }
            // Once the closing handshake has begun, the close timer governs.
            let closing = self.close_sent.is_some() || self.peer_close.is_some();
            if let Some(watch) = self.keepalive.as_ref().filter(|_| !closing) {
                if self.paused {
                    // We stopped reading (the application is behind): what the peer sent,
                    // pongs too, waits unread in the kernel. That silence is ours, not the
                    // peer's; a dead peer is found once reading resumes.
                    watch.heard();
                }
                if watch.is_dead() {
                    tracing::debug!("no answer to our ping: dropping the connection");
                    self.keepalive_expired = true;
                    self.abnormal = true;
                    self.finish();
                    return Poll::Ready(());
                }
                let asked = watch.pings();
                if asked != self.pings_sent {
                    self.pings_sent = asked;
                    frame::encode(wbuf(&mut self.wbuf), frame::OP_PING, b"webchan");
                    again = true;
                }
            }
            // Not once closing: `start_close` would do nothing and a fired timer stay ready,
            // a busy loop until the handshake ended.
            if let Some(idle) = self.idle.as_mut().filter(|_| !closing) {
                if idle.sleep.as_mut().poll(cx).is_ready() {
                    if self.paused {
                        // Messages wait unread for the application: busy, not idle (as for
                        // keepalive above).
                        idle.last = Instant::now();
                    }
                    let deadline = idle.last + idle.timeout;
                    if Instant::now() >= deadline {
                        self.start_close(1000, "idle timeout");
                    } else {
                        idle.sleep.as_mut().reset(deadline);
                    }
                    again = true;
                }
            }
            if !again {
                if self.close_sent.is_some() || self.peer_close.is_some() {
                    // No longer taking from the queue: stay wakeable for a forced close.
                    self.shared.register_transport(cx);
                }
                // Idle: empty buffers are kept for the next message while the peer talks,
                // else they go back to the thread's pool (see `idle_buffer`).
                let keep = self.keeps_buffers();
                if self.rbuf.is_empty() {
                    idle_buffer(&mut self.rbuf, keep);
                }
                if self.wbuf.is_empty() {
                    idle_buffer(&mut self.wbuf, keep);
                }
                if !keep {
                    if let Some(watch) = &self.keepalive {
                        watch.released();
                    }
                }
                if self.out.is_empty() && self.out.capacity() > 0 {
                    self.out = VecDeque::new();
                }
                // The same for the queues a burst grew (see `KEPT_SLOTS`).
                if self.batch.is_empty() && self.batch.capacity() > KEPT_SLOTS {
                    self.batch = VecDeque::new();
                }
                if self.events.is_empty() && self.events.capacity() > KEPT_SLOTS {
                    self.events = VecDeque::new();
                }

                return Poll::Pending;
            }
        }
    }

    /// The sending half of [`Conn::poll`], for a handle that flushes (see [`Inline`]): writes
    /// what is queued. Reads, timers and the end of the closing handshake stay with the
    /// connection's task, which this wakes whenever it leaves something for it.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.shared.is_forced() {
            self.finish();
            return Poll::Ready(());
        }
        let closing = self.close_sent.is_some() || self.peer_close.is_some();
        let more = !self.abnormal && self.poll_write(cx);
        if self.abnormal {
            self.finish();
            return Poll::Ready(());
        }
        let now_closing = self.close_sent.is_some() || self.peer_close.is_some();
        if more || closing != now_closing || self.shutting_down {
            // More to write than one step takes, a close started (its timer is the task's),
            // or TCP is to be shut down: the task carries on.
            cx.waker().wake_by_ref();
        }
        if self.wbuf.is_empty() {
            let keep = self.keeps_buffers();
            idle_buffer(&mut self.wbuf, keep);
        }
        Poll::Pending
    }

    /// Whether the connection, going idle, keeps its empty buffers for the next message: if
    /// they carried bytes since it last went idle (not a connection that only opened, or was
    /// woken for nothing), with keepalive on, until a sweep finds the peer silent, and while
    /// few others keep theirs (see [`keepalive::Watch::hold`]); without keepalive, never.
    fn keeps_buffers(&mut self) -> bool {
        std::mem::take(&mut self.carried)
            && self.keepalive.as_ref().is_some_and(|watch| watch.hold())
    }

    fn touch(&mut self) {
        if let Some(idle) = &mut self.idle {
            idle.last = Instant::now();
        }
    }

    /// Reads and decodes what is ready. Returns true when it stopped for the budget.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> bool {
        if self.readiness.is_some() {
            // Whatever readiness went to the receiver is acted on now (see `Dispatch`; only a
            // connection that has one can owe a read).
            if let Some(watch) = &self.keepalive {
                watch.settle();
            }
        }
        // Also once we sent our close, but with room for a second limit's worth then (see
        // `Shared::push_events`): what the client sent before it saw our close comes through,
        // and its close answer with it, unless that is more than a limit. Before 2026-12-05
        // reading went on after our close whatever the backlog: a client that kept sending had
        // it all buffered until the close timeout (159 MiB in 1.8 s with a 64 KiB limit).
        if self.paused {
            // Closing, the pause's threshold is twice the limit (see `Shared::closing_pause`),
            // whichever path sent our close (this task, or a sender's inline step).
            self.paused = if self.close_sent.is_some() {
                self.shared.closing_pause()
            } else {
                self.shared.read_paused()
            };
            if self.paused {
                return false;
            }
        }
        let mut count = 0;
        let mut data = false;
        // Bytes of messages decoded by this call: past the queue limit, the events go to the
        // stream, which then pauses reading if the application is behind. Without this, a
        // client faster than one read call took in up to `READ_BUDGET` messages of any size
        // (64 MiB each by default) past the limit before the pause (69 MiB against a 256 KiB
        // limit, with 1 MiB messages from a client on its own thread, before 2026-12-05).
        let mut bytes = 0;
        let limit = self.shared.config.get().queue_limit;
        // How far a message in pieces got, to tell whether its bytes came (idle timeout only).
        let progress =
            if self.idle.is_some() { self.decoder.message_progress(&self.rbuf) } else { u64::MAX };
        let mut heard = false;
        let mut budget_spent = false;
        loop {
            // Fewer bytes than the frame being read needs (`need`, at least a header's two):
            // nothing to decode yet, so the decoder is not called (each call that finds nothing
            // cost ~70 instructions, twice per wake-up).
            let decoded = if self.rbuf.len() < self.need.max(2) {
                self.need = self.need.max(2);
                Ok(None)
            } else {
                self.decoder.decode(&mut self.rbuf, &mut self.need)
            };
            match decoded {
                Ok(Some(decoded)) => {
                    count += 1;
                    let size = match &decoded {
                        Decoded::Text(t) => Some(t.len()),
                        Decoded::Binary(b) => Some(b.len()),
                        _ => None,
                    };
                    if let Some(size) = size {
                        data = true;
                        bytes += size;
                    }
                    self.on_decoded(decoded);
                    if self.read_closed {
                        break;
                    }
                    if count >= READ_BUDGET || bytes > limit {
                        budget_spent = true;
                        break;
                    }
                    continue;
                }
                Ok(None) => {}
                Err(violation) => {
                    self.fail(violation);
                    break;
                }
            }
            // Room for the frame being read (its size is known from its header), or a chunk.
            if self.need > self.read_chunk {
                // Up to 64 KiB: beyond, reading into one buffer of the frame's size from the
                // start measured slower (1 MiB echo: 1.4k against 2.2k messages/s).
                self.expect = if self.need <= EXPECT_MAX { self.need } else { 0 };
            }
            let mut want = self.read_chunk.max(self.need.saturating_sub(self.rbuf.len()));
            if self.rbuf.is_empty() && self.expect > 0 {
                // Room for one more byte than expected: the read comes back short, and tokio
                // then knows the socket is drained without another read.
                want = want.max(self.expect + 1);
            }
            if self.rbuf.is_empty() && want > self.rbuf.capacity() && want > bufpool::SIZE {
                if want <= bufpool::LARGE_MAX {
                    // A large frame is expected: a pooled buffer, which will be its payload's.
                    bufpool::give(std::mem::take(&mut self.rbuf));
                    self.rbuf = bufpool::take_large(want);
                }
            } else if self.rbuf.capacity() == 0 {
                self.rbuf = bufpool::take(want);
            }
            let missing = self.need.saturating_sub(self.rbuf.len());
            let fits = missing > 0 && self.rbuf.capacity() - self.rbuf.len() >= missing;
            if !(fits && self.need <= bufpool::LARGE_MAX) {
                // Room for the frame being read, but not for more than can come soon: a
                // header may announce far more than the client ever sends (with a frame limit
                // raised to "none", 1 TiB: the allocation failed and aborted the process,
                // before stop 28, 2026-12-05).
                self.rbuf.reserve(want.min(RESERVE_MAX));
            }
            // Else the rest of a frame of a pooled size fits in the room left: read into that,
            // not into a reallocated buffer (its tail often arrives alone, a few KiB or less),
            // so that the buffer stays one of the pool's sizes (see `bufpool`). Larger frames
            // keep the reserve: skipping it there too (09a38e4) took the 1 MiB echo from
            // 1,361 to ~890 messages/s, with one `brk` per message (the payload buffers, of
            // the frame's size exactly, then churned the top of glibc's heap).
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf) {
                Poll::Ready(Ok(0)) => {
                    self.on_eof();
                    break;
                }
                Poll::Ready(Ok(_)) => heard = true,
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "websocket connection lost");
                    self.abnormal = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        // Stopped between frames (budget, close, violation): drop the decoded ones.
        self.decoder.settle(&mut self.rbuf);
        // A message being received in pieces (fragments, or one large frame read a slice at a
        // time) is not idle either: before stop 28 (2026-12-05) only whole messages counted,
        // and the idle timeout closed a connection in the middle of a slow upload. (Its bytes,
        // not the pings or pongs that come meanwhile.)
        if data
            || (heard
                && progress != u64::MAX
                && self.decoder.message_progress(&self.rbuf) > progress)
        {
            self.touch();
        }
        if heard {
            self.carried = true;
            if let Some(watch) = &self.keepalive {
                watch.heard();
            }
        }
        if !self.events.is_empty() && !self.to_receiver {
            self.paused = self.shared.push_events(&mut self.events, self.close_sent.is_some());
        }
        // Large messages: the receiver reads them (see `Dispatch`).
        let inline = self.expect > 0;
        if inline != self.read_inline {
            self.read_inline = inline;
            self.shared.set_read_inline(inline);
        }
        budget_spent && !self.paused
    }

    fn on_decoded(&mut self, decoded: Decoded) {
        match decoded {
            Decoded::Text(t) => {
                self.note_size(t.len());
                self.events.push_back(Event::Message(Incoming::Text(t)));
            }
            Decoded::Binary(b) => {
                self.note_size(b.len());
                self.events.push_back(Event::Message(Incoming::Binary(b)));
            }
            Decoded::Ping(payload) => {
                // Also after our close: a ping is answered unless the peer's close came
                // (RFC 6455 §5.5.2; before 2026-12-05 none was after ours).
                if self.peer_close.is_none() {
                    if self.pending_out() < WRITE_HIGH {
                        // Every ping answered while the output flows (Autobahn 2.10 expects
                        // it), after one kept while it did not.
                        self.encode_pong();
                        frame::encode(self.wbuf(), frame::OP_PONG, &payload);
                    } else {
                        self.pong = Some(payload);
                    }
                }
            }
            Decoded::Pong => {}
            Decoded::Close(code, reason) => {
                self.read_closed = true;
                // The peer closes: what is sent from now on could not go out.
                self.shared.stop_accepting();
                // A ping that came before the close is answered before our close frame.
                self.encode_pong();
                if self.close_sent.is_none() {
                    // Answer with the same code (none for none), then close TCP.
                    if code == 1005 {
                        frame::encode(self.wbuf(), frame::OP_CLOSE, &[]);
                    } else {
                        frame::encode_close(self.wbuf(), code, "");
                    }
                }
                self.peer_close = Some(CloseInfo::websocket(code, reason));
                self.shutting_down = true;
                self.arm_close_timer();
            }
        }
    }

    /// Our side is shut down: the channel is closed. Over HTTP/2, after an orderly close, the
    /// stream is kept until the client's END_STREAM (or the close timer): dropped before, hyper
    /// resets it (RST_STREAM), and the client's own close failed (82 of 300 closes by hyper's
    /// client, "error writing a body to connection", before stop 27, 2026-12-05). Over TCP the
    /// connection ends at once, as the server's FIN ends it for the client.
    fn linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.finished {
            let failed = self.fatal.is_some() && !self.eof && !self.abnormal;
            self.drain_left = if failed { DRAIN_MAX } else { usize::MAX };
            self.finish();
        }
        if self.drain_left < usize::MAX {
            // We failed the connection (a protocol violation, a message over the limit, often
            // refused at its header): the peer may still be sending what we refused. Read and
            // drop it until its end (or the close timer): dropped with bytes unread, the socket
            // resets the connection, and a client that has not yet read our close frame loses
            // it (Chromium reported 1006, not 1009, for a message over the limit, now and then,
            // once such a message was refused at its header: stop 28). `Closed` went out above.
            // At most `DRAIN_MAX` bytes: a peer that sends on and on is dropped then.
            self.arm_close_timer();
            if self.close_timer.as_mut().is_some_and(|t| t.as_mut().poll(cx).is_ready()) {
                return Poll::Ready(());
            }
            return self.poll_drain(cx);
        }
        let orderly = !self.eof && self.fatal.is_none() && !self.abnormal;
        if !orderly || self.shared.request.version() != http::Version::HTTP_2 {
            return Poll::Ready(());
        }
        self.arm_close_timer();
        if self.close_timer.as_mut().is_some_and(|t| t.as_mut().poll(cx).is_ready()) {
            return Poll::Ready(());
        }
        self.poll_drain(cx)
    }

    /// Reads and drops what the peer still sends after our side was shut down, until its end
    /// (EOF, or an error). Pending while it has not ended.
    #[cold]
    #[inline(never)]
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut scratch = [0u8; 1024];
        for _ in 0..16 {
            let mut buf = tokio::io::ReadBuf::new(&mut scratch);
            match tokio::io::AsyncRead::poll_read(Pin::new(&mut self.io), cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                    self.eof = true;
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(())) if self.drain_left < usize::MAX => {
                    self.drain_left = self.drain_left.saturating_sub(buf.filled().len());
                    if self.drain_left == 0 {
                        // As much as the peer may have had in flight, and more: it floods.
                        return Poll::Ready(());
                    }
                }
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
        // A peer that keeps sending: the close timer ends it; meanwhile, others run.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// A write took bytes: the buffers carried some (see `carried`); and after a write that
    /// found the socket full, the peer's TCP acknowledged data, so the peer reads (see
    /// `write_waited`).
    fn wrote(&mut self) {
        self.carried = true;
        if self.write_waited {
            self.write_waited = false;
            if let Some(watch) = &self.keepalive {
                watch.heard();
            }
            // A message still being written to a slow reader is not idle; before stop 28
            // (2026-12-05) only its encoding counted, and the idle timeout cut an 8 MiB
            // message that a client read at 640 KB/s.
            self.touch();
        }
    }

    /// A small message ends the expectation of large ones.
    fn note_size(&mut self, len: usize) {
        if len <= self.read_chunk {
            self.expect = 0;
        }
    }

    fn on_eof(&mut self) {
        self.read_closed = true;
        self.eof = true;
        if self.peer_close.is_none() {
            // The peer went away without a close frame: 1006 (RFC 6455 §7.1.5), also when
            // we had started the closing handshake.
            self.abnormal = true;
        } else {
            self.shutting_down = true;
        }
    }

    /// Fails the connection (RFC 6455 §7.1.7): a close frame with the code, then the end.
    fn fail(&mut self, violation: Violation) {
        tracing::debug!(error = %violation.error, code = violation.code, "failing websocket connection");
        self.read_closed = true;
        self.shutting_down = true;
        self.shared.stop_accepting();
        if self.close_sent.is_none() && self.peer_close.is_none() {
            self.encode_pong();
            frame::encode_close(self.wbuf(), violation.code, violation.reason);
            self.close_sent = Some(CloseInfo::websocket(violation.code, violation.reason));
        }
        self.fatal = Some(violation.error);
        self.arm_close_timer();
    }

    fn start_close(&mut self, code: u16, reason: &str) {
        if self.close_sent.is_some() || self.peer_close.is_some() {
            return;
        }
        // Our close (the application's, or the idle timeout's): no more sends.
        self.shared.stop_accepting();
        self.encode_pong();
        if code == 1005 {
            // "No status": on the wire, a close frame without a code (see `Sender::start_close`).
            frame::encode(self.wbuf(), frame::OP_CLOSE, &[]);
            self.close_sent = Some(CloseInfo::websocket(1005, ""));
        } else {
            frame::encode_close(self.wbuf(), code, reason);
            self.close_sent = Some(CloseInfo::websocket(code, reason));
        }
        self.arm_close_timer();
    }

    /// Encodes the pong owed, if any.
    fn encode_pong(&mut self) {
        if let Some(payload) = self.pong.take() {
            frame::encode(wbuf(&mut self.wbuf), frame::OP_PONG, &payload);
        }
    }

    /// The closing handshake began, whoever began it: it ends within the close timeout. A
    /// peer that sent its close frame, or broke the protocol, and then stopped reading would
    /// otherwise hold the connection, and every send still queued, for as long as its TCP
    /// stays up: what is queued must be written before our close frame and the end of TCP.
    fn arm_close_timer(&mut self) {
        if self.close_timer.is_none() {
            let timeout = self.shared.config.get().close_timeout;
            let _runtime = self.on_own_runtime();
            self.close_timer = Some(Box::pin(tokio::time::sleep(timeout)));
        }
    }

    /// Enters the connection's runtime, for a step on a task of another: a timer or a file
    /// made there belongs to that runtime. Before stop 30 (2026-12-06) a `send_and_close`
    /// from a task of a second runtime armed the close timer there: it never fired while that
    /// runtime sat idle, the connection's task panicked once it was dropped ("being
    /// shutdown"), and one built without timers panicked in the application's send.
    fn on_own_runtime(&self) -> tokio::runtime::EnterGuard<'_> {
        self.runtime.enter()
    }

    /// Encodes queued messages and writes. Returns true when it stopped with more to send
    /// and the socket still writable.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> bool {
        if self.pong.is_some() && self.pending_out() < WRITE_HIGH {
            self.encode_pong();
        }
        let mut more = false;
        let mut wrote = false;
        // The shared queue is taken once per call: what is queued after that wakes the task
        // (`take_queue` registers its waker in the same lock) or is written by its flusher.
        let mut taken = false;
        while self.close_sent.is_none() && self.peer_close.is_none() && !self.shutting_down {
            if self.pending_out() >= WRITE_HIGH {
                more = true;
                break;
            }
            let Some((seq, size, pump)) = &mut self.current else {
                if self.batch.is_empty() {
                    if taken {
                        break;
                    }
                    // Nothing is reported done here: an item counts as sent once its bytes
                    // were written, which `report` after the writes below tells. An empty
                    // queue with this task's waker in place is not taken again (a lock saved
                    // at each wake-up that only reads).
                    if self.shared.queue_settled() {
                        break;
                    }
                    self.shared.take_queue(&mut self.batch, cx, true);
                    taken = true;
                }
                match self.batch.pop_front() {
                    None => break,
                    Some(Queued { seq, item: Item::Close(code, reason), .. }) => {
                        self.fed_upto = seq;
                        self.start_close(code, &reason);
                    }
                    // Text and binary, the common case: framed at once, no pump.
                    Some(Queued { seq, size, item: Item::Send(Message::Binary(b)) }) => {
                        self.queue_frame(frame::OP_BINARY, b);
                        self.fed_upto = seq;
                        self.fed_bytes += size;
                        wrote = true;
                    }
                    Some(Queued { seq, size, item: Item::Send(Message::Text(s)) }) => {
                        self.queue_frame(frame::OP_TEXT, s.into_bytes());
                        self.fed_upto = seq;
                        self.fed_bytes += size;
                        wrote = true;
                    }
                    Some(Queued { seq, size, item: Item::Send(message) }) => {
                        let runtime = self.on_own_runtime();
                        let pump = Pump::new(message);
                        drop(runtime);
                        match pump {
                            Ok(pump) => self.current = Some((seq, size, pump)),
                            Err(e) => {
                                self.failures.push((seq, e));
                                self.fed_upto = seq;
                                self.fed_bytes += size;
                            }
                        }
                    }
                }
                continue;
            };
            let (seq, size) = (*seq, *size);
            let runtime = self.runtime.enter();
            let next = pump.poll_next(cx);
            drop(runtime);
            match next {
                Poll::Ready(Some(Ok(piece))) => {
                    let whole = pump.is_done();
                    match piece {
                        Piece::Text(s) => self.queue_frame(frame::OP_TEXT, s.into_bytes()),
                        Piece::Binary(b) => self.queue_frame(frame::OP_BINARY, b),
                        Piece::Sse(_) => {
                            // An event in a sequence (a lone one is refused by `enqueue`):
                            // before 2026-12-05 it went out as a binary frame of SSE text.
                            self.failures.push((seq, Error::InvalidMessage(SSE_ON_WEBSOCKET)));
                            self.current = None;
                            self.fed_upto = seq;
                            self.fed_bytes += size;
                            continue;
                        }
                    }
                    if whole {
                        self.current = None;
                        self.fed_upto = seq;
                        self.fed_bytes += size;
                    }
                    wrote = true;
                }
                Poll::Ready(Some(Err(e))) => {
                    self.failures.push((seq, e));
                    self.current = None;
                    self.fed_upto = seq;
                    self.fed_bytes += size;
                }
                Poll::Ready(None) => {
                    self.current = None;
                    self.fed_upto = seq;
                    self.fed_bytes += size;
                }
                Poll::Pending => break,
            }
        }
        if wrote {
            self.touch();
        }
        while self.pending_out() > 0 {
            if self.out.is_empty() {
                // The common case: small frames only, written straight from `wbuf`.
                let piece = &self.wbuf[..self.wbuf.len().min(self.write_max)];
                match Pin::new(&mut self.io).poll_write(cx, piece) {
                    Poll::Ready(Ok(0)) => {
                        self.abnormal = true;
                        return false;
                    }
                    // Written whole, the common case: `clear` leaves the buffer as the pool
                    // wants it (see `frame.rs`).
                    Poll::Ready(Ok(n)) if n == self.wbuf.len() => {
                        self.wbuf.clear();
                        self.wrote();
                    }
                    Poll::Ready(Ok(n)) => {
                        self.wbuf.advance(n);
                        self.wrote();
                    }
                    Poll::Ready(Err(e)) => {
                        tracing::debug!(error = %e, "websocket write failed");
                        self.abnormal = true;
                        return false;
                    }
                    Poll::Pending => {
                        self.write_waited = true;
                        return false;
                    }
                }
                continue;
            }
            if !self.write_vectored(cx) {
                return false;
            }
        }
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Ready(Ok(())) => self.report(),
            Poll::Ready(Err(_)) => {
                self.abnormal = true;
                return false;
            }
            Poll::Pending => return false,
        }
        more
    }

    /// Writes the sealed buffers (large payloads among them) with one vectored write. False
    /// when the write did not complete (pending, or the connection broke: `abnormal`). Out of
    /// line: its arrays of slices (up to 512 bytes) are in this function's stack frame only,
    /// not in that of `poll_write`, which every round trip goes through.
    #[inline(never)]
    fn write_vectored(&mut self, cx: &mut Context<'_>) -> bool {
        self.seal();
        // Most often a header and its payload: an array of 4 slices to fill, not of 32 (512
        // bytes of stores at every large message).
        let written = if self.out.len() <= FEW_SLICES {
            self.poll_write_slices::<FEW_SLICES>(cx)
        } else {
            self.poll_write_slices::<MAX_SLICES>(cx)
        };
        match written {
            Poll::Ready(Ok(0)) => {
                self.abnormal = true;
                false
            }
            Poll::Ready(Ok(n)) => {
                self.consume(n);
                self.wrote();
                true
            }
            Poll::Ready(Err(e)) => {
                tracing::debug!(error = %e, "websocket write failed");
                self.abnormal = true;
                false
            }
            Poll::Pending => {
                self.write_waited = true;
                false
            }
        }
    }

    /// One vectored write of the first `N` sealed buffers at most.
    fn poll_write_slices<const N: usize>(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<usize>> {
        let mut slices = [std::io::IoSlice::new(&[]); N];
        let mut count = 0;
        for (slot, buf) in slices.iter_mut().zip(self.out.iter()) {
            *slot = std::io::IoSlice::new(buf.as_slice());
            count += 1;
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count])
    }

    /// Bytes encoded and not yet written.
    fn pending_out(&self) -> usize {
        self.wbuf.len() + self.out_len
    }

    /// Queues one data frame: small ones are copied into `wbuf` with their neighbours, large
    /// payloads are written from their own buffer.
    fn queue_frame(&mut self, opcode: u8, payload: bytes::Bytes) {
        if payload.len() >= crate::deflate::MIN_SIZE && self.compress {
            return self.queue_compressed(opcode, payload);
        }
        self.queue_raw(opcode, payload);
    }

    /// Queues a message compressed (RSV1 set) if compressing makes it smaller.
    #[cold]
    #[inline(never)]
    fn queue_compressed(&mut self, opcode: u8, payload: bytes::Bytes) {
        match crate::deflate::compress(&payload) {
            Some(compressed) => self.queue_raw(opcode | frame::RSV1, compressed),
            None => self.queue_raw(opcode, payload),
        }
    }

    /// Queues one data frame as it is (`opcode` may carry RSV1).
    fn queue_raw(&mut self, opcode: u8, payload: bytes::Bytes) {
        if payload.len() < LARGE_PAYLOAD || !self.vectored {
            frame::encode(self.wbuf(), opcode, &payload);
            return;
        }
        if self.wbuf.is_empty() {
            // The header needs no buffer of its own (see `Chunk::Header`).
            let header = Chunk::header(opcode, payload.len());
            self.out_len += header.as_slice().len();
            self.out.push_back(header);
        } else {
            // After smaller frames: it ends their run.
            frame::encode_header(self.wbuf(), opcode, payload.len());
            self.seal();
        }
        self.out_len += payload.len();
        self.out.push_back(Chunk::Bytes(payload));
    }

    /// The write buffer, taken from the pool if the connection holds none.
    fn wbuf(&mut self) -> &mut BytesMut {
        wbuf(&mut self.wbuf)
    }

    /// Moves what `wbuf` holds to the write queue.
    fn seal(&mut self) {
        if !self.wbuf.is_empty() {
            let run = self.wbuf.split().freeze();
            self.out_len += run.len();
            self.out.push_back(Chunk::Bytes(run));
        }
    }

    /// `n` bytes of the write queue went out.
    fn consume(&mut self, mut n: usize) {
        self.out_len -= n;
        while n > 0 {
            let Some(front) = self.out.front_mut() else { break };
            let len = front.as_slice().len();
            if len <= n {
                n -= len;
                self.out.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }

    /// Tells the senders how far the written items got.
    fn report(&mut self) {
        if self.fed_upto > self.reported || !self.failures.is_empty() {
            self.shared.finish_items(self.fed_upto, self.fed_bytes, &mut self.failures);
            self.fed_bytes = 0;
            self.reported = self.fed_upto;
        }
    }

    fn finish(&mut self) {
        self.finished = true;
        if self.pending_out() == 0 && !self.abnormal {
            self.report();
        }
        let info = if self.keepalive_expired {
            CloseInfo::websocket(1006, "keepalive timeout")
        } else if self.abnormal && self.fatal.is_none() && self.peer_close.is_none() {
            // No close frame came: 1006, whatever we had sent (RFC 6455 §7.1.5).
            CloseInfo::websocket(1006, "")
        } else if let Some(ours) = self.close_sent.take() {
            // We closed (or failed the connection, or the peer never answered in time).
            ours
        } else if let Some(theirs) = self.peer_close.take() {
            theirs
        } else {
            CloseInfo::websocket(1006, "")
        };
        tracing::debug!(code = ?info.code, reason = ?info.reason, "websocket closed");
        self.shared.finish(info, self.fatal.take());
    }
}
