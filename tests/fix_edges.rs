//! The edges of stop 29's own fixes (2026-12-05), found by a review of them: the shutdown
//! report's forced count and a WebSocket forced before its reply was returned, the upgrade's
//! body check, `Message::quiet` with a panic payload that panics and with a refused send, the
//! compat gate on a multi-thread runtime; then a second review's: a send refused before it was
//! queued (the channel closed while it waited for room), the decoder's copies of mid-size
//! frames, compacted unread messages, a zero deadline racing the upgrade. Over real sockets
//! on 127.0.0.1.
mod support;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use webchan::{Body, Channel, Config, Error, Event, Message, Shutdown};

const LIMIT: Duration = Duration::from_secs(10);

// ---- 1. the report's counts: a stream its own timeout dropped before the deadline ----

/// An HTTP stream whose client reads nothing is dropped by its own timeout (`timeout` +
/// `close_timeout`, `Error(TimedOut)`) well before the shutdown's 5 s deadline. The docs:
/// `clean` = "Channels that ended before the deadline, however they ended", `forced` =
/// "Channels still open at the deadline (this call's or a concurrent call's), dropped". The
/// shutdown returns at ~0.9 s: the channel ended before the deadline, so (1, 0). The first
/// version of stop 29's count (channels with `is_forced`) said (0, 1): the timeout sets that
/// flag too.
#[tokio::test]
async fn a_stream_its_own_timeout_dropped_before_the_deadline_counts_clean() {
    let shutdown = Shutdown::new();
    let config = Config::default()
        .shutdown(&shutdown)
        .keepalive(None)
        .timeout(Duration::from_millis(600))
        .close_timeout(Duration::from_millis(300));
    let (addr, mut channels) = serve_channels(config).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut tcp = socket.connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut ch = next_channel(&mut channels).await;
    let sender = ch.sender();
    // Fills the buffers (the client reads nothing), then waits in `send`.
    let sending = tokio::spawn(async move {
        while sender.send(Message::from(vec![7u8; 16 * 1024])).await.is_ok() {}
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    let report = tokio::time::timeout(LIMIT, shutdown.shutdown(Duration::from_secs(5)))
        .await
        .expect("shutdown hung");
    let took = t0.elapsed();
    let events = all_events(&mut ch).await;
    let timed_out = events.iter().any(
        |e| matches!(e, Event::Error(Error::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut),
    );
    sending.await.unwrap();
    drop(tcp);
    // The channel ended by its own timeout, long before the 5 s deadline.
    assert!(timed_out, "{events:?}");
    assert!(took < Duration::from_secs(3), "the shutdown waited for its deadline: {took:?}");
    assert_eq!(
        (report.clean, report.forced),
        (1, 0),
        "a channel that ended {took:?} into a 5 s deadline counted as forced"
    );
}

// ---- 2. "when it returns, every channel it saw has reported Closed" ----

/// A WebSocket whose handler holds its `Reply` (an async auth check, say) past the deadline:
/// `Closed` (1006, never opened) by the time `shutdown` returns, and the reply, returned
/// later, answers 503. Before this fix nothing ended it (no task ran yet to see the forced
/// flag): `shutdown` waited its whole extra second, and the client then got its `101` and
/// the channel an `Open`.
#[tokio::test]
async fn a_websocket_forced_before_its_reply_was_returned_has_closed_when_shutdown_returns() {
    let shutdown = Shutdown::new();
    let config = Config::default().shutdown(&shutdown).keepalive(None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut channels) = tokio::sync::mpsc::unbounded_channel::<Channel>();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let config = config.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let config = config.clone();
                    let tx = tx.clone();
                    async move {
                        let response: Response<Body> = match webchan::as_channel(req, config) {
                            Ok((reply, channel)) => {
                                let _ = tx.send(channel);
                                // A slow check before the reply goes back.
                                tokio::time::sleep(Duration::from_millis(2500)).await;
                                reply.await
                            }
                            Err(rejection) => rejection.into_response(),
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service).await;
            });
        }
    });
    let client = tokio::spawn(async move {
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 1024];
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "EOF before a response head: {:?}", String::from_utf8_lossy(&head));
            head.extend_from_slice(&chunk[..n]);
        }
        head
    });
    let mut ch = next_channel(&mut channels).await;
    let t0 = Instant::now();
    let report = tokio::time::timeout(LIMIT, shutdown.shutdown(Duration::from_millis(200)))
        .await
        .expect("shutdown hung");
    let took = t0.elapsed();
    // What the channel reported by the time `shutdown` returned: its end, never opened.
    let mut at_return = Vec::new();
    while let Some(Some(e)) = ch.next().now_or_never() {
        at_return.push(e);
    }
    assert_eq!((report.clean, report.forced), (0, 1));
    assert!(took < Duration::from_millis(1000), "{took:?}");
    assert!(
        matches!(&at_return[..], [Event::Closed(info)] if info.code == Some(1006)),
        "shutdown returned after {took:?} with its forced channel not Closed: {at_return:?}"
    );
    // The reply, returned later, answers 503: no upgrade for a channel the shutdown dropped.
    let answer = tokio::time::timeout(LIMIT, client).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(ch.next().await.is_none());
}

