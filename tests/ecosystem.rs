//! webchan inside the ecosystem a Rust user serves with: axum 0.8 (`axum::serve`,
//! a `Router`), hyper's builders with and without upgrades, hyper-util's `GracefulShutdown`
//! beside `webchan::Shutdown`, and tower layers in front (from a review in stop 30, 2026-12-06).
#![allow(clippy::too_many_lines)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request as AxumRequest;
use axum::response::Response as AxumResponse;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use webchan::{Channel, Config, Event, Message};

use support::{next_msg, WsMessage};

type Run = Arc<dyn Fn(Channel) -> support::BoxFut + Send + Sync>;

/// The handler an axum user writes from the README: `as_channel` on axum's `Request`, the
/// channel to a task, the reply's body through `into_bytes_body()` and `Body::new`.
async fn axum_handler(request: AxumRequest, config: Config, run: Run) -> AxumResponse {
    let (reply, channel) = match webchan::as_channel(request, config) {
        Ok(pair) => pair,
        Err(rejection) => {
            return rejection.into_response().map(|b| axum::body::Body::new(b.into_bytes_body()))
        }
    };
    tokio::spawn(run(channel));
    reply.await.map(|b| axum::body::Body::new(b.into_bytes_body()))
}

fn router(config: Config, run: Run) -> axum::Router {
    axum::Router::new().fallback(move |request: AxumRequest| {
        let (config, run) = (config.clone(), Arc::clone(&run));
        axum_handler(request, config, run)
    })
}

/// `axum::serve` on 127.0.0.1:0 with a `Router` whose every route is a channel.
async fn serve_axum(config: Config, run: Run) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router(config, run)).await.unwrap();
    });
    addr
}

fn recorder() -> (Run, mpsc::UnboundedReceiver<Event>) {
    let (f, rx) = support::recorder();
    (Arc::new(f), rx)
}

/// An echo handler that records its events (for the close code); every echo must succeed.
fn echo_recorder() -> (Run, mpsc::UnboundedReceiver<Event>) {
    let (events_tx, events) = mpsc::unbounded_channel::<Event>();
    let run: Run = Arc::new(move |mut channel: Channel| {
        let tx = events_tx.clone();
        Box::pin(async move {
            while let Some(event) = channel.next().await {
                if let Event::Message(m) = &event {
                    let echoed = channel.send(m.clone().into()).await;
                    assert!(echoed.is_ok(), "echo failed: {echoed:?}");
                }
                let _ = tx.send(event);
            }
        }) as support::BoxFut
    });
    (run, events)
}

async fn event(rx: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    support::next_event(rx).await
}

/// The code of the `Closed` among the next `within` events (`None` if it is not there).
async fn closed_code(rx: &mut mpsc::UnboundedReceiver<Event>, within: usize) -> Option<u16> {
    for _ in 0..within {
        if let Event::Closed(info) = event(rx).await {
            return info.code;
        }
    }
    None
}

/// webchan's shutdown returns within its deadline, its four channels ended cleanly.
async fn shutdown_ends_four_clean(shutdown: &webchan::Shutdown) {
    let report =
        tokio::time::timeout(Duration::from_secs(10), shutdown.shutdown(Duration::from_secs(3)))
            .await
            .expect("webchan's shutdown did not return");
    assert_eq!((report.clean, report.forced), (4, 0), "{report:?}");
}

fn is_open(e: &Event) -> bool {
    matches!(e, Event::Open)
}

/// An HTTP stream that sends "tick N" every 50 ms until it is closed, then drains its events.
async fn tick_until_closed(mut channel: Channel) {
    let sender = channel.sender();
    let mut n = 0u64;
    loop {
        n += 1;
        if sender.send(format!("tick {n}\n").into()).await.is_err() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = sender.closed() => break,
        }
    }
    while channel.next().await.is_some() {}
}

// --- Types ---------------------------------------------------------------------------------

fn assert_send_sync_static<T: Send + Sync + 'static>() {}
fn assert_send_static<T: Send + 'static>() {}

#[test]
fn the_types_fit_axums_bounds() {
    // `Sync` too, for hyper's `BoxBody` (not before stop 30, 2026-12-06).
    assert_send_sync_static::<webchan::Body>();
    assert_send_sync_static::<webchan::BytesBody>();
    assert_send_sync_static::<webchan::Channel>();
    assert_send_sync_static::<webchan::Sender>();
    assert_send_static::<webchan::Reply>();
    assert_send_static::<webchan::compat::ResponseFuture>();
    assert_send_sync_static::<webchan::Error>();
    // axum's body takes the bytes body with no adapter, and its `IntoResponse` takes the
    // response: this compiles only if the bounds fit.
    let body =
        axum::body::Body::new(webchan::Body::full(Bytes::from_static(b"x")).into_bytes_body());
    let _ = axum::response::IntoResponse::into_response(http::Response::new(body));
    // The handler above is a valid axum handler (its future is `Send`).
    let (run, _rx) = recorder();
    let _router = router(Config::default(), run);
}

