//! Randomised conversations over 127.0.0.1, WebSocket and HTTP stream, checked byte for byte.
//!
//! **WebSocket:** a raw TCP client sends a random mix of text and binary messages (0 B to
//! 200 KiB, now and then up to 2 MiB, whole or in fragments, with pings between the fragments,
//! random masks) in writes of random sizes with random pauses, and reads the echo in reads of
//! random sizes with random pauses, so that the server's reads stop anywhere in a frame and its
//! writes come back short.
//! Every other run's client has a 4 KiB receive buffer, so that the server's writes block.
//! Every message must come back whole and in order, the pongs must answer the pings in order
//! (RFC 6455 §5.5.3 lets a server answer only the latest of several: what it sends is a
//! subsequence ending with the last), and the close handshake must end the conversation.
//!
//! **HTTP streams:** see the section below; the same idea for the sending side.
//!
//! These are the paths the performance work changes (read sizing, buffers taken whole by
//! large payloads and given back to the pool, the receiver reading for itself, batched and
//! vectored writes, the queue limit pausing reads, the body's batching): a stale read offset
//! there once dropped connections that no other end-to-end test sent the right bytes to see
//! (see `src/frame.rs`).
//!
//! Each run is drawn from a seed, printed on failure: `WEBCHAN_SEED=N` replays one (the
//! timing differs from run to run; the bytes do not), `RANDOM_RUNS=N` sets the runs per test
//! (default 6; the whole file takes ~12 s in a debug build on 2 cores).

mod support;

use std::future::ready;
use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use webchan::{Channel, Config, Event};

/// What the client sends, and what it must get back.
struct Plan {
    /// The messages' frames, then (`close`) a close frame, sent once every echo is back: a
    /// server may answer a close at once and drop what it had not sent yet (RFC 6455 §5.5.1).
    wire: Vec<u8>,
    /// Where each frame of `wire` ends.
    ends: Vec<usize>,
    close: Vec<u8>,
    /// (opcode, payload) of each message.
    messages: Vec<(u8, Vec<u8>)>,
    pings: Vec<Vec<u8>>,
}

fn plan(rng: &mut Rng) -> Plan {
    let (mut wire, mut ends, mut messages, mut pings) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let count = rng.between(10, 120);
    for _ in 0..count {
        let len = match rng.below(10) {
            0..=4 => rng.between(0, 125),
            5..=6 => rng.between(126, 1100),
            7..=8 => rng.between(1100, 20_000),
            // Frames over 64 KiB are read into a buffer of their own (`ws.rs`), now and then
            // one of megabytes.
            _ if rng.chance(5) => rng.between(200_000, 2_000_000),
            _ => rng.between(20_000, 200_000),
        };
        let text = rng.chance(40);
        let payload = if text { rng.text(len) } else { rng.bytes(len) };
        let mut cuts: Vec<usize> = match rng.below(4) {
            0 | 1 => Vec::new(),
            n => (0..n).map(|_| rng.between(0, payload.len())).collect(),
        };
        cuts.sort_unstable();
        cuts.push(payload.len());
        let mut from = 0;
        for (i, &to) in cuts.iter().enumerate() {
            if rng.chance(15) {
                let size = rng.between(0, 125);
                let ping = rng.bytes(size);
                wire.extend(frame(0x89, rng, &ping));
                ends.push(wire.len());
                pings.push(ping);
            }
            let opcode = match (i, text) {
                (0, true) => 0x1,
                (0, false) => 0x2,
                _ => 0x0,
            };
            let fin = if i + 1 == cuts.len() { 0x80 } else { 0 };
            wire.extend(frame(fin | opcode, rng, &payload[from..to]));
            ends.push(wire.len());
            from = to;
        }
        messages.push((if text { 0x1 } else { 0x2 }, payload));
    }
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"done");
    let close = frame(0x88, rng, &close);
    Plan { wire, ends, close, messages, pings }
}

fn frame(first: u8, rng: &mut Rng, payload: &[u8]) -> Vec<u8> {
    let key = (rng.next() as u32).to_be_bytes();
    encode_frame(first, Some(key), payload, None)
}

/// The server's frames, reassembled: messages, pong payloads, the close (code, reason).
#[derive(Default)]
struct Heard {
    messages: Vec<(u8, Vec<u8>)>,
    /// The numbers of the `tick N` texts a ticking server sends of its own.
    ticks: Vec<u64>,
    /// Frames after the server's close frame other than pongs (RFC 6455 §5.5.1: there must be
    /// none; a pong may follow it, answering a ping that crossed it: §5.5.2).
    after_close: usize,
    pongs: Vec<Vec<u8>>,
    close: Option<(u16, Vec<u8>)>,
}

/// Takes the server's frames off the front of `buf` into `heard`.
fn parse(buf: &mut Vec<u8>, heard: &mut Heard, partial: &mut Option<(u8, Vec<u8>)>) {
    loop {
        if buf.len() < 2 {
            return;
        }
        assert_eq!(buf[1] & 0x80, 0, "a server frame must not be masked");
        let (len, start) = match buf[1] & 0x7f {
            126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
            127 if buf.len() >= 10 => {
                (u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize, 10)
            }
            126 | 127 => return,
            n => (usize::from(n), 2),
        };
        if buf.len() < start + len {
            return;
        }
        let (fin, opcode) = (buf[0] & 0x80 != 0, buf[0] & 0x0f);
        heard.after_close += usize::from(heard.close.is_some() && buf[0] & 0x0f != 0xA);
        assert_eq!(buf[0] & 0x70, 0, "reserved bits");
        let payload = buf[start..start + len].to_vec();
        buf.drain(..start + len);
        match opcode {
            0x1 | 0x2 => {
                assert!(partial.is_none(), "a new message inside a fragmented one");
                *partial = Some((opcode, payload));
            }
            0x0 => partial.as_mut().expect("a continuation of nothing").1.extend(payload),
            0x8 => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                heard.close = Some((code, payload[2..].to_vec()));
                continue;
            }
            0x9 => panic!("the server pinged (keepalive's first ping is 25 s away)"),
            0xA => {
                heard.pongs.push(payload);
                continue;
            }
            other => panic!("opcode {other:#x} from the server"),
        }
        if fin {
            let (opcode, payload) = partial.take().unwrap();
            // The plan's texts never hold a 't' (see `Rng::text`).
            match payload.strip_prefix(b"tick ") {
                Some(n) if opcode == 0x1 => {
                    heard.ticks.push(std::str::from_utf8(n).unwrap().parse().unwrap());
                }
                _ => heard.messages.push((opcode, payload)),
            }
        }
    }
}

