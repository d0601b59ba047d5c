//! WebSocket keepalive without a timer in the application's runtime.
//!
//! Each connection with keepalive on holds a [`Watch`]; one thread for the whole process (the
//! sweeper, started with the first watch and asleep while there is none) looks at every
//! watch a few times per interval and wakes the connection's task when a ping is due or the
//! answer is late. The connection only sets a flag when it hears from its peer.
//!
//! Why not a `tokio::time::Sleep` per connection, as before: any timer in a runtime makes
//! each of its parks an `epoll_wait` with a timeout (a kernel timer armed at every sleep) and
//! a visit to tokio's timer wheel. With one connection in ping-pong that was ~0.5 µs of the
//! server's ~9 µs per round trip (55.8k against 58.6k round trips per second without
//! keepalive, 5 interleaved rounds): the price of a timer that fires once in 25 s.
//!
//! Timing: a ping goes out once the peer has been silent for at least the interval, at most
//! one sweep later (a sweep every eighth of the shortest interval or timeout watched, and at
//! least once a second); the connection is dropped when nothing came for the timeout after
//! the ping was asked for, give or take a sweep.
//!
//! The sweeper is also the safety net of a receiver that reads the socket itself (`ws.rs`,
//! `Dispatch`): the socket's readiness then wakes that receiver alone, and a receiver woken
//! and not polled again (a `select!` that took another branch) would leave the socket unread.
//! Until some read settles it, each sweep wakes the connection's task, which reads.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, Weak};
use std::task::Waker;
use std::time::{Duration, Instant};

/// Sweeps at most this often, whatever the intervals.
const MIN_TICK: Duration = Duration::from_millis(5);
/// Sweeps at least this often.
const MAX_TICK: Duration = Duration::from_secs(1);

/// One connection's side of the keepalive.
#[derive(Debug)]
pub(crate) struct Watch {
    /// Set by the connection whenever a frame arrives; taken by the sweeper.
    heard: AtomicBool,
    /// How many pings the sweeper asked for: the connection sends one whenever this moves.
    pings: AtomicU32,
    /// No answer within the timeout after the last ping asked for: drop the connection.
    dead: AtomicBool,
    /// The connection's task.
    waker: Mutex<Option<Waker>>,
    /// The socket's readiness went to a receiver that reads for itself and nothing has read
    /// since (see `ws.rs`, `Dispatch`): the sweeper wakes the connection's task to read, in
    /// case that receiver is not polled again.
    owed: AtomicBool,
    /// The connection went idle keeping its empty buffers (see [`Watch::hold`]).
    holding: AtomicBool,
    /// A sweep found the peer silent while the connection kept its buffers: give them back.
    release: AtomicBool,
}

impl Watch {
    /// The peer was heard from (any frame).
    pub(crate) fn heard(&self) {
        // A load first: the common case (already set since the last sweep) writes nothing,
        // so the cache line is not bounced to the sweeper's core and back.
        if !self.heard.load(Ordering::Relaxed) {
            self.heard.store(true, Ordering::Relaxed);
        }
    }

    /// The socket's readiness went to the receiver alone: until a read settles it, each
    /// sweep wakes the connection's task.
    pub(crate) fn owe(&self) {
        if !self.owed.load(Ordering::Relaxed) {
            self.owed.store(true, Ordering::Release);
        }
    }

    /// A read of the socket began: nothing is owed.
    pub(crate) fn settle(&self) {
        // A load first, as in `heard`: the common case writes nothing.
        if self.owed.load(Ordering::Relaxed) {
            self.owed.store(false, Ordering::Relaxed);
        }
    }

