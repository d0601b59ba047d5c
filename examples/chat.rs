//! A chat room: every WebSocket message goes to every other connected client.
//!
//! Fan-out is a `tokio::sync::broadcast` channel; each connection is two streams put together
//! with `futures` combinators: its own events (in) and the room's broadcast (out, through the
//! channel's `Sink`).
//!
//! Run:
//!
//! ```text
//! cargo run --example chat
//! PORT=3100 cargo run --example chat   # another port (3000 by default)
//! ```
//!
//! Try, from two or more terminals (type a line in one, it shows in the others):
//!
//! ```text
//! websocat ws://127.0.0.1:3000/
//! ```
//!
//! A plain HTTP request (`curl -i http://127.0.0.1:3000/`) gets a 426 asking for a WebSocket.

use std::convert::Infallible;
use std::future::ready;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::{future, stream, Stream, StreamExt};
use http::{header, HeaderMap, HeaderValue, StatusCode};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::sync::broadcast;
use webchan::{Channel, Config, Event, Incoming, Kind, Message, Text};

/// One line said in the room, and who said it. The line is a [`Text`]: each client's copy of
/// the broadcast shares its bytes, and sending it is no copy either.
#[derive(Clone)]
struct Said {
    from: u64,
    line: Text,
}

/// The room's broadcast as a `Stream` (a slow client that falls behind skips what it missed).
fn room_stream(room: &broadcast::Sender<Said>) -> impl Stream<Item = Said> {
    stream::unfold(room.subscribe(), |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(said) => return Some((said, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

async fn client(channel: Channel, room: broadcast::Sender<Said>, me: u64) {
    let (sender, receiver) = channel.split();

    // Out: what the others say, into this channel's Sink. It ends when the channel closes.
    let outgoing = room_stream(&room)
        .filter(move |said| ready(said.from != me))
        .map(|said| Ok(Message::from(said.line)))
        .forward(sender);

    // In: this client's messages, into the room. Ends after `Event::Closed`.
    let incoming = receiver.for_each(|event| {
        match event {
            Event::Message(Incoming::Text(text)) => {
                let _ = room.send(Said { from: me, line: format!("{me}: {text}").into() });
            }
            Event::Closed(info) => println!("client {me} left: {:?}", info.code),
            _ => {}
        }
        ready(())
    });

    // Whichever ends first (the client left, or the channel failed) ends both.
    future::select(pin!(incoming), pin!(outgoing)).await;
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let (room, _) = broadcast::channel::<Said>(256);
    let next_id = Arc::new(AtomicU64::new(1));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port())).await?;
    println!("chat on ws://127.0.0.1:{}", listener.local_addr()?.port());
    loop {
        let (tcp, _) = listener.accept().await?;
        let (room, next_id) = (room.clone(), Arc::clone(&next_id));
        let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let (room, next_id) = (room.clone(), Arc::clone(&next_id));
            async move {
                let (reply, channel) = match webchan::as_channel(request, Config::default()) {
                    Ok(pair) => pair,
                    Err(rejection) => return Ok::<_, Infallible>(rejection.into_response()),
                };
                if channel.kind() == Kind::HttpStream {
                    let mut headers = HeaderMap::new();
                    // RFC 9110 §7.8: an Upgrade header goes with `Connection: upgrade`.
                    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                    let refusal = Message::response(
                        StatusCode::UPGRADE_REQUIRED,
                        headers,
                        "connect with a WebSocket\n",
                    );
                    tokio::spawn(async move { channel.sender().send_and_close(refusal).await });
                } else {
                    let me = next_id.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(client(channel, room, me));
                }
                Ok(reply.await)
            }
        });
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// The port: `PORT`, else 3000.
fn port() -> u16 {
    std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3000)
}
