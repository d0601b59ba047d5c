//! A load helper: opens N WebSocket connections to a server and holds them idle, so that the
//! server's memory per idle connection can be read from `/proc` (see `scripts/idle-rss.sh`).
//!
//! ```sh
//! cargo run --release --example idle_clients -- ws://127.0.0.1:9001/ 5000 [message-bytes]
//! ```
//!
//! With a third argument, each connection first sends one binary message of that size and
//! waits for its echo. Prints `ready N` when all are open, then holds them until stdin closes.
//! Source addresses rotate over 127.0.0.1..127.0.0.20 so that more than ~28,000 connections
//! fit in the ephemeral port range.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn open(target: SocketAddr, i: usize, message: usize) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    let source = Ipv4Addr::new(127, 0, 0, 1 + (i % 20) as u8);
    socket.bind(SocketAddr::new(source.into(), 0))?;
    let mut tcp = socket.connect(target).await?;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {target}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(std::io::Error::other(String::from_utf8_lossy(&head).to_string()));
    }
    if message > 0 {
        // One masked binary frame (mask 0: payload unchanged), then read the echo.
        let mut frame = vec![0x82, 0x80 | 127];
        frame.extend_from_slice(&(message as u64).to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.resize(frame.len() + message, 7);
        tcp.write_all(&frame).await?;
        let mut header = [0u8; 10];
        tcp.read_exact(&mut header[..2]).await?;
        let len = match header[1] & 0x7f {
            126 => {
                tcp.read_exact(&mut header[2..4]).await?;
                u16::from_be_bytes([header[2], header[3]]) as usize
            }
            127 => {
                tcp.read_exact(&mut header[2..10]).await?;
                u64::from_be_bytes(header[2..10].try_into().unwrap_or_default()) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        tcp.read_exact(&mut payload).await?;
        if len != message || payload.iter().any(|b| *b != 7) {
            return Err(std::io::Error::other("wrong echo"));
        }
    }
    Ok(tcp)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).map_or("ws://127.0.0.1:9001/", String::as_str);
    let count: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(1000);
    let message: usize = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(0);
    let authority = url.trim_start_matches("ws://").split('/').next().unwrap_or_default();
    // A host name too (`localhost:3000`): its first address.
    let Some(target) = tokio::net::lookup_host(authority).await.ok().and_then(|mut a| a.next())
    else {
        eprintln!("usage: idle_clients [ws://HOST:PORT/] [COUNT=1000] [MESSAGE_BYTES=0]");
        eprintln!("cannot resolve {authority:?} (HOST:PORT)");
        std::process::exit(2);
    };
    let mut held = Vec::with_capacity(count);
    let mut pending = tokio::task::JoinSet::new();
    let mut started = 0;
    while held.len() < count {
        while started < count && pending.len() < 200 {
            pending.spawn(open(target, started, message));
            started += 1;
        }
        match pending.join_next().await {
            Some(result) => held.push(result??),
            None => break,
        }
    }
    println!("ready {}", held.len());
    // Hold until stdin closes.
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    Ok(())
}
