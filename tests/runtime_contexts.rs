//! Runtime contexts and the lifetime of the runtime itself: a runtime dropped with live
//! channels, handles used from plain threads and from tasks of another runtime, `as_channel`
//! outside any runtime, tasks left behind (from a review in stop 30, 2026-12-06).
//!
//! Every test runs over real sockets on 127.0.0.1, stops by itself (every wait is bounded),
//! and asserts the correct behaviour.

mod support;

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use webchan::{Channel, Config, Error, Event, Message};

// ---------------------------------------------------------------- helpers

/// Runs `fut` to its end with `futures::executor::block_on` on a plain thread (no tokio
/// runtime there); `None` if it has not ended within `limit`.
fn resolve_within<F>(fut: F, limit: Duration) -> Option<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std_mpsc::channel();
    std::thread::spawn(move || {
        let out = futures::executor::block_on(fut);
        let _ = tx.send(out);
    });
    rx.recv_timeout(limit).ok()
}

/// Runs `f` on a plain thread; false if it has not returned within `limit`.
fn returns_within(f: impl FnOnce() + Send + 'static, limit: Duration) -> bool {
    let (tx, rx) = std_mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    rx.recv_timeout(limit).is_ok()
}

/// A blocking WebSocket client: the handshake by hand, then nothing is read.
fn std_ws(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).unwrap();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tcp.read(&mut byte).expect("no handshake answer within 10 s");
        assert_eq!(n, 1, "server closed during the handshake");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    tcp
}

/// A blocking HTTP/1.1 GET whose response is never read.
fn std_get(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.write_all(format!("GET /stream HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).unwrap();
    tcp
}

/// True once the server ended the TCP connection (EOF or reset), reading and dropping what
/// it sent meanwhile; false if it is still up after `limit`.
fn std_eof_within(tcp: &mut TcpStream, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        tcp.set_read_timeout(Some(left.min(Duration::from_millis(200)))).unwrap();
        match tcp.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue
            }
            Err(_) => return true,
        }
    }
}

fn big(size: usize) -> Message {
    Message::Binary(bytes::Bytes::from(vec![b'x'; size]))
}

/// Every event of the channel until its stream ends, read on a plain thread; `None` if the
/// stream has not ended within `limit`.
fn events_on_a_plain_thread(channel: Channel, limit: Duration) -> Option<Vec<Event>> {
    resolve_within(channel.collect::<Vec<Event>>(), limit)
}

// ---------------------------------------------------------------- the runtime dropped

/// What the test thread holds of a live channel while the runtime that made it is dropped.
struct Held {
    what: &'static str,
    completion: webchan::Completion,
    /// A `send` already waiting for room, on a plain thread of its own.
    waiting_send: std_mpsc::Receiver<Result<(), Error>>,
    closed: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    channel: Channel,
}

fn hold(what: &'static str, channel: Channel) -> Held {
    // 8 MiB to a client that reads nothing: this send cannot complete, and it takes the queue
    // over its limit, so the next `send` waits for room.
    let completion = channel.sender().try_send(big(8 << 20)).expect("an empty queue takes it");
    let sender = channel.sender();
    let (tx, waiting_send) = std_mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(futures::executor::block_on(sender.send("after".into())));
    });
    let closer = channel.sender();
    let closed = Box::pin(async move { closer.closed().await });
    Held { what, completion, waiting_send, closed, channel }
}

fn check_everything_resolves(held: Held) {
    let Held { what, completion, waiting_send, closed, channel } = held;
    let outcome = resolve_within(completion, Duration::from_secs(5));
    assert!(
        matches!(outcome, Some(Err(Error::Closed))),
        "{what}: the held Completion of a send that never went out: {outcome:?} (None: still \
         pending 5 s after the runtime was dropped)"
    );
    let send = waiting_send.recv_timeout(Duration::from_secs(5));
    assert!(
        matches!(send, Ok(Err(Error::Closed))),
        "{what}: a send waiting for room on another thread: {send:?}"
    );
    assert!(
        resolve_within(closed, Duration::from_secs(5)).is_some(),
        "{what}: closed() still pending 5 s after the runtime was dropped"
    );
    let events = events_on_a_plain_thread(channel, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("{what}: the event stream never ended"));
    assert!(
        matches!(events.last(), Some(Event::Closed(_))),
        "{what}: the stream must end with Closed: {events:?}"
    );
}

