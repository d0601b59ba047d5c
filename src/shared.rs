//! The state one channel's handles and its transport share.
//!
//! One mutex guards it all; each side takes it once per batch, not once per byte: the
//! transport swaps the whole outgoing queue out at a time and reports progress per flush,
//! and pushes the events of one read burst at once.
//!
//! Sequence numbers give every accepted send its outcome without an allocation per send:
//! every queued item gets the next number; `done_seq` is the watermark below which every item
//! is finished (written, or failed with its error reported). A send waits for the watermark;
//! if the channel closes first, every item above the watermark failed with
//! [`Error::Closed`]. Item errors go to the sender that waits for that item (`tracked`), or
//! else to the event stream as [`Event::Error`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::{CloseInfo, Config, Error, Event, Incoming, Kind, Message};

/// A drained queue keeps its room for at most this many entries: after a burst, more would
/// stay with the idle channel (1.5 MiB after 20,000 messages each way, before 2026-12-05), while
/// dropping every allocation would cost one per message in a ping-pong.
pub(crate) const KEPT_SLOTS: usize = 8;

/// Why a server-sent event is refused on a WebSocket (alone, or inside a sequence).
pub(crate) const SSE_ON_WEBSOCKET: &str = "a server-sent event cannot be sent on a WebSocket";
/// Why a server-sent event is refused on an HTTP stream not in SSE mode.
pub(crate) const SSE_ON_PLAIN: &str = "a server-sent event needs an HTTP stream in SSE mode";
/// Why binary data (bytes, a file, a reader) is refused on an SSE stream.
pub(crate) const BINARY_ON_SSE: &str = "an SSE stream carries text and events, not binary data";

/// What the transport takes from the queue.
#[derive(Debug)]
pub(crate) enum Item {
    /// A message to send.
    Send(Message),
    /// Close the channel: a close frame with this code and reason on a WebSocket; the end of
    /// the body on an HTTP stream.
    Close(u16, String),
}

#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) seq: u64,
    pub(crate) size: usize,
    pub(crate) item: Item,
}

/// A transport that a handle may run on its own task: a sender waiting for its messages to go
/// out writes them itself instead of waking the transport's task and waiting to be woken back
/// (two task switches per burst saved).
pub(crate) trait Inline: Send + Sync + std::fmt::Debug {
    /// Runs the transport once, on the caller's task but on behalf of the transport's task
    /// (every readiness it waits for wakes that task). False when it could not run (busy on
    /// another thread, not started, or finished).
    fn step(&self) -> bool;

    /// Reads what the socket has, on the caller's task (a receiver that found no event), so
    /// that a message is read, handled and answered in one go (see `ws.rs`, "Reads on the
    /// receiver's task"). Whatever it reads goes into `out`, the receiver's own queue, unless
    /// the transport pushed events since the receiver looked (`pushes`, as
    /// [`Shared::pushes`] was then): then it reads nothing, and those come first. When it ends
    /// waiting for the socket, the socket's next readiness wakes the receiver, if it is then
    /// parked waiting for events (see [`Shared::wake_parked_receiver`]), and else the
    /// transport's task (with keepalive's sweeper as the safety net of a receiver woken and
    /// not polled: `ws.rs`, `Dispatch`).
    fn read(&self, out: &mut VecDeque<Event>, pushes: u64);

    /// The receiver's last read ended waiting for the socket and nothing came since: a read
    /// now would find nothing (a look without the transport's lock).
    fn armed(&self) -> bool;

    /// Wakes the transport's task, whatever it waits for (a forced close must reach a task
    /// that waits only for its socket: see [`Shared::force_close`]).
    fn wake(&self);
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) kind: Kind,
    /// An HTTP stream in Server-Sent Events mode.
    pub(crate) sse: bool,
    pub(crate) request: crate::head::RequestHead,
    pub(crate) config: Config,
    state: Mutex<State>,
    /// The shutdown registry this channel is in, and its id there.
    registered: std::sync::OnceLock<(Arc<crate::shutdown::Registry>, u64)>,
    /// Drop the connection now (a shutdown's deadline passed).
    forced: std::sync::atomic::AtomicBool,
    /// Dropped by a shutdown's deadline (not by an HTTP stream's own timeout), for the
    /// shutdown's report.
    shut_off: std::sync::atomic::AtomicBool,
    /// The transport, when handles can run it (WebSockets).
    inline: std::sync::OnceLock<Arc<dyn Inline>>,
    /// Sends are accepted and the queue is under its limit, as of the last change under the
    /// lock: lets [`Shared::poll_capacity`] answer without the lock in the common case (a
    /// `Sink` asks before every message). A hint only: `enqueue` checks again, under the lock.
    room: std::sync::atomic::AtomicBool,
    /// `done_seq` as of its last change under the lock: lets a flush that finds its items
    /// finished answer without the lock (see [`Shared::poll_flushed`]).
    done: std::sync::atomic::AtomicU64,
    /// The queue was empty and the transport's waker registered, as of the last change under
    /// the lock: lets the transport skip taking an empty queue (see [`Shared::queue_settled`]).
    /// Cleared by every push to the queue and every taking of the waker.
    settled: std::sync::atomic::AtomicBool,
    /// The transport asks the receiver to read on its own task when it finds no event (see
    /// [`Inline::read`]): set while the connection receives large messages.
    read_inline: std::sync::atomic::AtomicBool,
    /// Moves whenever hyper takes bytes of an HTTP stream's frames: the client reads (see
    /// [`Shared::progress`]).
    progress: std::sync::atomic::AtomicU64,
    /// How many times the transport pushed received events (see [`Shared::pushes`]).
    pushes: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    /// The channel opened (`Open` is, or was, the first event).
    opened: bool,
    /// `Open` waits to be taken: kept as a flag, not queued, so that a channel that never
    /// receives anything holds no event queue.
    open_pending: bool,
    /// Sends are accepted: false once a close was asked for or the channel closed.
    accepting: bool,
    /// The transport is finished and `Closed` was pushed.
    closed: bool,
    /// `Closed` was taken from the stream: the stream has ended.
    ended: bool,

    queue: VecDeque<Queued>,
    /// Bytes accepted and not yet finished (queued or in the transport's hands).
    queued_bytes: usize,
    /// The last sequence number given out.
    next_seq: u64,
    /// Every item up to this number is finished.
    done_seq: u64,
    /// An item whose sender waits for the outcome (0: none): the common case, one `send`
    /// awaited at a time, needs no allocation. (A `Vec` pushed to and emptied at every send
    /// cost a `malloc` and a `free` per message, 16 lines of code per ping-pong round trip.)
    tracked_one: u64,
    /// The rest of the tracking, boxed, and only while it holds something (see [`Tracking`]).
    tracking: Option<Box<Tracking>>,
    /// The number of messages accepted (a response head is only valid as the first).
    sends: u64,

    transport_waker: Option<Waker>,
    capacity_wakers: Wakers,
    done_wakers: Wakers,

    events: VecDeque<Event>,
    event_bytes: usize,
    receiver_waker: Option<Waker>,
    /// The receiver waits for events after a read of its own (see [`Inline::read`]): the
    /// socket's readiness wakes it too.
    parked: bool,
    receiver_alive: bool,
    read_paused: bool,
    /// Live `Sender`s and `Receiver`s; when none is left, the channel closes.
    handles: usize,

    /// HTTP streams: frames handed to hyper and not yet written whole (see `data::Receipt`).
    unwritten: u32,
    /// A frame was dropped before it was written (the connection failed): no later item
    /// completes.
    lost: bool,
    /// The body ended: the channel closes once no frame is left unwritten.
    body_ended: bool,
    /// Items up to this one complete once no frame is left unwritten (those that went out in
    /// no frame of their own after the last one: failures, empty messages, the close).
    tail_seq: u64,
    /// HTTP streams with a timeout: the task that drops the stream if its body cannot end
    /// (see [`Shared::time_out`]).
    watchdog: Option<tokio::task::AbortHandle>,
}