// --- axum: WebSocket over HTTP/1.1 --------------------------------------------------------

#[tokio::test]
async fn axum_websocket_upgrades_echoes_and_reports_the_close_code() {
    let (run, mut events) = echo_recorder();
    let addr = serve_axum(Config::default(), run).await;
    let mut ws = support::ws_connect(addr, "/chat").await;
    assert!(is_open(&event(&mut events).await));
    support::send_text(&mut ws, "hello axum").await;
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("hello axum")));
    ws.send(WsMessage::binary(vec![1u8; 70_000])).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::binary(vec![1u8; 70_000])));
    ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: 4000.into(),
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    let mut closed = None;
    for _ in 0..5 {
        if let Event::Closed(info) = event(&mut events).await {
            closed = Some(info);
            break;
        }
    }
    let info = closed.expect("no Closed");
    assert_eq!(info.code, Some(4000));
    assert_eq!(info.reason.as_deref(), Some("bye"));
}

#[tokio::test]
async fn axum_websocket_server_close_reaches_the_client_with_its_code() {
    let run: Run = Arc::new(|mut channel: Channel| {
        Box::pin(async move {
            assert!(matches!(channel.next().await, Some(Event::Open)));
            channel.send("first".into()).await.unwrap();
            channel.sender().close_with(4321, "done").await;
            while channel.next().await.is_some() {}
        }) as support::BoxFut
    });
    let addr = serve_axum(Config::default(), run).await;
    let mut ws = support::ws_connect(addr, "/").await;
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("first")));
    match next_msg(&mut ws).await {
        Some(WsMessage::Close(Some(frame))) => {
            assert_eq!(u16::from(frame.code), 4321);
            assert_eq!(frame.reason.as_str(), "done");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}

// --- axum: WebSocket over HTTP/2 (axum::serve enables extended CONNECT) --------------------

#[tokio::test]
async fn axum_websocket_over_http2_extended_connect() {
    let (run, mut events2) = echo_recorder();
    let addr = serve_axum(Config::default(), run).await;
    let mut sender = support::h2_client(addr).await;
    let mut ws = support::h2_ws(&mut sender, addr, "/h2").await;
    assert!(is_open(&event(&mut events2).await));
    ws.send(WsMessage::text("over h2")).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("over h2")));
    ws.close(None).await.unwrap();
    assert_eq!(closed_code(&mut events2, 5).await, Some(1005));
}

// --- axum: HTTP stream, SSE, compat ----------------------------------------------------------

#[tokio::test]
async fn axum_http_stream_and_sse_arrive_whole_and_report_closed() {
    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
    let run: Run = Arc::new(move |mut channel: Channel| {
        let tx = events_tx.clone();
        Box::pin(async move {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::CONTENT_TYPE, "text/plain".parse().unwrap());
            let sse = channel.originating_request().uri.path() == "/sse";
            if sse {
                channel.send("tick 1".into()).await.unwrap();
            } else {
                channel
                    .send(Message::response(StatusCode::CREATED, headers, "one\n"))
                    .await
                    .unwrap();
            }
            for n in 2..=50 {
                channel.send(format!("{n}\n").into()).await.unwrap();
            }
            channel.close().await;
            while let Some(event) = channel.next().await {
                let _ = tx.send(event);
            }
        }) as support::BoxFut
    });
    let addr = serve_axum(Config::default(), run).await;
    let response = support::http1_get(addr, support::get(addr, "/stream")).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let mut expected = String::from("one\n");
    for n in 2..=50 {
        expected.push_str(&format!("{n}\n"));
    }
    assert_eq!(std::str::from_utf8(response.body()).unwrap(), expected);
    let mut closed = false;
    for _ in 0..3 {
        if matches!(event(&mut events).await, Event::Closed(_)) {
            closed = true;
            break;
        }
    }
    assert!(closed);

    let mut request = support::get(addr, "/sse");
    request.headers_mut().insert(http::header::ACCEPT, "text/event-stream".parse().unwrap());
    let response = support::http1_get(addr, request).await;
    assert_eq!(response.headers()[http::header::CONTENT_TYPE], "text/event-stream");
    let body = std::str::from_utf8(response.body()).unwrap();
    assert!(body.starts_with("data: tick 1\n\n"), "{body:?}");
    assert!(body.contains("data: 50\ndata: \n\n") || body.contains("data: 50\n"), "{body:?}");
}

