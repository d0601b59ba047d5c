//! A review of stop 34's changes to the WebSocket hot path (2026-12-06), kept as tests: the
//! receiver's own reads hand events straight to it (`pushes`), the readiness counts in `Core`
//! (`armed`), the step's waker moved out and back, large payloads narrowed in place,
//! `Chunk::Header`, events as swapped `VecDeque`s. Real sockets on 127.0.0.1 only; receivers
//! polled on spawned tasks (a receiver polled outside a task never reads the socket itself)
//! and large messages of at most 64 KiB (larger ones are read by the connection's task).
//!
//! `m_ended_websockets_whose_sender_is_kept_hold_no_more_after_large_messages` found that the
//! first version kept the dispatching waker, and with it the keepalive watch, in `Core` for
//! as long as any handle lived: ~400 bytes more per ended channel whose `Sender` was kept
//! (2,261 against 1,858), the watch swept for nothing; the waker is the connection's since.

#[path = "support/counting.rs"]
mod counting;
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use webchan::{Channel, Config, Event, Incoming, Message};

const MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

/// The byte at `i` of message `id`: every byte checked.
fn pat(id: u32, i: usize) -> u8 {
    let x = (id as u64).wrapping_mul(0x9E37_79B9) ^ (i as u64).wrapping_mul(131) ^ (i as u64 >> 9);
    x as u8
}

fn body(id: u32, len: usize) -> Vec<u8> {
    (0..len).map(|i| pat(id, i)).collect()
}

fn check(id: u32, got: &[u8], len: usize) {
    assert_eq!(got.len(), len, "message {id}: length");
    if let Some(i) = (0..len).find(|&i| got[i] != pat(id, i)) {
        panic!("message {id} ({len} bytes) damaged at byte {i}");
    }
}

fn ka(on: bool) -> Config {
    if on {
        Config::default()
    } else {
        Config::default().keepalive(None)
    }
}

/// What the application received: (text?, bytes); `None` for `Closed` (then the task ends).
type Got = (bool, Vec<u8>);

/// Runs a receiver on its own task that forwards every message (and errors as text "ERR").
fn forward(mut ch: Channel) -> (webchan::Sender, mpsc::UnboundedReceiver<Option<Got>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sender = ch.sender();
    tokio::spawn(async move {
        while let Some(e) = ch.next().await {
            match e {
                Event::Open => {}
                Event::Message(Incoming::Binary(b)) => {
                    let _ = tx.send(Some((false, b.to_vec())));
                }
                Event::Message(Incoming::Text(t)) => {
                    let _ = tx.send(Some((true, t.as_bytes().to_vec())));
                }
                Event::Message(_) => {}
                Event::Error(e) => {
                    let _ = tx.send(Some((true, format!("ERR {e}").into_bytes())));
                }
                Event::Closed(_) => {
                    let _ = tx.send(None);
                }
                _ => {}
            }
        }
    });
    (sender, rx)
}

async fn got(rx: &mut mpsc::UnboundedReceiver<Option<Got>>, what: &str) -> Option<Got> {
    tokio::time::timeout(Duration::from_secs(8), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("stalled: nothing within 8 s ({what})"))
        .expect("receiver task gone")
}

async fn expect_binary(rx: &mut mpsc::UnboundedReceiver<Option<Got>>, id: u32, len: usize) {
    match got(rx, &format!("message {id}, {len} bytes")).await {
        Some((false, b)) => check(id, &b, len),
        other => panic!("message {id}: {:?}", other.map(|(t, b)| (t, b.len()))),
    }
}