// ---- 3. a source whose Drop panics with a payload whose own Drop panics ----

/// A payload whose own drop panics (not while unwinding: that would abort the binary).
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("the payload's drop panicked");
        }
    }
}

/// A reader that never ends and whose drop panics with a [`Bomb`] as the payload.
struct BombReader;

impl AsyncRead for BombReader {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        buf.put_slice(b"never");
        Poll::Ready(Ok(()))
    }
}

impl Drop for BombReader {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            std::panic::panic_any(Bomb);
        }
    }
}

/// As tests/user_faults.rs `a_queued_source_that_panics_when_dropped_at_the_close_still_gives_
/// closed_websocket`, with a panic payload whose own `Drop` panics: `Quiet::drop` catches the
/// source's panic, then drops the payload. lib.rs: "A panic in a source's `Drop` (...) is
/// caught and logged: it fails nothing that was sent whole"; the channel must still report
/// `Closed`. Before the fix the payload's own panic escaped (out of `Shared::finish`, which
/// holds the queue): no `Closed`; the payload is now leaked instead (`error::drop_payload`).
#[tokio::test]
async fn a_queued_source_whose_drop_panics_with_a_panicking_payload_still_gives_closed() {
    let (addr, mut channels) = serve_channels(Config::default()).await;
    let mut ws = ws_connect(addr, "/q").await;
    let mut ch = next_channel(&mut channels).await;
    let sender = ch.sender();
    let stuck = sender.try_send(Message::stream(futures::stream::pending())).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let behind = sender.try_send(Message::reader(BombReader)).unwrap();
    let stuck = tokio::spawn(tokio::time::timeout(LIMIT, stuck));
    let behind = tokio::spawn(tokio::time::timeout(LIMIT, behind));
    tokio::time::sleep(Duration::from_millis(100)).await;
    futures::SinkExt::close(&mut ws).await.unwrap();
    let events = tokio::time::timeout(Duration::from_secs(5), async {
        let mut events = Vec::new();
        while let Some(e) = ch.next().await {
            events.push(e);
        }
        events
    })
    .await;
    let stuck = stuck.await;
    let behind = behind.await;
    assert!(
        matches!(&events, Ok(e) if matches!(e.last(), Some(Event::Closed(_)))),
        "no Closed within 5 s of the client's close (events: {events:?}); sends: {stuck:?}, \
         {behind:?}"
    );
}

// ---- 4. the upgrade's body check: a Content-Length that says 0 ----

/// RFC 9110 §8.6: `Content-Length = 1*DIGIT`; `00` is a length of 0 (hyper reads it so, and
/// hands the request over with an empty body): an upgrade with it has no body and gets its
/// 101. The body check's first version compared the bytes with `0` and answered 400 "a
/// WebSocket upgrade request has no body".
#[tokio::test]
async fn an_upgrade_with_content_length_00_has_no_body_and_gets_its_101() {
    let addr = serve(Config::default(), echo).await;
    for length in ["0", " 0 ", "00"] {
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Content-Length: {length}\r\n\r\n"
        );
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        let head = tokio::time::timeout(LIMIT, async {
            loop {
                let n = tokio::io::AsyncReadExt::read(&mut tcp, &mut chunk).await.unwrap();
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            String::from_utf8_lossy(&buf).to_string()
        })
        .await
        .expect("no answer");
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "Content-Length: {length:?} (no body) was refused: {head}"
        );
    }
}

// ---- 5. a send refused at once discards its source in the caller's task ----