fn runtime_dropped_with_live_channels(
    build: fn() -> tokio::runtime::Runtime,
    end: fn(tokio::runtime::Runtime),
) {
    let rt = build();
    let (addr, mut channels) = rt.block_on(support::serve_channels(Config::default()));
    // The clients on threads of their own: a current-thread runtime runs only in block_on.
    let ws_client = std::thread::spawn(move || std_ws(addr));
    let ws = rt.block_on(support::next_channel(&mut channels));
    let mut ws_client = ws_client.join().unwrap();
    let mut http_client = std_get(addr);
    let http = rt.block_on(support::next_channel(&mut channels));
    // The WebSocket has opened (its 101 was read above).
    let ws = hold("websocket", ws);
    let http = hold("http stream", http);
    // Let the sends get under way.
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(300)).await });

    assert!(returns_within(move || end(rt), Duration::from_secs(10)), "dropping the runtime hung");
    check_everything_resolves(ws);
    check_everything_resolves(http);
    assert!(
        std_eof_within(&mut ws_client, Duration::from_secs(5)),
        "the WebSocket client's TCP stays up"
    );
    assert!(
        std_eof_within(&mut http_client, Duration::from_secs(5)),
        "the HTTP client's TCP stays up"
    );
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn a_multi_thread_runtime_dropped_with_live_channels_resolves_what_other_threads_hold() {
    runtime_dropped_with_live_channels(multi_thread, drop);
}

#[test]
fn a_multi_thread_runtime_shut_down_with_a_timeout_resolves_what_other_threads_hold() {
    runtime_dropped_with_live_channels(multi_thread, |rt| {
        rt.shutdown_timeout(Duration::from_millis(100))
    });
}

#[test]
fn a_current_thread_runtime_dropped_with_live_channels_resolves_what_other_threads_hold() {
    runtime_dropped_with_live_channels(current_thread, drop);
}

// ---------------------------------------------------------------- handles on another runtime

/// A WebSocket whose client reads the server's frames but never answers its close frame;
/// `send_and_close` is called from a task of a second runtime, which `after` then stops
/// driving (kept, or dropped). The close timeout (300 ms) must still end the connection, with
/// our close's code, and without a panic in the connection's task.
async fn send_and_close_from_a_second_runtime(
    build_second: fn() -> tokio::runtime::Runtime,
    drop_second: bool,
) {
    let config = Config::default().close_timeout(Duration::from_millis(300)).keepalive(None);
    let (addr, mut channels) = support::serve_channels(config).await;
    let mut client = support::RawWs::connect(addr).await;
    let mut channel = support::next_channel(&mut channels).await;
    assert!(matches!(support::next_of(&mut channel).await, Some(Event::Open)));
    let sender = channel.sender();

    // The second runtime, on a thread of its own; its task makes the send.
    let (tx, rx) = std_mpsc::channel();
    let second = std::thread::spawn(move || {
        let rt = build_second();
        let outcome = rt.block_on(async move {
            tokio::spawn(async move { sender.send_and_close("bye".into()).await }).await
        });
        let _ = tx.send(outcome.map_err(|e| e.to_string()));
        if drop_second {
            drop(rt);
            None
        } else {
            // Kept, not driven: as a current-thread runtime is between two `block_on`s.
            Some(rt)
        }
    });
    let outcome = rx.recv_timeout(Duration::from_secs(10)).expect("the send never returned");
    assert!(
        matches!(outcome, Ok(Ok(()))),
        "send_and_close from a task of a second runtime: {outcome:?}"
    );
    let kept = second.join().unwrap();

    let (first, payload) = client.read_frame().await.expect("the message");
    assert_eq!((first & 0x0f, payload.as_slice()), (0x1, &b"bye"[..]));
    let close = client.read_close().await;
    assert_eq!(close.map(|c| c.0), Some(1000), "our close frame");
    // The client never answers: the close timeout must end it.
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), client.eof()).await;
    assert!(
        matches!(ended, Ok(true)),
        "the connection is still up {:?} after our close frame (close timeout 300 ms)",
        started.elapsed()
    );
    let events = support::all_events(&mut channel).await;
    let closed = support::closed_of(&events);
    assert_eq!(closed.code, Some(1000), "Closed must carry our close's code: {events:?}");
    // A runtime is not to be dropped in an asynchronous context.
    if let Some(rt) = kept {
        std::thread::spawn(move || drop(rt)).join().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_close_from_a_second_current_thread_runtime_left_idle_keeps_the_close_timeout() {
    send_and_close_from_a_second_runtime(current_thread, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_close_from_a_second_runtime_since_dropped_keeps_the_close_timeout() {
    send_and_close_from_a_second_runtime(current_thread, true).await;
}

fn current_thread_without_timers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_close_from_a_second_runtime_without_timers_does_not_panic() {
    send_and_close_from_a_second_runtime(current_thread_without_timers, false).await;
}

// ---------------------------------------------------------------- outside any runtime

fn upgrade_request() -> http::Request<()> {
    http::Request::builder()
        .uri("/ws")
        .header("host", "127.0.0.1")
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap()
}

/// `as_channel` outside a runtime panics, as documented; the panic must leave no channel
/// behind in the `Shutdown` registry (a later shutdown would wait its whole deadline for it).
#[test]
fn as_channel_outside_a_runtime_panics_clearly_and_leaves_nothing_registered() {
    let shutdown = webchan::Shutdown::new();
    let config = Config::default().shutdown(&shutdown);
    let panicked = std::panic::catch_unwind(|| {
        let _ = webchan::as_channel(upgrade_request(), config.clone());
    });
    let message = panicked.expect_err("documented: panics outside a runtime");
    let message = message
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| message.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(message.contains("Tokio 1.x runtime"), "an unclear panic: {message}");
    let live = shutdown.live();

    // And a shutdown then has nothing to wait for (2 s deadline).
    let rt = current_thread();
    let started = Instant::now();
    let report = rt.block_on(shutdown.shutdown(Duration::from_secs(2)));
    assert_eq!(
        live,
        0,
        "a channel that was never made is counted live (shutdown took {:?})",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "shutdown() waited {:?} for a channel that does not exist ({report:?})",
        started.elapsed()
    );
}

/// The same through compat, for an HTTP stream (its channel is made before the spawn that
/// panics).
#[test]
fn compat_as_channel_outside_a_runtime_leaves_nothing_registered() {
    let shutdown = webchan::Shutdown::new();
    let options = webchan::compat::Options::new().config(Config::default().shutdown(&shutdown));
    let request = http::Request::builder().uri("/s").body(()).unwrap();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        drop(webchan::compat::as_channel(request, options));
    }));
    assert!(panicked.is_err(), "documented: panics outside a runtime");
    assert_eq!(shutdown.live(), 0, "a channel dropped by the panic is counted live");
}