#[tokio::test]
async fn axum_compat_websocket_echo_and_http_stream() {
    use webchan::compat::{Options, SendOptions};
    let closes = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&closes);
    let options = Options::new()
        .on_open(|ch| {
            if ch.kind() == webchan::Kind::HttpStream {
                let _ = ch.send("streamed", SendOptions::new().close(true));
            }
        })
        .on_message(|ch, message| {
            let _ = ch.send(message, SendOptions::new());
        })
        .on_close(move |_ch, _info| {
            seen.fetch_add(1, Ordering::SeqCst);
        });
    let app = axum::Router::new().fallback(move |request: AxumRequest| {
        let options = options.clone();
        async move {
            webchan::compat::as_channel(request, options)
                .await
                .map(|b| axum::body::Body::new(b.into_bytes_body()))
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut ws = support::ws_connect(addr, "/").await;
    support::send_text(&mut ws, "compat").await;
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("compat")));
    ws.close(None).await.unwrap();
    let response = support::http1_get(addr, support::get(addr, "/s")).await;
    assert_eq!(response.body(), "streamed");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while closes.load(Ordering::SeqCst) < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(closes.load(Ordering::SeqCst), 2);
}

// --- Completed sends and a dropped connection: `into_bytes_body` (axum) vs `Body` --------

const PIECE: usize = 16 * 1024;

/// A server on its own runtime (on its own thread) whose every request is an HTTP stream
/// that sends 16 KiB pieces as fast as they complete, counting the bytes of completed sends.
/// Served through axum (`into_bytes_body`, as the README says) or by hyper with webchan's own
/// `Body`. Dropping the runtime (the stop) drops every connection, as a process exit does.
fn streaming_server(
    through_axum: bool,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>, Arc<AtomicU64>, std::thread::JoinHandle<()>) {
    let completed = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&completed);
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let run: Run = Arc::new(move |channel: Channel| {
                let counted = Arc::clone(&counted);
                Box::pin(async move {
                    let piece = Bytes::from(vec![b'x'; PIECE]);
                    while channel.sender().send(piece.clone().into()).await.is_ok() {
                        counted.fetch_add(PIECE as u64, Ordering::SeqCst);
                    }
                }) as support::BoxFut
            });
            if through_axum {
                tokio::spawn(async move {
                    axum::serve(listener, router(Config::default(), run)).await.unwrap();
                });
            } else {
                tokio::spawn(async move {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else { continue };
                        let run = Arc::clone(&run);
                        tokio::spawn(async move {
                            let service = service_fn(move |request: http::Request<Incoming>| {
                                let run = Arc::clone(&run);
                                async move {
                                    let (reply, channel) =
                                        webchan::as_channel(request, Config::default()).unwrap();
                                    tokio::spawn(run(channel));
                                    Ok::<_, Infallible>(reply.await)
                                }
                            });
                            let _ =
                                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                                    .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                                    .await;
                        });
                    }
                });
            }
            let _ = stop_rx.await;
        });
        // Every task dropped: hyper's connection, and with it whatever hyper held unwritten.
        runtime.shutdown_timeout(Duration::ZERO);
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    (addr, stop_tx, completed, thread)
}

/// The payload bytes of a chunked body, as far as it is whole.
fn dechunk(mut raw: &[u8]) -> usize {
    let mut total = 0;
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else { return total };
        let size_text = std::str::from_utf8(&raw[..eol]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return total;
        }
        let start = eol + 2;
        if raw.len() < start + size {
            return total + (raw.len() - start); // cut short: count what arrived
        }
        total += size;
        raw = &raw[(start + size + 2).min(raw.len())..];
    }
}

