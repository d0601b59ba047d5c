//! A channel whose receiver read large messages itself is freed once its connection ends and
//! its handles are dropped, over HTTP/1.1 and HTTP/2, after a clean close and after the client
//! simply went away (its TCP connection dropped, its HTTP/2 stream reset).
//!
//! Such a receiver reads with a dispatching waker (`ws.rs`, `Dispatch`) that the socket (or the
//! HTTP/2 stream) keeps, and that holds the channel's shared state strongly since stop 35
//! (2026-12-06; a `Weak` before). Were a copy of it kept anywhere past the connection's end, the
//! channel's state would never be freed: this measures the heap the process holds per ended
//! connection (with the counting allocator, so this binary has one test, alone in its process).

#[path = "support/counting.rs"]
mod counting;
mod support;

use std::future::Future;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use support::{echo, h2_client, h2_ws, next_msg, ws_connect, H2Sender, WsMessage};
use webchan::{Config, Shutdown};

/// Messages of this size are read by the receiver itself (larger than a read chunk).
const LARGE: usize = 16 * 1024;
/// Connections measured per way of ending, after as many to warm up (pools, buffers).
const N: usize = 100;

/// `support::serve` with `echo`, its sockets sending at once: over HTTP/2, hyper's frames
/// otherwise wait for delayed acknowledgements (~40 ms per message here).
async fn serve_nodelay(config: Config) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            tcp.set_nodelay(true).unwrap();
            let config = config.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let config = config.clone();
                    async move {
                        let response = match webchan::as_channel(req, config) {
                            Ok((reply, channel)) => {
                                tokio::spawn(echo(channel));
                                reply.await
                            }
                            Err(rejection) => rejection.into_response(),
                        };
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = support::server_builder()
                    .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

/// Echoes a few large messages.
async fn echo_large<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    for i in 0..3u8 {
        let payload = vec![i; LARGE];
        ws.send(WsMessage::Binary(payload.clone().into())).await.unwrap();
        match next_msg(ws).await {
            Some(WsMessage::Binary(b)) => assert_eq!(&b[..], &payload[..]),
            other => panic!("expected the echo, got {other:?}"),
        }
    }
}

/// Waits until every channel is finished (out of the registry), then for the server's tasks to
/// drop what they hold and for a sweep of the keepalive sweeper (at least one a second), which
/// forgets the watches of ended connections.
async fn settle(shutdown: &Shutdown) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while shutdown.live() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(shutdown.live(), 0, "a channel did not end");
    tokio::time::sleep(Duration::from_millis(1200)).await;
}

/// Heap bytes held per connection after `N` more connections made and ended by `one`.
async fn held_per_connection<F, Fut>(shutdown: &Shutdown, mut one: F) -> isize
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    for _ in 0..N {
        one().await;
    }
    settle(shutdown).await;
    let before = counting::live();
    for _ in 0..N {
        one().await;
    }
    settle(shutdown).await;
    (counting::live() - before) / N as isize
}

async fn http1_clean(addr: std::net::SocketAddr) {
    let mut ws = ws_connect(addr, "/").await;
    echo_large(&mut ws).await;
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
}

async fn http1_gone(addr: std::net::SocketAddr) {
    let mut ws = ws_connect(addr, "/").await;
    echo_large(&mut ws).await;
    // Half of a large message, then the socket dropped: the receiver was reading it.
    let mut frame = support::encode_frame(0x82, Some([1, 2, 3, 4]), &vec![7u8; LARGE], None);
    frame.truncate(LARGE / 2);
    let tokio_tungstenite::MaybeTlsStream::Plain(mut tcp) = ws.into_inner() else {
        unreachable!("a plain connection")
    };
    tokio::io::AsyncWriteExt::write_all(&mut tcp, &frame).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
}

async fn http2_clean(mut sender: H2Sender, addr: std::net::SocketAddr) {
    let mut ws = h2_ws(&mut sender, addr, "/").await;
    echo_large(&mut ws).await;
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
}

async fn http2_reset(mut sender: H2Sender, addr: std::net::SocketAddr) {
    let mut ws = h2_ws(&mut sender, addr, "/").await;
    echo_large(&mut ws).await;
    // Dropped: its stream is reset, the HTTP/2 connection stays up.
}

#[tokio::test(flavor = "current_thread")]
async fn ended_channels_that_read_large_messages_hold_nothing() {
    let shutdown = Shutdown::new();
    let addr = serve_nodelay(Config::default().shutdown(&shutdown)).await;
    let mut held = Vec::new();
    held.push(("HTTP/1.1, closed", held_per_connection(&shutdown, || http1_clean(addr)).await));
    held.push(("HTTP/1.1, gone", held_per_connection(&shutdown, || http1_gone(addr)).await));
    // One HTTP/2 connection for every stream (its socket sends at once, as `h2_client` makes
    // it since stop 36).
    let sender = h2_client(addr).await;
    let clean = held_per_connection(&shutdown, || http2_clean(sender.clone(), addr)).await;
    held.push(("HTTP/2, closed", clean));
    let reset = held_per_connection(&shutdown, || http2_reset(sender.clone(), addr)).await;
    held.push(("HTTP/2, reset", reset));
    eprintln!("heap held per ended connection: {held:?}");
    for (how, bytes) in held {
        // A channel's state alone is ~1.5 KiB; allocator noise is a few bytes per connection.
        assert!(bytes < 256, "{how}: {bytes} B held per ended connection");
    }
}
