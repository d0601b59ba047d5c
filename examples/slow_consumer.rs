//! Slow consumers: clients that read about 1 KiB/s while the server sends to each as fast as
//! the channel's `Sink` allows. Measures the server's RSS (`/proc/self/status`, VmRSS) and the
//! bytes accepted by each sink against the bytes the clients read, and checks that the memory
//! per channel stays under the queue limit plus the transport's own buffers (the kernel's
//! socket buffers are not in RSS; they show in "in flight" below).
//!
//! ```sh
//! cargo run --release --example slow_consumer -- [SECONDS=30] [CLIENTS=8] [QUEUE_KIB=1024] [READ_BYTES_PER_S=1024]
//! scripts/slow-consumer.sh   # the same, built in release mode
//! ```
//!
//! Half of the clients are WebSockets, half HTTP/1.1 streams. Every message is a fresh 16 KiB
//! allocation, so queued messages really cost memory. Exits with status 1 if a check fails.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::SinkExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use webchan::{Channel, Config, Kind, Message};

const MESSAGE: usize = 16 * 1024;
/// What the transports buffer beyond the queue, in user space: tungstenite's write buffer
/// (64 KiB, plus the message that overflows it) or hyper's (at most ~400 KiB of queued
/// chunks), and the message being read from its source.
const TRANSPORT_BUFFERS: u64 = 400 * 1024 + 2 * MESSAGE as u64;
/// The rest of a connection (read buffers, tasks, the channel: ~16-40 KiB when idle) and the
/// allocator's slack with messages allocated and freed all the time.
const CONNECTION_STATE: u64 = 128 * 1024;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn sysctl_max(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().last().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Sends fresh 16 KiB messages as fast as the sink takes them; counts the bytes it took.
async fn flood(channel: Channel, accepted: Arc<AtomicU64>) {
    let mut sender = channel.sender();
    let mut n = 0u8;
    loop {
        n = n.wrapping_add(1);
        // `feed` waits in poll_ready while the queue is over its limit.
        if sender.feed(Message::from(vec![n; MESSAGE])).await.is_err() {
            break;
        }
        accepted.fetch_add(MESSAGE as u64, Ordering::Relaxed);
    }
    drop(channel);
}

async fn serve(listener: TcpListener, config: Config, accepted: Arc<AtomicU64>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        let (config, accepted) = (config.clone(), Arc::clone(&accepted));
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let (config, accepted) = (config.clone(), Arc::clone(&accepted));
                async move {
                    Ok::<_, Infallible>(match webchan::as_channel(request, config) {
                        Ok((reply, channel)) => {
                            tokio::spawn(flood(channel, accepted));
                            reply.await
                        }
                        Err(rejection) => rejection.into_response(),
                    })
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// A client that sends its request, then reads `rate` bytes a second, in ten sips.
async fn slow_client(target: SocketAddr, kind: Kind, rate: usize, read: Arc<AtomicU64>) {
    let Ok(mut tcp) = TcpStream::connect(target).await else { return };
    let request = match kind {
        Kind::WebSocket => format!(
            "GET /ws HTTP/1.1\r\nHost: {target}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ),
        _ => format!("GET /stream HTTP/1.1\r\nHost: {target}\r\n\r\n"),
    };
    if tcp.write_all(request.as_bytes()).await.is_err() {
        return;
    }
    let sip = (rate / 10).max(1);
    let mut buf = vec![0u8; sip];
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                read.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
}

async fn run(seconds: u64, clients: usize, queue: usize, rate: usize) -> bool {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let target = listener.local_addr().expect("local address");
    let accepted = Arc::new(AtomicU64::new(0));
    let read = Arc::new(AtomicU64::new(0));
    let config = Config::default().queue_limit(queue);
    let server = tokio::spawn(serve(listener, config, Arc::clone(&accepted)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let base = rss_kib();
    println!(
        "slow consumers: {clients} clients ({} WebSocket, {} HTTP stream) reading {rate} B/s \
         each for {seconds} s; queue limit {} KiB; 16 KiB messages",
        clients.div_ceil(2),
        clients / 2,
        queue / 1024
    );
    println!("server RSS at start: {base} KiB");
    let mut tasks = Vec::new();
    for i in 0..clients {
        let kind = if i % 2 == 0 { Kind::WebSocket } else { Kind::HttpStream };
        tasks.push(tokio::spawn(slow_client(target, kind, rate, Arc::clone(&read))));
    }
    let began = Instant::now();
    let mut peak = base;
    let mut half = (0, 0);
    println!("    time   RSS KiB   growth KiB   accepted KiB   read KiB   in flight KiB");
    for second in 1..=seconds {
        tokio::time::sleep_until((began + Duration::from_secs(second)).into()).await;
        let rss = rss_kib();
        peak = peak.max(rss);
        let (a, r) = (accepted.load(Ordering::Relaxed), read.load(Ordering::Relaxed));
        if second == seconds / 2 {
            half = (a, r);
        }
        if second <= 3 || second % 5 == 0 || second == seconds {
            println!(
                "  {second:>4} s  {rss:>8}  {:>11}  {:>13}  {:>9}  {:>14}",
                rss as i64 - base as i64,
                a / 1024,
                r / 1024,
                a.saturating_sub(r) / 1024
            );
        }
    }
    for t in &tasks {
        t.abort();
    }
    server.abort();
    let (accepted, read) = (accepted.load(Ordering::Relaxed), read.load(Ordering::Relaxed));
    let growth = peak.saturating_sub(base);
    let per_channel = growth / clients as u64;
    let bound = (queue as u64 + TRANSPORT_BUFFERS + CONNECTION_STATE) / 1024;
    let in_flight = accepted.saturating_sub(read) / clients as u64 / 1024;
    let kernel = (sysctl_max("/proc/sys/net/ipv4/tcp_wmem")
        + sysctl_max("/proc/sys/net/ipv4/tcp_rmem"))
        / 1024;
    let second_half_accepted = (accepted - half.0) / 1024;
    let second_half_read = (read - half.1) / 1024;
    println!("peak RSS growth: {growth} KiB, {per_channel} KiB per channel");
    println!(
        "bound per channel: queue limit {} KiB + transport buffers {} KiB + connection state \
         {} KiB = {bound} KiB (kernel socket buffers, not in RSS: at most {kernel} KiB)",
        queue / 1024,
        TRANSPORT_BUFFERS / 1024,
        CONNECTION_STATE / 1024
    );
    println!("in flight per channel (accepted by the sink, not yet read): {in_flight} KiB");
    println!(
        "second half of the run: the sinks accepted {second_half_accepted} KiB while the clients \
         read {second_half_read} KiB"
    );
    let mut ok = true;
    let mut check = |pass: bool, what: String| {
        println!("  {} {what}", if pass { "ok  " } else { "FAIL" });
        ok &= pass;
    };
    check(per_channel <= bound, format!("RSS per channel {per_channel} KiB <= {bound} KiB"));
    check(
        in_flight <= bound + kernel,
        format!("in flight per channel {in_flight} KiB <= {} KiB", bound + kernel),
    );
    check(read > 0, format!("the clients read ({} KiB)", read / 1024));
    // Once the buffers are full, the server sends only as fast as the clients read (plus at
    // most one queue's worth, released in a lump when a batch completes).
    check(
        second_half_accepted <= second_half_read + clients as u64 * (queue as u64 / 1024 + 64),
        "the senders are held to the readers' pace".to_owned(),
    );
    ok
}

fn main() -> ExitCode {
    // Every argument a whole number, by position: a word is not skipped (the numbers after it
    // would shift to the wrong settings) but refused.
    let a: Vec<u64> = match std::env::args().skip(1).map(|s| s.parse()).collect() {
        Ok(numbers) => numbers,
        Err(_) => {
            eprintln!(
                "usage: slow_consumer [SECONDS=30] [CLIENTS=8] [QUEUE_KIB=1024] \
                 [READ_BYTES_PER_S=1024] (whole numbers)"
            );
            return ExitCode::from(2);
        }
    };
    let arg = |i: usize, default: u64| a.get(i).copied().unwrap_or(default);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let ok = runtime.block_on(run(
        arg(0, 30).max(2),
        arg(1, 8).max(1) as usize,
        arg(2, 1024) as usize * 1024,
        arg(3, 1024).max(10) as usize,
    ));
    println!("slow consumer: {}", if ok { "PASS" } else { "FAIL" });
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
