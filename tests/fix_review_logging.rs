//! A review of the second batch of stop 30's fixes (8d98f85..6be8581, 2026-12-06): spans on
//! the crate's tasks and an HTTP stream's body, the "set up wrong" warning (never for what a
//! client does), a file's error text, `StreamHead` before `register` and `Drop for Shared`,
//! a source's panic logged once.
//!
//! Each test installs (thread-locally, on a current-thread runtime, so the server's tasks run
//! under it) a subscriber that records events and span closes, then drives real clients over
//! 127.0.0.1.

#[path = "support/logs.rs"]
mod logs;
mod support;

use logs::install;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use http::{Request, Response};
use hyper::body::Incoming as HyperIncoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::Level;
use webchan::{Config, Event, Message};

const LIMIT: Duration = Duration::from_secs(10);

async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// A server whose handler runs in a `client_request` span (as tower-http's TraceLayer or a
/// hand-made `instrument` gives), with `serve_connection_with_upgrades` unless `upgrades` is
/// false (a server set up wrong: hyper's `http1` without `with_upgrades`).
async fn spanned<H, Fut>(upgrades: bool, handler: H) -> SocketAddr
where
    H: Fn(Request<HyperIncoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<webchan::Body>> + Send + 'static,
{
    use tracing::Instrument;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else { continue };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<HyperIncoming>| {
                    let span =
                        tracing::info_span!("client_request", %peer, path = %req.uri().path());
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }.instrument(span)
                });
                if upgrades {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                }
            });
        }
    });
    addr
}

const UPGRADE: &[u8] =
    b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

async fn read_some(tcp: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&got).into_owned()
}

// ---------------------------------------------------------------------------------------------
// ws.rs `misconfigured`: what a client does on a server set up right never makes webchan say
// the server is set up wrong (hyper reports `is_user()` only for its own API misuse). The last
// part, a server really set up wrong, is the control that the recording sees the warning.
//