/// lib.rs: "A panic in a source's `Drop` (once it ended, or when a failed send or a closing
/// channel discards it) is caught and logged". A reader sent with `Sender::send` on an SSE
/// stream is refused at once (`InvalidMessage`), never queued (where it would be wrapped in
/// `Quiet`): `send` must give the `Err`, its drop's panic caught (`Message::discard`). Before
/// the fix the panic came out of `send` into the application's task.
#[tokio::test]
async fn a_refused_send_discards_its_source_under_the_same_guard() {
    let (addr, mut channels) = serve_channels(Config::default()).await;
    let mut request = get(addr, "/events");
    request
        .headers_mut()
        .insert(http::header::ACCEPT, http::HeaderValue::from_static("text/event-stream"));
    let client = tokio::spawn(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        let response = sender.send_request(request).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(response);
    });
    let ch = next_channel(&mut channels).await;
    let sender = ch.sender();
    let outcome = tokio::spawn(async move { sender.send(Message::reader(PanickyDrop)).await });
    let outcome = tokio::time::timeout(LIMIT, outcome).await.expect("send hung");
    client.abort();
    match outcome {
        Ok(result) => assert!(matches!(result, Err(Error::InvalidMessage(_))), "{result:?}"),
        Err(join) => panic!("the refused source's drop panicked out of `send`: {join:?}"),
    }
}

// ---- 6. the 426's Upgrade/Connection over HTTP/1.1: the connection goes on ----

/// The 426 now carries `Connection: Upgrade` (RFC 9110 §15.5.22 / §7.8). The connection is
/// still an HTTP/1.1 connection after it: a second request pipelined behind the refused
/// upgrade gets its answer (the client may retry with version 13 on the same connection).
#[tokio::test]
async fn after_a_426_the_http1_connection_answers_the_next_request() {
    let addr = serve(Config::default(), echo_or_ok).await;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n\
         GET /next HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let out = raw_http(addr, request.as_bytes()).await;
    let text = String::from_utf8_lossy(&out).to_string();
    assert!(text.starts_with("HTTP/1.1 426"), "{text}");
    let first_head = &text[..text.find("\r\n\r\n").unwrap()].to_ascii_lowercase();
    assert!(first_head.contains("upgrade: websocket"), "{text}");
    assert!(first_head.contains("sec-websocket-version: 13"), "{text}");
    assert_eq!(text.matches("HTTP/1.1 ").count(), 2, "no answer to the second request: {text}");
    assert!(text.ends_with("ok"), "{text}");
}

// ---- 7. `Message::quiet` and the head logic: heads inside (nested) sequences ----

/// `Shared::enqueue` now wraps a sequence in `Quiet`, and what it yields through
/// `Message::quiet`: a response head first in a sequence nested in a stream (which yields
/// readers too) must still be the stream's head (`Message::seq` docs), over HTTP/1.1 and
/// HTTP/2.
#[tokio::test]
async fn a_head_first_in_a_nested_quiet_sequence_is_still_the_streams_head() {
    use http_body_util::BodyExt;
    let addr = serve(Config::default(), |ch: Channel| async move {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-from", http::HeaderValue::from_static("nested"));
        let head =
            Message::response(http::StatusCode::CREATED, headers, Message::reader(&b"a"[..]));
        let inner = Message::stream(futures::stream::iter(vec![head, Message::from("b")]));
        let outer = Message::stream(futures::stream::iter(vec![
            Message::seq(Vec::<Message>::new()),
            inner,
            Message::reader(&b"c"[..]),
        ]));
        let _ = ch.sender().send_and_close(outer).await;
    })
    .await;
    let r = http1_get(addr, get(addr, "/")).await;
    assert_eq!(r.status(), 201, "{r:?}");
    assert_eq!(r.headers()["x-from"], "nested");
    assert_eq!(&r.body()[..], b"abc");
    let mut h2 = h2_client(addr).await;
    let r = tokio::time::timeout(LIMIT, h2.send_request(get(addr, "/"))).await.unwrap().unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-from"], "nested");
    let body = tokio::time::timeout(LIMIT, r.into_body().collect()).await.unwrap().unwrap();
    assert_eq!(&body.to_bytes()[..], b"abc");
}

// ---- 8. the compat gate on a multi-thread runtime ----

