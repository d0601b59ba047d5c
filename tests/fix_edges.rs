//! The edges of stop 29's own fixes (2026-12-05), found by a review of them: the shutdown
//! report's forced count and a WebSocket forced before its reply was returned, the upgrade's
//! body check, `Message::quiet` with a panic payload that panics and with a refused send, the
//! compat gate on a multi-thread runtime. Over real sockets on 127.0.0.1.
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
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
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
/// source's panic, then drops the payload, and that panic escapes (out of `Shared::finish`,
/// which holds the queue). lib.rs: "A panic in a source's `Drop` (...) is caught and logged:
/// it fails nothing that was sent whole"; the channel must still report `Closed`.
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
/// hands the request over with an empty body). The body check compares the bytes with `0`
/// and answers 400 "a WebSocket upgrade request has no body" to a request that has none.
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
/// stream is refused at once (`InvalidMessage`): `send` discards it unwrapped (it is wrapped
/// in `Quiet` only once queued), so its drop's panic comes out of `send` into the
/// application's task instead of the `Err` the docs promise.
#[tokio::test]
async fn a_refused_send_discards_its_source_under_the_same_guard() {
    struct PanickyDrop;
    impl AsyncRead for PanickyDrop {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
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