/// A client that reads the response head, then nothing, until the server's process is gone;
/// then reads all that reached it. Returns (bytes of sends completed, payload bytes received).
async fn completed_vs_received(through_axum: bool) -> (u64, usize) {
    let (addr, stop, completed, thread) = streaming_server(through_axum);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(addr).await.unwrap();
    tcp.write_all(b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n").await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 512];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .expect("no response head")
            .unwrap();
        assert!(n > 0, "closed before the head");
        raw.extend_from_slice(&buf[..n]);
    }
    // The client now reads nothing: wait until the server's sends stop completing.
    let mut last = completed.load(Ordering::SeqCst);
    let mut stable_since = tokio::time::Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while stable_since.elapsed() < Duration::from_millis(1500) {
        assert!(tokio::time::Instant::now() < deadline, "sends never stalled");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = completed.load(Ordering::SeqCst);
        if now != last {
            last = now;
            stable_since = tokio::time::Instant::now();
        }
    }
    let done = completed.load(Ordering::SeqCst);
    // The server goes away (a deploy, a crash, a forced shutdown): what the kernel holds
    // still arrives; what only hyper held is gone.
    stop.send(()).unwrap();
    thread.join().unwrap();
    tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut raw))
        .await
        .expect("the connection did not end")
        .ok();
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(raw.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&raw[..head_end]));
    (done, dechunk(&raw[head_end..]))
}

/// The control: webchan's own `Body` served by hyper keeps the README's promise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_body_completed_sends_all_reach_a_client_when_the_server_dies() {
    let (completed, received) = completed_vs_received(false).await;
    assert!(completed > 0);
    assert!(
        received as u64 >= completed,
        "sends completed for {completed} bytes, the client received {received}"
    );
}

/// README, Guarantees, "Sends": through `into_bytes_body()` (axum's path) a send completes once
/// hyper has taken its bytes, so a connection dropped then loses at most what hyper's write
/// buffer holds (its default limit, 8 KiB + 100 × 4 KiB), never more. (The review of stop 30
/// saw 257,458 bytes of completed sends lost here, where the README promised none: the
/// README now says this.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_bytes_body_completed_sends_lost_are_bounded_by_hypers_buffer() {
    const HYPER_WRITE_BUFFER: u64 = 8 * 1024 + 100 * 4 * 1024;
    let (completed, received) = completed_vs_received(true).await;
    assert!(completed > 0);
    let lost = completed.saturating_sub(received as u64);
    assert!(
        lost <= HYPER_WRITE_BUFFER,
        "sends completed for {completed} bytes, the client received {received}: {lost} bytes of \
         completed sends lost, more than hyper's buffer holds"
    );
}

// --- hyper served without upgrades ------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
#[allow(clippy::enum_variant_names)]
enum Serve {
    Http1NoUpgrades,
    Http1WithUpgrades,
    AutoNoUpgrades,
    AutoWithUpgrades,
}

/// A hyper server served as `how`, handing each channel to a task that first sends a message
/// (before the upgrade completes) and then records its events and that send's outcome.
async fn serve_hyper(
    how: Serve,
) -> (SocketAddr, mpsc::UnboundedReceiver<Event>, mpsc::UnboundedReceiver<Result<(), String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (events_tx, events) = mpsc::unbounded_channel();
    let (sends_tx, sends) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let (events_tx, sends_tx) = (events_tx.clone(), sends_tx.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: http::Request<Incoming>| {
                    let (events_tx, sends_tx) = (events_tx.clone(), sends_tx.clone());
                    async move {
                        let (reply, mut channel) =
                            webchan::as_channel(request, Config::default()).unwrap();
                        let sender = channel.sender();
                        tokio::spawn(async move {
                            let outcome = tokio::time::timeout(
                                Duration::from_secs(10),
                                sender.send("early".into()),
                            )
                            .await;
                            let _ = sends_tx.send(match outcome {
                                Ok(Ok(())) => Ok(()),
                                Ok(Err(e)) => Err(e.to_string()),
                                Err(_) => Err("HUNG: the send neither completed nor failed".into()),
                            });
                        });
                        tokio::spawn(async move {
                            while let Some(event) = channel.next().await {
                                let _ = events_tx.send(event);
                            }
                        });
                        Ok::<_, Infallible>(reply.await)
                    }
                });
                let io = TokioIo::new(tcp);
                let _ = match how {
                    Serve::Http1NoUpgrades => {
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .await
                    }
                    Serve::Http1WithUpgrades => {
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .with_upgrades()
                            .await
                    }
                    Serve::AutoNoUpgrades => {
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(io, service)
                            .await
                            .map_err(|_| ())
                            .map_or(Ok(()), Ok)
                    }
                    Serve::AutoWithUpgrades => {
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection_with_upgrades(io, service)
                            .await
                            .map_err(|_| ())
                            .map_or(Ok(()), Ok)
                    }
                };
            });
        }
    });
    (addr, events, sends)
}