/// `on_open` now waits for the `ResponseFuture` to be polled (the `Gate`), which hyper does
/// on another worker than the channel's task: `on_open`'s head must still set the status of
/// every stream, and each stream must get `on_open` once, with `on_close` after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_on_open_sets_the_head_of_every_stream_on_a_multi_thread_runtime() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use webchan::compat::{Options, SendOptions};
    let opened = Arc::new(AtomicUsize::new(0));
    let closed_after_open = Arc::new(AtomicUsize::new(0));
    let (o, c) = (Arc::clone(&opened), Arc::clone(&closed_after_open));
    let options = Options::new()
        .on_open(move |ch| {
            o.fetch_add(1, Ordering::SeqCst);
            let head = Message::response(http::StatusCode::CREATED, Default::default(), "x");
            let _ = ch.send(head, SendOptions::new().close(true));
        })
        .on_close({
            let o = Arc::clone(&opened);
            move |_, _| {
                if o.load(Ordering::SeqCst) > 0 {
                    c.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    let addr = serve_compat(options).await;
    let mut tasks = Vec::new();
    for _ in 0..100 {
        tasks.push(tokio::spawn(async move { http1_get(addr, get(addr, "/")).await }));
    }
    for t in tasks {
        let r = tokio::time::timeout(LIMIT, t).await.expect("a stream hung").unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(&r.body()[..], b"x");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(opened.load(Ordering::SeqCst), 100);
    assert_eq!(closed_after_open.load(Ordering::SeqCst), 100);
}

// ---- a second review of the fixes (06a6dcf, c314649, 56c200a) ----

fn spin(d: Duration) {
    let until = std::time::Instant::now() + d;
    while std::time::Instant::now() < until {
        std::hint::spin_loop();
    }
}

const MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

/// A reader whose `Drop` panics (not while unwinding).
struct PanickyDrop;

impl AsyncRead for PanickyDrop {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        buf.put_slice(b"x");
        Poll::Ready(Ok(()))
    }
}

impl Drop for PanickyDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("drop boom");
        }
    }
}

async fn drain_until_closed(ch: &mut Channel) {
    tokio::time::timeout(LIMIT, async {
        while let Some(e) = ch.next().await {
            if matches!(e, Event::Closed(_)) {
                break;
            }
        }
    })
    .await
    .expect("no Closed");
}

// ---- 1. a send refused because the channel is closed: the source's Drop panic ----

/// lib.rs: "A panic in a source's `Drop` (once it ended, or when a failed send or a closing
/// channel discards it) is caught and logged"; `Sender::send` # Errors: "`Error::Closed` if
/// the channel is closed". `send` first awaits `poll_capacity`, which answers `Closed` for a
/// closed channel; c314649 routed only a refused `send_now` through `Message::discard`, so
/// there the message was dropped as a plain local and the source's panic came out of `send`
/// into the application's task (fixed in d0abe97).
#[tokio::test]
async fn send_on_a_closed_websocket_discards_its_source_under_the_guard() {
    let (addr, mut channels) = serve_channels(Config::default().keepalive(None)).await;
    let mut ws = ws_connect(addr, "/").await;
    let mut ch = next_channel(&mut channels).await;
    ws.close(None).await.unwrap();
    drain_until_closed(&mut ch).await;
    let sender = ch.sender();
    let outcome = tokio::spawn(async move { sender.send(Message::reader(PanickyDrop)).await });
    let outcome = tokio::time::timeout(LIMIT, outcome).await.expect("send hung");
    match outcome {
        Ok(result) => assert!(matches!(result, Err(Error::Closed)), "{result:?}"),
        Err(join) => panic!("the refused source's drop panicked out of `send`: {join:?}"),
    }
}

/// The same through `send_and_close` and `Channel::send`.
#[tokio::test]
async fn send_and_close_on_a_closed_websocket_discards_its_source_under_the_guard() {
    let (addr, mut channels) = serve_channels(Config::default().keepalive(None)).await;
    let mut ws = ws_connect(addr, "/").await;
    let mut ch = next_channel(&mut channels).await;
    ws.close(None).await.unwrap();
    drain_until_closed(&mut ch).await;
    let sender = ch.sender();
    let outcome =
        tokio::spawn(async move { sender.send_and_close(Message::reader(PanickyDrop)).await });
    let outcome = tokio::time::timeout(LIMIT, outcome).await.expect("send hung");
    let first = match outcome {
        Ok(result) => format!("{result:?}"),
        Err(join) => format!("panicked: {join:?}"),
    };
    let outcome = tokio::spawn(async move { ch.send(Message::reader(PanickyDrop)).await });
    let outcome = tokio::time::timeout(LIMIT, outcome).await.expect("send hung");
    let second = match outcome {
        Ok(result) => format!("{result:?}"),
        Err(join) => format!("panicked: {join:?}"),
    };
    assert_eq!((first.as_str(), second.as_str()), ("Err(Closed)", "Err(Closed)"));
}