    /// The connection goes idle with empty buffers: true if it may keep them for its next
    /// message (then marked as keeping them), false once a sweep that found the peer silent
    /// asked for them back, or while [`HOLDERS_MAX`] other connections keep theirs. A
    /// connection in a conversation keeps its buffers from one message to the next instead
    /// of giving them to the thread's pool and taking them back at every round trip (~230
    /// instructions of a ~5,500-instruction ping-pong round trip); a quiet one gives them
    /// back within two sweeps (two seconds at most).
    pub(crate) fn hold(&self) -> bool {
        if self.release.load(Ordering::Acquire) {
            return false;
        }
        // A load first, as in `heard`: the common case writes nothing.
        if self.holding.load(Ordering::Relaxed) {
            return true;
        }
        if HOLDERS.fetch_add(1, Ordering::Relaxed) >= HOLDERS_MAX {
            HOLDERS.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        // Only this connection sets it (its calls are serialized by the connection's lock),
        // only the sweeper and the drop clear it, each taking the count back.
        self.holding.store(true, Ordering::Relaxed);
        true
    }

    /// The buffers were given back as [`Watch::hold`] asked: the request is done.
    pub(crate) fn released(&self) {
        if self.release.load(Ordering::Relaxed) {
            self.release.store(false, Ordering::Relaxed);
        }
    }

    /// How many pings were asked for so far.
    pub(crate) fn pings(&self) -> u32 {
        self.pings.load(Ordering::Acquire)
    }

    /// The peer did not answer in time, and nothing came since the sweeper said so (a pong
    /// read in the same wake-up that brings the verdict keeps the connection: the sweeper
    /// then takes the verdict back at its next look).
    pub(crate) fn is_dead(&self) -> bool {
        // `heard` first: if the sweeper has cleared it, it cleared `dead` before (see `sweep`),
        // and the Acquire here makes that visible.
        !self.heard.load(Ordering::Acquire) && self.dead.load(Ordering::Acquire)
    }

    /// The task to wake when a ping is due or the peer is dead.
    pub(crate) fn set_waker(&self, waker: &Waker) {
        let mut slot = self.waker.lock().unwrap_or_else(PoisonError::into_inner);
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    fn wake(&self) {
        let waker = self.waker.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if *self.holding.get_mut() {
            HOLDERS.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Connections that keep their buffers between messages (see [`Watch::hold`]).
static HOLDERS: AtomicUsize = AtomicUsize::new(0);
/// At most this many connections keep their buffers between messages (two of 4 KiB each, 2 MiB
/// in all): past that, a connection gives them back whenever it goes idle, so that a crowd of
/// occasional talkers, each quiet for less than two sweeps, does not keep 8 KiB apiece.
pub(crate) const HOLDERS_MAX: usize = 256;

/// The sweeper's record of one watch.
struct Entry {
    watch: Weak<Watch>,
    interval: Duration,
    timeout: Duration,
    /// The sweep that last saw the peer heard from (or the registration).
    last: Instant,
    /// The sweep that asked for a ping.
    pinged: Option<Instant>,
}

struct Sweeper {
    entries: Mutex<Vec<Entry>>,
    /// Wakes the thread when an entry comes that needs a shorter tick than the current one
    /// (or the first one, while the thread waits with none).
    added: Condvar,
    /// The current tick in nanoseconds (`u64::MAX` while there is no entry); written with
    /// `entries` locked.
    tick: AtomicU64,
    /// The thread could not be started: keepalive is off.
    failed: AtomicBool,
}

/// The sweeps one entry needs: a few per interval and per timeout.
fn tick_for(interval: Duration, timeout: Duration) -> Duration {
    (interval.min(timeout) / 8).clamp(MIN_TICK, MAX_TICK)
}

static SWEEPER: OnceLock<Sweeper> = OnceLock::new();
static STARTED: OnceLock<()> = OnceLock::new();

/// Starts watching a connection: a ping after `interval` of silence, the end after `timeout`
/// more without an answer. `None` if the sweeper thread could not be started (then
/// keepalive is off for this connection, and a warning says so).
pub(crate) fn watch(interval: Duration, timeout: Duration) -> Option<Arc<Watch>> {
    let sweeper = SWEEPER.get_or_init(|| Sweeper {
        entries: Mutex::new(Vec::new()),
        added: Condvar::new(),
        tick: AtomicU64::new(u64::MAX),
        failed: AtomicBool::new(false),
    });
    STARTED.get_or_init(|| {
        let started = std::thread::Builder::new()
            .name("webchan-keepalive".into())
            .spawn(move || sweeper.run());
        if let Err(error) = started {
            tracing::warn!(%error, "cannot start the keepalive thread: WebSocket keepalive is off");
            sweeper.failed.store(true, Ordering::Relaxed);
        }
    });
    if sweeper.failed.load(Ordering::Relaxed) {
        return None;
    }
    let watch = Arc::new(Watch {
        heard: AtomicBool::new(false),
        pings: AtomicU32::new(0),
        dead: AtomicBool::new(false),
        waker: Mutex::new(None),
        owed: AtomicBool::new(false),
        holding: AtomicBool::new(false),
        release: AtomicBool::new(false),
    });
    let entry = Entry {
        watch: Arc::downgrade(&watch),
        interval,
        timeout,
        last: Instant::now(),
        pinged: None,
    };
    let mut entries = sweeper.entries.lock().unwrap_or_else(PoisonError::into_inner);
    entries.push(entry);
    // Only when the sweeper must wake sooner than it planned: a registration does not cost
    // a sweep of every connection.
    if tick_for(interval, timeout).as_nanos() < u128::from(sweeper.tick.load(Ordering::Relaxed)) {
        sweeper.added.notify_one();
    }
    drop(entries);
    Some(watch)
}

impl Sweeper {
    fn run(&self) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let mut last_sweep = Instant::now();
        loop {
            if entries.is_empty() {
                self.tick.store(u64::MAX, Ordering::Relaxed);
                while entries.is_empty() {
                    entries = self.added.wait(entries).unwrap_or_else(PoisonError::into_inner);
                }
                last_sweep = Instant::now();
            }
            let tick = entries.iter().map(|e| tick_for(e.interval, e.timeout)).min();
            let tick = tick.unwrap_or(MAX_TICK);
            self.tick.store(u64::try_from(tick.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
            let now = Instant::now();
            let due = last_sweep + tick;
            if now >= due {
                entries.retain_mut(|e| Self::sweep(e, now));
                // A burst of connections gone: give their room back (72 bytes each; the list
                // kept the most ever swept at once, 8,192 entries' worth after a churn of
                // ~21,000 connections a second, until stop 27, 2026-12-05).
                if entries.capacity() > 64 && entries.len() < entries.capacity() / 4 {
                    let keep = (entries.len() * 2).max(64);
                    entries.shrink_to(keep);
                }
                last_sweep = now;
                continue;
            }
            // Woken early only by an entry that needs a shorter tick (see `watch`).
            entries = self
                .added
                .wait_timeout(entries, due - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Looks at one watch; false once its connection is gone.
    fn sweep(e: &mut Entry, now: Instant) -> bool {
        let Some(watch) = e.watch.upgrade() else { return false };
        if watch.owed.load(Ordering::Acquire) {
            // A receiver was woken to read and has not (yet): the connection's task reads.
            watch.wake();
        }
        if watch.heard.load(Ordering::Relaxed) {
            e.last = now;
            e.pinged = None;
            // `dead` before `heard`: a connection that reads `heard` cleared then reads `dead`
            // cleared too (a frame read meanwhile is counted in this sweep, at `now`).
            watch.dead.store(false, Ordering::Relaxed);
            watch.heard.store(false, Ordering::Release);
            return true;
        }
        if watch.holding.load(Ordering::Relaxed) && watch.holding.swap(false, Ordering::Relaxed) {
            // Silent since the last sweep, and the connection keeps buffers: it gives them
            // back when it next goes idle, which this wake brings about at once.
            HOLDERS.fetch_sub(1, Ordering::Relaxed);
            watch.release.store(true, Ordering::Release);
            watch.wake();
        }
        match e.pinged {
            None if now.duration_since(e.last) >= e.interval => {
                e.pinged = Some(now);
                watch.pings.fetch_add(1, Ordering::Release);
                watch.wake();
            }
            // Woken once; the entry stays (its connection drops it, or, closing, ignores
            // keepalive) until the watch is dropped or the peer is heard from again.
            Some(pinged) if now.duration_since(pinged) >= e.timeout => {
                let newly = !watch.dead.swap(true, Ordering::Release);
                if newly {
                    watch.wake();
                }
            }
            _ => {}
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Count(std::sync::atomic::AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Polls `f` every 5 ms for up to 5 s (a bound for a loaded machine, not a speed claim).
    fn eventually(what: &str, f: impl Fn() -> bool) {
        let end = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < end, "{what} never happened");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_silent_peer_is_pinged_then_declared_dead_and_a_heard_one_stays_quiet() {
        let interval = Duration::from_millis(40);
        let timeout = Duration::from_millis(80);
        let wakes = Arc::new(Count(0.into()));
        let waker = Waker::from(wakes.clone());

        let started = Instant::now();
        let silent = watch(interval, timeout).expect("the sweeper runs");
        silent.set_waker(&waker);
        eventually("a ping request", || silent.pings() == 1);
        assert!(started.elapsed() >= interval, "pinged before the interval passed");
        // The sweeper counts the ping, then wakes: the wake may come a moment after the count.
        eventually("the connection's task woken", || wakes.0.load(Ordering::SeqCst) >= 1);
        eventually("the peer declared dead", || silent.is_dead());
        assert!(started.elapsed() >= interval + timeout, "dead before interval + timeout");
        assert_eq!(silent.pings(), 1, "one ping per silence");

        // A frame read after the verdict (a late pong in the same wake-up) takes it back: the
        // connection stays, and the next silence gets its own ping.
        silent.heard();
        assert!(!silent.is_dead(), "a peer heard after the verdict is not dead");
        eventually("a second ping request", || silent.pings() == 2);
        assert!(!silent.is_dead());

        // A peer that answers each ping is asked for another after each silence, never dead
        // (a long timeout: this thread answering late on a loaded machine is not the test).
        let talking = watch(interval, Duration::from_secs(10)).expect("the sweeper runs");
        talking.set_waker(&waker);
        for round in 1..=3 {
            eventually("a ping request", || talking.pings() == round);
            talking.heard();
        }
        assert!(!talking.is_dead());

        // A dropped watch leaves the sweeper's list.
        drop(talking);
        drop(silent);
        let sweeper = SWEEPER.get().unwrap();
        eventually("the entries removed", || {
            sweeper.entries.lock().unwrap().iter().all(|e| e.watch.strong_count() > 0)
        });
    }

    #[test]
    fn a_holder_is_asked_for_its_buffers_once_silent_and_holders_are_bounded() {
        let wakes = Arc::new(Count(0.into()));
        let talker = watch(Duration::from_secs(600), Duration::from_secs(600)).expect("sweeper");
        talker.set_waker(&Waker::from(wakes.clone()));
        assert!(talker.hold(), "a connection going idle keeps its buffers");
        // Heard at every look: never asked (a sweep at least once a second).
        for _ in 0..12 {
            talker.heard();
            std::thread::sleep(MAX_TICK / 5);
            assert!(talker.hold(), "asked for its buffers while talking");
        }
        // Silent: asked within two sweeps, and woken to give them back.
        eventually("the buffers asked for", || !talker.hold());
        eventually("the connection's task woken", || wakes.0.load(Ordering::SeqCst) >= 1);
        talker.released();
        assert!(talker.hold(), "after giving them back, it keeps them again for a while");
        drop(talker);

        // No more than `HOLDERS_MAX` keep theirs at once (other tests' watches may count too:
        // fewer then get to).
        let crowd: Vec<_> = (0..HOLDERS_MAX + 10)
            .map(|_| watch(Duration::from_secs(600), Duration::from_secs(600)))
            .collect();
        let kept = crowd.iter().filter(|w| w.as_ref().is_some_and(|w| w.hold())).count();
        assert!((1..=HOLDERS_MAX).contains(&kept), "{kept} keep their buffers");
        drop(crowd);
        let one = watch(Duration::from_secs(600), Duration::from_secs(600)).expect("sweeper");
        assert!(one.hold(), "the crowd gone, a connection keeps its buffers again");
    }

    #[test]
    fn a_read_owed_wakes_the_connection_at_each_sweep_until_it_is_settled() {
        // Intervals far longer than the test: no ping is due, only what is owed wakes.
        let wakes = Arc::new(Count(0.into()));
        let owing = watch(Duration::from_secs(600), Duration::from_secs(600)).expect("sweeper");
        owing.set_waker(&Waker::from(wakes.clone()));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0, "woken with nothing owed");

        owing.owe();
        // A sweep at least once a second (`MAX_TICK`): woken, and again while still owed.
        eventually("the connection's task woken", || wakes.0.load(Ordering::SeqCst) >= 1);
        eventually("woken again while still owed", || wakes.0.load(Ordering::SeqCst) >= 2);

        owing.settle();
        // A sweep that read the flag just before may still wake once; after that, none.
        std::thread::sleep(MAX_TICK + Duration::from_millis(100));
        let settled = wakes.0.load(Ordering::SeqCst);
        std::thread::sleep(2 * MAX_TICK + Duration::from_millis(100));
        assert_eq!(wakes.0.load(Ordering::SeqCst), settled, "woken after the read was settled");
        assert_eq!(owing.pings(), 0);
    }
}
