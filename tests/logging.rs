//! What webchan logs (`tracing`), and what a client can make it log (from a review in stop 30,
//! 2026-12-06).
//!
//! Every test installs (thread-locally, on a current-thread runtime, so the server's tasks run
//! under it) a subscriber that records every event at every level, and a `fmt` layer writing
//! into a buffer (ANSI off, as in a log file), then drives real clients over 127.0.0.1.

#[path = "support/logs.rs"]
mod logs;
mod support;

use logs::{at_least, install};

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use http::{Request, Response};
use hyper::body::Incoming as HyperIncoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tracing::Level;
use webchan::{Channel, Config, Message};

const LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Raw WebSocket client (masked frames built by hand)

async fn raw_ws(addr: SocketAddr, path: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(LIMIT, tcp.read(&mut byte)).await.unwrap().unwrap();
        assert!(n == 1, "eof in the handshake: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    tcp
}

fn frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
    let m = if masked { 0x80 } else { 0 };
    if payload.len() < 126 {
        f.push(m | payload.len() as u8);
    } else if payload.len() < 65536 {
        f.push(m | 126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    } else {
        f.push(m | 127);
        f.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    }
    if masked {
        let key = [0x12, 0x34, 0x56, 0x78];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

fn close_frame(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    frame(true, 8, &p, true)
}

/// Reads until the server closes the connection (or LIMIT).
async fn drain_to_eof(tcp: &mut TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    let _ = tokio::time::timeout(LIMIT, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}

/// A server whose channels drain their events; `/flood` also sends 64 KiB messages until the
/// channel fails.
async fn server(config: Config) -> SocketAddr {
    support::serve(config, |mut channel: Channel| async move {
        if channel.originating_request().uri.path() == "/flood" {
            let sender = channel.sender();
            tokio::spawn(async move {
                let big = "x".repeat(64 * 1024);
                while sender.send(big.as_str().into()).await.is_ok() {}
            });
        }
        while let Some(_event) = channel.next().await {}
    })
    .await
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

// ---------------------------------------------------------------------------------------------
// What a peer can make webchan log: nothing above debug, a bounded number of lines per
// connection, and its bytes escaped.

#[tokio::test]
async fn what_clients_can_make_webchan_log_is_bounded_quiet_and_escaped() {
    let (log, _guard) = install();
    let addr =
        server(Config::default().max_message_size(4096).close_timeout(Duration::from_millis(300)))
            .await;
    let mut report = Vec::new();
    let mut peer_bytes_total = 0usize;

    macro_rules! scenario {
        ($name:expr, $conns:expr, $peer_bytes:expr, $body:block) => {{
            let mark = log.mark();
            $body;
            settle().await;
            let got = log.since(mark);
            let logged: usize = got.iter().map(|r| r.text.len()).sum();
            let loud = at_least(&got, Level::WARN);
            report.push(format!(
                "{}: {} conns, {} events ({} at warn+), {} bytes logged for {} from the peer",
                $name,
                $conns,
                got.len(),
                loud.len(),
                logged,
                $peer_bytes
            ));
            peer_bytes_total += $peer_bytes;
            assert!(
                loud.is_empty(),
                "{}: a client made webchan log at warn/error: {loud:#?}",
                $name
            );
            assert!(
                got.len() <= 3 * $conns,
                "{}: {} events for {} connections: {got:#?}",
                $name,
                got.len(),
                $conns
            );
        }};
    }

    // A client closing normally, a tab going away (1001), a TCP drop, a RST.
    scenario!("close 1000", 1, 0, {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await.unwrap();
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
    });
    scenario!("close 1001", 1, 0, {
        let mut tcp = raw_ws(addr, "/").await;
        tcp.write_all(&close_frame(1001, b"")).await.unwrap();
        drain_to_eof(&mut tcp).await;
    });
    scenario!("tcp drop", 1, 0, {
        let tcp = raw_ws(addr, "/").await;
        drop(tcp);
    });
    scenario!("rst", 1, 0, {
        let tcp = raw_ws(addr, "/").await;
        tcp.set_zero_linger().unwrap();
        drop(tcp);
    });
    // Malformed frames.
    scenario!("unmasked frame", 1, 7, {
        let mut tcp = raw_ws(addr, "/").await;
        tcp.write_all(&frame(true, 1, b"hello", false)).await.unwrap();
        drain_to_eof(&mut tcp).await;
    });
    scenario!("reserved opcode", 1, 11, {
        let mut tcp = raw_ws(addr, "/").await;
        tcp.write_all(&frame(true, 3, b"hello", true)).await.unwrap();
        drain_to_eof(&mut tcp).await;
    });
    scenario!("invalid utf-8 text", 1, 10, {
        let mut tcp = raw_ws(addr, "/").await;
        tcp.write_all(&frame(true, 1, b"\xff\xfe\xfd\xfc", true)).await.unwrap();
        drain_to_eof(&mut tcp).await;
    });
    scenario!("too large", 1, 10_014, {
        let mut tcp = raw_ws(addr, "/").await;
        tcp.write_all(&frame(true, 2, &vec![0u8; 10_000], true)).await.unwrap();
        drain_to_eof(&mut tcp).await;
    });
    // Close reasons that try to forge log lines / colour a terminal, and bad UTF-8.
    let forged = b"x\n2031-01-01T00:00:00Z ERROR forged: line\r\x1b[31mred\x1b[0m";
    scenario!("forging close reason", 1, forged.len() + 8, {
        let mut tcp = raw_ws(addr, "/").await;
        tcp.write_all(&close_frame(4000, forged)).await.unwrap();
        drain_to_eof(&mut tcp).await;
    });
    scenario!("close reason bad utf-8", 1, 12, {
        let mut tcp = raw_ws(addr, "/").await;
        tcp.write_all(&close_frame(1000, b"\xc3\x28\xa0\xa1")).await.unwrap();
        drain_to_eof(&mut tcp).await;
    });
    scenario!("close code 1005 on the wire", 1, 8, {
        let mut tcp = raw_ws(addr, "/").await;
        tcp.write_all(&close_frame(1005, b"")).await.unwrap();
        drain_to_eof(&mut tcp).await;
    });
    // A ping flood: 20,000 pings then a close.
    scenario!("ping flood", 1, 20_000 * 10, {
        let mut tcp = raw_ws(addr, "/").await;
        let mut burst = Vec::new();
        for _ in 0..20_000 {
            burst.extend_from_slice(&frame(true, 9, b"ping", true));
        }
        let (mut r, mut w) = tcp.split();
        let reader = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match tokio::time::timeout(Duration::from_secs(2), r.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => break,
                }
            }
        };
        let writer = async {
            let _ = w.write_all(&burst).await;
            let _ = w.write_all(&close_frame(1000, b"")).await;
        };
        tokio::join!(reader, writer);
    });
    // Fragment floods: 10,000 continuation frames of one byte, then a wrong opcode.
    scenario!("fragments then bad continuation", 1, 10_000 * 7, {
        let mut tcp = raw_ws(addr, "/").await;
        let mut burst = frame(false, 1, b"a", true);
        for _ in 0..9_998 {
            burst.extend_from_slice(&frame(false, 0, b"a", true));
        }
        burst.extend_from_slice(&frame(true, 1, b"a", true));
        let _ = tcp.write_all(&burst).await;
        drain_to_eof(&mut tcp).await;
    });
    // A client that takes part of a flood, then drops (mid-send, server side).
    scenario!("drop mid-send", 1, 0, {
        let mut tcp = raw_ws(addr, "/flood").await;
        let mut buf = vec![0u8; 100_000];
        let _ = tcp.read_exact(&mut buf).await;
        tcp.set_zero_linger().unwrap();
        drop(tcp);
        tokio::time::sleep(Duration::from_millis(300)).await;
    });
    // A client that never answers our close (the close timeout fires).
    scenario!("no close answer", 1, 0, {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await.unwrap();
        // Send a close frame from raw bytes would be answered; instead, make the server close by
        // sending a too-big message, and never read.
        ws.send(support::WsMessage::Binary(vec![0u8; 8192].into())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        drop(ws);
    });
    // 50 bad handshakes, 50 connects that vanish before the upgrade, 20 SSE streams with odd
    // Last-Event-IDs and paths.
    scenario!("50 bad handshakes", 50, 50 * 120, {
        for i in 0..50 {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            let req = format!(
                "GET /%0a{i}%1b HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: \x01bad\r\n\r\n"
            );
            tcp.write_all(req.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_millis(500), tcp.read_to_end(&mut out)).await;
        }
    });
    scenario!("50 handshakes abandoned", 50, 50 * 150, {
        for _ in 0..50 {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            let req = format!(
                "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            );
            tcp.write_all(req.as_bytes()).await.unwrap();
            tcp.set_zero_linger().unwrap();
            drop(tcp);
        }
    });
    scenario!("20 sse with hostile Last-Event-ID", 20, 20 * 200, {
        for i in 0..20 {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            let req = format!(
                "GET /ev\x7f{i} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\
                 Last-Event-ID: \x1b[31m{i}\t\x7f"
            );
            let mut bytes = req.into_bytes();
            // an obs-text byte in the header value
            bytes.extend_from_slice(b"\xff\r\n\r\n");
            tcp.write_all(&bytes).await.unwrap();
            let mut buf = [0u8; 512];
            let _ = tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut buf)).await;
            drop(tcp);
        }
    });

    // Nothing the peer sent appears raw in the formatted log.
    let text = log.fmt_text();
    for (i, line) in text.lines().enumerate() {
        assert!(!line.starts_with("2031-01-01"), "line {i} forged by a close reason: {text}");
    }
    assert!(!text.contains('\x1b'), "a raw ESC from the peer in the log: {text:?}");
    let logged: usize = log.webchan().iter().map(|r| r.text.len()).sum();
    eprintln!("{}", report.join("\n"));
    eprintln!(
        "total: {} events, {logged} bytes logged for {peer_bytes_total} bytes from peers",
        log.webchan().len()
    );
    assert!(
        logged < peer_bytes_total / 10,
        "{logged} bytes logged for {peer_bytes_total} received"
    );
}

// ---------------------------------------------------------------------------------------------
// A request whose upgrade handle a layer lost: every WebSocket fails after its 101, and the
// operator is told, once, at warn (before stop 30, at debug only, unlike a server "served
// without upgrades", which warned once).

#[tokio::test]
async fn a_request_without_hyper_upgrade_handle_is_logged_at_warn() {
    let (log, _guard) = install();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = service_fn(|mut req: Request<HyperIncoming>| async move {
                    // A layer that rebuilds the request (or drops its extensions).
                    req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>();
                    let response =
                        webchan::compat::as_channel(req, webchan::compat::Options::new());
                    Ok::<Response<webchan::Body>, Infallible>(response.await)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    let connected = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await;
    let status = connected.as_ref().map(|(_, r)| r.status().as_u16()).map_err(|e| e.to_string());
    let next = match connected {
        Ok((mut ws, _)) => format!("{:?}", tokio::time::timeout(LIMIT, ws.next()).await),
        Err(_) => String::new(),
    };
    settle().await;
    let all = log.webchan();
    let loud = at_least(&all, Level::WARN);
    assert!(
        loud.iter().any(|r| r.text.contains("upgrade")),
        "client got {status:?} then {next}; webchan logged nothing at warn+ about the lost upgrade \
         handle; all its events: {all:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Panics in message sources: logged at error, with what panicked.

#[tokio::test]
async fn a_source_that_panics_is_logged_at_error_with_its_panic_text() {
    let (log, _guard) = install();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = support::serve(Config::default(), move |mut channel: Channel| {
        let tx = tx.clone();
        async move {
            let source = futures::stream::iter(vec![Message::from("one;")]).chain(
                futures::stream::once(async {
                    panic!("TOKEN-POLL: decoding row 17 failed");
                    #[allow(unreachable_code)]
                    Message::from("never")
                }),
            );
            let sent = channel.send(Message::stream(source)).await;
            let _ = tx.send(format!("{sent:?}"));
            while channel.next().await.is_some() {}
        }
    })
    .await;
    let (_ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await.unwrap();
    let sent = tokio::time::timeout(LIMIT, rx.recv()).await.unwrap().unwrap();
    assert!(sent.contains("Panicked"), "{sent}");
    settle().await;
    let all = log.webchan();
    let logged: Vec<_> = all.iter().filter(|r| r.text.contains("panicked")).collect();
    assert!(
        logged.iter().any(|r| r.level == Level::ERROR && r.text.contains("TOKEN-POLL")),
        "a caught panic in a message source should be logged at error with its text; logged: \
         {logged:#?}"
    );
}

struct PanicOnDrop;
impl AsyncRead for PanicOnDrop {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("TOKEN-DROP: temp file cleanup failed");
    }
}

#[tokio::test]
async fn a_source_that_panics_when_dropped_is_logged_with_its_panic_text() {
    let (log, _guard) = install();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = support::serve(Config::default(), move |mut channel: Channel| {
        let tx = tx.clone();
        async move {
            let sent = channel.send(Message::reader(PanicOnDrop)).await;
            let _ = tx.send(format!("{sent:?}"));
            while channel.next().await.is_some() {}
        }
    })
    .await;
    let (_ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await.unwrap();
    let sent = tokio::time::timeout(LIMIT, rx.recv()).await.unwrap().unwrap();
    settle().await;
    let all = log.webchan();
    let errors = at_least(&all, Level::ERROR);
    assert!(!errors.is_empty(), "send gave {sent}; nothing logged at error: {all:#?}");
    assert!(
        errors.iter().any(|r| r.text.contains("TOKEN-DROP")),
        "send gave {sent}; the error logged does not say what panicked: {errors:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// A shutdown that had to force channels off: the operator should see it (warn), not only at
// info next to the routine "0 forced".

#[tokio::test]
async fn a_shutdown_that_forces_channels_is_logged_at_warn() {
    let (log, _guard) = install();
    let shutdown = webchan::Shutdown::new();
    let addr =
        server(Config::default().shutdown(&shutdown).close_timeout(Duration::from_secs(30))).await;
    // A client that never reads nor answers the close.
    let _tcp = raw_ws(addr, "/").await;
    settle().await;
    assert_eq!(shutdown.live(), 1);
    let report =
        tokio::time::timeout(LIMIT, shutdown.shutdown(Duration::from_millis(300))).await.unwrap();
    assert_eq!(report.forced, 1, "{report:?}");
    let all = log.webchan();
    let about: Vec<_> = all.iter().filter(|r| r.text.contains("forced")).collect();
    assert!(
        about.iter().any(|r| r.level <= Level::WARN),
        "a shutdown that forced 1 channel logged: {about:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// compat: a callback's panic is logged at error, escaped: the panic text is the application's,
// and often quotes what the peer sent; before stop 30 it was logged with `%error` (Display),
// and a newline in it forged a log line.

#[tokio::test]
async fn a_compat_callback_panic_with_peer_text_does_not_forge_log_lines() {
    let (log, _guard) = install();
    let options = webchan::compat::Options::new().on_message(|_, m| {
        if let webchan::Incoming::Text(t) = m {
            panic!("unknown command: {t}");
        }
    });
    let addr = support::serve_compat(options).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await.unwrap();
    ws.send(support::WsMessage::Text(
        "x\n2031-01-01T00:00:00.000000Z ERROR app: admin password changed".into(),
    ))
    .await
    .unwrap();
    settle().await;
    let _ = ws.close(None).await;
    settle().await;
    let text = log.fmt_text();
    let errors = at_least(&log.webchan(), Level::ERROR);
    assert!(!errors.is_empty(), "the panic was not logged: {text}");
    assert!(
        !text.lines().any(|l| l.starts_with("2031-01-01")),
        "the peer's text forged a log line:\n{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Spans: the crate spawns the tasks that run a WebSocket connection (`ws::drive`) and compat's
// callbacks; they run in the span the handler was in (a request span with the peer's address,
// as tower-http's TraceLayer makes), so the crate's per-connection lines ("failing websocket
// connection", "websocket closed"), which carry no peer, path or id of their own, are tied to
// a client, as is what a compat callback logs. (Before stop 30 the span was dropped there.)

async fn spanned_server(compat: bool) -> SocketAddr {
    use tracing::Instrument;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<HyperIncoming>| {
                    let span =
                        tracing::info_span!("client_request", %peer, path = %req.uri().path());
                    async move {
                        tracing::info!("app: handler runs");
                        let response: Response<webchan::Body> = if compat {
                            let options = webchan::compat::Options::new().on_message(|_, m| {
                                tracing::info!(len = m.len(), "app: got a message");
                            });
                            webchan::compat::as_channel(req, options).await
                        } else {
                            match webchan::as_channel(req, Config::default()) {
                                Ok((reply, mut channel)) => {
                                    tokio::spawn(
                                        async move { while channel.next().await.is_some() {} },
                                    );
                                    reply.await
                                }
                                Err(rejection) => rejection.into_response(),
                            }
                        };
                        Ok::<_, Infallible>(response)
                    }
                    .instrument(span)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn the_crates_connection_events_are_in_the_handlers_span() {
    let (log, _guard) = install();
    let addr = spanned_server(false).await;
    let mut tcp = raw_ws(addr, "/chat").await;
    tcp.write_all(&frame(true, 1, b"unmasked", false)).await.unwrap();
    drain_to_eof(&mut tcp).await;
    settle().await;
    let control: Vec<_> =
        log.all().iter().filter(|r| r.text.contains("app: handler runs")).cloned().collect();
    assert!(control.len() == 1 && control[0].spans == ["client_request"], "{control:#?}");
    let all = log.webchan();
    let failing: Vec<_> = all.iter().filter(|r| r.text.contains("failing websocket")).collect();
    assert!(!failing.is_empty(), "{all:#?}");
    assert!(
        failing.iter().all(|r| r.spans.iter().any(|s| s == "client_request")),
        "the crate's line about this client's protocol violation is outside the request's span \
         (no peer, no path): {failing:#?}"
    );
}

#[tokio::test]
async fn compat_callbacks_run_in_the_handlers_span() {
    let (log, _guard) = install();
    let addr = spanned_server(true).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/chat")).await.unwrap();
    ws.send(support::WsMessage::Text("hello".into())).await.unwrap();
    settle().await;
    let _ = ws.close(None).await;
    settle().await;
    let app: Vec<_> =
        log.all().iter().filter(|r| r.text.contains("app: got a message")).cloned().collect();
    assert_eq!(app.len(), 1, "{app:#?}");
    assert!(
        app[0].spans.iter().any(|s| s == "client_request"),
        "what on_message logs is outside the span as_channel was called in: {app:#?}"
    );
}