/// What the server's application and the client see for a WebSocket served `how`.
async fn websocket_served(how: Serve) -> (Vec<String>, Result<(), String>, String) {
    let (addr, mut events, mut sends) = serve_hyper(how).await;
    let client = tokio::time::timeout(Duration::from_secs(10), async {
        match tokio_tungstenite::connect_async(format!("ws://{addr}/")).await {
            Ok((mut ws, response)) => {
                let first = next_msg(&mut ws).await;
                format!("{} then {first:?}", response.status())
            }
            Err(e) => format!("handshake error: {e}"),
        }
    })
    .await
    .unwrap_or_else(|_| "client HUNG".into());
    let mut seen = Vec::new();
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
        match e {
            Ok(Some(Event::Closed(info))) => {
                seen.push(format!("Closed({:?})", info.code));
                break;
            }
            Ok(Some(Event::Error(error))) => seen.push(format!("Error({error})")),
            Ok(Some(other)) => seen.push(format!("{other:?}")),
            Ok(None) => break,
            Err(_) => {
                seen.push("HUNG".into());
                break;
            }
        }
    }
    let send = sends.recv().await.unwrap();
    (seen, send, client)
}

#[tokio::test]
async fn with_upgrades_the_early_send_goes_out_after_open() {
    for how in [Serve::Http1WithUpgrades, Serve::AutoWithUpgrades] {
        let (addr, mut events, mut sends) = serve_hyper(how).await;
        let mut ws = support::ws_connect(addr, "/").await;
        assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("early")), "{how:?}");
        assert!(is_open(&event(&mut events).await), "{how:?}");
        assert_eq!(sends.recv().await.unwrap(), Ok(()), "{how:?}");
    }
}

/// The common mistake: serving without upgrades. The client gets its `101` and then an
/// end; the application must get `Error(Upgrade)` then `Closed(1006)`, never `Open`, and the
/// early send must fail, all promptly, with an error that says what is wrong.
#[tokio::test]
async fn without_upgrades_the_channel_fails_promptly_and_clearly() {
    for how in [Serve::Http1NoUpgrades, Serve::AutoNoUpgrades] {
        let started = std::time::Instant::now();
        let (seen, send, client) = websocket_served(how).await;
        eprintln!("{how:?}: server events {seen:?}; early send {send:?}; client {client}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{how:?}: took {:?}",
            started.elapsed()
        );
        assert!(!seen.iter().any(|e| e == "Open"), "{how:?}: {seen:?}");
        assert_eq!(
            seen.last().map(String::as_str),
            Some("Closed(Some(1006))"),
            "{how:?}: {seen:?}"
        );
        assert!(
            seen.iter().any(|e| e.starts_with("Error(") && e.contains("upgrade")),
            "{how:?}: {seen:?}"
        );
        assert!(send.is_err(), "{how:?}: the early send reported {send:?}");
        assert!(!client.contains("HUNG"), "{how:?}: {client}");
    }
}

/// The error a user gets for serving without upgrades says what to change (hyper's own words,
/// "upgrade expected but low level API in use", all it said before stop 30, name neither the
/// builder method nor webchan's requirement); the misconfiguration fails every WebSocket.
#[tokio::test]
async fn without_upgrades_the_error_names_the_fix() {
    let (seen, _send, _client) = websocket_served(Serve::AutoNoUpgrades).await;
    let error = seen.iter().find(|e| e.starts_with("Error(")).cloned().unwrap_or_default();
    assert!(
        error.contains("with_upgrades"),
        "the error does not say to serve with upgrades: {error}"
    );
}

// --- hyper-util's GracefulShutdown beside webchan's Shutdown ----------------------------------

struct Live {
    addr: SocketAddr,
    graceful: hyper_util::server::graceful::GracefulShutdown,
    shutdown: webchan::Shutdown,
    stop_accepting: tokio::sync::watch::Sender<bool>,
    accept_loop: tokio::task::JoinHandle<hyper_util::server::graceful::GracefulShutdown>,
}