/// A `send` waiting for room in the queue when the channel closes: the same path
/// (`poll_capacity` answers `Closed`), the same guard.
#[tokio::test]
async fn a_send_waiting_for_room_when_the_channel_closes_discards_its_source_under_the_guard() {
    let config = Config::default().keepalive(None).queue_limit(1024);
    let (addr, mut channels) = serve_channels(config).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let raw = RawWs::upgrade(tcp, addr, "/").await;
    let ch = next_channel(&mut channels).await;
    let sender = ch.sender();
    // The client reads nothing: 8 MiB stays queued, over the 1 KiB limit.
    let _big = sender.try_send(Message::from(vec![7u8; 8 << 20])).unwrap();
    let waiting = tokio::spawn({
        let sender = sender.clone();
        async move { sender.send(Message::reader(PanickyDrop)).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "the send did not wait for room");
    drop(raw);
    let outcome = tokio::time::timeout(LIMIT, waiting).await.expect("send hung");
    match outcome {
        Ok(result) => assert!(matches!(result, Err(Error::Closed)), "{result:?}"),
        Err(join) => panic!("the refused source's drop panicked out of `send`: {join:?}"),
    }
    drop(ch);
}

// ---- 2. the decoder after `mid_payload` ----

fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    encode_frame(first, Some(MASK), payload, None)
}

/// What the echo server sends back: (opcode, payload) of data frames, until `n` came.
async fn read_data_frames(raw: &mut RawWs, n: usize) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while out.len() < n {
        let (first, payload) = raw.read_frame().await.expect("connection ended early");
        match first & 0x0F {
            0x1 | 0x2 => out.push((first & 0x0F, payload)),
            0x8 => panic!("close {:?} after {} messages", &payload, out.len()),
            _ => {}
        }
    }
    out
}

/// Frames of every size class in one write (a small one, mid ones that `mid_payload` copies
/// out while frames follow in the same buffer, fragments through that path with a UTF-8
/// character split across them and a ping between, a large one that is split off, one that
/// ends the buffer): each message must come back whole, in order, with whatever read buffer.
#[tokio::test]
async fn frames_of_every_size_in_one_write_come_back_whole_in_order() {
    for rbuf in [4096usize, 8192, 65536, 1 << 20] {
        let addr = serve(Config::default().keepalive(None).read_buffer_size(rbuf), echo).await;
        let mut raw = RawWs::connect(addr).await;
        let mut text1 = "a".repeat(1499).into_bytes();
        text1.push(0xC3); // the first byte of "é"
        let mut text2 = vec![0xA9]; // its second
        text2.extend("b".repeat(1500).bytes());
        let whole_text: Vec<u8> = [&text1[..], &text2[..], "é!".as_bytes()].concat();
        let bin_mid: Vec<u8> = (0..1500u32).map(|i| (i * 7) as u8).collect();
        let bin_large: Vec<u8> = (0..30_000u32).map(|i| (i * 13) as u8).collect();
        let small = b"tiny".to_vec();
        let text_mid = "ü".repeat(700).into_bytes();
        let mut wire = Vec::new();
        wire.extend(frame(0x82, &small));
        wire.extend(frame(0x01, &text1)); // text, not fin
        wire.extend(frame(0x89, b"ping"));
        wire.extend(frame(0x00, &text2)); // continuation, not fin
        wire.extend(frame(0x80, "é!".as_bytes())); // continuation, fin
        wire.extend(frame(0x82, &bin_mid));
        wire.extend(frame(0x82, &bin_large));
        wire.extend(frame(0x81, &text_mid));
        wire.extend(frame(0x82, &bin_mid));
        raw.raw(&wire).await;
        let got = read_data_frames(&mut raw, 6).await;
        let expected = vec![
            (0x2, small.clone()),
            (0x1, whole_text.clone()),
            (0x2, bin_mid.clone()),
            (0x2, bin_large.clone()),
            (0x1, text_mid.clone()),
            (0x2, bin_mid.clone()),
        ];
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert!(
                g.0 == e.0 && g.1 == e.1,
                "read buffer {rbuf}: message {i} came back as opcode {} of {} bytes, not {} of {}",
                g.0,
                g.1.len(),
                e.0,
                e.1.len()
            );
        }
    }
}

