//! Soak test: a webchan server and its clients in one process, on 127.0.0.1. Connections are
//! opened and closed in waves — WebSockets and HTTP streams (HTTP/1.1 and HTTP/2), with random
//! early disconnects — and afterwards the process must be back where it started: no live
//! channel, every channel closed exactly once, no leaked task, the same file descriptors, and
//! RSS within a few MiB of the start.
//!
//! ```sh
//! cargo run --release --example soak -- [SECONDS=60] [CONNECTIONS=10000] [WAVE=500] [SEED]
//! scripts/soak.sh            # the same, built in release mode
//! ```
//!
//! Bounded: `CONNECTIONS` connections in waves of `WAVE`, spread over about `SECONDS`; each
//! connection gives up after 10 s. Prints the figures and exits with status 1 if a check fails.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use webchan::{Channel, Config, Event, Kind, Message};

/// What each connection may take at most.
const PER_CONNECTION: Duration = Duration::from_secs(10);
/// RSS growth allowed between the start (after a warm-up wave) and the end.
const RSS_SLACK_KIB: u64 = 5 * 1024;

// ---- process figures ----

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

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

#[derive(Debug, Clone, Copy)]
struct Figures {
    tasks: usize,
    fds: usize,
    rss: u64,
    channels: usize,
}

fn figures(stats: &ServerStats) -> Figures {
    Figures {
        tasks: alive_tasks(),
        fds: open_fds(),
        rss: rss_kib(),
        channels: stats.live.load(Ordering::SeqCst),
    }
}

// ---- the server ----

#[derive(Default)]
struct ServerStats {
    /// Channels whose handler is running.
    live: AtomicUsize,
    /// Channels made.
    made: AtomicUsize,
    /// `Closed` events seen (each channel must see exactly one).
    closed: AtomicUsize,
    /// Channels that saw `Closed` more than once, or never.
    bad: AtomicUsize,
}

/// Decrements the live count when the handler ends, however it ends.
struct Live(Arc<ServerStats>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handler(mut channel: Channel, stats: Arc<ServerStats>) {
    stats.live.fetch_add(1, Ordering::SeqCst);
    stats.made.fetch_add(1, Ordering::SeqCst);
    let _live = Live(Arc::clone(&stats));
    let mut closed = 0;
    let count = |event: &Event, closed: &mut usize| {
        if matches!(event, Event::Closed(_)) {
            *closed += 1;
        }
    };
    if channel.kind() == Kind::WebSocket {
        // Echo; "bye" makes the server close.
        while let Some(event) = channel.next().await {
            count(&event, &mut closed);
            match event {
                Event::Message(webchan::Incoming::Text(t)) if t == "bye" => {
                    channel.sender().start_close(1000, "bye");
                }
                Event::Message(m) => {
                    // A failed send means the channel is closing: Closed follows.
                    let _ = channel.send(m.into()).await;
                }
                _ => {}
            }
        }
    } else {
        let sender = channel.sender();
        let query = channel.originating_request().uri.query().unwrap_or("").to_owned();
        let ticks: usize = query.strip_prefix("n=").and_then(|n| n.parse().ok()).unwrap_or(5);
        let result: Result<(), webchan::Error> = async {
            match channel.originating_request().uri.path() {
                "/file" => sender.send(Message::reader(&FILE[..])).await?,
                _ => {
                    for i in 0..ticks {
                        sender.send(format!("tick {i}\n").into()).await?;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            }
            sender.close().await;
            Ok(())
        }
        .await;
        drop(result); // an early disconnect fails a send: expected here
        drop(sender);
        while let Some(event) = channel.next().await {
            count(&event, &mut closed);
        }
    }
    stats.closed.fetch_add(closed, Ordering::SeqCst);
    if closed != 1 {
        stats.bad.fetch_add(1, Ordering::SeqCst);
    }
}

static FILE: [u8; 256 * 1024] = [b'f'; 256 * 1024];

async fn serve(listener: TcpListener, stats: Arc<ServerStats>) {
    let config = Config::default().timeout(Duration::from_secs(30));
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        let (stats, config) = (Arc::clone(&stats), config.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let (stats, config) = (Arc::clone(&stats), config.clone());
                async move {
                    Ok::<_, Infallible>(match webchan::as_channel(request, config) {
                        Ok((reply, channel)) => {
                            tokio::spawn(handler(channel, stats));
                            reply.await
                        }
                        Err(rejection) => rejection.into_response(),
                    })
                }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(5));
            if let Err(e) = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service).await
            {
                if std::env::var_os("SOAK_DEBUG").is_some() {
                    eprintln!("server connection error: {e:?}");
                }
            }
        });
    }
}