/// A server as the README and hyper-util's docs put together: auto builder with upgrades and
/// RFC 8441, each connection watched by a `GracefulShutdown`, each channel under a `Shutdown`;
/// WebSockets echo, HTTP streams tick every 50 ms until closed.
async fn graceful_server() -> Live {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = webchan::Shutdown::new();
    let config = Config::default().shutdown(&shutdown);
    let (stop_accepting, mut stop_rx) = tokio::sync::watch::channel(false);
    let accept_loop = tokio::spawn(async move {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            let tcp = tokio::select! {
                accepted = listener.accept() => match accepted { Ok((tcp, _)) => tcp, Err(_) => continue },
                _ = stop_rx.changed() => break,
            };
            let config = config.clone();
            let service = service_fn(move |request: http::Request<Incoming>| {
                let config = config.clone();
                async move {
                    let (reply, channel) = match webchan::as_channel(request, config) {
                        Ok(pair) => pair,
                        Err(rejection) => return Ok::<_, Infallible>(rejection.into_response()),
                    };
                    tokio::spawn(async move {
                        if channel.kind() == webchan::Kind::HttpStream {
                            tick_until_closed(channel).await;
                        } else {
                            support::echo(channel).await;
                        }
                    });
                    Ok(reply.await)
                }
            });
            let builder = support::server_builder();
            let conn =
                builder.serve_connection_with_upgrades(TokioIo::new(tcp), service).into_owned();
            tokio::spawn(graceful.watch(conn));
        }
        graceful
    });
    // The accept loop owns the GracefulShutdown until it stops: a placeholder here.
    Live {
        addr,
        graceful: hyper_util::server::graceful::GracefulShutdown::new(),
        shutdown,
        stop_accepting,
        accept_loop,
    }
}

/// Reads a client WebSocket until its server closes it: "close Some(code)", or how it ended.
async fn close_seen<S>(mut ws: tokio_tungstenite::WebSocketStream<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Close(frame))) => {
                // tungstenite answers the close; read until it ends.
                while let Some(Ok(_)) = ws.next().await {}
                return format!("close {:?}", frame.map(|f| u16::from(f.code)));
            }
            Some(Ok(_)) => continue,
            other => return format!("ended {other:?}"),
        }
    }
}

/// Reads a response body to its end: "complete", or "cut: why". `_keep` (the client's
/// connection handle) lives as long.
async fn body_end<K>(mut body: Incoming, _keep: K) -> String {
    use http_body_util::BodyExt;
    loop {
        match body.frame().await {
            Some(Ok(_)) => continue,
            None => return "complete".to_owned(),
            Some(Err(e)) => return format!("cut: {e}"),
        }
    }
}

/// Opens one of each: a WebSocket over HTTP/1.1, one over HTTP/2, an endless HTTP/1.1 stream,
/// an SSE stream over HTTP/2. Returns a task per client that ends when its channel ended on
/// the client's side, with what it saw last.
async fn open_clients(addr: SocketAddr) -> Vec<(&'static str, tokio::task::JoinHandle<String>)> {
    use http_body_util::BodyExt;
    let mut clients = Vec::new();
    let mut ws = support::ws_connect(addr, "/ws1").await;
    support::send_text(&mut ws, "hi").await;
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("hi")));
    clients.push(("ws-h1", tokio::spawn(close_seen(ws))));
    let mut h2 = support::h2_client(addr).await;
    let mut ws2 = support::h2_ws(&mut h2, addr, "/ws2").await;
    ws2.send(WsMessage::text("hi2")).await.unwrap();
    assert_eq!(next_msg(&mut ws2).await, Some(WsMessage::text("hi2")));
    clients.push(("ws-h2", tokio::spawn(close_seen(ws2))));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let response = sender.send_request(support::get(addr, "/stream")).await.unwrap();
    let mut body = response.into_body();
    assert!(body.frame().await.unwrap().is_ok());
    clients.push(("stream-h1", tokio::spawn(body_end(body, sender))));
    let mut request = support::get(addr, "/sse");
    request.headers_mut().insert(http::header::ACCEPT, "text/event-stream".parse().unwrap());
    let response = h2.send_request(request).await.unwrap();
    let mut body = response.into_body();
    assert!(body.frame().await.unwrap().is_ok());
    clients.push(("sse-h2", tokio::spawn(body_end(body, h2))));
    clients
}

/// webchan's `Shutdown` first (as README's "Graceful shutdown" suggests), then hyper-util's:
/// both finish, every channel ends cleanly, every client sees a clean end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webchan_shutdown_then_hyper_graceful_both_finish() {
    let live = graceful_server().await;
    let clients = open_clients(live.addr).await;
    assert_eq!(live.shutdown.live(), 4);
    live.stop_accepting.send(true).unwrap();
    let graceful = live.accept_loop.await.unwrap();
    drop(live.graceful);
    shutdown_ends_four_clean(&live.shutdown).await;
    let left = graceful.count();
    tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
        .await
        .unwrap_or_else(|_| panic!("hyper-util's graceful shutdown hung ({left} connections)"));
    for (name, client) in clients {
        let seen = tokio::time::timeout(Duration::from_secs(5), client)
            .await
            .unwrap_or_else(|_| panic!("{name}: client never saw an end"))
            .unwrap();
        let expected = if name.starts_with("ws") { "close Some(1001)" } else { "complete" };
        assert_eq!(seen, expected, "{name}");
    }
}