#[tokio::test]
async fn client_behaviour_never_makes_webchan_say_the_server_is_set_up_wrong() {
    let (log, _guard) = install();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let errors2 = Arc::clone(&errors);
    let handler = move |req: Request<HyperIncoming>| {
        let errors = Arc::clone(&errors2);
        async move {
            match webchan::as_channel(req, Config::default()) {
                Ok((reply, mut channel)) => {
                    tokio::spawn(async move {
                        while let Some(event) = channel.next().await {
                            if let Event::Error(e) = event {
                                errors.lock().unwrap().push(e.to_string());
                            }
                        }
                    });
                    reply.await
                }
                Err(rejection) => rejection.into_response(),
            }
        }
    };
    let addr = spanned(true, handler.clone()).await;

    // 1. The upgrade request, then the connection dropped at once (a reset: SO_LINGER 0).
    for _ in 0..5 {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tcp = tcp;
        tcp.write_all(UPGRADE).await.unwrap();
        tcp.set_zero_linger().unwrap();
        drop(tcp);
    }
    // 2. The upgrade request, then a half-close at once (FIN).
    for _ in 0..5 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(UPGRADE).await.unwrap();
        tcp.shutdown().await.unwrap();
        let _ = read_some(&mut tcp).await;
    }
    // 3. The upgrade request with garbage (not a frame) in the same segment and after it.
    for _ in 0..3 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let mut bytes = UPGRADE.to_vec();
        bytes.extend_from_slice(b"GARBAGE\r\n\r\n\x00\xff\xfe");
        tcp.write_all(&bytes).await.unwrap();
        tcp.write_all(b"more garbage after the request\r\n").await.unwrap();
        let got = read_some(&mut tcp).await;
        assert!(got.starts_with("HTTP/1.1 101"), "{got:?}");
    }
    // 4. Two upgrade requests pipelined, and one half sent (headers cut) then dropped.
    {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let mut bytes = UPGRADE.to_vec();
        bytes.extend_from_slice(UPGRADE);
        tcp.write_all(&bytes).await.unwrap();
        let _ = read_some(&mut tcp).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&UPGRADE[..UPGRADE.len() - 10]).await.unwrap();
        drop(tcp);
    }
    settle().await;
    let loud: Vec<_> = log.webchan().into_iter().filter(|r| r.level <= Level::WARN).collect();
    assert!(loud.is_empty(), "clients on a server set up right made webchan warn: {loud:#?}");
    let texts = errors.lock().unwrap().clone();
    assert!(
        !texts.iter().any(|t| t.contains("with upgrades on") || t.contains("no hyper upgrade")),
        "a client's behaviour gave a channel a 'server set up wrong' error: {texts:#?}"
    );

    // Control: a server served without upgrades does warn (once per process).
    let wrong = spanned(false, handler).await;
    let mut tcp = TcpStream::connect(wrong).await.unwrap();
    tcp.write_all(UPGRADE).await.unwrap();
    let _ = read_some(&mut tcp).await;
    settle().await;
    let loud: Vec<_> = log.webchan().into_iter().filter(|r| r.level <= Level::WARN).collect();
    assert!(
        loud.iter().any(|r| r.text.contains("set up wrong")),
        "control: the recording saw no warning for a server without upgrades: {loud:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// message.rs `OpenFailed`: the error's text (what `Display` shows, what the crate's own doc
// examples print: `eprintln!("channel error: {error}")`, and what the crate itself logs with
// `%error`) says why the file could not be opened. (At 6be8581 it read "i/o error: cannot
// open /x": a missing file, a permission denied, a file-descriptor limit all read the same.)

#[tokio::test]
async fn a_file_that_cannot_be_opened_says_why_in_its_text() {
    let (log, _guard) = install();
    let missing = std::env::temp_dir().join("webchan-review-h-no-such-file");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<webchan::Error>();
    let missing2 = missing.clone();
    // compat: the channel's on_error gets the send's error (the send has no on_error).
    let options = webchan::compat::Options::new()
        .on_open(move |h| {
            let _ = h.send(Message::file(&missing2), webchan::compat::SendOptions::new());
        })
        .on_error(move |_, e| {
            let _ = tx.send(e);
        });
    let addr = support::serve_compat(options.clone()).await;
    let (_ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await.unwrap();
    let error = tokio::time::timeout(LIMIT, rx.recv()).await.unwrap().unwrap();
    let shown = error.to_string();
    assert!(matches!(error, webchan::Error::Io(_)), "{error:?}");
    assert!(shown.contains("webchan-review-h-no-such-file"), "{shown}");
    // And the crate's own log line for the same failure with no on_error set (debug).
    let quiet = webchan::compat::Options::new().on_open(move |h| {
        let _ = h.send(Message::file(&missing), webchan::compat::SendOptions::new());
    });
    let addr = support::serve_compat(quiet).await;
    let (_ws2, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await.unwrap();
    settle().await;
    let logged: Vec<_> =
        log.webchan().into_iter().filter(|r| r.text.contains("cannot open")).collect();
    assert!(!logged.is_empty(), "{:#?}", log.webchan());
    assert!(
        shown.contains("No such file") || shown.contains("os error 2"),
        "the error's text does not say why the file could not be opened: {shown:?}"
    );
    assert!(
        logged.iter().all(|r| r.text.contains("No such file") || r.text.contains("os error 2")),
        "webchan's own log line does not say why the file could not be opened: {logged:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Spans: the WebSocket's task and compat's runner hold the handler's span; once the channel
// ends, the span must close (nothing holds it longer): for an upgraded WebSocket closed by
// its client, for a WebSocket the handler refused (403 on a kept connection, which hyper keeps
// its upgrade handle for), and for compat's runner.

#[tokio::test]
async fn the_handlers_span_closes_when_its_channel_ends() {
    let (log, _guard) = install();
    let addr = spanned(true, |req: Request<HyperIncoming>| async move {
        let refuse = req.uri().path() == "/refuse";
        let compat = req.uri().path() == "/compat";
        if compat {
            return webchan::compat::as_channel(req, webchan::compat::Options::new()).await;
        }
        match webchan::as_channel(req, Config::default()) {
            Ok((reply, mut channel)) => {
                if refuse {
                    drop(reply);
                    tokio::spawn(async move { while channel.next().await.is_some() {} });
                    return Response::builder().status(403).body(webchan::Body::empty()).unwrap();
                }
                tokio::spawn(async move { while channel.next().await.is_some() {} });
                reply.await
            }
            Err(rejection) => rejection.into_response(),
        }
    })
    .await;
    // An upgraded WebSocket, closed by its client.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
    ws.close(None).await.unwrap();
    while let Ok(Some(_)) = tokio::time::timeout(LIMIT, ws.next()).await {}
    // compat's runner, closed by its client.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/compat")).await.unwrap();
    ws.close(None).await.unwrap();
    while let Ok(Some(_)) = tokio::time::timeout(LIMIT, ws.next()).await {}
    // A refused upgrade on a connection the client keeps open.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&UPGRADE.to_vec().replace_path("/refuse")).await.unwrap();
    let got = read_some(&mut tcp).await;
    assert!(got.starts_with("HTTP/1.1 403"), "{got:?}");
    settle().await;
    settle().await;
    assert_eq!(
        log.closed("client_request"),
        3,
        "spans of requests whose channel ended are still open (held by a task of webchan's)"
    );
    drop(tcp);
}

trait ReplacePath {
    fn replace_path(self, path: &str) -> Vec<u8>;
}
impl ReplacePath for Vec<u8> {
    fn replace_path(self, path: &str) -> Vec<u8> {
        String::from_utf8(self).unwrap().replacen("/chat", path, 1).into_bytes()
    }
}

// ---------------------------------------------------------------------------------------------
// Spans, HTTP streams: the lib docs (## What it logs) say a handler's span is on what the
// crate logs for its connection. An HTTP stream's body is polled by hyper's connection task,
// outside the handler's span: the body enters the span it was made in, so "a message source
// panicked; that send fails" (error) for an HTTP stream is tied to its request, through compat
// too. (At 6be8581 only WebSockets and compat's callbacks were.)

#[tokio::test]
async fn an_http_streams_lines_are_in_the_handlers_span() {
    let (log, _guard) = install();
    let options = webchan::compat::Options::new().on_open(|h| {
        let source = futures::stream::iter(vec![Message::from("one;")]).chain(
            futures::stream::once(async {
                panic!("TOKEN-H: row 17");
                #[allow(unreachable_code)]
                Message::from("never")
            }),
        );
        let _ = h.send(Message::stream(source), webchan::compat::SendOptions::new());
    });
    let addr = spanned(true, move |req: Request<HyperIncoming>| {
        let options = options.clone();
        async move { webchan::compat::as_channel(req, options).await }
    })
    .await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /feed HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let got = read_some(&mut tcp).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got:?}");
    settle().await;
    let lines: Vec<_> = log.webchan().into_iter().filter(|r| r.text.contains("TOKEN-H")).collect();
    assert!(!lines.is_empty(), "the panic was not logged: {:#?}", log.webchan());
    assert!(
        lines.iter().all(|r| r.spans.iter().any(|s| s == "client_request")),
        "the crate's line about this HTTP stream's failed send is outside the request's span: \
         {lines:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// shared.rs `Drop for Shared`: a channel dropped without ever being finished (the handler drops
// its reply and channel, an HTTP stream never polled) leaves its Shutdown's registry, and a
// shutdown that begins next neither waits for it nor counts it; a request made while that
// shutdown runs gets 503.

#[tokio::test]
async fn a_channel_dropped_unfinished_leaves_the_registry_and_shutdown_refuses_new_ones() {
    let shutdown = webchan::Shutdown::new();
    let config = Config::default().shutdown(&shutdown).timeout(Duration::from_secs(30));
    let config2 = config.clone();
    let addr = spanned(true, move |req: Request<HyperIncoming>| {
        let config = config2.clone();
        async move {
            match webchan::as_channel(req, config) {
                Ok((reply, channel)) => {
                    if reply.status() == 200 {
                        // An HTTP stream: both dropped, the reply never awaited nor polled.
                        drop((reply, channel));
                        return Response::builder()
                            .status(204)
                            .body(webchan::Body::empty())
                            .unwrap();
                    }
                    tokio::spawn(async move {
                        let mut channel = channel;
                        while channel.next().await.is_some() {}
                    });
                    reply.await
                }
                Err(rejection) => rejection.into_response(),
            }
        }
    })
    .await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /feed HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let got = read_some(&mut tcp).await;
    assert!(got.starts_with("HTTP/1.1 204"), "{got:?}");
    assert_eq!(shutdown.live(), 0, "a dropped channel is still in the registry");
    // One live WebSocket that answers the 1001: the shutdown takes it, not the dropped one.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
    assert_eq!(shutdown.live(), 1);
    let client = tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
    let started = tokio::time::Instant::now();
    let sd = shutdown.clone();
    let running = tokio::spawn(async move { sd.shutdown(Duration::from_secs(5)).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let late = read_some(&mut tcp).await;
    let report = tokio::time::timeout(LIMIT, running).await.unwrap().unwrap();
    let _ = tokio::time::timeout(LIMIT, client).await;
    assert!(late.starts_with("HTTP/1.1 503"), "{late:?}");
    assert_eq!((report.clean, report.forced), (1, 0), "{report:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// One panic of a message source sent through compat is one error line, the source's (before
// stop 30 compat logged it again, as a callback's panic).

#[tokio::test]
async fn a_message_source_panic_through_compat_is_logged_once_and_not_as_a_callback() {
    let (log, _guard) = install();
    let options = webchan::compat::Options::new().on_open(|h| {
        let source = futures::stream::once(async {
            panic!("TOKEN-ONCE: decoder failed");
            #[allow(unreachable_code)]
            Message::from("never")
        });
        let _ = h.send(Message::stream(source), webchan::compat::SendOptions::new());
    });
    let addr = support::serve_compat(options).await;
    let (_ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await.unwrap();
    settle().await;
    let errors: Vec<_> = log
        .webchan()
        .into_iter()
        .filter(|r| r.level == Level::ERROR && r.text.contains("TOKEN-ONCE"))
        .collect();
    assert!(!errors.is_empty(), "{:#?}", log.webchan());
    assert!(
        !errors.iter().any(|r| r.text.contains("callback failed")),
        "a message source's panic is logged as a callback's: {errors:#?}"
    );
    assert_eq!(errors.len(), 1, "one panic, logged at error {} times: {errors:#?}", errors.len());
}

/// One item, then pending for good; its `Drop` panics.
struct PanicsOnDrop(bool);

impl futures::Stream for PanicsOnDrop {
    type Item = Message;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Message>> {
        if self.0 {
            std::task::Poll::Pending
        } else {
            self.0 = true;
            std::task::Poll::Ready(Some(Message::from("one;")))
        }
    }
}

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("TOKEN-I-DROP");
    }
}

// ---------------------------------------------------------------------------------------------
// lib.rs (## What it logs): "an HTTP stream's body (polled by hyper's task) ... run[s] in the
// span that was current when as_channel was called", when hyper drops it too (the client went
// away): what webchan logs then (a source's `Drop` that panicked, at error) is in the
// request's span, as a WebSocket's task is for its whole life. (Until the last fix of stop 30
// the body entered the span only when polled.)

#[tokio::test]
async fn an_http_streams_lines_when_its_body_is_dropped_are_in_the_handlers_span() {
    let (log, _guard) = install();
    let addr = spanned(true, move |req: Request<HyperIncoming>| async move {
        match webchan::as_channel(req, Config::default()) {
            Ok((reply, mut channel)) => {
                tokio::spawn(async move {
                    let _ = channel.send(Message::stream(PanicsOnDrop(false))).await;
                });
                reply.await
            }
            Err(rejection) => rejection.into_response(),
        }
    })
    .await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /feed HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(LIMIT, async {
        while !String::from_utf8_lossy(&got).contains("one;") {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "eof before the first message");
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("no first message");
    // The client goes away: hyper drops the body, and with it the source.
    drop(tcp);
    let deadline = std::time::Instant::now() + LIMIT;
    let lines = loop {
        let lines: Vec<_> =
            log.webchan().into_iter().filter(|r| r.text.contains("TOKEN-I-DROP")).collect();
        if !lines.is_empty() || std::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!lines.is_empty(), "the source's Drop panic was not logged: {:#?}", log.webchan());
    assert_eq!(lines[0].level, Level::ERROR);
    assert!(
        lines.iter().all(|r| r.spans.iter().any(|s| s == "client_request")),
        "webchan's line about this HTTP stream's source (logged when hyper dropped the body) \
         is outside the request's span: {lines:#?}"
    );
}