/// One conversation: the plan of `seed` against the server at `addr`. With `small_window`
/// the client's receive buffer is 4 KiB, so that the server's writes of large echoes block
/// whatever the pauses.
async fn converse(addr: SocketAddr, seed: u64, small_window: bool, ticking: bool) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if small_window {
        socket.set_recv_buffer_size(4096).unwrap();
    }
    let raw = RawWs::upgrade(socket.connect(addr).await.unwrap(), addr, "/").await;
    converse_over(raw.tcp, raw.buf, seed, small_window, ticking).await;
}

/// The same over a WebSocket over HTTP/2 (RFC 8441): hyper's client, extended CONNECT, then the
/// conversation in the upgraded stream's DATA frames.
async fn converse_h2(addr: SocketAddr, seed: u64) {
    let mut sender = h2_client(addr).await;
    let io = h2_websocket(&mut sender, addr, "/").await;
    converse_over(io, Vec::new(), seed, false, false).await;
}

/// The conversation of `seed` over `io`, a WebSocket whose handshake is done (`leftover`: what
/// was read past it).
async fn converse_over<S>(io: S, leftover: Vec<u8>, seed: u64, small_window: bool, ticking: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let mut rng = Rng(seed);
    let plan = plan(&mut rng);
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut writer_rng = Rng(rng.next() | 1);
    let wire = plan.wire.clone();
    let writer = tokio::spawn(async move {
        let mut at = 0;
        while at < wire.len() {
            let n = match writer_rng.below(4) {
                0 => writer_rng.between(1, 16),
                1 | 2 => writer_rng.between(17, 4000),
                _ => writer_rng.between(4001, 100_000),
            }
            .min(wire.len() - at);
            wr.write_all(&wire[at..at + n]).await.unwrap();
            at += n;
            match writer_rng.below(10) {
                0 => tokio::time::sleep(Duration::from_millis(1)).await,
                1..=3 => tokio::task::yield_now().await,
                _ => {}
            }
        }
        wr
    });
    let (mut buf, mut heard, mut partial) = (leftover, Heard::default(), None);
    parse(&mut buf, &mut heard, &mut partial);
    let mut chunk = vec![0u8; 65536];
    let mut reader_rng = Rng(rng.next() | 1);
    // The write half stays open until the end: dropping it would shut the stream down.
    let (mut writer, mut _wr) = (Some(writer), None);
    while heard.close.is_none() {
        if heard.messages.len() == plan.messages.len() {
            if let Some(writer) = writer.take() {
                let mut half = writer.await.unwrap();
                half.write_all(&plan.close).await.unwrap();
                _wr = Some(half);
            }
        }
        let size = match reader_rng.below(3) {
            0 => reader_rng.between(1, 64),
            1 => reader_rng.between(65, 4096),
            _ => reader_rng.between(4097, 65536),
        };
        let n = tokio::time::timeout(Duration::from_secs(20), rd.read(&mut chunk[..size]))
            .await
            .unwrap_or_else(|_| panic!("seed {seed}: nothing from the server within 20 s"))
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert!(
            n > 0,
            "seed {seed}: EOF before the close, after {} of {} messages echoed",
            heard.messages.len(),
            plan.messages.len()
        );
        buf.extend_from_slice(&chunk[..n]);
        parse(&mut buf, &mut heard, &mut partial);
        if reader_rng.chance(if small_window { 20 } else { 3 }) {
            // Long enough for the server's socket buffer to fill (with a small window): its
            // writes then come back short or not at all (EAGAIN, seen with strace).
            tokio::time::sleep(Duration::from_millis(reader_rng.between(1, 8) as u64)).await;
        }
    }
    assert_eq!(heard.messages.len(), plan.messages.len(), "seed {seed}: messages echoed");
    for (i, (got, sent)) in heard.messages.iter().zip(&plan.messages).enumerate() {
        assert!(got == sent, "seed {seed}: message {i} of {} differs", plan.messages.len());
    }
    // The code echoed (RFC 6455 §5.5.1); the reason need not be.
    assert_eq!(heard.close.map(|c| c.0), Some(1000), "seed {seed}: the close answered");
    // Pongs: the pings' payloads, in order, possibly skipping some, ending with the last.
    let mut pings = plan.pings.iter();
    for pong in &heard.pongs {
        assert!(pings.any(|p| p == pong), "seed {seed}: a pong that answers no later ping");
    }
    assert_eq!(heard.pongs.last(), plan.pings.last(), "seed {seed}: the last ping answered");
    // A ticking server's own messages: 0, 1, 2... with none lost or reordered (the ones after
    // the close handshake began fail on the server's side, as they must).
    assert_eq!(!heard.ticks.is_empty(), ticking, "seed {seed}: ticks heard");
    for (i, n) in heard.ticks.iter().enumerate() {
        assert_eq!(*n, i as u64, "seed {seed}: tick {i} of {}", heard.ticks.len());
    }
    assert!(buf.is_empty() && partial.is_none(), "seed {seed}: bytes after the close");
    assert_eq!(heard.after_close, 0, "seed {seed}: frames after the server's close");
    let eof = tokio::time::timeout(Duration::from_secs(10), rd.read(&mut chunk)).await;
    assert!(
        matches!(eof, Ok(Ok(0) | Err(_))),
        "seed {seed}: the server ends the stream after the close"
    );
}

/// Every message back through the split halves: the Sink's `send_all` fed by the Stream.
async fn split_echo(channel: Channel) {
    let (mut tx, rx) = channel.split();
    let mut messages = rx.filter_map(|event| {
        ready(match event {
            Event::Message(m) => Some(Ok::<_, webchan::Error>(m.into())),
            _ => None,
        })
    });
    let _ = tx.send_all(&mut messages).await;
}