/// The other order, as a server whose signal handler starts hyper-util's first: both finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_graceful_then_webchan_shutdown_both_finish() {
    let live = graceful_server().await;
    let clients = open_clients(live.addr).await;
    live.stop_accepting.send(true).unwrap();
    let graceful = live.accept_loop.await.unwrap();
    drop(live.graceful);
    let hyper_done = tokio::spawn(graceful.shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown_ends_four_clean(&live.shutdown).await;
    tokio::time::timeout(Duration::from_secs(5), hyper_done)
        .await
        .expect("hyper-util's graceful shutdown hung")
        .unwrap();
    for (name, client) in clients {
        let seen = tokio::time::timeout(Duration::from_secs(5), client)
            .await
            .unwrap_or_else(|_| panic!("{name}: client never saw an end"))
            .unwrap();
        let expected = if name.starts_with("ws") { "close Some(1001)" } else { "complete" };
        assert_eq!(seen, expected, "{name}");
    }
}

// --- tower layers in front ---------------------------------------------------------------------

/// axum with a layer around the channel routes; the handler sends after `first_send_after`
/// on HTTP streams (its send's outcome to `sends`), echoes on WebSockets.
async fn serve_axum_layered<L>(
    layer: L,
    first_send_after: Duration,
) -> (SocketAddr, mpsc::UnboundedReceiver<Result<(), String>>)
where
    L: tower::Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
    L::Service: tower::Service<AxumRequest, Error = Infallible> + Clone + Send + Sync + 'static,
    <L::Service as tower::Service<AxumRequest>>::Response: axum::response::IntoResponse + 'static,
    <L::Service as tower::Service<AxumRequest>>::Future: Send + 'static,
{
    let (sends_tx, sends) = mpsc::unbounded_channel();
    let run: Run = Arc::new(move |channel: Channel| {
        let sends_tx = sends_tx.clone();
        Box::pin(async move {
            if channel.kind() == webchan::Kind::WebSocket {
                return support::echo(channel).await;
            }
            tokio::time::sleep(first_send_after).await;
            let sender = channel.sender();
            let outcome =
                tokio::time::timeout(Duration::from_secs(10), sender.send("late\n".into())).await;
            let _ = sends_tx.send(match outcome {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("HUNG".into()),
            });
            for n in 0..10 {
                if sender.send(format!("{n}\n").into()).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            sender.close().await;
        }) as support::BoxFut
    });
    let app = router(Config::default(), run).layer(layer);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, sends)
}

/// `tower::timeout` times the response future only: a WebSocket (its 101 is at once) and an
/// HTTP stream whose head went out live on past it; a stream whose first send comes after it
/// loses its reply, and that send must fail, not hang or succeed.
#[tokio::test]
async fn tower_timeout_times_the_head_not_the_channel() {
    use axum::error_handling::HandleErrorLayer;
    let layer = tower::ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|_: tower::BoxError| async { StatusCode::REQUEST_TIMEOUT }))
        .timeout(Duration::from_millis(300));
    // A stream that sends at once outlives the timeout (1 s of ticks), whole.
    let (addr, mut sends) = serve_axum_layered(layer.clone(), Duration::ZERO).await;
    let response = support::http1_get(addr, support::get(addr, "/s")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.body(), "late\n0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n");
    assert_eq!(sends.recv().await.unwrap(), Ok(()));
    // A WebSocket outlives it.
    let mut ws = support::ws_connect(addr, "/ws").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    support::send_text(&mut ws, "still here").await;
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("still here")));
    // A stream whose head is due after the timeout: 408, and the send fails.
    let (addr, mut sends) = serve_axum_layered(layer, Duration::from_millis(800)).await;
    let response = support::http1_get(addr, support::get(addr, "/s")).await;
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    let send = tokio::time::timeout(Duration::from_secs(15), sends.recv()).await.unwrap().unwrap();
    assert!(send.is_err(), "the late send reported {send:?} for a stream whose reply was dropped");
}