/// Reads frames until one with `opcode`, skipping others (returns its payload).
async fn until_opcode(raw: &mut RawWs, opcode: u8) -> Vec<u8> {
    loop {
        let (first, payload) = raw.read_frame().await.expect("connection ended");
        if first & 0x0f == opcode {
            return payload;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Lost wake-ups: large messages, a pause of seconds, more; keepalive on and off.

async fn pause_then_more(config: Config) {
    let (addr, mut channels) = serve_channels(config).await;
    let mut raw = RawWs::connect(addr).await;
    let (_sender, mut rx) = forward(next_channel(&mut channels).await);
    let mut id = 0u32;
    let sizes: [&[usize]; 4] = [
        &[40_000, 70_000, 20_000, 200_000, 40_000],
        &[100, 5000, 40_000, 3, 70_000, 17_000],
        &[300_000, 300_000, 16_384, 16_385],
        &[65_536, 10, 4096, 4097, 65_537],
    ];
    for (round, plan) in sizes.iter().enumerate() {
        let first = id;
        for &len in plan.iter() {
            raw.frame(0x82, &body(id, len)).await;
            id += 1;
        }
        for (k, &len) in plan.iter().enumerate() {
            expect_binary(&mut rx, first + k as u32, len).await;
        }
        // The receiver is parked (armed) now; the client is silent for seconds.
        tokio::time::sleep(Duration::from_millis(if round == 0 { 2500 } else { 1200 })).await;
        // A ping alone while parked: answered.
        raw.frame(0x89, format!("p{round}").as_bytes()).await;
        let t = Instant::now();
        let pong = until_opcode(&mut raw, 0xA).await;
        assert_eq!(pong, format!("p{round}").as_bytes());
        assert!(t.elapsed() < Duration::from_secs(5), "pong after {:?}", t.elapsed());
    }
    // One more large after the last pong, then the close: both seen, handshake done.
    raw.frame(0x82, &body(id, 50_000)).await;
    expect_binary(&mut rx, id, 50_000).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    raw.raw(&encode_frame(0x88, Some(MASK), &1000u16.to_be_bytes(), None)).await;
    let (code, _) = raw.read_close().await.expect("no close answer");
    assert_eq!(code, 1000);
    assert!(raw.eof().await, "server did not close TCP");
    assert!(got(&mut rx, "Closed").await.is_none(), "Closed expected");
}

#[tokio::test]
async fn m_pause_then_more_large_keepalive_on_current_thread() {
    pause_then_more(ka(true)).await;
}

#[tokio::test]
async fn m_pause_then_more_large_keepalive_off_current_thread() {
    pause_then_more(ka(false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m_pause_then_more_large_keepalive_on_multi_thread() {
    pause_then_more(ka(true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m_pause_then_more_large_keepalive_off_multi_thread() {
    pause_then_more(ka(false)).await;
}

// ---------------------------------------------------------------------------------------
// A receiver parked after large messages, then not polled for seconds: pings answered, the
// close handshake completes, and once polled again it gets everything in order.

async fn unpolled_receiver(config: Config) {
    let (addr, mut channels) = serve_channels(config).await;
    let mut raw = RawWs::connect(addr).await;
    let mut ch = next_channel(&mut channels).await;
    assert!(matches!(next_of(&mut ch).await, Some(Event::Open)));
    for id in 0..6 {
        raw.frame(0x82, &body(id, 60_000)).await;
    }
    for id in 0..6 {
        match next_of(&mut ch).await {
            Some(Event::Message(Incoming::Binary(b))) => check(id, &b, 60_000),
            other => panic!("{other:?}"),
        }
    }
    // A `select!` that took the other branch: the receiver is left parked, woken later and
    // not polled.
    tokio::select! {
        e = ch.next() => panic!("unexpected {e:?}"),
        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
    }
    for round in 0..3 {
        raw.frame(0x89, &[round]).await;
        let t = Instant::now();
        assert_eq!(until_opcode(&mut raw, 0xA).await, vec![round]);
        assert!(t.elapsed() < Duration::from_secs(5), "pong after {:?}", t.elapsed());
    }
    for id in 6..9 {
        raw.frame(0x82, &body(id, 60_000)).await;
    }
    raw.raw(&encode_frame(0x88, Some(MASK), &1000u16.to_be_bytes(), None)).await;
    let t = Instant::now();
    let (code, _) = raw.read_close().await.expect("no close answer");
    assert_eq!(code, 1000);
    assert!(t.elapsed() < Duration::from_secs(5), "close answer after {:?}", t.elapsed());
    // Now the application reads again.
    for id in 6..9 {
        match next_of(&mut ch).await {
            Some(Event::Message(Incoming::Binary(b))) => check(id, &b, 60_000),
            other => panic!("message {id}: {other:?}"),
        }
    }
    match next_of(&mut ch).await {
        Some(Event::Closed(info)) => assert_eq!(info.code, Some(1000), "{info:?}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn m_unpolled_receiver_answers_pings_and_closes_keepalive_on() {
    tokio::spawn(unpolled_receiver(ka(true))).await.unwrap();
}

#[tokio::test]
async fn m_unpolled_receiver_answers_pings_and_closes_keepalive_off() {
    tokio::spawn(unpolled_receiver(ka(false))).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m_unpolled_receiver_answers_pings_and_closes_keepalive_off_multi_thread() {
    tokio::spawn(unpolled_receiver(ka(false))).await.unwrap();
}

// ---------------------------------------------------------------------------------------
// The receiver dropped while its read left the socket armed: the connection still answers
// pings, discards messages, and closes.

async fn receiver_dropped_while_armed(config: Config) {
    let (addr, mut channels) = serve_channels(config).await;
    let mut raw = RawWs::connect(addr).await;
    let ch = next_channel(&mut channels).await;
    let (sender, mut receiver) = ch.split();
    assert!(matches!(receiver.recv().await, Some(Event::Open)));
    for id in 0..4 {
        raw.frame(0x82, &body(id, 40_000)).await;
    }
    for id in 0..4 {
        match tokio::time::timeout(Duration::from_secs(8), receiver.recv()).await.unwrap() {
            Some(Event::Message(Incoming::Binary(b))) => check(id, &b, 40_000),
            other => panic!("{other:?}"),
        }
    }
    // Parked, armed.
    tokio::select! {
        e = receiver.recv() => panic!("unexpected {e:?}"),
        _ = tokio::time::sleep(Duration::from_millis(300)) => {}
    }
    drop(receiver);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in 4..40 {
        raw.frame(0x82, &body(id, 40_000)).await;
    }
    raw.frame(0x89, b"after").await;
    let t = Instant::now();
    assert_eq!(until_opcode(&mut raw, 0xA).await, b"after");
    assert!(t.elapsed() < Duration::from_secs(5), "pong after {:?}", t.elapsed());
    // The sender still works, a large send after the drop too.
    tokio::time::timeout(
        Duration::from_secs(8),
        sender.send(Message::Binary(body(99, 100_000).into())),
    )
    .await
    .expect("send stalled")
    .expect("send failed");
    let p = until_opcode(&mut raw, 0x2).await;
    check(99, &p, 100_000);
    raw.raw(&encode_frame(0x88, Some(MASK), &1000u16.to_be_bytes(), None)).await;
    let (code, _) = raw.read_close().await.expect("no close answer");
    assert_eq!(code, 1000);
    tokio::time::timeout(Duration::from_secs(8), sender.closed()).await.expect("not closed");
}

#[tokio::test]
async fn m_receiver_dropped_while_armed_keepalive_on() {
    tokio::spawn(receiver_dropped_while_armed(ka(true))).await.unwrap();
}

#[tokio::test]
async fn m_receiver_dropped_while_armed_keepalive_off() {
    tokio::spawn(receiver_dropped_while_armed(ka(false))).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m_receiver_dropped_while_armed_keepalive_off_multi_thread() {
    tokio::spawn(receiver_dropped_while_armed(ka(false))).await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Order and bytes: mixed sizes, fragments with pings between, text split mid-character,
// written in random pieces, on many connections, a receiver that sometimes dawdles.

#[derive(Clone, Debug)]
struct Planned {
    text: bool,
    bytes: Vec<u8>,
}

fn plan(rng: &mut Rng, id_base: u32, count: usize) -> Vec<Planned> {
    let mut out = Vec::new();
    for k in 0..count {
        let len = match rng.below(10) {
            0 => rng.below(126),
            1 | 2 => rng.between(126, 4096),
            3 => rng.between(4096, 16_383),
            4..=6 => rng.between(4_097, 65_000),
            7 | 8 => rng.between(70_000, 300_000),
            _ => rng.between(300_000, 1_200_000),
        };
        let text = rng.chance(30);
        let bytes = if text { rng.text(len) } else { body(id_base + k as u32, len) };
        out.push(Planned { text, bytes });
    }
    out
}

/// The wire bytes of the plan: some messages fragmented (splits anywhere, also inside a
/// UTF-8 character), pings between fragments and messages. Returns (wire, pings sent).
fn wire(rng: &mut Rng, plan: &[Planned]) -> (Vec<u8>, u32) {
    let mut w = Vec::new();
    let mut pings = 0u32;
    for m in plan {
        let op = if m.text { 0x1 } else { 0x2 };
        if rng.chance(35) && m.bytes.len() > 2 {
            let pieces = rng.between(2, 6);
            let mut cuts: Vec<usize> = (0..pieces - 1).map(|_| rng.below(m.bytes.len())).collect();
            cuts.sort();
            let mut start = 0;
            for (i, &c) in cuts.iter().chain(std::iter::once(&m.bytes.len())).enumerate() {
                let first = if i == 0 { op } else { 0x0 };
                let fin = if c == m.bytes.len() { 0x80 } else { 0 };
                w.extend(encode_frame(first | fin, Some(MASK), &m.bytes[start..c], None));
                start = c;
                if fin == 0 && rng.chance(40) {
                    w.extend(encode_frame(0x89, Some(MASK), &pings.to_be_bytes(), None));
                    pings += 1;
                }
                if fin != 0 {
                    break;
                }
            }
        } else {
            w.extend(encode_frame(0x80 | op, Some(MASK), &m.bytes, None));
        }
        if rng.chance(10) {
            w.extend(encode_frame(0x89, Some(MASK), &pings.to_be_bytes(), None));
            pings += 1;
        }
    }
    (w, pings)
}

async fn mixed_client(raw: RawWs, ch: Channel, seed: u64, tag: u32, count: usize) {
    let mut rng = Rng(seed | 1);
    let plan = plan(&mut rng, tag << 20, count);
    let (bytes, pings) = wire(&mut rng, &plan);
    let mut dawdle = Rng(seed.wrapping_mul(7) | 1);
    let receiving = tokio::spawn(async move {
        let mut ch = ch;
        let mut seen = Vec::new();
        loop {
            let e = tokio::time::timeout(Duration::from_secs(10), ch.next())
                .await
                .expect("stalled: no event within 10 s");
            match e {
                Some(Event::Open) => {}
                Some(Event::Message(Incoming::Binary(b))) => seen.push((false, b.to_vec())),
                Some(Event::Message(Incoming::Text(t))) => seen.push((true, t.as_bytes().to_vec())),
                Some(Event::Closed(info)) => {
                    assert_eq!(info.code, Some(1000), "{info:?}");
                    break;
                }
                None => break,
                other => panic!("{other:?}"),
            }
            match dawdle.below(20) {
                0 => tokio::time::sleep(Duration::from_millis(dawdle.between(1, 30) as u64)).await,
                1..=4 => tokio::task::yield_now().await,
                _ => {}
            }
        }
        seen
    });
    let RawWs { tcp, buf } = raw;
    let (rd, mut wr) = tcp.into_split();
    let reading = tokio::spawn(async move {
        let mut client = RawWs { tcp: rd, buf };
        let mut pongs = Vec::new();
        loop {
            match client.read_frame().await {
                Some((first, p)) if first & 0x0f == 0xA => pongs.push(p),
                Some((first, p)) if first & 0x0f == 0x8 => break (pongs, p),
                Some((first, _)) => panic!("unexpected frame {first:#x}"),
                None => panic!("ended without a close frame"),
            }
        }
    });
    let mut at = 0;
    while at < bytes.len() {
        let n = rng.between(1, 200_000).min(bytes.len() - at);
        wr.write_all(&bytes[at..at + n]).await.unwrap();
        at += n;
        if rng.chance(5) {
            tokio::time::sleep(Duration::from_millis(rng.between(1, 400) as u64)).await;
        }
    }
    wr.write_all(&encode_frame(0x88, Some(MASK), &1000u16.to_be_bytes(), None)).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(30), receiving)
        .await
        .expect("receiving took over 30 s")
        .unwrap();
    let (pongs, close) = tokio::time::timeout(Duration::from_secs(10), reading)
        .await
        .expect("no close answer")
        .unwrap();
    assert_eq!(&close[..2], &1000u16.to_be_bytes(), "close answer");
    assert_eq!(seen.len(), plan.len(), "connection {tag}: message count");
    for (k, (m, (text, got))) in plan.iter().zip(seen.iter()).enumerate() {
        assert_eq!(m.text, *text, "connection {tag}, message {k}: kind");
        if m.bytes != *got {
            let at = m.bytes.iter().zip(got.iter()).position(|(a, b)| a != b);
            panic!(
                "connection {tag}, message {k}: {} bytes expected, {} seen, first difference at {at:?}",
                m.bytes.len(),
                got.len()
            );
        }
    }
    // Every ping answered, in order (nothing else is written: the output never backs up).
    let expected: Vec<Vec<u8>> = (0..pings).map(|p| p.to_be_bytes().to_vec()).collect();
    assert_eq!(pongs, expected, "connection {tag}: pongs");
}

async fn mixed(seed: u64, connections: usize, count: usize, config: Config) {
    let (addr, mut channels) = serve_channels(config).await;
    let mut clients = Vec::new();
    for c in 0..connections {
        let seed = seed ^ (c as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D);
        let raw = RawWs::connect(addr).await;
        let ch = next_channel(&mut channels).await;
        clients.push(tokio::spawn(mixed_client(raw, ch, seed, c as u32, count)));
    }
    for c in clients {
        c.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn m_mixed_sizes_fragments_pings_many_connections_multi_thread() {
    mixed(0xA11CE, 8, 60, ka(true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn m_mixed_sizes_fragments_pings_many_connections_multi_thread_keepalive_off() {
    mixed(0xB0B, 8, 60, ka(false)).await;
}

#[tokio::test]
async fn m_mixed_sizes_fragments_pings_current_thread() {
    mixed(0xC0FFEE, 4, 80, ka(false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m_mixed_sizes_small_queue_limit_multi_thread() {
    // The read pause engaged often: the receiver's reads and the task's interleave.
    mixed(0xD00D, 4, 60, ka(true).queue_limit(64 * 1024)).await;
}

// ---------------------------------------------------------------------------------------
// The write side: large frames alone and after small ones (both `Chunk` paths), partial
// writes to a slow reader with a small receive buffer, several `Sender` clones.

fn tagged(id: u32, len: usize) -> Vec<u8> {
    let mut b = body(id, len);
    b[..4].copy_from_slice(&id.to_be_bytes());
    b
}

/// A client that reads the server's frames in random pieces, slowly now and then.
struct SlowReader {
    tcp: tokio::net::TcpStream,
    buf: Vec<u8>,
    rng: Rng,
}

impl SlowReader {
    async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some(frame) = take_frame(&mut self.buf) {
                return Some(frame);
            }
            let want = match self.rng.below(10) {
                0 => self.rng.between(1, 11),
                1..=3 => self.rng.between(100, 5000),
                _ => self.rng.between(20_000, 262_144),
            };
            let mut chunk = vec![0u8; want];
            let n = tokio::time::timeout(Duration::from_secs(10), self.tcp.read(&mut chunk))
                .await
                .expect("stalled: no bytes from the server within 10 s")
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if self.rng.chance(3) {
                tokio::time::sleep(Duration::from_millis(self.rng.between(1, 25) as u64)).await;
            }
        }
    }
}

async fn slow_connect(addr: SocketAddr, seed: u64) -> SlowReader {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let raw = RawWs::upgrade(tcp, addr, "/").await;
    SlowReader { tcp: raw.tcp, buf: raw.buf, rng: Rng(seed | 1) }
}

const SIZES: [usize; 17] = [
    16_383,
    16_384,
    16_385,
    65_535,
    65_536,
    65_537,
    125,
    126,
    127,
    1 << 20,
    8 << 20,
    4,
    5,
    200_000,
    40_000,
    4096,
    3 << 20,
];

async fn clones_to_a_slow_reader(config: Config) {
    clones_to_a_slow_reader_on(config, None).await;
}

/// With `sndbuf`, the server's sockets get a small send buffer: most writes are partial,
/// often inside a frame's header.
async fn clones_to_a_slow_reader_on(config: Config, sndbuf: Option<u32>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(b) = sndbuf {
        socket.set_send_buffer_size(b).unwrap();
    }
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let (addr, mut channels) = serve_channels_on(socket.listen(16).unwrap(), config);
    let mut client = slow_connect(addr, 0x5EED).await;
    let ch = next_channel(&mut channels).await;
    let (sender, _receiver) = ch.split();
    let mut plans = Vec::new();
    let mut tasks = Vec::new();
    for c in 0..3u32 {
        let s = sender.clone();
        let mut rng = Rng(u64::from(c) * 77 + 5);
        let mut plan: Vec<(u32, usize, bool)> = Vec::new();
        for k in 0..SIZES.len() as u32 {
            let len = SIZES[((k + c * 5) as usize) % SIZES.len()];
            // Text (ASCII, its pattern masked to 7 bits) now and then.
            plan.push((c * 1000 + k, len, rng.chance(25)));
        }
        plans.push(plan.clone());
        tasks.push(tokio::spawn(async move {
            let mut pending = Vec::new();
            for (i, (id, len, text)) in plan.into_iter().enumerate() {
                let mut b = tagged(id, len);
                let m = if text {
                    for x in &mut b[4..] {
                        *x &= 0x7f;
                    }
                    b[..4].copy_from_slice(&[
                        b'0' + c as u8,
                        b'a' + (id % 1000 / 26) as u8,
                        b'a' + (id % 1000 % 26) as u8,
                        b'#',
                    ]);
                    Message::Text(String::from_utf8(b).unwrap().into())
                } else {
                    Message::Binary(b.into())
                };
                // Mixed: awaited sends, try_sends whose completions are awaited later.
                if i % 3 == 0 {
                    match s.try_send(m) {
                        Ok(done) => pending.push(done),
                        Err((e, m)) => {
                            assert!(matches!(e, webchan::Error::QueueFull { .. }), "{e:?}");
                            s.send(m).await.expect("send failed");
                        }
                    }
                } else {
                    tokio::time::timeout(Duration::from_secs(60), s.send(m))
                        .await
                        .expect("send stalled")
                        .expect("send failed");
                }
            }
            for done in pending {
                tokio::time::timeout(Duration::from_secs(60), done)
                    .await
                    .expect("completion stalled")
                    .expect("completion failed");
            }
        }));
    }
    let total: usize = plans.iter().map(Vec::len).sum();
    let mut next = [0usize; 3];
    for _ in 0..total {
        let (first, p) = client.frame().await.expect("connection ended early");
        assert_eq!(first & 0x80, 0x80, "FIN");
        let opcode = first & 0x0f;
        let (c, k, text) = if opcode == 0x1 {
            let c = (p[0] - b'0') as usize;
            let k = (p[1] - b'a') as usize * 26 + (p[2] - b'a') as usize;
            (c, k, true)
        } else {
            assert_eq!(opcode, 0x2, "opcode");
            let id = u32::from_be_bytes(p[..4].try_into().unwrap());
            ((id / 1000) as usize, (id % 1000) as usize, false)
        };
        assert_eq!(k, next[c], "clone {c}: out of order");
        next[c] += 1;
        let (id, len, t) = plans[c][k];
        assert_eq!(t, text, "message {id}: kind");
        assert_eq!(p.len(), len, "message {id}: length");
        let bad = (4..len).find(|&i| {
            let want = if text { pat(id, i) & 0x7f } else { pat(id, i) };
            p[i] != want
        });
        assert!(bad.is_none(), "message {id} ({len} bytes) damaged at {bad:?}");
    }
    for t in tasks {
        t.await.unwrap();
    }
    // A large send and the close after it: the message whole, then the close frame.
    let last = tagged(4242, 5 << 20);
    let send = tokio::spawn({
        let s = sender.clone();
        async move { s.send_and_close(Message::Binary(last.into())).await }
    });
    let (first, p) = client.frame().await.expect("no last message");
    assert_eq!(first, 0x82);
    check_tagged(4242, &p, 5 << 20);
    let (first, p) = client.frame().await.expect("no close frame");
    assert_eq!(first, 0x88, "close frame after the large message");
    assert_eq!(&p[..2], &1000u16.to_be_bytes());
    tokio::time::timeout(Duration::from_secs(10), send)
        .await
        .expect("send_and_close stalled")
        .unwrap()
        .unwrap();
}

fn check_tagged(id: u32, p: &[u8], len: usize) {
    assert_eq!(p.len(), len);
    assert_eq!(&p[..4], &id.to_be_bytes());
    assert!((4..len).all(|i| p[i] == pat(id, i)), "message {id} damaged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m_large_sends_from_clones_to_a_slow_reader_multi_thread() {
    clones_to_a_slow_reader(ka(true)).await;
}

#[tokio::test]
async fn m_large_sends_from_clones_to_a_slow_reader_current_thread_keepalive_off() {
    clones_to_a_slow_reader(ka(false)).await;
}

/// A burst of `try_send`s of large messages, some after small ones: every accepted one
/// completes and arrives once, in order; refused ones come back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m_try_send_bursts_of_large_and_small() {
    let (addr, mut channels) = serve_channels(ka(true)).await;
    let mut client = slow_connect(addr, 0xB00).await;
    let ch = next_channel(&mut channels).await;
    let sender = ch.sender();
    let mut accepted = Vec::new();
    let mut completions = Vec::new();
    let mut id = 0u32;
    for burst in 0..6 {
        for k in 0..40 {
            let len = match (burst + k) % 5 {
                0 => 20,
                1 => 16_384,
                2 => 100_000,
                3 => 600,
                _ => 70_000,
            };
            let b = tagged(id, len.max(4));
            match sender.try_send(Message::Binary(b.clone().into())) {
                Ok(done) => {
                    accepted.push((id, len.max(4)));
                    completions.push(done);
                }
                Err((webchan::Error::QueueFull { .. }, Message::Binary(back))) => {
                    assert_eq!(back.as_ref(), &b[..], "refused message changed");
                }
                Err((e, _)) => panic!("{e:?}"),
            }
            id += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reading = tokio::spawn(async move {
        for (id, len) in accepted {
            let (first, p) = client.frame().await.expect("ended early");
            assert_eq!(first, 0x82);
            check_tagged(id, &p, len);
        }
        client
    });
    for done in completions {
        tokio::time::timeout(Duration::from_secs(30), done)
            .await
            .expect("stalled")
            .expect("failed");
    }
    tokio::time::timeout(Duration::from_secs(30), reading).await.expect("reading stalled").unwrap();
}

// ---------------------------------------------------------------------------------------
// Read pause: the application reads a few large messages (the receiver reads the socket
// itself), then stops; a client floods from a thread. The server must stop reading.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m_flood_after_the_receiver_read_inline_is_held_to_the_queue_limit() {
    tokio::spawn(flood_after_inline()).await.unwrap();
}

async fn flood_after_inline() {
    const QUEUE: usize = 128 * 1024;
    const SIZE: usize = 40_000;
    const BUFFER: u32 = 64 * 1024;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(BUFFER).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let (tx, mut channels) = mpsc::unbounded_channel();
    let addr = serve_on(
        socket.listen(16).unwrap(),
        ka(false).queue_limit(QUEUE),
        |r| r,
        move |ch: Channel| {
            let _ = tx.send(ch);
            async {}
        },
    );
    let client = tokio::net::TcpSocket::new_v4().unwrap();
    client.set_send_buffer_size(BUFFER).unwrap();
    let tcp = client.connect(addr).await.unwrap();
    let mut raw = RawWs::upgrade(tcp, addr, "/").await;
    let mut ch = next_channel(&mut channels).await;
    assert!(matches!(next_of(&mut ch).await, Some(Event::Open)));
    for id in 0..5u32 {
        raw.frame(0x82, &tagged(id, SIZE)).await;
        match next_of(&mut ch).await {
            Some(Event::Message(Incoming::Binary(b))) => check_tagged(id, &b, SIZE),
            other => panic!("{other:?}"),
        }
    }
    // The receiver is parked after its own reads; now one more poll that returns a message
    // and the application stops.
    let written = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&written);
    let std_tcp = raw.tcp.into_std().unwrap();
    std_tcp.set_nonblocking(false).unwrap();
    let flood = std::thread::spawn(move || {
        use std::io::Write;
        let mut tcp = std_tcp;
        for id in 5..2000u32 {
            let frame = encode_frame(0x82, Some(MASK), &tagged(id, SIZE), None);
            if tcp.write_all(&frame).is_err() {
                break;
            }
            counter.fetch_add(1, Ordering::SeqCst);
        }
        tcp
    });
    match next_of(&mut ch).await {
        Some(Event::Message(Incoming::Binary(b))) => check_tagged(5, &b, SIZE),
        other => panic!("{other:?}"),
    }
    let mut last = usize::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let now = written.load(Ordering::SeqCst);
        assert!(now < 1995, "the whole flood went to an application that stopped reading");
        if now == last {
            break;
        }
        last = now;
    }
    // Kernel buffers are ~4 × 64 KiB at most here (both directions' sockets, doubled by the
    // kernel); the limit and one read's overshoot.
    let taken = last * SIZE;
    let bound = 3 * QUEUE + 3 * SIZE + 8 * BUFFER as usize;
    eprintln!(
        "flood: {last} messages ({taken} bytes) written before TCP stopped it (bound {bound})"
    );
    assert!(taken <= bound, "{taken} bytes taken in (bound {bound})");
    // Nothing lost when the application reads again.
    for id in 6..5 + last as u32 {
        match next_of(&mut ch).await {
            Some(Event::Message(Incoming::Binary(b))) => check_tagged(id, &b, SIZE),
            other => panic!("message {id}: {other:?}"),
        }
    }
    drop(ch);
    let _ = flood;
}

// ---------------------------------------------------------------------------------------
// HTTP/2 WebSockets (RFC 8441): large messages both ways, pauses, keepalive off.

async fn h2_large_both_ways(config: Config) {
    let addr = serve(config, |ch: Channel| async move {
        let mut ch = ch;
        while let Some(e) = ch.next().await {
            if let Event::Message(m) = e {
                if ch.send(Message::from(m)).await.is_err() {
                    break;
                }
            }
        }
    })
    .await;
    let mut h2 = h2_client(addr).await;
    let mut ws = h2_ws(&mut h2, addr, "/").await;
    let mut id = 0u32;
    for round in 0..3 {
        for &len in &[20_000usize, 16_384, 100_000, 5, 300_000, 70_000] {
            ws.send(WsMessage::Binary(tagged(id, len.max(4)).into())).await.unwrap();
            let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("stalled: no echo within 10 s")
                .unwrap()
                .unwrap();
            match m {
                WsMessage::Binary(b) => check_tagged(id, &b, len.max(4)),
                other => panic!("{other:?}"),
            }
            id += 1;
        }
        let _ = round;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    // Pipelined: several before any echo is read.
    for k in 0..8 {
        ws.send(WsMessage::Binary(tagged(id + k, 150_000).into())).await.unwrap();
    }
    for k in 0..8 {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("stalled")
            .unwrap()
            .unwrap();
        match m {
            WsMessage::Binary(b) => check_tagged(id + k, &b, 150_000),
            other => panic!("{other:?}"),
        }
    }
    ws.close(None).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(end.is_ok(), "close handshake over h2 did not end");
}

#[tokio::test]
async fn m_h2_large_messages_both_ways_keepalive_off_current_thread() {
    h2_large_both_ways(ka(false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m_h2_large_messages_both_ways_keepalive_on_multi_thread() {
    h2_large_both_ways(ka(true)).await;
}

// ---------------------------------------------------------------------------------------
// A `select!` loop that sometimes takes a timer's branch and sometimes stops polling for a
// while; a client that pauses between bursts of large and small messages and pings while the
// application does not poll.

async fn select_loop_client(mut raw: RawWs, ch: Channel, seed: u64) {
    let mut rng = Rng(seed | 1);
    let mut app = Rng(seed.wrapping_mul(3) | 1);
    let (tx, mut rx) = mpsc::unbounded_channel::<(u32, usize)>();
    let app_task = tokio::spawn(async move {
        let mut ch = ch;
        loop {
            if app.chance(4) {
                // Not polled for a while.
                tokio::time::sleep(Duration::from_millis(app.between(200, 1200) as u64)).await;
            }
            let timer = tokio::time::sleep(Duration::from_millis(app.between(1, 20) as u64));
            tokio::select! {
                e = ch.next() => match e {
                    Some(Event::Open) => {}
                    Some(Event::Message(Incoming::Binary(b))) => {
                        let id = u32::from_be_bytes(b[..4].try_into().unwrap());
                        check_tagged(id, &b, b.len());
                        let _ = tx.send((id, b.len()));
                    }
                    Some(Event::Closed(_)) | None => break,
                    other => panic!("{other:?}"),
                },
                _ = timer => {}
            }
        }
    });
    let mut id = 0u32;
    for _burst in 0..12 {
        let n = rng.between(1, 5);
        let mut sent = Vec::new();
        for _ in 0..n {
            let len =
                if rng.chance(70) { rng.between(5_000, 65_000) } else { rng.between(4, 3000) };
            raw.frame(0x82, &tagged(id, len)).await;
            sent.push((id, len));
            id += 1;
        }
        if rng.chance(50) {
            raw.frame(0x89, &id.to_be_bytes()).await;
            let t = Instant::now();
            assert_eq!(until_opcode(&mut raw, 0xA).await, id.to_be_bytes());
            assert!(t.elapsed() < Duration::from_secs(5), "pong after {:?}", t.elapsed());
        }
        for (id, len) in sent {
            let got = tokio::time::timeout(Duration::from_secs(8), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("stalled: message {id} not delivered within 8 s"))
                .expect("app ended");
            assert_eq!(got, (id, len));
        }
        tokio::time::sleep(Duration::from_millis(rng.between(0, 700) as u64)).await;
    }
    raw.raw(&encode_frame(0x88, Some(MASK), &1000u16.to_be_bytes(), None)).await;
    let t = Instant::now();
    assert_eq!(raw.read_close().await.expect("no close answer").0, 1000);
    assert!(t.elapsed() < Duration::from_secs(5));
    tokio::time::timeout(Duration::from_secs(8), app_task)
        .await
        .expect("app never saw Closed")
        .unwrap();
}

async fn select_loops(config: Config, connections: usize, seed: u64) {
    let (addr, mut channels) = serve_channels(config).await;
    let mut running = Vec::new();
    for c in 0..connections {
        let raw = RawWs::connect(addr).await;
        let ch = next_channel(&mut channels).await;
        let seed = seed ^ (c as u64 + 1).wrapping_mul(0x9E37_79B9);
        running.push(tokio::spawn(select_loop_client(raw, ch, seed)));
    }
    for r in running {
        r.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m_select_loops_with_pauses_keepalive_on_multi_thread() {
    select_loops(ka(true), 6, 0x51).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m_select_loops_with_pauses_keepalive_off_multi_thread() {
    select_loops(ka(false), 6, 0x52).await;
}

#[tokio::test]
async fn m_select_loops_with_pauses_keepalive_on_current_thread() {
    select_loops(ka(true), 4, 0x53).await;
}

#[tokio::test]
async fn m_select_loops_with_pauses_keepalive_off_current_thread() {
    select_loops(ka(false), 4, 0x54).await;
}

// ---------------------------------------------------------------------------------------
// What a WebSocket that got large messages holds once it ended, while the application
// keeps a `Sender` (a chat server's map, cleaned up later): `Dispatch` moved from the
// connection (dropped at the end) into `Core` (kept by the channel's state), with the
// keepalive `Watch` it holds (and the task's waker in it, and the sweeper's entry).

async fn held_after_end(large: bool, n: usize) -> isize {
    held(large, n, true).await
}

async fn held(large: bool, n: usize, close: bool) -> isize {
    let mut open_clients = Vec::new();
    let mut open_receivers = Vec::new();
    let (addr, mut channels) = serve_channels(ka(true)).await;
    let mut held = Vec::new();
    let one = |held: &mut Vec<webchan::Sender>, ch: Channel| {
        let (sender, receiver) = ch.split();
        held.push(sender);
        receiver
    };
    let mut run = Vec::new();
    for i in 0..n + 20 {
        let mut raw = RawWs::connect(addr).await;
        let ch = next_channel(&mut channels).await;
        let mut receiver = one(&mut held, ch);
        let len = if large { 40_000 } else { 100 };
        for id in 0..3u32 {
            raw.frame(0x82, &tagged(id, len)).await;
        }
        assert!(matches!(receiver.recv().await, Some(Event::Open)));
        for _ in 0..3 {
            match tokio::time::timeout(Duration::from_secs(8), receiver.recv()).await.unwrap() {
                Some(Event::Message(_)) => {}
                other => panic!("{other:?}"),
            }
        }
        // Parked after its own read (large), then the client closes.
        tokio::select! {
            e = receiver.recv() => panic!("{e:?}"),
            _ = tokio::time::sleep(Duration::from_millis(2)) => {}
        }
        if close {
            raw.raw(&encode_frame(0x88, Some(MASK), &1000u16.to_be_bytes(), None)).await;
            loop {
                match tokio::time::timeout(Duration::from_secs(8), receiver.recv()).await.unwrap() {
                    Some(Event::Closed(_)) => break,
                    None => panic!("ended without Closed"),
                    _ => {}
                }
            }
            drop(receiver);
            assert!(raw.eof().await);
            drop(raw);
        } else {
            open_clients.push(raw);
            open_receivers.push(receiver);
        }
        if i == 19 {
            // Warm-up done (pools, the sweeper's list): measure from here.
            tokio::time::sleep(Duration::from_millis(300)).await;
            run.push(counting::live());
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = counting::live();
    let per = (after - run[0]) / n as isize;
    drop(held);
    drop(open_receivers);
    drop(open_clients);
    per
}

#[tokio::test(flavor = "current_thread")]
async fn m_ended_websockets_whose_sender_is_kept_hold_no_more_after_large_messages() {
    let small = tokio::spawn(held_after_end(false, 300)).await.unwrap();
    let large = tokio::spawn(held_after_end(true, 300)).await.unwrap();
    eprintln!(
        "held per ended channel with its Sender kept: small messages {small} B, large {large} B"
    );
    assert!(
        large - small < 256,
        "an ended channel that got large messages holds {} B more than one that got small ones",
        large - small
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m_large_sends_from_clones_small_server_send_buffer_multi_thread() {
    clones_to_a_slow_reader_on(ka(true), Some(2048)).await;
}

#[tokio::test]
async fn m_large_sends_from_clones_small_server_send_buffer_current_thread() {
    clones_to_a_slow_reader_on(ka(false), Some(4608)).await;
}

// ---------------------------------------------------------------------------------------
// permessage-deflate: large compressed frames (RSV1 in the inline header) among raw ones.

fn compressible(id: u32, len: usize) -> Vec<u8> {
    let mut rng = Rng(u64::from(id) * 0x1234_5677 + 1);
    let mut b: Vec<u8> = (0..len).map(|_| b'a' + (rng.next() % 8) as u8).collect();
    b[..4].copy_from_slice(&id.to_be_bytes());
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m_deflate_large_compressed_and_raw_frames_in_order() {
    tokio::spawn(async {
        let (addr, mut channels) = serve_channels(ka(true).permessage_deflate(true)).await;
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut raw, head) = RawWs::upgrade_with(tcp, addr, "/", support::deflate::OFFER).await;
        assert!(head.to_lowercase().contains("permessage-deflate"), "{head}");
        let ch = next_channel(&mut channels).await;
        let sender = ch.sender();
        let mut plan = Vec::new();
        for id in 0..40u32 {
            let m = match id % 5 {
                0 => compressible(id, 200_000),
                1 => tagged(id, 40_000),
                2 => compressible(id, 50),
                3 => compressible(id, 40_000),
                _ => tagged(id, 17_000),
            };
            plan.push(m.clone());
            let s = sender.clone();
            if id % 2 == 0 {
                let done = s.try_send(Message::Binary(m.into())).map_err(|(e, _)| e);
                if let Ok(done) = done {
                    tokio::spawn(async move { done.await.expect("send failed") });
                } else {
                    panic!("{done:?}");
                }
            } else {
                tokio::spawn(async move {
                    s.send(Message::Binary(m.into())).await.expect("send failed")
                })
                .await
                .unwrap();
            }
        }
        let mut compressed = 0;
        for (id, want) in plan.iter().enumerate() {
            let (rsv1, payload) = support::deflate::read_message(&mut raw).await.expect("message");
            let got = if rsv1 {
                compressed += 1;
                support::deflate::inflate(&payload)
            } else {
                payload
            };
            assert!(
                got == *want,
                "message {id}: {} bytes expected, {} seen",
                want.len(),
                got.len()
            );
        }
        assert!(compressed >= 10, "only {compressed} compressed");
        drop(ch);
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------------
// An echo whose receiver and sender run on different tasks (the receiver's inline reads race
// the sender's inline steps), with pings, on a multi-thread runtime.

async fn split_echo(config: Config, seed: u64) {
    let (addr, mut channels) = serve_channels(config).await;
    let mut raw = RawWs::connect(addr).await;
    let ch = next_channel(&mut channels).await;
    let (sender, mut receiver) = ch.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<bytes::Bytes>();
    tokio::spawn(async move {
        while let Some(e) = receiver.recv().await {
            if let Event::Message(Incoming::Binary(b)) = e {
                let _ = tx.send(b);
            }
        }
    });
    tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if sender.send(Message::Binary(b)).await.is_err() {
                break;
            }
        }
    });
    let mut rng = Rng(seed | 1);
    let (rd, mut wr) = raw.tcp.into_split();
    let buf = std::mem::take(&mut raw.buf);
    let mut plan = Vec::new();
    for id in 0..300u32 {
        let len = if rng.chance(80) { rng.between(4_097, 65_000) } else { rng.between(4, 4096) };
        plan.push((id, len));
    }
    let expected = plan.clone();
    let reader = tokio::spawn(async move {
        let mut client = RawWs { tcp: rd, buf };
        for (id, len) in expected {
            loop {
                let (first, p) = client.read_frame().await.expect("ended");
                match first & 0x0f {
                    0xA => continue,
                    0x2 => {
                        check_tagged(id, &p, len);
                        break;
                    }
                    op => panic!("opcode {op}"),
                }
            }
        }
        client
    });
    for (id, len) in plan {
        wr.write_all(&encode_frame(0x82, Some(MASK), &tagged(id, len), None)).await.unwrap();
        if rng.chance(10) {
            wr.write_all(&encode_frame(0x89, Some(MASK), b"x", None)).await.unwrap();
        }
        if rng.chance(3) {
            tokio::time::sleep(Duration::from_millis(rng.between(1, 300) as u64)).await;
        }
    }
    let mut client =
        tokio::time::timeout(Duration::from_secs(30), reader).await.expect("echo stalled").unwrap();
    wr.write_all(&encode_frame(0x88, Some(MASK), &1000u16.to_be_bytes(), None)).await.unwrap();
    assert_eq!(client.read_close().await.expect("no close").0, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn m_split_echo_multi_thread_keepalive_on() {
    split_echo(ka(true), 0xE1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn m_split_echo_multi_thread_keepalive_off() {
    split_echo(ka(false), 0xE2).await;
}

#[tokio::test]
async fn m_split_echo_current_thread_keepalive_off() {
    split_echo(ka(false), 0xE3).await;
}
