//! Randomised WebSocket conversations over 127.0.0.1: a raw TCP client sends a random mix of
//! text and binary messages (0 B to 200 KiB, whole or in fragments, with pings between the
//! fragments, random masks) in writes of random sizes with random pauses, and reads the echo in
//! reads of random sizes with random pauses, so that the server's reads stop anywhere in a
//! frame and its writes come back short. Every message must come back whole and in order,
//! the pongs must answer the pings in order (RFC 6455 §5.5.3 lets a server answer only the
//! latest of several: what it sends is a subsequence ending with the last), and the close
//! handshake must end the conversation.
//!
//! These are the paths the performance work changes (read sizing, buffers taken whole by
//! large payloads and given back to the pool, the receiver reading for itself, batched and
//! vectored writes, the queue limit pausing reads): a stale read offset there once dropped
//! connections that no other test sent the right bytes to see (see `src/frame.rs`).
//!
//! Each run is drawn from a seed, printed on failure: `WEBCHAN_SEED=N` replays one (the
//! timing differs from run to run; the bytes do not), `RANDOM_RUNS=N` sets the runs per server
//! (default 6).

mod support;

use std::future::ready;
use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webchan::{Channel, Config, Event};

/// xorshift64: the plan of a run from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// UTF-8 of 1- to 4-byte characters, at least `len` bytes.
    fn text(&mut self, len: usize) -> Vec<u8> {
        const CHARS: [&str; 6] = ["a", "Z", "é", "ß", "日", "😀"];
        let mut s = String::new();
        while s.len() < len {
            s.push_str(CHARS[self.below(CHARS.len())]);
        }
        s.into_bytes()
    }
}

/// What the client sends, and what it must get back.
struct Plan {
    /// The messages' frames, then (`close`) a close frame, sent once every echo is back: a
    /// server may answer a close at once and drop what it had not sent yet (RFC 6455 §5.5.1).
    wire: Vec<u8>,
    close: Vec<u8>,
    /// (opcode, payload) of each message.
    messages: Vec<(u8, Vec<u8>)>,
    pings: Vec<Vec<u8>>,
}

fn plan(rng: &mut Rng) -> Plan {
    let (mut wire, mut messages, mut pings) = (Vec::new(), Vec::new(), Vec::new());
    let count = rng.between(10, 120);
    for _ in 0..count {
        let len = match rng.below(10) {
            0..=4 => rng.between(0, 125),
            5..=6 => rng.between(126, 1100),
            7..=8 => rng.between(1100, 20_000),
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
                pings.push(ping);
            }
            let opcode = match (i, text) {
                (0, true) => 0x1,
                (0, false) => 0x2,
                _ => 0x0,
            };
            let fin = if i + 1 == cuts.len() { 0x80 } else { 0 };
            wire.extend(frame(fin | opcode, rng, &payload[from..to]));
            from = to;
        }
        messages.push((if text { 0x1 } else { 0x2 }, payload));
    }
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"done");
    let close = frame(0x88, rng, &close);
    Plan { wire, close, messages, pings }
}

fn frame(first: u8, rng: &mut Rng, payload: &[u8]) -> Vec<u8> {
    let key = (rng.next() as u32).to_be_bytes();
    encode_frame(first, Some(key), payload, None)
}

/// The server's frames, reassembled: messages, pong payloads, the close (code, reason).
#[derive(Default)]
struct Heard {
    messages: Vec<(u8, Vec<u8>)>,
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
            0x9 => panic!("the server pinged (keepalive is off)"),
            0xA => {
                heard.pongs.push(payload);
                continue;
            }
            other => panic!("opcode {other:#x} from the server"),
        }
        if fin {
            heard.messages.push(partial.take().unwrap());
        }
    }
}

/// One conversation: the plan of `seed` against the server at `addr`.
async fn converse(addr: SocketAddr, seed: u64) {
    let mut rng = Rng(seed);
    let plan = plan(&mut rng);
    let raw = RawWs::connect(addr).await;
    let (mut rd, mut wr) = raw.tcp.into_split();
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
    let (mut buf, mut heard, mut partial) = (raw.buf, Heard::default(), None);
    parse(&mut buf, &mut heard, &mut partial);
    let mut chunk = vec![0u8; 65536];
    let mut reader_rng = Rng(rng.next() | 1);
    // The write half stays open until the end: dropping it would shut TCP down.
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
        if reader_rng.chance(3) {
            // Long enough for the server's socket buffer to fill: its writes come back short.
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
    assert!(buf.is_empty() && partial.is_none(), "seed {seed}: bytes after the close");
    let eof = tokio::time::timeout(Duration::from_secs(10), rd.read(&mut chunk)).await;
    assert!(matches!(eof, Ok(Ok(0) | Err(_))), "seed {seed}: the server ends TCP after the close");
}

/// Every message back through `next` and `send` on the whole channel.
async fn loop_echo(channel: Channel) {
    echo(channel).await;
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

async fn runs(addr: SocketAddr, salt: u64) {
    let fixed: Option<u64> = std::env::var("WEBCHAN_SEED").ok().map(|s| s.parse().unwrap());
    let count: u64 = std::env::var("RANDOM_RUNS").ok().map_or(6, |s| s.parse().unwrap());
    let base = fixed.unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        now.as_nanos() as u64 ^ salt
    });
    let count = if fixed.is_some() { 1 } else { count };
    for run in 0..count {
        let seed = base.wrapping_add(run.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
        tokio::time::timeout(Duration::from_secs(60), converse(addr, seed))
            .await
            .unwrap_or_else(|_| panic!("seed {seed}: the conversation took over 60 s"));
    }
}

fn config() -> Config {
    Config::default().keepalive(None)
}

#[tokio::test]
async fn random_conversations_with_a_looping_echo() {
    runs(serve(config(), loop_echo).await, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_conversations_with_a_split_echo_on_two_threads() {
    runs(serve(config(), split_echo).await, 2).await;
}

#[tokio::test]
async fn random_conversations_with_small_buffers_and_a_small_queue() {
    // Reads of 256 bytes at a time, and a queue limit of 4 KiB that pauses reading.
    let config = config().read_buffer_size(256).queue_limit(4096);
    runs(serve(config, split_echo).await, 3).await;
}