/// What [`Shared::poll_events`] took.
pub(crate) enum Taken {
    /// The `Open` event.
    Open,
    /// A burst of events, now in the caller's queue.
    Events,
    /// Nothing more: the stream has ended.
    End,
}

/// Ordered sets, not vectors: an application may hold tens of thousands of `Completion`s
/// (`try_send` of small messages under the 1 MiB queue limit), and each is looked up when it
/// resolves or is dropped. With vectors searched from end to end that was quadratic: 80,000
/// completions took 0.80 s to resolve and 0.57 s to drop, in release (2026-12-05, see
/// RELIABILITY.md). A set emptied by removals keeps its last node (104 bytes for a set of
/// `u64`, ~500 for the failures), so each is replaced by a new one, which holds no
/// allocation, once it is empty: an idle channel holds none. The common case, one `send`
/// awaited at a time, touches none of them (`State::tracked_one`), and the box itself is freed
/// once all three are empty: an idle channel whose last send was awaited kept its 80 bytes
/// before 2026-12-06 (`scripts/bench.sh idlehttp`).
/// (Sequence numbers start at 1: 0 is "none".)
#[derive(Debug, Default)]
struct Tracking {
    /// Items whose sender waits for the outcome, besides `State::tracked_one`.
    tracked: BTreeSet<u64>,
    /// The errors of tracked items that failed.
    failures: BTreeMap<u64, Error>,
    /// Items whose `Completion` was dropped before they finished: if the channel closes
    /// first, each reports `Error::Closed` to the event stream.
    orphans: BTreeSet<u64>,
}

impl State {
    fn tracking_mut(&mut self) -> &mut Tracking {
        self.tracking.get_or_insert_with(Box::default)
    }

    /// Frees the tracking's box once it holds nothing.
    fn tidy_tracking(&mut self) {
        if self.tracking.as_ref().is_some_and(|t| t.is_empty()) {
            self.tracking = None;
        }
    }

    fn track(&mut self, seq: u64) {
        if self.tracked_one == 0 {
            self.tracked_one = seq;
        } else {
            self.tracking_mut().tracked.insert(seq);
        }
    }

    /// (0 is no item: never tracked, though `tracked_one` holds 0 when it has none.)
    fn is_tracked(&self, seq: u64) -> bool {
        (seq != 0 && self.tracked_one == seq)
            || self.tracking.as_ref().is_some_and(|t| t.tracked.contains(&seq))
    }

    /// Stops tracking `seq`: whether it was tracked, and its error if it failed.
    fn untrack(&mut self, seq: u64) -> (bool, Option<Error>) {
        let one = seq != 0 && self.tracked_one == seq;
        if one {
            self.tracked_one = 0;
        }
        let Some(tracking) = self.tracking.as_mut() else { return (one, None) };
        let outcome = tracking.untrack(seq, one);
        self.tidy_tracking();
        outcome
    }
}

impl Tracking {
    fn is_empty(&self) -> bool {
        self.tracked.is_empty() && self.failures.is_empty() && self.orphans.is_empty()
    }

    /// Stops tracking `seq` (`one`: it was `State::tracked_one`): whether it was tracked, and
    /// its error if it failed.
    fn untrack(&mut self, seq: u64, one: bool) -> (bool, Option<Error>) {
        let tracked = if one {
            true
        } else if self.tracked.is_empty() {
            false
        } else {
            let removed = self.tracked.remove(&seq);
            if self.tracked.is_empty() {
                self.tracked = BTreeSet::new();
            }
            removed
        };
        if self.failures.is_empty() {
            return (tracked, None);
        }
        let failure = self.failures.remove(&seq);
        if self.failures.is_empty() {
            self.failures = BTreeMap::new();
        }
        (tracked, failure)
    }

    /// Forgets the orphans up to `done` (they finished, in order).
    fn finished_upto(&mut self, done: u64) {
        if self.orphans.is_empty() {
            return;
        }
        while self.orphans.first().is_some_and(|seq| *seq <= done) {
            self.orphans.pop_first();
        }
        if self.orphans.is_empty() {
            self.orphans = BTreeSet::new();
        }
    }
}

/// The tasks waiting for one thing (room in the queue, an item done). The first waits in
/// place: most often one task waits at a time, and then no vector is allocated. Before
/// 2026-12-06 a `Vec` kept its room for four wakers (64 bytes) for the channel's life once one
/// task had waited (every idle HTTP stream whose first send was awaited).
#[derive(Debug, Default)]
struct Wakers {
    first: Option<Waker>,
    /// The others, only while `first` is there.
    more: Vec<Waker>,
}

impl Wakers {
    fn register(&mut self, cx: &Context<'_>) {
        let waker = cx.waker();
        match &self.first {
            None => self.first = Some(waker.clone()),
            Some(first) if first.will_wake(waker) => {}
            Some(_) => {
                if !self.more.iter().any(|w| w.will_wake(waker)) {
                    self.more.push(waker.clone());
                }
            }
        }
    }
}

