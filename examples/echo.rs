//! Echo, over both kinds of channel, with the same handler.
//!
//! Run:
//!
//! ```text
//! cargo run --example echo
//! PORT=3100 cargo run --example echo   # another port (3000 by default)
//! ```
//!
//! Try, from another terminal:
//!
//! ```text
//! websocat ws://127.0.0.1:3000/      # a WebSocket: every message you type comes back
//! curl -i http://127.0.0.1:3000/hi   # an HTTP stream: the request line comes back, then the end
//! ```
//!
//! Or, in a browser's console on any `http://127.0.0.1:3000` page:
//! `ws = new WebSocket("ws://127.0.0.1:3000"); ws.onmessage = e => console.log(e.data); ws.onopen = () => ws.send("hi")`.

use std::convert::Infallible;
use std::future::ready;

use futures::StreamExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use webchan::{Body, Config, Event, Kind};

async fn handle(request: http::Request<Incoming>) -> Result<http::Response<Body>, Infallible> {
    let line = format!("{} {}\n", request.method(), request.uri());
    let (reply, channel) = match webchan::as_channel(request, Config::default()) {
        Ok(pair) => pair,
        Err(rejection) => return Ok(rejection.into_response()), // a malformed upgrade: 4xx
    };
    tokio::spawn(async move {
        if channel.kind() == Kind::HttpStream {
            // Nothing comes in on an HTTP stream: echo the request line, as one response.
            let _ = channel.sender().send_and_close(line.into()).await;
            return;
        }
        // A WebSocket: every incoming message goes back out, through the Sink half.
        let (sender, receiver) = channel.split();
        let messages = receiver.filter_map(|event| {
            ready(match event {
                Event::Message(message) => Some(Ok(message.into())),
                _ => None,
            })
        });
        let _ = messages.forward(sender).await;
    });
    Ok(reply.await)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port())).await?;
    let port = listener.local_addr()?.port();
    println!("echo on http://127.0.0.1:{port} (ws://127.0.0.1:{port})");
    loop {
        let (tcp, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tcp), service_fn(handle))
                .await;
        });
    }
}

/// The port: `PORT`, else 3000.
fn port() -> u16 {
    std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3000)
}