// ---- the clients ----

/// xorshift64*: reproducible from the printed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Client {
    /// Echo a few messages, then close from the client.
    WsEcho,
    /// Ask the server to close.
    WsServerClose,
    /// Send a message, then drop the connection without a close frame.
    WsDropEarly,
    /// Half a frame, then drop.
    WsDropMidFrame,
    /// Half of the upgrade request, then drop.
    WsDropMidHandshake,
    /// An HTTP/1.1 stream read to its end.
    Http1Stream,
    /// An HTTP/1.1 stream dropped after its first chunk.
    Http1DropEarly,
    /// A 256 KiB body dropped after 16 KiB.
    Http1DropMidFile,
    /// An HTTP/2 stream read to its end.
    Http2Stream,
    /// An HTTP/2 stream dropped after its first chunk.
    Http2DropEarly,
}

const CLIENTS: [(Client, u64); 10] = [
    (Client::WsEcho, 20),
    (Client::WsServerClose, 10),
    (Client::WsDropEarly, 10),
    (Client::WsDropMidFrame, 5),
    (Client::WsDropMidHandshake, 5),
    (Client::Http1Stream, 15),
    (Client::Http1DropEarly, 10),
    (Client::Http1DropMidFile, 5),
    (Client::Http2Stream, 10),
    (Client::Http2DropEarly, 10),
];

/// A random client kind, by the weights above; `SOAK_ONLY=WsEcho,Http2Stream` restricts the
/// mix to those kinds.
fn pick(rng: &mut Rng) -> Client {
    let only = std::env::var("SOAK_ONLY").unwrap_or_default();
    let allowed = |c: &Client| only.is_empty() || only.split(',').any(|k| k == format!("{c:?}"));
    let clients: Vec<(Client, u64)> = CLIENTS.into_iter().filter(|c| allowed(&c.0)).collect();
    let total: u64 = clients.iter().map(|c| c.1).sum();
    let mut n = rng.below(total.max(1));
    for (client, weight) in clients {
        if n < weight {
            return client;
        }
        n -= weight;
    }
    Client::WsEcho
}

type Failure = String;

/// A whole body (the 5-event stream: 35 bytes), or just its first frame before going away.
async fn read_or_drop(mut body: hyper::body::Incoming, full: bool) -> Result<(), String> {
    if full {
        let all = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        if all.len() != 35 {
            return Err(format!("body of {} bytes", all.len()));
        }
    } else {
        let _ = body.frame().await;
    }
    Ok(())
}

/// A TCP connection from 127.0.0.x (x rotating over 16 addresses, so that TIME_WAIT
/// connections never exhaust the ephemeral ports).
async fn connect(target: SocketAddr, i: usize) -> Result<TcpStream, Failure> {
    if std::env::var_os("SOAK_NO_BIND").is_some() {
        return TcpStream::connect(target).await.map_err(|e| format!("connect: {e}"));
    }
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    let source = Ipv4Addr::new(127, 0, 0, 1 + (i % 16) as u8);
    socket.bind(SocketAddr::new(source.into(), 0)).map_err(|e| e.to_string())?;
    socket.connect(target).await.map_err(|e| format!("connect: {e}"))
}