/// The seeds of this test's runs: `WEBCHAN_SEED` alone, or `RANDOM_RUNS` (default 6) drawn
/// from the clock. A seed's low byte is its run's index, which picks the run's variant (see
/// [`variant`]): successive runs rotate through the variants, and a replayed seed runs the
/// same one as when it failed.
fn seeds(salt: u64) -> Vec<u64> {
    if let Ok(seed) = std::env::var("WEBCHAN_SEED") {
        return vec![seed.parse().unwrap_or_else(|e| panic!("WEBCHAN_SEED={seed:?}: {e}"))];
    }
    let count: u64 = std::env::var("RANDOM_RUNS")
        .map_or(6, |s| s.parse().unwrap_or_else(|e| panic!("RANDOM_RUNS={s:?}: {e}")));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let base = now.as_nanos() as u64 ^ salt.wrapping_mul(0x2545_F491_4F6C_DD1D);
    let drawn = |run: u64| base.wrapping_add(run.wrapping_mul(0x9E37_79B9_7F4A_7C15)) & !0xFF;
    (0..count).map(|run| drawn(run) | (run & 0xFF)).collect()
}

/// Which of a test's variants (small window or not, HTTP/1.1 or HTTP/2...) a seed runs: its
/// run's index (see [`seeds`]).
fn variant(seed: u64) -> u64 {
    seed & 0xFF
}

