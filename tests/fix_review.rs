//! A review of stop 30's fixes (4b2b388..8d98f85, 2026-12-06): the edges of the changed code
//! and of the new docs (a stream made outside a runtime, a file's OS error, sends queued
//! before the reply).
#![allow(clippy::too_many_lines)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use webchan::{Body, Channel, Config, Event, Message};

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// `as_channel`'s `# Panics`: "If called outside a tokio runtime for a WebSocket request, or
/// for an HTTP stream with a `Config::timeout`. Nothing of the channel is left behind: its
/// `Shutdown` does not count it." Until the stream's head was made before registering (stop
/// 30), the HTTP stream's case kept its registry entry: `live()` said 1, and a shutdown
/// waited its whole deadline for it.
#[test]
fn http_stream_with_timeout_outside_a_runtime_leaves_nothing_registered() {
    let shutdown = webchan::Shutdown::new();
    let config = Config::default().timeout(Duration::from_secs(30)).shutdown(&shutdown);
    let request = http::Request::builder().uri("/s").body(()).unwrap();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _ = webchan::as_channel(request, config);
    }));
    assert!(panicked.is_err(), "documented: panics outside a runtime");
    let live = shutdown.live();
    let rt = current_thread();
    let started = Instant::now();
    let report = rt.block_on(shutdown.shutdown(Duration::from_secs(2)));
    let took = started.elapsed();
    assert!(
        live == 0 && took < Duration::from_secs(1),
        "a channel that was never made is counted live ({live}), and shutdown() waited {took:?} \
         for it ({report:?})"
    );
}

/// A server whose handler runs `before` on the channel (before returning the reply), then
/// hands the channel to `after` on a task of its own.
async fn serve_before<B, BF>(config: Config, before: B) -> SocketAddr
where
    B: Fn(Channel) -> BF + Send + Sync + Clone + 'static,
    BF: std::future::Future<Output = Channel> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let before = before.clone();
            let config = config.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let before = before.clone();
                    let config = config.clone();
                    async move {
                        let response: Response<Body> = match webchan::as_channel(req, config) {
                            Ok((reply, channel)) => {
                                let channel = before(channel).await;
                                // Keep the channel (and its Sender) alive, unflushed, for 5 s.
                                tokio::spawn(async move {
                                    tokio::time::sleep(Duration::from_secs(5)).await;
                                    drop(channel);
                                });
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
    addr
}

/// README (new in 8d98f85): "`try_send`, or the `Sink`'s `feed`, only queue, and may come
/// first: they go out once the reply has." A WebSocket message fed before the reply, its
/// Sender kept (not dropped, not flushed): it must reach the client.
#[tokio::test]
async fn ws_fed_before_the_reply_goes_out_once_the_reply_has() {
    let addr = serve_before(Config::default(), |mut channel: Channel| async move {
        channel.feed(Message::from("fed first")).await.unwrap();
        channel
    })
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(3), ws.next()).await;
    match got {
        Ok(Some(Ok(m))) => assert_eq!(m, support::WsMessage::text("fed first")),
        other => panic!("the fed message never came within 3 s: {other:?}"),
    }
}

/// The same with `try_send` (documented too), as a control.
#[tokio::test]
async fn ws_try_sent_before_the_reply_goes_out_once_the_reply_has() {
    let addr = serve_before(Config::default(), |channel: Channel| async move {
        drop(channel.sender().try_send("queued first".into()).unwrap());
        channel
    })
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(3), ws.next()).await;
    match got {
        Ok(Some(Ok(m))) => assert_eq!(m, support::WsMessage::text("queued first")),
        other => panic!("the queued message never came within 3 s: {other:?}"),
    }
}

/// An HTTP stream: a chunk fed before the reply goes out once the reply has (its head then).
#[tokio::test]
async fn http_stream_fed_before_the_reply_goes_out_once_the_reply_has() {
    let addr = serve_before(Config::default(), |mut channel: Channel| async move {
        channel.feed(Message::from("fed first\n")).await.unwrap();
        channel
    })
    .await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET /s HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("fed first") {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("fed first"), "the fed chunk never came within 3 s: {text:?}");
}

/// A file that cannot be opened names its path, and the OS error stays reachable along the
/// chain (an EMFILE or ENFILE has no `ErrorKind` of its own). The first fix (8d98f85) made the
/// error "path: msg" text, and the OS error's code was gone.
#[tokio::test]
async fn a_file_that_cannot_be_opened_keeps_its_os_error() {
    let (addr, mut channels) = support::serve_channels(Config::default()).await;
    let _ws = support::ws_connect(addr, "/ws").await;
    let mut channel = support::next_channel(&mut channels).await;
    assert!(matches!(support::next_of(&mut channel).await, Some(Event::Open)));
    let missing = std::env::temp_dir().join("webchan-review-g-no-such-file");
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        channel.sender().send(Message::file(&missing)),
    )
    .await
    .expect("the send of a missing file did not resolve");
    let error = result.expect_err("a missing file's send succeeded");
    let webchan::Error::Io(io) = &error else { panic!("not an Io error: {error:?}") };
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    assert!(error.to_string().contains("webchan-review-g-no-such-file"), "{error}");
    // The OS's own error: its code, through the io::Error or its wrapped error.
    // (The io::Error itself, or an io::Error in its inner error's chain.)
    let mut code = io.raw_os_error();
    let mut next: Option<&(dyn std::error::Error + 'static)> =
        io.get_ref().map(|e| e as &(dyn std::error::Error + 'static));
    while let (None, Some(e)) = (code, next) {
        code = e.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error);
        next = e.source();
    }
    assert_eq!(code, Some(2), "the OS error (ENOENT) is lost: {io:?}");
}