/// Invalid UTF-8 split over two mid fragments (the second fragment's first byte is not a
/// continuation byte): 1007, as for any text.
#[tokio::test]
async fn invalid_utf8_across_mid_fragments_closes_with_1007() {
    let addr = serve(Config::default().keepalive(None), echo).await;
    let mut raw = RawWs::connect(addr).await;
    let mut a = vec![b'a'; 1499];
    a.push(0xE2); // a 3-byte sequence begun
    let mut b = vec![0x82]; // its second byte
    b.push(b'z'); // not its third
    b.extend(vec![b'c'; 1500]);
    let mut wire = frame(0x01, &a);
    wire.extend(frame(0x80, &b));
    raw.raw(&wire).await;
    let close = tokio::time::timeout(LIMIT, raw.read_close()).await.expect("no close");
    assert_eq!(close.map(|c| c.0), Some(1007));
}

// ---- 3. compaction of unread messages: order, counts, non-ASCII text ----

/// 300 small messages (non-ASCII text and binary, alternating) sent while the application
/// reads nothing: those past the 64th are copied (`compact`); every one must arrive intact
/// and in order once the application reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_unread_messages_arrive_intact_and_in_order() {
    let (addr, mut channels) = serve_channels(Config::default().keepalive(None)).await;
    let mut raw = RawWs::connect(addr).await;
    let mut ch = next_channel(&mut channels).await;
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    for i in 0..300u32 {
        if i % 2 == 0 {
            let t = format!("{i}: ünïcødé 日本 😀 {}", "é".repeat((i % 50) as usize));
            wire.extend(frame(0x81, t.as_bytes()));
            expected.push((true, t.into_bytes()));
        } else {
            let b = numbered(i, 4 + (i as usize * 3) % 1000);
            wire.extend(frame(0x82, &b));
            expected.push((false, b));
        }
        // Pongs between, so that messages fall in different arena blocks.
        wire.extend(frame(0x8A, &[b'p'; 125]));
    }
    raw.raw(&wire).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got = Vec::new();
    while got.len() < expected.len() {
        match tokio::time::timeout(LIMIT, ch.next()).await.expect("stalled") {
            Some(Event::Message(webchan::Incoming::Text(t))) => {
                got.push((true, t.as_str().as_bytes().to_vec()));
            }
            Some(Event::Message(webchan::Incoming::Binary(b))) => got.push((false, b.to_vec())),
            Some(Event::Open) => {}
            other => panic!("after {} messages: {other:?}", got.len()),
        }
    }
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert!(g == e, "message {i} differs: {:?} vs {:?}", g.1.len(), e.1.len());
    }
}

// ---- 4. Content-Length lists that say 0 ----

async fn upgrade_head(addr: std::net::SocketAddr, extra: &str) -> String {
    upgrade_conn(addr, extra).await.0
}

