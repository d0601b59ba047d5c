//! A fixed, deterministic workload for counting instructions with callgrind: wall-clock
//! benches on a shared 2-core machine are noisy, instruction counts are not.
//!
//! `CONNS` WebSocket channels over `tokio::io::duplex` (hyper serves them, no kernel), each
//! echoing `ROUNDS` bursts of `INFLIGHT` 16-byte binary messages from a minimal raw-frame
//! client; one `current_thread` runtime, so the run is the same every time. The client checks
//! every echoed frame. Prints the number of messages; `scripts/callgrind.sh` divides
//! callgrind's instruction total by it.
//!
//! The environment can change the shape: `CONNS` (default 64), `INFLIGHT` (8) and `ROUNDS`
//! (500). `CONNS=1 INFLIGHT=1 ROUNDS=50000` is ping-pong: every message is a whole wake-up of
//! its own, so it counts what one round trip costs.
//!
//! `cargo bench --bench instructions` (or `scripts/callgrind.sh` for the count).

mod support;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const SIZE: usize = 16;

/// The workload's shape: connections, messages in flight on each, bursts.
#[derive(Clone, Copy)]
struct Shape {
    conns: usize,
    inflight: usize,
    rounds: usize,
}

impl Shape {
    fn from_env() -> Self {
        let get = |name: &str, default: usize| {
            std::env::var(name).ok().map_or(default, |v| {
                v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
            })
        };
        Self { conns: get("CONNS", 64), inflight: get("INFLIGHT", 8), rounds: get("ROUNDS", 500) }
    }
}

/// One client: the upgrade, then `rounds` bursts written at once and read back.
async fn client(mut io: DuplexStream, id: usize, shape: Shape) -> usize {
    let Shape { inflight, rounds, .. } = shape;
    io.write_all(
        b"GET / HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(io.read_u8().await.unwrap());
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    let mask = [1u8, 2, 3, 4];
    let mut burst = Vec::new();
    let mut echoed = vec![0u8; inflight * (2 + SIZE)];
    for round in 0..rounds {
        burst.clear();
        for n in 0..inflight {
            burst.extend_from_slice(&[0x82, 0x80 | SIZE as u8]);
            burst.extend_from_slice(&mask);
            let fill = (id + round + n) as u8;
            burst.extend((0..SIZE).map(|i| fill ^ mask[i % 4]));
        }
        io.write_all(&burst).await.unwrap();
        io.read_exact(&mut echoed).await.unwrap();
        for (n, frame) in echoed.chunks(2 + SIZE).enumerate() {
            let fill = (id + round + n) as u8;
            assert_eq!(frame[..2], [0x82, SIZE as u8]);
            assert!(frame[2..].iter().all(|b| *b == fill), "echo differs");
        }
    }
    rounds * inflight
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let shape = Shape::from_env();
    let messages: usize = rt.block_on(async {
        let mut clients = Vec::new();
        for id in 0..shape.conns {
            let (client_io, server_io) = tokio::io::duplex(64 * 1024);
            support::serve(server_io, support::echo);
            clients.push(tokio::spawn(client(client_io, id, shape)));
        }
        let mut total = 0;
        for c in clients {
            total += c.await.unwrap();
        }
        total
    });
    println!("messages={messages}");
}