fn wake_all(wakers: &mut Wakers) {
    // Most often there is none: this runs several times per flush.
    if let Some(first) = wakers.first.take() {
        first.wake();
        if !wakers.more.is_empty() {
            // Its room goes too: several tasks at once is the exception, and a channel that
            // once had many waiting would keep room for them all.
            for w in std::mem::take(&mut wakers.more) {
                w.wake();
            }
        }
    }
}

fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// A channel dropped without `finish` (a panic between its registration and its start, say)
/// leaves its `Shutdown`'s registry all the same: a shutdown never waits for one that is gone.
impl Drop for Shared {
    fn drop(&mut self) {
        if let Some((registry, id)) = self.registered.get() {
            registry.remove(*id);
        }
    }
}

impl Shared {
    pub(crate) fn new(
        kind: Kind,
        sse: bool,
        request: crate::head::RequestHead,
        config: Config,
    ) -> Self {
        let state = State {
            accepting: true,
            receiver_alive: true,
            // one Sender and one Receiver
            handles: 2,
            ..State::default()
        };
        Self {
            kind,
            sse,
            request,
            config,
            state: Mutex::new(state),
            registered: std::sync::OnceLock::new(),
            forced: std::sync::atomic::AtomicBool::new(false),
            shut_off: std::sync::atomic::AtomicBool::new(false),
            inline: std::sync::OnceLock::new(),
            room: std::sync::atomic::AtomicBool::new(true),
            done: std::sync::atomic::AtomicU64::new(0),
            settled: std::sync::atomic::AtomicBool::new(false),
            read_inline: std::sync::atomic::AtomicBool::new(false),
            progress: std::sync::atomic::AtomicU64::new(0),
            pushes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Hyper took bytes of an HTTP stream's frame.
    pub(crate) fn note_progress(&self) {
        self.progress.fetch_add(1, Relaxed);
    }

    /// A count that moves whenever hyper takes bytes of this HTTP stream's frames: what an
    /// HTTP stream's timeout watches once it passed (see `stream.rs`, `StreamHead::new`).
    pub(crate) fn progress(&self) -> u64 {
        self.progress.load(Relaxed)
    }

    /// Whether a receiver that finds no event reads the socket itself (see [`Inline::read`]).
    pub(crate) fn set_read_inline(&self, on: bool) {
        self.read_inline.store(on, Relaxed);
    }

    /// The socket is readable: wakes the receiver if it is parked after a read of its own.
    /// Whether it was (then it reads, when it is polled).
    pub(crate) fn wake_parked_receiver(&self) -> bool {
        let mut s = self.lock();
        if std::mem::take(&mut s.parked) {
            if let Some(w) = s.receiver_waker.take() {
                drop(s);
                w.wake();
                return true;
            }
        }
        false
    }

    /// How many times the transport pushed received events so far. Changed only under both
    /// the transport's lock and the state's (see [`Shared::push_events`]), so either lock
    /// gives a count that cannot move while it is held.
    pub(crate) fn pushes(&self) -> u64 {
        self.pushes.load(Relaxed)
    }

    /// Wakes the transport's task (a readiness that found no receiver parked).
    pub(crate) fn wake_transport(&self) {
        if let Some(transport) = self.inline.get() {
            transport.wake();
        }
    }

    /// Lets handles run the transport (see [`Inline`]).
    pub(crate) fn set_inline(&self, transport: Arc<dyn Inline>) {
        let _ = self.inline.set(transport);
    }

    /// Takes the transport's waker (to wake it, or to drop it): the queue is no longer
    /// settled.
    fn take_transport(&self, s: &mut State) -> Option<Waker> {
        self.settled.store(false, Relaxed);
        s.transport_waker.take()
    }

    /// Nothing is queued and the transport's waker is registered, as of the last change:
    /// [`Shared::take_queue`] would take nothing and register nothing new. A hint read without
    /// the lock; whoever queues something afterwards also wakes the transport or runs it (see
    /// `enqueue`), and that wake-up sees the hint cleared.
    pub(crate) fn queue_settled(&self) -> bool {
        self.settled.load(Relaxed)
    }

    /// The transport's waker changed: the next `take_queue` is not to be skipped.
    pub(crate) fn unsettle(&self) {
        self.settled.store(false, Relaxed);
    }

    /// Gets queued items moving: runs the transport here if it can, else wakes its task.
    fn push_out(&self) {
        if self.inline.get().is_some_and(|t| t.step()) {
            return;
        }
        let waker = self.take_transport(&mut self.lock());
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock is held cannot leave the state half-updated in a way that
        // matters more than losing the channel: keep going with the data as it is.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    // ---- the handles' side ----

    pub(crate) fn is_open(&self) -> bool {
        let s = self.lock();
        s.opened && s.accepting && !s.closed
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Ready when a send of any size may be queued (the queue is under its limit).
    pub(crate) fn poll_capacity(&self, cx: &Context<'_>) -> Poll<Result<(), Error>> {
        if self.room.load(Relaxed) {
            return Poll::Ready(Ok(()));
        }
        let s = self.lock();
        if !s.accepting {
            return Poll::Ready(Err(Error::Closed));
        }
        if s.queued_bytes < self.config.get().queue_limit {
            return Poll::Ready(Ok(()));
        }
        drop(s);
        // What is queued may wait for a flush (see `enqueue`): get it moving.
        self.push_out();
        let mut s = self.lock();
        if !s.accepting {
            return Poll::Ready(Err(Error::Closed));
        }
        if s.queued_bytes < self.config.get().queue_limit {
            return Poll::Ready(Ok(()));
        }
        s.capacity_wakers.register(cx);
        Poll::Pending
    }

    /// Queues a message. `strict` refuses it when it would take the queue over its limit.
    /// `flush_later`: a flush will follow (a `Sink`), so a transport that handles can run
    /// (see [`Inline`]) is not woken now; the flush writes it from the caller's task.
    /// Returns its sequence number.
    pub(crate) fn enqueue(
        &self,
        message: Message,
        tracked: bool,
        close_after: bool,
        strict: bool,
        flush_later: bool,
    ) -> Result<u64, (Error, Message)> {
        let mut s = self.lock();
        if !s.accepting {
            return Err((Error::Closed, message));
        }
        match &message {
            Message::Sse(event) => {
                if self.kind == Kind::WebSocket {
                    return Err((Error::InvalidMessage(SSE_ON_WEBSOCKET), message));
                }
                if !self.sse {
                    return Err((Error::InvalidMessage(SSE_ON_PLAIN), message));
                }
                if let Err(e) = event.validate() {
                    return Err((e, message));
                }
            }
            // Refused here, whatever they hold: the body refuses each of their pieces, and an
            // empty file or reader has none, so it was accepted (before 2026-12-05).
            Message::Binary(_) | Message::Path(_) | Message::Reader(_) if self.sse => {
                return Err((Error::InvalidMessage(BINARY_ON_SSE), message));
            }
            _ => {}
        }
        if let Message::Response(_) = message {
            if self.sse {
                return Err((
                    Error::InvalidMessage(
                        "an SSE stream sends its head at open: set the status and headers on the Reply",
                    ),
                    message,
                ));
            }
            if self.kind == Kind::WebSocket {
                return Err((
                    Error::InvalidMessage("a response head cannot be sent on a WebSocket"),
                    message,
                ));
            }
            if s.sends > 0 {
                return Err((
                    Error::InvalidMessage(
                        "a response head is only valid as the first send of an HTTP stream",
                    ),
                    message,
                ));
            }
            if let Message::Response(head) = &message {
                if head.status.is_some_and(|s| s.is_informational()) {
                    // hyper sends no 1xx as a final response: over HTTP/1.1 it became a 500,
                    // over HTTP/2 a malformed response (before stop 27, 2026-12-05).
                    return Err((Error::InvalidMessage(crate::stream::INFORMATIONAL), message));
                }
            }
        }
        let size = message.queued_size();
        if strict && s.queued_bytes > 0 && s.queued_bytes + size > self.config.get().queue_limit {
            return Err((Error::QueueFull { limit: self.config.get().queue_limit }, message));
        }
        s.sends += 1;
        s.next_seq += 1;
        let seq = s.next_seq;
        s.queued_bytes += size;
        if s.queued_bytes >= self.config.get().queue_limit {
            self.room.store(false, Relaxed);
        }
        if tracked {
            s.track(seq);
        }
        self.settled.store(false, Relaxed);
        // Text and binary, the common case, hold no code of the application's.
        let message = match message {
            Message::Reader(_) | Message::Seq(_) | Message::Response(_) => message.quiet(),
            message => message,
        };
        s.queue.push_back(Queued { seq, size, item: Item::Send(message) });
        if close_after {
            self.push_close(&mut s, 1000, String::new());
        }
        if !(flush_later && self.inline.get().is_some()) || close_after {
            if let Some(w) = self.take_transport(&mut s) {
                w.wake();
            }
        }
        Ok(seq)
    }

    fn push_close(&self, s: &mut State, code: u16, reason: String) -> u64 {
        s.accepting = false;
        self.room.store(false, Relaxed);
        s.next_seq += 1;
        let seq = s.next_seq;
        self.settled.store(false, Relaxed);
        s.queue.push_back(Queued { seq, size: 0, item: Item::Close(code, reason) });
        // Senders waiting for room will never get it.
        wake_all(&mut s.capacity_wakers);
        seq
    }

    /// The transport began a closing handshake of its own (the idle timeout, the peer's close
    /// frame, a protocol violation): no more sends are accepted, as after a close asked for
    /// by the application. Before stop 28 (2026-12-05) the handles said "open" until the end:
    /// `is_open` true, `try_send` and compat's `send` accepted messages that could only fail,
    /// and `start_close` returned true for a close that never went out.
    pub(crate) fn stop_accepting(&self) {
        self.refuse_sends(&mut self.lock());
    }

    fn refuse_sends(&self, s: &mut State) {
        if s.accepting {
            s.accepting = false;
            self.room.store(false, Relaxed);
            // Senders waiting for room will never get it.
            wake_all(&mut s.capacity_wakers);
        }
    }

    /// Asks for a close after everything queued. Returns false if the channel was already
    /// closing or closed.
    pub(crate) fn request_close(&self, code: u16, reason: String) -> bool {
        let mut s = self.lock();
        if !s.accepting {
            return false;
        }
        self.push_close(&mut s, code, reason);
        if let Some(w) = self.take_transport(&mut s) {
            w.wake();
        }
        true
    }

    /// Ready once every item up to `seq` is finished, for items nobody tracks (a `Sink`'s: their
    /// errors go to the event stream): as [`Shared::poll_done`], without the lock when they are
    /// finished already or once the inline run has finished them.
    pub(crate) fn poll_flushed(&self, cx: &Context<'_>, seq: u64) -> Poll<Result<(), Error>> {
        if !self.push_unless_done(seq) {
            return Poll::Ready(Ok(()));
        }
        self.check_done(cx, seq)
    }

    /// The outcome of the item `seq` (and of everything before it).
    pub(crate) fn poll_done(&self, cx: &Context<'_>, seq: u64) -> Poll<Result<(), Error>> {
        self.push_unless_done(seq);
        self.check_done(cx, seq)
    }

    /// Gets the items up to `seq` moving unless they are done (read without the lock). True
    /// when they are still not done after that.
    fn push_unless_done(&self, seq: u64) -> bool {
        use std::sync::atomic::Ordering::Acquire;
        if self.done.load(Acquire) >= seq {
            return false;
        }
        self.push_out();
        self.done.load(Acquire) < seq
    }

    /// The locked half of [`Shared::poll_done`]: the outcome if it is known, else a waker.
    fn check_done(&self, cx: &Context<'_>, seq: u64) -> Poll<Result<(), Error>> {
        let mut s = self.lock();
        if s.done_seq >= seq {
            return Poll::Ready(match s.untrack(seq) {
                (true, Some(e)) => Err(e),
                _ => Ok(()),
            });
        }
        if s.closed {
            // Its own error if it failed before the end, else `Closed`.
            let (_, failure) = s.untrack(seq);
            return Poll::Ready(Err(failure.unwrap_or(Error::Closed)));
        }
        s.done_wakers.register(cx);
        Poll::Pending
    }

    /// Forget a tracked item whose outcome nobody waits for any more: its error, if any, goes
    /// to the event stream instead.
    pub(crate) fn untrack(&self, seq: u64) {
        let mut s = self.lock();
        let (_, failure) = s.untrack(seq);
        if !s.closed {
            if let Some(e) = failure {
                Self::push_event(&mut s, Event::Error(e));
            } else if seq > s.done_seq {
                s.tracking_mut().orphans.insert(seq);
            }
            return;
        }
        // Dropped after the channel closed, unresolved (a `select!` or a timeout that gave up
        // on it as the connection went): it failed. Its error goes before `Closed` if the
        // stream has not given that out yet; before 2026-12-05 it was reported nowhere.
        let error = match failure {
            Some(e) => e,
            None if seq > s.done_seq => Error::Closed,
            None => return,
        };
        let before_closed = s.events.len().checked_sub(1);
        match before_closed {
            Some(at) if s.receiver_alive && matches!(s.events[at], Event::Closed(_)) => {
                s.events.insert(at, Event::Error(error));
            }
            // `Closed` is in the receiver's hands: it takes this before giving `Closed` out
            // (see `Shared::take_late`).
            _ => Self::push_event(&mut s, Event::Error(error)),
        }
    }

    /// Events pushed after the receiver took `Closed` (a send's error reported late), for it
    /// to give out before `Closed`.
    pub(crate) fn take_late(&self, out: &mut VecDeque<Event>) {
        let mut s = self.lock();
        out.extend(s.events.drain(..));
    }

    /// Ready once the channel is closed.
    pub(crate) fn poll_closed(&self, cx: &Context<'_>) -> Poll<()> {
        let mut s = self.lock();
        if s.closed {
            return Poll::Ready(());
        }
        s.done_wakers.register(cx);
        Poll::Pending
    }

    /// Moves every waiting event into `out` (one lock for a whole burst). Ready(false): the
    /// stream has ended.
    pub(crate) fn poll_events(&self, cx: &Context<'_>, out: &mut VecDeque<Event>) -> Poll<Taken> {
        let mut s = self.lock();
        if s.open_pending {
            s.open_pending = false;
            return Poll::Ready(Taken::Open);
        }
        s.parked = false;
        if s.events.is_empty() {
            if s.ended {
                return Poll::Ready(Taken::End);
            }
            let transport = match self.inline.get() {
                Some(transport) if self.read_inline.load(Relaxed) => transport,
                _ => {
                    register(&mut s.receiver_waker, cx);
                    return Poll::Pending;
                }
            };
            if transport.armed() {
                // Our last read ended waiting for the socket and nothing came since: parked
                // at once, in this lock (the readiness to come takes it to find us parked).
                register(&mut s.receiver_waker, cx);
                s.parked = true;
                return Poll::Pending;
            }
            // Read here rather than wait for the transport's task to read and wake us: the
            // message is then handled while its bytes are still in the cache (see `ws.rs`).
            s.receiver_waker = None;
            let pushes = self.pushes();
            drop(s);
            transport.read(out, pushes);
            if !out.is_empty() {
                // Straight from the socket: nothing went through the shared queue.
                return Poll::Ready(Taken::Events);
            }
            s = self.lock();
            if s.events.is_empty() {
                if s.ended {
                    return Poll::Ready(Taken::End);
                }
                register(&mut s.receiver_waker, cx);
                s.parked = true;
                return Poll::Pending;
            }
        }
        std::mem::swap(out, &mut s.events);
        if matches!(out.back(), Some(Event::Closed(_))) {
            s.ended = true;
        }
        // Taken by the application: no longer counts against the read pause.
        s.event_bytes = 0;
        if s.read_paused {
            self.unpause(&mut s);
        }
        Poll::Ready(Taken::Events)
    }

    /// Ends the read pause and wakes the transport to read again: through its waker with the
    /// queue if it left one, else through its task's own (a WebSocket's task registers with the
    /// queue only while it takes from it). Before stop 29 (2026-12-05) only the first: a task
    /// that had seen the pause, and not yet registered, was woken by nobody, and with large
    /// messages (read by the receiver, which then also stops at the pause) the connection read
    /// nothing more until keepalive's next ping, or ever without keepalive (a multi-thread
    /// runtime, a client uploading 70 KB messages past a 256 KiB limit).
    fn unpause(&self, s: &mut State) {
        s.read_paused = false;
        if let Some(w) = self.take_transport(s) {
            w.wake();
        } else if let Some(transport) = self.inline.get() {
            transport.wake();
        }
    }

    pub(crate) fn add_handle(&self) {
        self.lock().handles += 1;
    }

    /// A handle went away; the last one closes the channel.
    pub(crate) fn drop_handle(&self, receiver: bool) {
        let mut s = self.lock();
        s.handles -= 1;
        if !receiver && !s.queue.is_empty() {
            // Sends that waited for a flush (see `enqueue`) still go out.
            if let Some(w) = self.take_transport(&mut s) {
                w.wake();
            }
        }
        if receiver {
            s.receiver_alive = false;
            // Nobody to read for: the socket's readiness wakes the connection's task.
            s.parked = false;
            s.receiver_waker = None;
            s.events.clear();
            s.event_bytes = 0;
            if s.read_paused {
                self.unpause(&mut s);
            }
        }
        if s.handles == 0 && s.accepting {
            self.push_close(&mut s, 1000, String::new());
            if let Some(w) = self.take_transport(&mut s) {
                w.wake();
            }
        }
    }

    // ---- the transport's side ----

    /// Moves every queued item into `out`. Registers the transport's waker when the queue was
    /// empty, or whatever it held when `always` (a transport that takes once per run: what is
    /// queued after the take must wake it).
    pub(crate) fn take_queue(&self, out: &mut VecDeque<Queued>, cx: &Context<'_>, always: bool) {
        let mut s = self.lock();
        if always || s.queue.is_empty() {
            register(&mut s.transport_waker, cx);
        }
        if out.is_empty() {
            std::mem::swap(out, &mut s.queue);
            // The transport's drained batch, now the shared queue: without its burst's room
            // (see `KEPT_SLOTS`), or an idle channel would keep it here.
            if s.queue.capacity() > KEPT_SLOTS {
                s.queue = VecDeque::new();
            }
        } else {
            out.append(&mut s.queue);
        }
        self.settled.store(s.transport_waker.is_some(), Relaxed);
    }

    /// Peeks at the queue without taking (an HTTP stream's head decides on its first items).
    pub(crate) fn with_queue<R>(&self, f: impl FnOnce(&mut VecDeque<Queued>) -> R) -> R {
        f(&mut self.lock().queue)
    }

    pub(crate) fn register_transport(&self, cx: &Context<'_>) {
        register(&mut self.lock().transport_waker, cx);
    }

    /// An HTTP stream's first send failed before its head was decided (a sequence whose first
    /// item failed): it no longer counts as a send, so a response head may still come first.
    pub(crate) fn unsend_first(&self) {
        let mut s = self.lock();
        s.sends = s.sends.saturating_sub(1);
    }

    /// Items up to `upto` are finished; `bytes` of them leave the queue's count; `failures`
    /// are the errors of some of them.
    pub(crate) fn finish_items(&self, upto: u64, bytes: usize, failures: &mut Vec<(u64, Error)>) {
        let mut s = self.lock();
        self.uncount(&mut s, bytes);
        Self::record_failures(&mut s, failures);
        self.advance(&mut s, upto);
        wake_all(&mut s.done_wakers);
    }

    /// Every item up to `upto` is finished.
    fn advance(&self, s: &mut State, upto: u64) {
        if upto > s.done_seq {
            s.done_seq = upto;
            self.done.store(upto, std::sync::atomic::Ordering::Release);
            if let Some(tracking) = &mut s.tracking {
                tracking.finished_upto(upto);
                s.tidy_tracking();
            }
            wake_all(&mut s.done_wakers);
        }
    }

    /// An HTTP stream's frame goes to hyper: its first message's room (`bytes`) leaves the
    /// queue's count (the others' room goes with the frame, see `data::Held`), the errors of
    /// the items taken since the last frame are recorded, and the frame counts as unwritten
    /// until its receipt is settled.
    pub(crate) fn frame_out(&self, bytes: usize, failures: &mut Vec<(u64, Error)>) {
        let mut s = self.lock();
        s.unwritten += 1;
        self.uncount(&mut s, bytes);
        if !failures.is_empty() {
            Self::record_failures(&mut s, failures);
            wake_all(&mut s.done_wakers);
        }
    }

    /// A frame was written whole: the items up to `upto` (0: none) are done, and, when it was
    /// the last one out, those that followed it without a frame. Frames are written in order.
    pub(crate) fn frame_written(&self, upto: u64) {
        let mut s = self.lock();
        s.unwritten -= 1;
        if !s.lost {
            self.advance(&mut s, upto);
            if s.unwritten == 0 {
                let tail = s.tail_seq;
                self.advance(&mut s, tail);
            }
        }
        self.end_if_written(s);
    }

    /// A frame was dropped before hyper had written it: what it and every later frame carry
    /// fails (with `Closed`, when the stream ends).
    pub(crate) fn frame_lost(&self) {
        let mut s = self.lock();
        s.unwritten -= 1;
        s.lost = true;
        self.end_if_written(s);
    }

    /// Items up to `upto` went out in no frame of their own: done once every frame before
    /// them is written (now, when none is left).
    pub(crate) fn complete_after_frames(&self, upto: u64) {
        self.after_frames(&mut self.lock(), upto);
    }

    fn after_frames(&self, s: &mut State, upto: u64) {
        s.tail_seq = s.tail_seq.max(upto);
        if s.unwritten == 0 && !s.lost {
            self.advance(s, upto);
        }
    }

    /// An HTTP stream's body ended (or hyper dropped it) with the items up to `upto` taken:
    /// they complete once every frame is written, and the channel then closes.
    pub(crate) fn body_end(&self, upto: u64) {
        let mut s = self.lock();
        self.after_frames(&mut s, upto);
        s.body_ended = true;
        // Nothing sent from now on could go out: the handles say "closing" while hyper writes
        // what it holds (before stop 28, 2026-12-05, they said "open" and took sends that could
        // only fail, or wait for good behind a declared length).
        self.refuse_sends(&mut s);
        self.end_if_written(s);
    }

    /// Closes an HTTP stream whose body ended once hyper holds none of its frames.
    fn end_if_written(&self, s: MutexGuard<'_, State>) {
        let end = s.body_ended && s.unwritten == 0;
        drop(s);
        if end {
            self.finish(CloseInfo::http(), None);
        }
    }

    fn record_failures(s: &mut State, failures: &mut Vec<(u64, Error)>) {
        if failures.is_empty() {
            return;
        }
        for (seq, error) in failures.drain(..) {
            if s.is_tracked(seq) {
                // The first error is the item's (a later one would only follow from it).
                s.tracking_mut().failures.entry(seq).or_insert(error);
            } else {
                // Its outcome is told here: no `Error::Closed` for it as an orphan at the end.
                if let Some(tracking) = s.tracking.as_mut() {
                    tracking.orphans.remove(&seq);
                    s.tidy_tracking();
                }
                Self::push_event(s, Event::Error(error));
            }
        }
    }

    /// `bytes` leave the queue's count; senders waiting for room are woken if that takes it
    /// under the limit.
    fn uncount(&self, s: &mut State, bytes: usize) {
        let limit = self.config.get().queue_limit;
        let was_full = s.queued_bytes >= limit;
        s.queued_bytes = s.queued_bytes.saturating_sub(bytes);
        if was_full && s.queued_bytes < limit {
            self.room.store(s.accepting, Relaxed);
            wake_all(&mut s.capacity_wakers);
        }
    }

    /// `bytes` of finished items that were still held (see [`Held`](crate::data::Held)) leave
    /// the queue's count.
    pub(crate) fn release(&self, bytes: usize) {
        let mut s = self.lock();
        self.uncount(&mut s, bytes);
    }

    /// Whether the transport should stop reading: the application has too much unread.
    pub(crate) fn read_paused(&self) -> bool {
        self.lock().read_paused
    }

    /// Delivers received messages to the stream (`events` is left empty). Returns whether the
    /// transport should now stop reading (see [`Shared::read_paused`]), in the same lock: over
    /// the queue limit, or over twice the limit once we sent our close (`closing`), so that
    /// what the client sent before it saw our close, and then its answer, can still come in.
    pub(crate) fn push_events(&self, events: &mut VecDeque<Event>, closing: bool) -> bool {
        let mut s = self.lock();
        // A load and a store, not an atomic add: every push holds the transport's lock.
        self.pushes.store(self.pushes.load(Relaxed) + 1, Relaxed);
        if s.receiver_alive {
            let unread = s.events.len();
            for (i, event) in events.iter_mut().enumerate() {
                if let Event::Message(m) = event {
                    s.event_bytes += incoming_size(m);
                    if unread + i >= COMPACT_AFTER {
                        compact(m);
                    }
                }
            }
            // Most often nothing waits unread: the queues are swapped, not moved event by
            // event (stop 34, 2026-12-06: `Vec::drain`, and before it a loop of `pop`s,
            // cost ~14 code lines per message).
            if s.events.is_empty() {
                std::mem::swap(&mut s.events, events);
            } else {
                s.events.append(events);
            }
            if let Some(w) = s.receiver_waker.take() {
                w.wake();
            }
        } else {
            // Nobody reads them (messages only: the transport pushes no errors here).
            events.clear();
        }
        if s.event_bytes > self.pause_above(closing) {
            s.read_paused = true;
        }
        s.read_paused
    }

    /// Our close went out while reading was paused: whether it stays paused now that the
    /// limit is twice as high (see [`Shared::push_events`]).
    pub(crate) fn closing_pause(&self) -> bool {
        let mut s = self.lock();
        if s.read_paused && s.event_bytes <= self.pause_above(true) {
            s.read_paused = false;
        }
        s.read_paused
    }

    fn pause_above(&self, closing: bool) -> usize {
        let limit = self.config.get().queue_limit;
        if closing {
            limit.saturating_mul(2)
        } else {
            limit
        }
    }

    /// An error for the event stream.
    pub(crate) fn report(&self, error: Error) {
        Self::push_event(&mut self.lock(), Event::Error(error));
    }

    fn push_event(s: &mut State, mut event: Event) {
        if !s.receiver_alive {
            if let Event::Error(e) = &event {
                tracing::debug!(error = %e, "channel error with no receiver");
            }
            return;
        }
        if let Event::Message(m) = &mut event {
            s.event_bytes += incoming_size(m);
            if s.events.len() >= COMPACT_AFTER {
                compact(m);
            }
        }
        s.events.push_back(event);
        if let Some(w) = s.receiver_waker.take() {
            w.wake();
        }
    }

    /// The channel can send: pushes `Open` (once).
    pub(crate) fn open(&self) {
        let mut s = self.lock();
        if !s.opened && !s.closed {
            s.opened = true;
            if s.receiver_alive {
                s.open_pending = true;
                if let Some(w) = s.receiver_waker.take() {
                    w.wake();
                }
            }
        }
    }

    /// The handler answered a WebSocket request with another status than `expected` (101, or
    /// 200 for an HTTP/2 extended CONNECT): the channel never opens.
    pub(crate) fn refuse_upgrade(&self, status: http::StatusCode, expected: http::StatusCode) {
        let error = Error::Upgrade(Arc::new(Refused { status, expected }));
        self.finish(CloseInfo::websocket(1006, ""), Some(error));
    }

    /// The transport is done: pushes `error` (if any) and `Closed` (once), fails what is left.
    /// Puts the channel in its configuration's shutdown registry.
    pub(crate) fn register(self: &Arc<Self>) {
        if let Some(shutdown) = &self.config.get().shutdown {
            let registry = Arc::clone(shutdown.registry());
            let id = registry.add(self);
            let _ = self.registered.set((registry, id));
        }
    }

    /// The shutdown asks for a graceful close: 1001 "going away" on a WebSocket; the end of an
    /// HTTP stream, after a jittered `retry:` on an SSE stream.
    pub(crate) fn shutdown_close(&self, index: usize) {
        if self.sse {
            let retry = crate::shutdown::jittered_retry(index);
            let event = crate::sse::Event::new().retry(retry);
            let _ = self.enqueue(event.into(), false, true, false, false);
        }
        self.request_close(1001, "going away".to_owned());
    }

    /// The shutdown's deadline passed: the transport drops the connection at once. An HTTP
    /// stream's channel closes now: hyper may not poll its body again soon (a client that
    /// reads nothing, a source with nothing ready), and then the body aborts the response.
    pub(crate) fn force_close(&self) {
        self.shut_off.store(true, std::sync::atomic::Ordering::Release);
        self.drop_connection(None);
    }

    /// Dropped by a shutdown's deadline (see [`Shared::force_close`]). Before stop 29
    /// (2026-12-05) the report counted `is_forced`, which an HTTP stream's own timeout sets
    /// too: a stream its timeout dropped before the deadline was reported forced.
    pub(crate) fn was_shut_off(&self) -> bool {
        self.shut_off.load(std::sync::atomic::Ordering::Acquire)
    }

    /// An HTTP stream's timeout passed `close_timeout` ago and its body has not ended: hyper
    /// has not polled it (a client that reads nothing fills hyper's buffer), so the body's own
    /// timer went unseen. Drops the stream as a forced close does, with the reason.
    pub(crate) fn time_out(&self) {
        let error = std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client took nothing for the close timeout after the stream's timeout",
        );
        self.drop_connection(Some(Error::io(error)));
    }

    /// Marks the channel forced (its transport drops the connection when it next runs, an
    /// HTTP stream's body by aborting the response) and wakes the transport; an HTTP stream's
    /// channel closes now, with `error` if any.
    fn drop_connection(&self, error: Option<Error>) {
        self.forced.store(true, std::sync::atomic::Ordering::Release);
        let waker = self.take_transport(&mut self.lock());
        if let Some(w) = waker {
            w.wake();
        }
        // A WebSocket's task registers with the queue only while it takes from it: one that
        // waits for a client to read (output over its high-water mark) is woken by the socket
        // alone. Before stop 29 (2026-12-05) such a connection outlived the deadline until the
        // client read or keepalive's next ping, its pending send and `Closed` with it.
        if let Some(transport) = self.inline.get() {
            transport.wake();
        } else if self.kind == Kind::WebSocket {
            // Not upgraded yet (its reply not yet returned, or hyper not done): nothing runs
            // that could see the flag, so the channel ends here, never opened; `ws::drive`
            // then does not start it, and the reply answers 503. Before stop 29 (2026-12-05)
            // it opened after the shutdown had returned.
            self.finish(CloseInfo::websocket(1006, ""), None);
            return;
        }
        if self.kind == Kind::HttpStream {
            self.finish(CloseInfo::http(), error);
        }
    }

    /// The task that calls [`Shared::time_out`]: aborted when the channel closes first.
    pub(crate) fn set_watchdog(&self, task: tokio::task::AbortHandle) {
        let mut s = self.lock();
        if s.closed {
            task.abort();
        } else {
            s.watchdog = Some(task);
        }
    }

    /// The subprotocol webchan chose for this WebSocket (see `Config::protocols`): worked out
    /// again from the request at each call, so that no channel keeps it.
    pub(crate) fn protocol(&self) -> Option<&str> {
        if self.kind != Kind::WebSocket {
            return None;
        }
        let ours = self.config.get().protocols.as_deref()?;
        let offered = self.request.values_of(&http::header::SEC_WEBSOCKET_PROTOCOL);
        crate::negotiate::choose_protocol(offered, ours)
    }

    pub(crate) fn is_forced(&self) -> bool {
        self.forced.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn finish(&self, info: CloseInfo, error: Option<Error>) {
        if let Some((registry, id)) = self.registered.get() {
            registry.remove(*id);
        }
        let mut s = self.lock();
        if s.closed {
            return;
        }
        s.closed = true;
        s.accepting = false;
        if let Some(watchdog) = s.watchdog.take() {
            watchdog.abort();
        }
        self.room.store(false, Relaxed);
        s.queue.clear();
        s.queued_bytes = 0;
        if let Some(e) = error {
            Self::push_event(&mut s, Event::Error(e));
        }
        // Sends nobody waits for any more, which will never go out.
        let orphans = s.tracking.as_mut().map_or(0, |t| std::mem::take(&mut t.orphans).len());
        s.tidy_tracking();
        for _ in 0..orphans {
            Self::push_event(&mut s, Event::Error(Error::Closed));
        }
        Self::push_event(&mut s, Event::Closed(info));
        if !s.receiver_alive {
            s.ended = true;
        }
        wake_all(&mut s.capacity_wakers);
        wake_all(&mut s.done_wakers);
        if let Some(w) = s.receiver_waker.take() {
            w.wake();
        }
        self.take_transport(&mut s);
    }
}

/// Unread events past which a received message is copied into storage of its own size (see
/// [`compact`]): a burst of one read (up to 64 messages) taken by an application that keeps up
/// costs no copy.
const COMPACT_AFTER: usize = 64;

/// Larger messages are left as they are: their storage is their own, or a read buffer they
/// fill at least half of (see `frame::Decoder::large_payload`), or a message assembled from
/// fragments (at most twice its size).
const COMPACT_MAX: usize = crate::bufpool::SMALL_MAX;

/// Copies a small received message that waits unread behind [`COMPACT_AFTER`] others into
/// storage of its own size. A small message is a view of a 4 KiB block shared by the thread's
/// small payloads (see `bufpool::copy_small`); unread, each could keep its whole block alive
/// while the read pause counts only its bytes: before stop 29 (2026-12-05) a client
/// alternating 1-byte messages with unsolicited pongs made the server hold 22 MiB against a
/// 256 KiB `queue_limit` (each message alone in its block). Only an application that is
/// behind pays the copy.
#[cold]
#[inline(never)]
fn compact(m: &mut Incoming) {
    match m {
        Incoming::Binary(b) if b.len() <= COMPACT_MAX => *b = bytes::Bytes::copy_from_slice(b),
        Incoming::Text(t) if t.len() <= COMPACT_MAX => *t = crate::Text::from(t.as_str()),
        _ => {}
    }
}

/// What a received message counts against the queue limit: its bytes and its slot in the
/// event queue. Bytes alone let a flood of empty messages past the limit, each an `Event` in
/// the queue (~384 MiB for 8.4 million, before 2026-12-05).
fn incoming_size(m: &Incoming) -> usize {
    let len = match m {
        Incoming::Text(t) => t.len(),
        Incoming::Binary(b) => b.len(),
    };
    len + std::mem::size_of::<Event>()
}

#[derive(Debug)]
struct Refused {
    status: http::StatusCode,
    expected: http::StatusCode,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not "instead of 101" over HTTP/2, where the upgrade's answer is a 200.
        let (status, expected) = (self.status, self.expected.as_u16());
        write!(f, "the handler answered with {status} instead of {expected}")
    }
}

impl std::error::Error for Refused {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counted() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (Arc::clone(&count), Waker::from(count))
    }

    #[test]
    fn wakers_wake_each_task_once_and_one_needs_no_vector() {
        let (a, wa) = counted();
        let (b, wb) = counted();
        let mut wakers = Wakers::default();
        wakers.register(&Context::from_waker(&wa));
        wakers.register(&Context::from_waker(&wa));
        assert_eq!(wakers.more.capacity(), 0, "one task waiting allocated a vector");
        wakers.register(&Context::from_waker(&wb));
        wakers.register(&Context::from_waker(&wb));
        assert_eq!(wakers.more.len(), 1);
        wake_all(&mut wakers);
        assert_eq!((a.0.load(Ordering::SeqCst), b.0.load(Ordering::SeqCst)), (1, 1));
        assert!(wakers.first.is_none() && wakers.more.capacity() == 0, "room kept after a wake");
        wake_all(&mut wakers);
        assert_eq!((a.0.load(Ordering::SeqCst), b.0.load(Ordering::SeqCst)), (1, 1));
        // Registered again after a wake: woken again.
        wakers.register(&Context::from_waker(&wb));
        wake_all(&mut wakers);
        assert_eq!(b.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn tracking_one_send_allocates_nothing_and_the_box_goes_once_empty() {
        let mut s = State::default();
        s.track(1);
        assert!(s.is_tracked(1) && s.tracking.is_none());
        assert!(matches!(s.untrack(1), (true, None)));
        assert!(!s.is_tracked(1));
        // Two at once: the second goes in the box, which is freed when it is untracked.
        s.track(2);
        s.track(3);
        assert!(s.is_tracked(2) && s.is_tracked(3) && s.tracking.is_some());
        assert!(matches!(s.untrack(3), (true, None)));
        assert!(s.tracking.is_none(), "an empty tracking box was kept");
        assert!(matches!(s.untrack(2), (true, None)));
        assert!(matches!(s.untrack(4), (false, None)));
        assert!(!s.is_tracked(0) && matches!(s.untrack(0), (false, None)), "0 is no item");
        // A failure is kept for its sender, then the box goes with it.
        s.track(5);
        s.track(6);
        s.tracking_mut().failures.insert(6, Error::Closed);
        let (tracked, failure) = s.untrack(6);
        assert!(tracked && matches!(failure, Some(Error::Closed)));
        assert!(s.tracking.is_none());
        assert!(matches!(s.untrack(5), (true, None)));
    }
}