/// `tower::limit::ConcurrencyLimit` holds its permit for the response future only: long-lived
/// WebSockets do not take up the limit.
#[tokio::test]
async fn tower_concurrency_limit_does_not_count_open_websockets() {
    let layer = tower::limit::ConcurrencyLimitLayer::new(1);
    let (addr, _sends) = serve_axum_layered(layer, Duration::ZERO).await;
    let mut sockets = Vec::new();
    for n in 0..3 {
        let mut ws = tokio::time::timeout(Duration::from_secs(5), support::ws_connect(addr, "/"))
            .await
            .unwrap_or_else(|_| panic!("WebSocket {n} waited for the limit"));
        support::send_text(&mut ws, "x").await;
        assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("x")));
        sockets.push(ws);
    }
}

// --- axum's with_graceful_shutdown with webchan's Shutdown in its signal -------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_graceful_shutdown_with_webchan_shutdown_in_the_signal_finishes() {
    let shutdown = webchan::Shutdown::new();
    let run: Run = Arc::new(|channel: Channel| {
        Box::pin(async move {
            if channel.kind() == webchan::Kind::WebSocket {
                return support::echo(channel).await;
            }
            tick_until_closed(channel).await;
        }) as support::BoxFut
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (signal_tx, signal_rx) = tokio::sync::oneshot::channel::<()>();
    let (report_tx, report_rx) = tokio::sync::oneshot::channel();
    let in_signal = shutdown.clone();
    let app = router(Config::default().shutdown(&shutdown), run);
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = signal_rx.await;
                let report = in_signal.shutdown(Duration::from_secs(3)).await;
                let _ = report_tx.send(report);
            })
            .await
            .unwrap();
    });
    let clients = open_clients(addr).await;
    assert_eq!(shutdown.live(), 4);
    signal_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("axum::serve's graceful shutdown did not finish")
        .unwrap();
    let report = report_rx.await.unwrap();
    assert_eq!((report.clean, report.forced), (4, 0), "{report:?}");
    for (name, client) in clients {
        let seen = tokio::time::timeout(Duration::from_secs(5), client)
            .await
            .unwrap_or_else(|_| panic!("{name}: client never saw an end"))
            .unwrap();
        let expected = if name.starts_with("ws") { "close Some(1001)" } else { "complete" };
        assert_eq!(seen, expected, "{name}");
    }
}

/// A fact for the docs (passes): the natural axum route, `get(handler)`, never hands an
/// HTTP/2 WebSocket (RFC 8441: method CONNECT) to webchan: axum answers 405 itself. A route
/// for WebSockets over HTTP/2 needs `any(handler)` (or GET and CONNECT).
#[tokio::test]
async fn axum_get_route_refuses_http2_websockets_any_route_takes_them() {
    let (run, _events) = recorder();
    let handler = {
        let run = Arc::clone(&run);
        move |request: AxumRequest| axum_handler(request, Config::default(), Arc::clone(&run))
    };
    let app = axum::Router::new()
        .route("/get", axum::routing::get(handler.clone()))
        .route("/any", axum::routing::any(handler));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut h2 = support::h2_client(addr).await;
    let mut request = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("http://{addr}/get"))
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::new())
        .unwrap();
    request.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
    let response = h2.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let _ = support::h2_websocket(&mut h2, addr, "/any").await; // asserts the 200
                                                                // And over HTTP/1.1 the `get` route works.
    let mut ws = support::ws_connect(addr, "/get").await;
    ws.close(None).await.unwrap();
}

/// hyper's own `http2::Builder` with `enable_connect_protocol` (no hyper-util auto builder):
/// a WebSocket over HTTP/2 opens, echoes, and a server close reaches the client.
#[tokio::test]
async fn hyper_http2_builder_with_connect_protocol_serves_websockets() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let events_tx = events_tx.clone();
            let service = service_fn(move |request: http::Request<Incoming>| {
                let events_tx = events_tx.clone();
                async move {
                    let (reply, mut channel) =
                        webchan::as_channel(request, Config::default()).unwrap();
                    tokio::spawn(async move {
                        while let Some(event) = channel.next().await {
                            if let Event::Message(m) = &event {
                                let _ = channel.send(m.clone().into()).await;
                                channel.sender().close_with(4001, "enough").await;
                            }
                            let _ = events_tx.send(event);
                        }
                    });
                    Ok::<_, Infallible>(reply.await)
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .enable_connect_protocol()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    let mut h2 = support::h2_client(addr).await;
    let mut ws = support::h2_ws(&mut h2, addr, "/").await;
    assert!(is_open(&event(&mut events).await));
    ws.send(WsMessage::text("h2")).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("h2")));
    match next_msg(&mut ws).await {
        Some(WsMessage::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 4001),
        other => panic!("expected the close, got {other:?}"),
    }
    assert_eq!(closed_code(&mut events, 4).await, Some(4001));
}
