//! A fixed, deterministic workload for counting instructions with callgrind: wall-clock
//! benches on a shared 2-core machine are noisy, instruction counts are not.
//!
//! `CONNS` WebSocket channels over `tokio::io::duplex` (hyper serves them, no kernel), each
//! echoing `ROUNDS` bursts of `INFLIGHT` 16-byte binary messages from a minimal raw-frame
//! client; one `current_thread` runtime, so the run is the same every time. The client checks
//! every echoed frame. Prints the number of messages; `scripts/callgrind.sh` divides
//! callgrind's instruction total by it.
//!
//! `cargo bench --bench instructions` (or `scripts/callgrind.sh` for the count).

mod support;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const CONNS: usize = 64;
const INFLIGHT: usize = 8;
const ROUNDS: usize = 500;
const SIZE: usize = 16;

/// One client: the upgrade, then `ROUNDS` bursts written at once and read back.
async fn client(mut io: DuplexStream, id: usize) -> usize {
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
    let mut echoed = vec![0u8; INFLIGHT * (2 + SIZE)];
    for round in 0..ROUNDS {
        burst.clear();
        for n in 0..INFLIGHT {
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
    ROUNDS * INFLIGHT
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let messages: usize = rt.block_on(async {
        let mut clients = Vec::new();
        for id in 0..CONNS {
            let (client_io, server_io) = tokio::io::duplex(64 * 1024);
            support::serve(server_io, support::echo);
            clients.push(tokio::spawn(client(client_io, id)));
        }
        let mut total = 0;
        for c in clients {
            total += c.await.unwrap();
        }
        total
    });
    println!("messages={messages}");
}