// ---------------------------------------------------------------- tasks left behind

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

/// A server whose handler refuses every WebSocket upgrade (403), reporting each channel's
/// `Closed`.
async fn refusing_server() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<webchan::CloseInfo>)
{
    let (tx, closed) = tokio::sync::mpsc::unbounded_channel();
    let addr = support::serve_with(
        Config::default(),
        |mut reply| {
            *reply.status_mut() = http::StatusCode::FORBIDDEN;
            reply
        },
        move |mut channel: Channel| {
            let tx = tx.clone();
            async move {
                while let Some(event) = channel.next().await {
                    if let Event::Closed(info) = event {
                        let _ = tx.send(info);
                    }
                }
            }
        },
    )
    .await;
    (addr, closed)
}

/// A WebSocket upgrade the handler refuses (a 403) on a connection its client keeps open:
/// once its channel has reported `Closed`, no task of webchan's is left for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upgrade_on_a_kept_connection_leaves_no_task_behind() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, mut closed) = refusing_server().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let baseline = alive_tasks();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut total = Vec::new();
    for i in 0..5 {
        let req = format!(
            "GET /ws{i} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let info = tokio::time::timeout(Duration::from_secs(10), closed.recv())
            .await
            .expect("no Closed within 10 s")
            .unwrap();
        assert_eq!(info.code, Some(1006));
        // Read the 403 (the connection stays open: the client keeps it).
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .expect("no 403 within 10 s")
            .unwrap();
        total.extend_from_slice(&buf[..n]);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let now = alive_tasks();
    let text = String::from_utf8_lossy(&total);
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    // The connection's own task (hyper's) is the one expected.
    assert!(
        now <= baseline + 1,
        "{now} tasks alive after five refused upgrades ended, against {baseline} before the \
         connection: the ended channels' tasks stay while the client keeps its connection"
    );
    drop(tcp);
}

/// The same over HTTP/2 (RFC 8441): extended CONNECTs the handler answers 403, on one
/// connection the client keeps; no task is left per refused channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_h2_websocket_on_a_kept_connection_leaves_no_task_behind() {
    let (addr, mut closed) = refusing_server().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut sender = support::h2_client(addr).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = alive_tasks();
    for i in 0..5 {
        let mut request = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(format!("http://{addr}/ws{i}"))
            .header("sec-websocket-version", "13")
            .body(http_body_util::Empty::new())
            .unwrap();
        request.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
        let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
            .await
            .expect("no response within 10 s")
            .unwrap();
        assert_eq!(response.status(), 403);
        let info = tokio::time::timeout(Duration::from_secs(10), closed.recv())
            .await
            .expect("no Closed within 10 s")
            .unwrap();
        assert_eq!(info.code, Some(1006));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let now = alive_tasks();
    assert!(
        now <= baseline + 1,
        "{now} tasks alive after five refused upgrades, {baseline} before"
    );
}