async fn websocket(
    target: SocketAddr,
    i: usize,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, Failure> {
    let tcp = connect(target, i).await?;
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{target}/ws"), tcp)
        .await
        .map_err(|e| format!("websocket handshake: {e}"))?;
    Ok(ws)
}

async fn next_data(
    ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>,
) -> Result<WsMessage, Failure> {
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
            Some(Ok(m)) => return Ok(m),
            Some(Err(e)) => return Err(format!("websocket: {e}")),
            None => return Err("websocket ended".to_owned()),
        }
    }
}

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

async fn run_client(kind: Client, target: SocketAddr, i: usize, seed: u64) -> Result<(), Failure> {
    let mut rng = Rng(seed | 1);
    match kind {
        Client::WsEcho => {
            let mut ws = websocket(target, i).await?;
            for n in 0..1 + rng.below(5) {
                let message = if n % 2 == 0 {
                    WsMessage::text("x".repeat(rng.below(2000) as usize))
                } else {
                    WsMessage::binary(vec![7u8; rng.below(64 * 1024) as usize])
                };
                ws.send(message.clone()).await.map_err(|e| e.to_string())?;
                if next_data(&mut ws).await? != message {
                    return Err("wrong echo".to_owned());
                }
            }
            ws.close(None).await.map_err(|e| e.to_string())?;
            // Read until the server's answer and the end.
            while let Some(Ok(_)) = ws.next().await {}
        }
        Client::WsServerClose => {
            let mut ws = websocket(target, i).await?;
            ws.send(WsMessage::text("bye")).await.map_err(|e| e.to_string())?;
            match next_data(&mut ws).await? {
                WsMessage::Close(Some(frame)) if u16::from(frame.code) == 1000 => {}
                other => return Err(format!("expected a close frame, got {other:?}")),
            }
            while let Some(Ok(_)) = ws.next().await {}
        }
        Client::WsDropEarly => {
            let mut ws = websocket(target, i).await?;
            ws.send(WsMessage::text("and gone")).await.map_err(|e| e.to_string())?;
            tokio::time::sleep(Duration::from_millis(rng.below(20))).await;
            drop(ws);
        }
        Client::WsDropMidFrame => {
            let mut tcp = connect(target, i).await?;
            tcp.write_all(UPGRADE.as_bytes()).await.map_err(|e| e.to_string())?;
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if tcp.read(&mut byte).await.map_err(|e| e.to_string())? == 0 {
                    return Err("closed during the handshake".to_owned());
                }
                head.push(byte[0]);
            }
            // A masked binary frame announcing 1000 bytes; 100 of them come.
            let mut frame = vec![0x82, 0x80 | 126, 0x03, 0xe8, 1, 2, 3, 4];
            frame.extend_from_slice(&[0u8; 100]);
            tcp.write_all(&frame).await.map_err(|e| e.to_string())?;
            drop(tcp);
        }
        Client::WsDropMidHandshake => {
            let mut tcp = connect(target, i).await?;
            let cut = 1 + rng.below(UPGRADE.len() as u64 - 2) as usize;
            tcp.write_all(&UPGRADE.as_bytes()[..cut]).await.map_err(|e| e.to_string())?;
            drop(tcp);
        }
        Client::Http1Stream | Client::Http1DropEarly | Client::Http1DropMidFile => {
            let tcp = connect(target, i).await?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| e.to_string())?;
            let conn = tokio::spawn(conn);
            let (path, full) = match kind {
                Client::Http1Stream => ("/stream?n=5", true),
                Client::Http1DropEarly => ("/stream?n=1000", false),
                _ => ("/file", false),
            };
            let request = http::Request::get(path)
                .header("host", "soak")
                .body(Empty::<Bytes>::new())
                .map_err(|e| e.to_string())?;
            let response = sender.send_request(request).await.map_err(|e| format!("{e:?}"))?;
            read_or_drop(response.into_body(), full).await?;
            drop(sender);
            let _ = conn.await;
        }
        Client::Http2Stream | Client::Http2DropEarly => {
            let tcp = connect(target, i).await?;
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                    .await
                    .map_err(|e| e.to_string())?;
            let conn = tokio::spawn(conn);
            let full = kind == Client::Http2Stream;
            let path = if full { "/stream?n=5" } else { "/stream?n=1000" };
            let request = http::Request::get(format!("http://soak{path}"))
                .body(Empty::<Bytes>::new())
                .map_err(|e| e.to_string())?;
            let response = sender.send_request(request).await.map_err(|e| format!("{e:?}"))?;
            read_or_drop(response.into_body(), full).await?;
            drop(sender);
            let _ = conn.await;
        }
    }
    Ok(())
}