/// Sends an upgrade request; gives the response head and the connection, kept open.
async fn upgrade_conn(addr: std::net::SocketAddr, extra: &str) -> (String, tokio::net::TcpStream) {
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    tokio::time::timeout(LIMIT, async {
        loop {
            let n = tcp.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await
    .expect("no answer");
    (String::from_utf8_lossy(&buf).to_string(), tcp)
}

/// c314649: "Content-Length 00 or '0, 0' is no body". The same zero length in two fields
/// (RFC 9110 §8.6 lets a recipient take it as the one value), and `000`. (`0, 0` in one
/// field never reaches webchan over hyper: hyper's HTTP/1 parser answers 400 itself.)
#[tokio::test]
async fn an_upgrade_whose_content_length_lists_say_zero_gets_its_101() {
    let addr = serve(Config::default().keepalive(None), echo).await;
    for extra in ["Content-Length: 0\r\nContent-Length: 0\r\n", "Content-Length: 000\r\n"] {
        let head = upgrade_head(addr, extra).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{extra:?}: {head}");
    }
}

// ---- 5. a shutdown's deadline racing the upgrade (multi-thread) ----

/// Channels forced by a zero deadline at every moment around their upgrade (the reply
/// returned after a jittered delay; the shutdown after another): the event stream still keeps
/// its order (at most one `Open`, first; exactly one `Closed`, last), the report counts the
/// channel once, and the client gets either its 101 or a 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_deadline_racing_the_upgrade_keeps_the_event_order() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for trial in 0..400 {
        let shutdown = Shutdown::new();
        let config = Config::default().shutdown(&shutdown).keepalive(None);
        let (tx, mut channels) = tokio::sync::mpsc::unbounded_channel::<Channel>();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = Duration::from_micros(rng.below(1500) as u64);
        tokio::spawn(async move {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let service = service_fn(move |req: Request<Incoming>| {
                let config = config.clone();
                let tx = tx.clone();
                async move {
                    let response: Response<Body> = match webchan::as_channel(req, config) {
                        Ok((reply, channel)) => {
                            let _ = tx.send(channel);
                            spin(hold);
                            reply.await
                        }
                        Err(rejection) => rejection.into_response(),
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service).await;
        });
        let client = tokio::spawn(async move {
            let (head, tcp) = upgrade_conn(addr, "").await;
            (head.lines().next().unwrap_or("").to_owned(), tcp)
        });
        let mut ch = next_channel(&mut channels).await;
        // Jitter below the timer's millisecond: yields, then a busy wait.
        for _ in 0..rng.below(8) {
            tokio::task::yield_now().await;
        }
        spin(Duration::from_micros(rng.below(500) as u64));
        let report = tokio::time::timeout(LIMIT, shutdown.shutdown(Duration::ZERO))
            .await
            .expect("shutdown hung");
        let events = all_events(&mut ch).await;
        let (status, tcp) =
            tokio::time::timeout(LIMIT, client).await.expect("client hung").unwrap();
        drop(tcp);
        assert_eq!(report.clean + report.forced, 1, "trial {trial}: {report:?}");
        let opened = events.iter().any(|e| matches!(e, Event::Open));
        if status.contains("503") {
            assert!(!opened, "trial {trial}: 503 but the channel opened: {events:?}");
        }
        *outcomes.entry(format!("{status} open={opened} forced={}", report.forced)).or_default() +=
            1;
    }
    eprintln!("{outcomes:?}");
}

// ---- 6. a WebSocket over HTTP/2 forced before its reply was returned ----

/// As tests/fix_edges.rs `a_websocket_forced_before_its_reply_was_returned_has_closed_when_
/// shutdown_returns`, over HTTP/2 (RFC 8441): `Closed` (1006) by the time `shutdown` returns,
/// the report (0, 1), and the extended CONNECT then answered 503, not 200; the HTTP/2
/// connection itself goes on (another stream on it gets its answer, a 503 of the shutdown).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_websocket_forced_before_its_reply_was_returned_gets_503() {
    use futures::FutureExt;
    let shutdown = Shutdown::new();
    let config = Config::default().shutdown(&shutdown).keepalive(None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut channels) = tokio::sync::mpsc::unbounded_channel::<Channel>();
    tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else { return };
        let service = service_fn(move |req: Request<Incoming>| {
            let config = config.clone();
            let tx = tx.clone();
            async move {
                let response: Response<Body> = match webchan::as_channel(req, config) {
                    Ok((reply, channel)) => {
                        let _ = tx.send(channel);
                        tokio::time::sleep(Duration::from_millis(800)).await;
                        reply.await
                    }
                    Err(rejection) => rejection.into_response(),
                };
                Ok::<_, Infallible>(response)
            }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder.http2().enable_connect_protocol();
        let _ = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service).await;
    });
    let mut h2 = h2_client(addr).await;
    let mut request = Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("http://{addr}/ws"))
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::new())
        .unwrap();
    request.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
    let answer = tokio::spawn(h2.send_request(request));
    let mut ch = next_channel(&mut channels).await;
    let report = tokio::time::timeout(LIMIT, shutdown.shutdown(Duration::from_millis(100)))
        .await
        .expect("shutdown hung");
    let mut at_return = Vec::new();
    while let Some(Some(e)) = ch.next().now_or_never() {
        at_return.push(e);
    }
    let response = tokio::time::timeout(LIMIT, answer).await.unwrap().unwrap().unwrap();
    let second = tokio::time::timeout(LIMIT, h2.send_request(get(addr, "/after")))
        .await
        .expect("the h2 connection hung")
        .map(|r| r.status());
    assert_eq!((report.clean, report.forced), (0, 1));
    assert!(
        matches!(&at_return[..], [Event::Closed(info)] if info.code == Some(1006)),
        "{at_return:?}"
    );
    assert_eq!(response.status(), 503);
    assert_eq!(second.ok(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
}