/// The split echo, and another task sending `tick 0`, `tick 1`... through a clone of the
/// sender at the same time (awaited sends, `try_send`s left to complete on their own, and the
/// Sink's `feed` and `flush`, with yields between), until the channel closes.
async fn ticking_echo(channel: Channel) {
    let sender = channel.sender();
    tokio::spawn(async move {
        let mut sink = sender.clone();
        for n in 0u64.. {
            let message = format!("tick {n}").into();
            let sent = match n % 3 {
                0 => sender.send(message).await,
                1 => match sender.try_send(message) {
                    Ok(completion) => {
                        drop(completion);
                        Ok(())
                    }
                    Err((webchan::Error::QueueFull { .. }, message)) => sender.send(message).await,
                    Err((e, _)) => Err(e),
                },
                _ => match sink.feed(message).await {
                    Ok(()) => sink.flush().await,
                    Err(e) => Err(e),
                },
            };
            if sent.is_err() {
                break;
            }
            if n % 4 == 0 {
                tokio::task::yield_now().await;
            }
            if n % 64 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    split_echo(channel).await;
}

/// One seed's run, failed after 60 s: a hang must fail the test, not stall CI.
async fn bounded<T>(seed: u64, run: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| panic!("seed {seed}: the run took over 60 s"))
}

/// What a run's handler reports once it has ended, within 20 s.
async fn next_report<T>(reports: &mut mpsc::UnboundedReceiver<T>, seed: u64) -> T {
    tokio::time::timeout(Duration::from_secs(20), reports.recv())
        .await
        .unwrap_or_else(|_| panic!("seed {seed}: the handler did not end within 20 s"))
        .expect("the server is still up")
}

async fn runs(addr: SocketAddr, salt: u64, ticking: bool) {
    for seed in seeds(salt) {
        let small_window = variant(seed) % 2 == 1;
        bounded(seed, converse(addr, seed, small_window, ticking)).await;
    }
}

// Keepalive (on by default) changes who reads: with it on, a readiness wakes a receiver
// parked after a read of its own alone, and the sweeper wakes the connection's task if that
// read is still owed; with it off, the connection's task is woken too. Both are run. (Its
// first ping would come after 25 s of silence: never within these conversations.)

#[tokio::test]
async fn random_conversations_with_a_looping_echo() {
    runs(serve(Config::default(), echo).await, 1, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_conversations_with_a_split_echo_on_two_threads() {
    runs(serve(Config::default(), split_echo).await, 2, false).await;
}

#[tokio::test]
async fn random_conversations_with_a_split_echo_and_keepalive_off() {
    runs(serve(Config::default().keepalive(None), split_echo).await, 8, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_conversations_with_a_second_task_sending_on_two_threads() {
    runs(serve(Config::default(), ticking_echo).await, 9, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_conversations_over_http2() {
    let addr = serve(Config::default(), split_echo).await;
    for seed in seeds(12) {
        bounded(seed, converse_h2(addr, seed)).await;
    }
}

#[tokio::test]
async fn random_conversations_with_small_buffers_and_a_small_queue() {
    // Reads of 256 bytes at a time, a queue limit of 4 KiB that pauses reading, and sockets
    // with an 8 KiB send buffer (inherited from the listener; it also turns the kernel's
    // autotuning off), so that the server's writes of large echoes come back short.
    let config = Config::default().read_buffer_size(256).queue_limit(4096);
    runs(serve_on(small_send_buffer_listener(), config, |reply| reply, split_echo), 3, false).await;
}

/// A listener on 127.0.0.1 whose accepted sockets have an 8 KiB send buffer.
fn small_send_buffer_listener() -> tokio::net::TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(8192).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    socket.listen(64).unwrap()
}

#[tokio::test]
async fn random_http_streams_with_a_small_send_buffer() {
    let listener = small_send_buffer_listener();
    http_runs(serve_on(listener, Config::default(), |reply| reply, send_plan), 7, false).await;
}

// ---- protocol violations at the end of random conversations ----
//
// The client sends a random plan, then one violation of RFC 6455 (in one write with the
// plan's last bytes, or after a pause), and reads on. It must get whole echoes of the first
// messages, in order, then a close frame with the violation's code, nothing after it, then
// EOF; the handler, an `Event::Error` and then `Closed` with that code.

/// A violation's bytes and the close code it must get.
fn violation(rng: &mut Rng) -> (Vec<u8>, u16) {
    let masked = |first: u8, payload: &[u8]| encode_frame(first, Some([3, 1, 4, 1]), payload, None);
    match rng.below(8) {
        0 => (masked(0x83, b"reserved opcode"), 1002),
        1 => (encode_frame(0x82, None, b"unmasked", None), 1002),
        2 => (masked(0xC2, b"rsv1"), 1002),
        3 => (masked(0x89, &[0; 126]), 1002),
        4 => (masked(0x80, b"a continuation of nothing"), 1002),
        5 => (masked(0x81, b"invalid \xff utf-8"), 1007),
        6 => {
            let mut bytes =
                masked(0x01, "half a character: \u{e9}".as_bytes().split_last().unwrap().1);
            bytes.extend(masked(0x80, b"\x41"));
            (bytes, 1007)
        }
        _ => (masked(0x88, &1005u16.to_be_bytes()), 1002),
    }
}

/// The handler of a violation run: echoes each message, and reports every other event once
/// the stream has ended.
async fn echo_reporting_events(channel: Channel, report: mpsc::UnboundedSender<Vec<Event>>) {
    let (sender, mut receiver) = channel.split();
    let mut events = Vec::new();
    while let Some(event) = receiver.next().await {
        match event {
            Event::Message(m) => {
                // Fails once the violation has closed the channel; the events go on to the end.
                let _ = sender.send(m.into()).await;
            }
            other => events.push(other),
        }
    }
    let _ = report.send(events);
}

async fn violate(addr: SocketAddr, reports: &mut mpsc::UnboundedReceiver<Vec<Event>>, seed: u64) {
    let mut rng = Rng(seed);
    let plan = plan(&mut rng);
    let (bad, code) = violation(&mut rng);
    let raw = RawWs::connect(addr).await;
    let (mut rd, mut wr) = raw.tcp.into_split();
    let together = rng.chance(50);
    let wire = plan.wire.clone();
    let writer = tokio::spawn(async move {
        let split = if together { wire.len().saturating_sub(100) } else { wire.len() };
        wr.write_all(&wire[..split]).await.unwrap();
        if !together {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut rest = wire[split..].to_vec();
        rest.extend_from_slice(&bad);
        // The server may close before it has read all: errors are expected then.
        let _ = wr.write_all(&rest).await;
        wr
    });
    let (mut buf, mut heard, mut partial) = (raw.buf, Heard::default(), None);
    let mut chunk = vec![0u8; 65536];
    loop {
        parse(&mut buf, &mut heard, &mut partial);
        let read = tokio::time::timeout(Duration::from_secs(20), rd.read(&mut chunk)).await;
        match read.unwrap_or_else(|_| panic!("seed {seed}: nothing within 20 s")) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let _wr = writer.await.unwrap();
    assert_eq!(heard.close.map(|c| c.0), Some(code), "seed {seed}: the close's code");
    assert_eq!(heard.after_close, 0, "seed {seed}: frames after the server's close");
    assert!(heard.messages.len() <= plan.messages.len(), "seed {seed}: more echoes than sent");
    for (i, (got, sent)) in heard.messages.iter().zip(&plan.messages).enumerate() {
        assert!(got == sent, "seed {seed}: echo {i} differs");
    }
    let events = next_report(reports, seed).await;
    let n = events.len();
    assert!(n >= 2, "seed {seed}: events {events:?}");
    assert!(matches!(events[n - 2], Event::Error(_)), "seed {seed}: events {events:?}");
    assert!(
        matches!(&events[n - 1], Event::Closed(info) if info.code == Some(code)),
        "seed {seed}: events {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_violation_after_a_random_conversation_closes_with_its_code() {
    let (report, mut reports) = mpsc::unbounded_channel();
    let addr =
        serve(Config::default(), move |channel| echo_reporting_events(channel, report.clone()))
            .await;
    for seed in seeds(15) {
        bounded(seed, violate(addr, &mut reports, seed)).await;
    }
}

// ---- faults: the client vanishes at a random point ----
//
// The client sends a random prefix of a plan (cut anywhere, mid-frame too), reads a random
// number of times, then drops the connection, with a FIN or (zero linger) a reset, while the
// server echoes and a second task sends `tick N` messages with `try_send` (or an awaited
// `send` when the queue is full) as fast as it can. Every accepted send must report one
// outcome within 10 s, in order (every `Ok` before every error: sends are written in order);
// every tick the client read must have been reported `Ok` (its bytes were written); the echoes
// it read are the first messages, whole; and the handler sees `Closed` with 1006, last.

/// What a faulted run's handler saw: each accepted tick's outcome in order, the `Closed`
/// event's code, and whether any event came after it.
struct Report {
    outcomes: Vec<bool>,
    closed: Option<Option<u16>>,
    after_closed: bool,
}

/// `tick N`, fixed width (15 bytes), so that an HTTP client can count whole ones.
fn tick(n: u64) -> String {
    format!("tick {n:010}")
}

/// Echoes (WebSocket) while another task sends ticks until the channel closes; then reports.
async fn ticking_until_dropped(channel: Channel, report: mpsc::UnboundedSender<Report>) {
    enum Outcome {
        Known(bool),
        Pending(webchan::Completion),
    }
    let ticks = channel.sender();
    let ticker = tokio::spawn(async move {
        let mut outcomes = Vec::new();
        for n in 0u64.. {
            match ticks.try_send(tick(n).into()) {
                Ok(completion) => outcomes.push(Outcome::Pending(completion)),
                Err((webchan::Error::QueueFull { .. }, message)) => {
                    outcomes.push(Outcome::Known(ticks.send(message).await.is_ok()));
                }
                Err(_) => break,
            }
            if n % 8 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let mut done = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            done.push(match outcome {
                Outcome::Known(ok) => ok,
                Outcome::Pending(completion) => {
                    let outcome = tokio::time::timeout(Duration::from_secs(10), completion).await;
                    outcome.expect("an accepted send reported nothing within 10 s").is_ok()
                }
            });
        }
        done
    });
    let (sender, mut receiver) = channel.split();
    let (mut closed, mut after_closed) = (None, false);
    while let Some(event) = receiver.next().await {
        after_closed |= closed.is_some();
        match event {
            Event::Message(m) => {
                let _ = sender.send(m.into()).await;
            }
            Event::Closed(info) => closed = Some(info.code),
            _ => {}
        }
    }
    let outcomes = ticker.await.unwrap();
    let _ = report.send(Report { outcomes, closed, after_closed });
}

/// One faulted conversation.
async fn vanish(
    addr: SocketAddr,
    reports: &mut mpsc::UnboundedReceiver<Report>,
    seed: u64,
    http2: bool,
) {
    let (plan, heard, reset) = vanishing_ws_client(addr, seed, http2).await;
    let report = next_report(reports, seed).await;
    for (i, n) in heard.ticks.iter().enumerate() {
        assert_eq!(*n, i as u64, "seed {seed}: tick {i} of {}", heard.ticks.len());
    }
    check_report(&report, heard.ticks.len(), Some(1006), seed, reset);
    assert!(heard.messages.len() <= plan.messages.len(), "seed {seed}: more echoes than sent");
    for (i, (got, sent)) in heard.messages.iter().zip(&plan.messages).enumerate() {
        assert!(got == sent, "seed {seed}: echo {i} differs");
    }
}

/// A connection for a client that will vanish: at random a 4 KiB receive window, and at random
/// a reset (zero linger) instead of a FIN when it goes; whether it resets.
async fn vanishing_socket(addr: SocketAddr, rng: &mut Rng) -> (tokio::net::TcpStream, bool) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if rng.chance(50) {
        socket.set_recv_buffer_size(4096).unwrap();
    }
    let reset = rng.chance(50);
    if reset {
        socket.set_zero_linger().unwrap();
    }
    (socket.connect(addr).await.unwrap(), reset)
}

/// A WebSocket client that sends a random prefix of the plan of `seed`, reads a random number
/// of times and vanishes: the plan, what it heard, and whether it reset the connection.
///
/// With `http2`, the WebSocket is an HTTP/2 stream (RFC 8441), and the client vanishes either
/// with its whole connection or, at random, by resetting only its stream (RST_STREAM); the
/// connection then stays up for 30 s, longer than the caller waits for the server's report,
/// so that the server must notice the stream's reset by itself.
async fn vanishing_ws_client(addr: SocketAddr, seed: u64, http2: bool) -> (Plan, Heard, bool) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let mut rng = Rng(seed);
    let plan = plan(&mut rng);
    let (tcp, reset) = vanishing_socket(addr, &mut rng).await;
    if !http2 {
        let raw = RawWs::upgrade(tcp, addr, "/").await;
        let heard = vanish_over(raw.tcp, raw.buf, &plan, &mut rng, seed).await;
        return (plan, heard, reset);
    }
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let io = h2_websocket(&mut sender, addr, "/").await;
    let heard = vanish_over(io, Vec::new(), &plan, &mut rng, seed).await;
    if rng.chance(50) {
        conn.abort();
    } else {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            conn.abort();
            drop(sender);
        });
    }
    (plan, heard, reset)
}

/// The vanishing client's conversation over `io`: what it heard before it dropped `io`.
async fn vanish_over<S>(io: S, leftover: Vec<u8>, plan: &Plan, rng: &mut Rng, seed: u64) -> Heard
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let cut = rng.below(plan.wire.len() + 1);
    let sent = plan.wire[..cut].to_vec();
    let mut writer_rng = Rng(rng.next() | 1);
    let writer = tokio::spawn(async move {
        let mut at = 0;
        while at < sent.len() {
            let n = writer_rng.between(1, 20_000).min(sent.len() - at);
            if wr.write_all(&sent[at..at + n]).await.is_err() {
                break;
            }
            at += n;
            if writer_rng.chance(20) {
                tokio::task::yield_now().await;
            }
        }
        wr
    });
    let (mut buf, mut heard, mut partial) = (leftover, Heard::default(), None);
    parse(&mut buf, &mut heard, &mut partial);
    let mut chunk = vec![0u8; 65536];
    for _ in 0..rng.below(60) {
        let size = rng.between(1, 65536);
        match tokio::time::timeout(Duration::from_secs(5), rd.read(&mut chunk[..size])).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            other => panic!("seed {seed}: the server stopped sending ticks: {other:?}"),
        }
        parse(&mut buf, &mut heard, &mut partial);
        if rng.chance(10) {
            tokio::time::sleep(Duration::from_millis(rng.between(1, 5) as u64)).await;
        }
    }
    // Gone: the writer mid-way or done, unread bytes left behind.
    writer.abort();
    let _ = writer.await;
    drop(rd);
    heard
}

/// What a faulted run's report must show, whatever the protocol: every outcome known, in
/// order, at least `read` of them `Ok` (the client read those whole), `Closed` with `code`,
/// last.
fn check_report(report: &Report, read: usize, code: Option<u16>, seed: u64, reset: bool) {
    assert_eq!(report.closed, Some(code), "seed {seed}: Closed (reset: {reset})");
    assert!(!report.after_closed, "seed {seed}: an event after Closed");
    let oks = report.outcomes.iter().take_while(|ok| **ok).count();
    assert!(
        report.outcomes[oks..].iter().all(|ok| !ok),
        "seed {seed}: a send failed before one that succeeded"
    );
    assert!(read <= oks, "seed {seed}: the client read {read} ticks, {oks} were reported sent");
}

/// One faulted HTTP stream: the client (hyper's, HTTP/1.1 or HTTP/2) reads a random number
/// of body frames, then drops the connection.
async fn vanish_http(
    addr: SocketAddr,
    reports: &mut mpsc::UnboundedReceiver<Report>,
    seed: u64,
    http2: bool,
) {
    let (got, reset) = vanishing_http_client(addr, seed, http2).await;
    let report = next_report(reports, seed).await;
    let whole = got.len() / 15;
    let want: Vec<u8> = (0..whole as u64 + 1).flat_map(|n| tick(n).into_bytes()).collect();
    assert!(got[..] == want[..got.len()], "seed {seed}: the body is not the ticks in order");
    check_report(&report, whole, None, seed, reset);
}

/// An HTTP client that reads a random number of body frames and vanishes: the body it read,
/// and whether it reset the connection.
async fn vanishing_http_client(addr: SocketAddr, seed: u64, http2: bool) -> (Vec<u8>, bool) {
    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let mut rng = Rng(seed);
    let (tcp, reset) = vanishing_socket(addr, &mut rng).await;
    let io = TokioIo::new(tcp);
    let (response, conn) = if http2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.unwrap();
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        (send.send_request(get(addr, "/")).await.unwrap(), conn)
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        (send.send_request(get(addr, "/")).await.unwrap(), conn)
    };
    let mut body = response.into_body();
    let mut got = Vec::new();
    for _ in 0..rng.below(60) {
        match tokio::time::timeout(Duration::from_secs(5), body.frame()).await {
            Ok(Some(Ok(frame))) => got.extend_from_slice(&frame.into_data().unwrap()),
            other => panic!("seed {seed}: the server stopped sending ticks: {other:?}"),
        }
        if rng.chance(10) {
            tokio::time::sleep(Duration::from_millis(rng.between(1, 5) as u64)).await;
        }
    }
    // Gone: the connection's task and its socket dropped, unread bytes left behind.
    drop(body);
    conn.abort();
    let _ = conn.await;
    (got, reset)
}

/// A server whose every channel runs `ticking_until_dropped`, and the reports they send.
async fn ticking_server() -> (SocketAddr, mpsc::UnboundedReceiver<Report>) {
    let (report, reports) = mpsc::unbounded_channel();
    let addr =
        serve(Config::default(), move |channel| ticking_until_dropped(channel, report.clone()))
            .await;
    (addr, reports)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_clients_that_vanish_at_random_points_get_every_send_reported() {
    let (addr, mut reports) = ticking_server().await;
    for seed in seeds(11) {
        let http2 = variant(seed) % 2 == 1;
        bounded(seed, vanish_http(addr, &mut reports, seed, http2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_vanish_at_random_points_get_every_send_reported() {
    let (addr, mut reports) = ticking_server().await;
    for seed in seeds(10) {
        let http2 = variant(seed) % 3 == 2;
        bounded(seed, vanish(addr, &mut reports, seed, http2)).await;
    }
}

// ---- faults through the callback API (`compat`) ----
//
// The same vanishing clients against a `compat::as_channel` server whose `on_open` starts a
// task that sends `tick N` with `on_success` and `on_error` callbacks as fast as it can, until
// `send` says the channel is gone (`Ok(false)`). Every send that `send` accepted (`Ok(true)`)
// must get exactly one of its two callbacks, within 10 s of the end, and the refused one none;
// every tick the client read must have had `on_success`. (A tick may be missing from what the
// client read: one over the queue's limit fails with `QueueFull` through `on_error`, as
// `compat` documents.)

/// Per tick: how many times its `on_success` and its `on_error` ran.
type Calls = Vec<(u32, u32)>;

fn compat_ticker(report: mpsc::UnboundedSender<Calls>) -> webchan::compat::Options {
    use std::sync::{Arc, Mutex};
    use webchan::compat::SendOptions;
    webchan::compat::Options::new().on_open(move |ch| {
        let (ch, report) = (ch.clone(), report.clone());
        tokio::spawn(async move {
            let calls = Arc::new(Mutex::new(Calls::new()));
            for n in 0u64.. {
                let (on_success, on_error) = (Arc::clone(&calls), Arc::clone(&calls));
                let at = n as usize;
                calls.lock().unwrap().push((0, 0));
                let options = SendOptions::new()
                    .on_success(move || on_success.lock().unwrap()[at].0 += 1)
                    .on_error(move |_| on_error.lock().unwrap()[at].1 += 1);
                match ch.send(tick(n), options) {
                    Ok(true) => {}
                    // The channel is gone: this last send is refused and gets no callback.
                    Ok(false) => break,
                    Err(e) => panic!("{e}"),
                }
                if n % 8 == 0 {
                    tokio::task::yield_now().await;
                }
                if n % 1024 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            let waiting =
                |calls: &Calls| calls.split_last().unwrap().1.iter().any(|c| c.0 + c.1 == 0);
            while tokio::time::Instant::now() < deadline && waiting(&calls.lock().unwrap()) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let _ = report.send(calls.lock().unwrap().clone());
        });
    })
}

/// Exactly one callback per accepted send, none for the refused last one (the spec: "If the
/// channel is already closed, :on-success won't be invoked"); `on_success` for every tick in
/// `read`.
fn check_calls(calls: &Calls, read: &[u64], seed: u64) {
    let (refused, accepted) = calls.split_last().expect("the last send is refused");
    assert_eq!(*refused, (0, 0), "seed {seed}: callbacks of the send refused (Ok(false))");
    for (n, (ok, err)) in accepted.iter().enumerate() {
        assert_eq!(ok + err, 1, "seed {seed}: tick {n}: {ok} on_success, {err} on_error");
    }
    for n in read {
        let at = *n as usize;
        assert!(
            at < accepted.len() && accepted[at].0 == 1,
            "seed {seed}: tick {n} read, not a success"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_sends_to_clients_that_vanish_get_exactly_one_callback_each() {
    let (report, mut reports) = mpsc::unbounded_channel();
    let addr = serve_compat(compat_ticker(report)).await;
    for seed in seeds(14) {
        let run = async {
            let read: Vec<u64> = match variant(seed) % 3 {
                0 => vanishing_ws_client(addr, seed, variant(seed) % 2 == 0).await.1.ticks,
                kind => {
                    let (got, _) = vanishing_http_client(addr, seed, kind == 2).await;
                    got.chunks_exact(15)
                        .map(|t| std::str::from_utf8(&t[5..]).unwrap().parse().unwrap())
                        .collect()
                }
            };
            let calls = next_report(&mut reports, seed).await;
            check_calls(&calls, &read, seed);
        };
        bounded(seed, run).await;
    }
}

// ---- a graceful shutdown amid random conversations ----
//
// Several WebSocket conversations (clients that answer a close, as a browser does) and HTTP
// streams of numbered messages are under way when `Shutdown::shutdown` is called, at a random
// moment. Each WebSocket client must get whole echoes of the first messages it sent, in order,
// then a close with 1001, then EOF once it has answered; each HTTP body must end cleanly (its
// last chunk) after whole messages; and the report must count every channel as closed
// cleanly, none forced.

/// A WebSocket conversation that a shutdown ends: the client sends its plan (a frame at a time,
/// stopping between frames once the server's close has come), answers the close, and reads
/// to the end. Says on `ready` once its WebSocket is open.
async fn converse_until_shutdown(addr: SocketAddr, seed: u64, ready: mpsc::UnboundedSender<()>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let mut rng = Rng(seed);
    let plan = plan(&mut rng);
    let raw = RawWs::connect(addr).await;
    let _ = ready.send(());
    let (mut rd, mut wr) = raw.tcp.into_split();
    let (stop, answer) = (Arc::new(AtomicBool::new(false)), Arc::new(tokio::sync::Notify::new()));
    let (wire, ends) = (plan.wire.clone(), plan.ends.clone());
    let (writer_stop, writer_answer) = (Arc::clone(&stop), Arc::clone(&answer));
    let mut writer_rng = Rng(rng.next() | 1);
    let writer = tokio::spawn(async move {
        let mut at = 0;
        for end in ends {
            if writer_stop.load(Ordering::Acquire) {
                break;
            }
            while at < end {
                let n = writer_rng.between(1, 20_000).min(end - at);
                wr.write_all(&wire[at..at + n]).await.unwrap();
                at += n;
            }
            if writer_rng.chance(5) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        // The close's answer, once it has come: the code echoed (RFC 6455 §5.5.1).
        writer_answer.notified().await;
        let reply = frame(0x88, &mut writer_rng, &1001u16.to_be_bytes());
        wr.write_all(&reply).await.unwrap();
        wr
    });
    let (mut buf, mut heard, mut partial) = (raw.buf, Heard::default(), None);
    let mut chunk = vec![0u8; 65536];
    loop {
        parse(&mut buf, &mut heard, &mut partial);
        if heard.close.is_some() && !stop.swap(true, Ordering::AcqRel) {
            answer.notify_one();
        }
        let read = tokio::time::timeout(Duration::from_secs(20), rd.read(&mut chunk)).await;
        match read.unwrap_or_else(|_| panic!("seed {seed}: nothing within 20 s")) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let _wr = writer.await.unwrap();
    assert_eq!(heard.close.map(|c| c.0), Some(1001), "seed {seed}: closed going away");
    assert_eq!(heard.after_close, 0, "seed {seed}: frames after the server's close");
    assert!(heard.messages.len() <= plan.messages.len(), "seed {seed}: more echoes than sent");
    for (i, (got, sent)) in heard.messages.iter().zip(&plan.messages).enumerate() {
        assert!(got == sent, "seed {seed}: echo {i} differs");
    }
    assert!(buf.is_empty() && partial.is_none(), "seed {seed}: bytes after the close");
}

/// A WebSocket echoes; an HTTP stream sends `tick N` until the channel closes.
async fn echo_or_ticks(channel: Channel) {
    if channel.kind() == webchan::Kind::WebSocket {
        return split_echo(channel).await;
    }
    let sender = channel.sender();
    for n in 0u64.. {
        if sender.send(tick(n).into()).await.is_err() {
            break;
        }
        if n % 16 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_amid_random_conversations_closes_every_channel_cleanly() {
    for seed in seeds(13) {
        bounded(seed, shut_down_amid(seed)).await;
    }
}

/// One shutdown run: the conversations and streams of `seed`, then the shutdown.
async fn shut_down_amid(seed: u64) {
    let mut rng = Rng(seed);
    let shutdown = webchan::Shutdown::new();
    let addr = serve(Config::default().shutdown(&shutdown), echo_or_ticks).await;
    let (ready, mut readies) = mpsc::unbounded_channel();
    let (sockets, streams) = (rng.between(1, 4), rng.between(0, 2));
    let mut clients = Vec::new();
    for _ in 0..sockets {
        let seed = rng.next() | 1;
        clients.push(tokio::spawn(converse_until_shutdown(addr, seed, ready.clone())));
    }
    let mut bodies = Vec::new();
    for _ in 0..streams {
        bodies.push(tokio::spawn(async move { http1_get(addr, get(addr, "/")).await }));
    }
    for _ in 0..sockets {
        readies.recv().await.unwrap();
    }
    // The HTTP streams are open once a tick has gone out: the registry counts them.
    while shutdown.live() < sockets + streams {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(rng.between(0, 40) as u64)).await;
    let report = shutdown.shutdown(Duration::from_secs(10)).await;
    for client in clients {
        client.await.unwrap_or_else(|e| panic!("seed {seed}: a WebSocket client: {e}"));
    }
    for body in bodies {
        let body = body.await.unwrap_or_else(|e| panic!("seed {seed}: an HTTP client: {e}"));
        let body = body.body();
        assert_eq!(body.len() % 15, 0, "seed {seed}: the body ends after a whole message");
        let want: Vec<u8> =
            (0..body.len() as u64 / 15).flat_map(|n| tick(n).into_bytes()).collect();
        assert!(body[..] == want[..], "seed {seed}: the body is not the ticks in order");
    }
    assert_eq!(
        (report.clean, report.forced),
        (sockets + streams, 0),
        "seed {seed}: {sockets} WebSockets and {streams} HTTP streams"
    );
}

// ---- HTTP streams ----
//
// The handler draws its sends from the seed in the request's query: text and binary messages
// (0 B to 100 KiB, empty ones too, which must not end a chunked body), sequences, readers fed
// in pieces by another task, streams that pause, and files (sizes around the 16 KiB chunks
// they go out in), sent with `send`, `try_send` (falling back to `send` when the queue is
// full) or the Sink's `feed`, with pauses between. The client reads in reads of random sizes
// with pauses (HTTP/1.1 over raw TCP, de-chunked here) or frame by frame with pauses (HTTP/2,
// hyper's client). The body must be every message's bytes in order, and every send must
// complete.

/// One send of the handler.
enum Piece {
    Text(String),
    Binary(Vec<u8>),
    /// Each element sent in turn, as text when it is valid UTF-8.
    Seq(Vec<Vec<u8>>),
    /// Read from a pipe of this capacity, written in pieces by another task.
    Reader(Vec<u8>, usize),
    /// A stream that sleeps a millisecond before each element.
    Slow(Vec<Vec<u8>>),
    /// A file holding these bytes (written by the handler, sent by path).
    File(Vec<u8>),
}

impl Piece {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Text(t) => t.as_bytes().to_vec(),
            Self::Binary(b) | Self::Reader(b, _) | Self::File(b) => b.clone(),
            Self::Seq(items) | Self::Slow(items) => items.concat(),
        }
    }
}

fn http_plan(seed: u64) -> Vec<(Piece, usize, usize)> {
    let mut rng = Rng(seed);
    let count = rng.between(5, 60);
    let mut pieces = Vec::with_capacity(count);
    for _ in 0..count {
        let len = match rng.below(10) {
            0 => 0,
            1..=5 => rng.between(1, 2000),
            6..=8 => rng.between(2000, 30_000),
            _ => rng.between(30_000, 100_000),
        };
        let items = |rng: &mut Rng| -> Vec<Vec<u8>> {
            (0..rng.between(1, 4))
                .map(|_| {
                    let len = rng.between(0, 3000);
                    if rng.chance(50) {
                        rng.text(len)
                    } else {
                        rng.bytes(len)
                    }
                })
                .collect()
        };
        let piece = match rng.below(11) {
            0..=2 => Piece::Text(String::from_utf8(rng.text(len)).unwrap()),
            3..=6 => Piece::Binary(rng.bytes(len)),
            7 => Piece::Seq(items(&mut rng)),
            8 => Piece::Reader(rng.bytes(len), rng.between(64, 8192)),
            9 => Piece::Slow(items(&mut rng)),
            _ => {
                // Files go out in chunks of 16 KiB: sizes at and around a chunk's end.
                let sizes = [0, 1, 16_383, 16_384, 16_385, 32_768, len];
                let size = sizes[rng.below(sizes.len())];
                Piece::File(rng.bytes(size))
            }
        };
        // How it is sent (0 send, 1 try_send, 2 feed), and the pause after it.
        pieces.push((piece, rng.below(3), rng.below(10)));
    }
    pieces
}

fn bytes_message(bytes: Vec<u8>) -> webchan::Message {
    match String::from_utf8(bytes) {
        Ok(text) => text.into(),
        Err(e) => e.into_bytes().into(),
    }
}

/// The message of `piece`; a file is written to a path of its own, which goes into `files`.
fn message_of(piece: Piece, files: &mut Vec<std::path::PathBuf>) -> webchan::Message {
    use std::sync::atomic::{AtomicU64, Ordering};
    use webchan::Message;
    static FILES: AtomicU64 = AtomicU64::new(0);
    match piece {
        Piece::File(data) => {
            let n = FILES.fetch_add(1, Ordering::Relaxed);
            let name = format!("webchan-random-{}-{n}", std::process::id());
            let path = std::env::temp_dir().join(name);
            std::fs::write(&path, data).unwrap();
            files.push(path.clone());
            Message::file(path)
        }
        Piece::Text(t) => t.into(),
        Piece::Binary(b) => b.into(),
        Piece::Seq(items) => Message::seq(items.into_iter().map(bytes_message)),
        Piece::Reader(data, capacity) => {
            let (mut pipe, reader) = tokio::io::duplex(capacity);
            tokio::spawn(async move {
                let mut rng = Rng(data.len() as u64 | 1);
                let mut at = 0;
                while at < data.len() {
                    let n = rng.between(1, 5000).min(data.len() - at);
                    pipe.write_all(&data[at..at + n]).await.unwrap();
                    at += n;
                    if rng.chance(30) {
                        tokio::task::yield_now().await;
                    }
                }
            });
            Message::reader(reader)
        }
        Piece::Slow(items) => Message::stream(futures::stream::iter(items).then(|item| async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            bytes_message(item)
        })),
    }
}

/// The handler: the sends of the query's seed, each awaited in the end, then a close.
async fn send_plan(mut channel: Channel) {
    let query = channel.originating_request().uri.query().unwrap_or_default().to_owned();
    let seed: u64 = query.trim_start_matches("seed=").parse().unwrap();
    let sender = channel.sender();
    let (mut completions, mut files) = (Vec::new(), Vec::new());
    for (piece, how, pause) in http_plan(seed) {
        let message = message_of(piece, &mut files);
        match how {
            0 => sender.send(message).await.unwrap_or_else(|e| panic!("seed {seed}: {e}")),
            1 => match sender.try_send(message) {
                Ok(completion) => completions.push(completion),
                Err((webchan::Error::QueueFull { .. }, message)) => {
                    sender.send(message).await.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                }
                Err((e, _)) => panic!("seed {seed}: {e}"),
            },
            _ => channel.feed(message).await.unwrap_or_else(|e| panic!("seed {seed}: {e}")),
        }
        match pause {
            0 => tokio::time::sleep(Duration::from_millis(1)).await,
            1..=3 => tokio::task::yield_now().await,
            _ => {}
        }
    }
    channel.flush().await.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    for completion in completions {
        completion.await.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
    sender.close().await;
    for file in files {
        let _ = std::fs::remove_file(file);
    }
}

fn expected_body(seed: u64) -> Vec<u8> {
    http_plan(seed).iter().flat_map(|(piece, _, _)| piece.bytes()).collect()
}

/// HTTP/1.1 over raw TCP, read in reads of random sizes with pauses: the de-chunked body.
async fn fetch_http1(addr: SocketAddr, seed: u64) -> Vec<u8> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /?seed={seed} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let (mut rng, mut response, mut chunk) = (Rng(seed ^ 0x55), Vec::new(), vec![0u8; 65536]);
    loop {
        let size = rng.between(1, 65536);
        let n = tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut chunk[..size]))
            .await
            .unwrap_or_else(|_| panic!("seed {seed}: nothing within 20 s"))
            .unwrap();
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
        if rng.chance(3) {
            tokio::time::sleep(Duration::from_millis(rng.between(1, 8) as u64)).await;
        }
    }
    let start = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    let head = String::from_utf8_lossy(&response[..start]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "seed {seed}: {head}");
    assert!(head.contains("transfer-encoding: chunked"), "seed {seed}: {head}");
    let (mut body, mut at) = (Vec::new(), start);
    loop {
        let rest = &response[at..];
        let line = rest.windows(2).position(|w| w == b"\r\n").expect("a chunk size");
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..line]).unwrap(), 16)
            .unwrap_or_else(|e| panic!("seed {seed}: chunk size: {e}"));
        at += line + 2;
        if size == 0 {
            assert_eq!(&response[at..], b"\r\n", "seed {seed}: the body's end");
            return body;
        }
        body.extend_from_slice(&response[at..at + size]);
        assert_eq!(&response[at + size..at + size + 2], b"\r\n", "seed {seed}: a chunk's end");
        at += size + 2;
    }
}

/// HTTP/2 through hyper's client, frame by frame with pauses: the body.
async fn fetch_http2(addr: SocketAddr, seed: u64) -> Vec<u8> {
    use http_body_util::BodyExt;
    let mut sender = h2_client(addr).await;
    let response = sender.send_request(get(addr, &format!("/?seed={seed}"))).await.unwrap();
    assert_eq!(response.status(), 200, "seed {seed}");
    let (mut body, mut bytes, mut rng) = (response.into_body(), Vec::new(), Rng(seed ^ 0xAA));
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(20), body.frame())
        .await
        .unwrap_or_else(|_| panic!("seed {seed}: nothing within 20 s"))
    {
        if let Ok(data) = frame.unwrap_or_else(|e| panic!("seed {seed}: {e}")).into_data() {
            bytes.extend_from_slice(&data);
        }
        if rng.chance(3) {
            tokio::time::sleep(Duration::from_millis(rng.between(1, 8) as u64)).await;
        }
    }
    bytes
}

async fn http_runs(addr: SocketAddr, salt: u64, http2: bool) {
    for seed in seeds(salt) {
        let body = bounded(seed, async {
            if http2 {
                fetch_http2(addr, seed).await
            } else {
                fetch_http1(addr, seed).await
            }
        })
        .await;
        let want = expected_body(seed);
        assert_eq!(body.len(), want.len(), "seed {seed}: the body's length");
        assert!(body == want, "seed {seed}: the body differs from the messages in order");
    }
}

#[tokio::test]
async fn random_http_streams_over_http1() {
    http_runs(serve(Config::default(), send_plan).await, 4, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_http_streams_over_http2_on_two_threads() {
    http_runs(serve(Config::default(), send_plan).await, 5, true).await;
}

#[tokio::test]
async fn random_http_streams_with_a_small_queue() {
    http_runs(serve(Config::default().queue_limit(4096), send_plan).await, 6, false).await;
}