// ---- the run ----

struct Args {
    seconds: u64,
    connections: usize,
    wave: usize,
    seed: u64,
}

fn args() -> Args {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let usage = || -> ! {
        eprintln!("usage: soak [SECONDS=60] [CONNECTIONS=10000] [WAVE=500] [SEED] (whole numbers)");
        std::process::exit(2)
    };
    if a.len() > 4 {
        usage();
    }
    let num = |i: usize, default: u64| match a.get(i) {
        None => default,
        Some(s) => s.parse().unwrap_or_else(|_| usage()),
    };
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    Args {
        seconds: num(0, 60),
        connections: num(1, 10_000).max(1) as usize,
        wave: num(2, 500).max(1) as usize,
        seed: num(3, clock),
    }
}

/// Waits (15 s at most) until no channel is live and no task is alive beyond `base` (the
/// server's accept loop); closes in flight finish meanwhile. TIME_WAIT sockets hold no fd.
async fn settle(stats: &ServerStats, base: Figures) -> Figures {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let now = figures(stats);
        if now.channels == 0 && now.tasks <= base.tasks {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    figures(stats)
}

async fn run(args: Args) -> bool {
    let cold = figures(&ServerStats::default());
    // A backlog of 4096 (TcpListener::bind uses 1024): a wave opens all its connections at
    // once, and an overflowing accept queue resets connections before the server sees them.
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind 127.0.0.1:0");
    let listener = socket.listen(4096).expect("listen");
    let target = listener.local_addr().expect("local address");
    let stats = Arc::new(ServerStats::default());
    let server = tokio::spawn(serve(listener, Arc::clone(&stats)));
    let base = figures(&stats);
    let waves = args.connections.div_ceil(args.wave);
    let pace = Duration::from_secs(args.seconds) / waves as u32;
    let quarter = waves.div_ceil(4);
    println!(
        "soak: {} connections in {waves} waves of {} over ~{} s, seed {}",
        args.connections, args.wave, args.seconds, args.seed
    );
    let mut rng = Rng(args.seed | 1);
    let mut kinds = std::collections::BTreeMap::<Client, usize>::new();
    let mut failures = std::collections::BTreeMap::<String, usize>::new();
    let mut start = None;
    let mut peak = figures(&stats);
    let began = Instant::now();
    let mut done = 0;
    for wave in 0..waves {
        let wave_began = Instant::now();
        let n = args.wave.min(args.connections - done);
        let mut clients = tokio::task::JoinSet::new();
        for i in 0..n {
            let kind = pick(&mut rng);
            *kinds.entry(kind).or_default() += 1;
            let seed = rng.next();
            clients.spawn(async move {
                match tokio::time::timeout(PER_CONNECTION, run_client(kind, target, done + i, seed))
                    .await
                {
                    Ok(result) => result.map_err(|e| format!("{kind:?}: {e}")),
                    Err(_) => Err(format!("{kind:?}: no end within 10 s")),
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = figures(&stats);
        peak = Figures {
            tasks: peak.tasks.max(now.tasks),
            fds: peak.fds.max(now.fds),
            rss: peak.rss.max(now.rss),
            channels: peak.channels.max(now.channels),
        };
        while let Some(joined) = clients.join_next().await {
            if let Err(failure) = joined.unwrap_or_else(|e| Err(format!("client task: {e}"))) {
                let failure: String = failure.chars().take(300).collect();
                *failures.entry(failure).or_default() += 1;
            }
        }
        done += n;
        if (wave + 1) % quarter == 0 || wave + 1 == waves {
            // Quarters: let the closes in flight finish and take the figures. The start is
            // the first quarter: by then the runtime's threads, the allocator's arenas and
            // lazily initialised state exist (see RELIABILITY.md for the cold start).
            let now = settle(&stats, base).await;
            if start.is_none() {
                start = Some(now);
            }
            println!(
                "  {:>6.1} s: {done:>6} connections; settled: live channels {}, tasks {}, fds {}, \
                 RSS {} KiB",
                began.elapsed().as_secs_f64(),
                now.channels,
                now.tasks,
                now.fds,
                now.rss
            );
        }
        tokio::time::sleep(pace.saturating_sub(wave_began.elapsed())).await;
    }
    let elapsed = began.elapsed();
    let start = start.unwrap_or(cold);
    let end = settle(&stats, base).await;
    let made = stats.made.load(Ordering::SeqCst);
    let closed = stats.closed.load(Ordering::SeqCst);
    let bad = stats.bad.load(Ordering::SeqCst);
    println!("done: {done} connections in {:.1} s", elapsed.as_secs_f64());
    println!("  clients by kind: {kinds:?}");
    println!(
        "  server channels: made {made}, Closed events {closed}, channels without exactly one Closed {bad}"
    );
    println!("  client failures: {}", failures.values().sum::<usize>());
    for (failure, count) in &failures {
        println!("    {count} x {failure}");
    }
    println!("                 cold start  start (1st quarter)         peak         end");
    println!(
        "  live channels  {:>10}  {:>20}  {:>10}  {:>10}",
        cold.channels, start.channels, peak.channels, end.channels
    );
    println!(
        "  alive tasks    {:>10}  {:>20}  {:>10}  {:>10}",
        cold.tasks, start.tasks, peak.tasks, end.tasks
    );
    println!(
        "  open fds       {:>10}  {:>20}  {:>10}  {:>10}",
        cold.fds, start.fds, peak.fds, end.fds
    );
    println!(
        "  RSS KiB        {:>10}  {:>20}  {:>10}  {:>10}",
        cold.rss, start.rss, peak.rss, end.rss
    );
    let mut ok = true;
    let mut check = |pass: bool, what: String| {
        println!("  {} {what}", if pass { "ok  " } else { "FAIL" });
        ok &= pass;
    };
    check(end.channels == 0, format!("live channels back to 0 (now {})", end.channels));
    check(
        bad == 0 && closed == made,
        format!("every channel saw exactly one Closed ({closed}/{made})"),
    );
    check(
        end.tasks <= base.tasks,
        format!("alive tasks back to {} (the accept loop; now {})", base.tasks, end.tasks),
    );
    check(end.fds <= start.fds, format!("open fds back to {} (now {})", start.fds, end.fds));
    check(
        end.rss <= start.rss + RSS_SLACK_KIB,
        format!(
            "RSS within {} MiB of the start: {:+} KiB",
            RSS_SLACK_KIB / 1024,
            end.rss as i64 - start.rss as i64
        ),
    );
    check(failures.is_empty(), "no client failed".to_owned());
    server.abort();
    ok
}

fn main() -> ExitCode {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if runtime.block_on(run(args)) {
        println!("soak: PASS");
        ExitCode::SUCCESS
    } else {
        println!("soak: FAIL");
        ExitCode::FAILURE
    }
}
