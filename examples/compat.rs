//! A WebSocket echo and an HTTP streaming counter, written only with the callbacks of
//! [`webchan::compat`] (the API of Clojure's `immutant.web.async`).
//!
//! Run it (the port comes from `PORT`, 3001 by default):
//!
//! ```text
//! cargo run --example compat
//! PORT=8080 cargo run --example compat
//! ```
//!
//! Then try it:
//!
//! ```text
//! curl -N http://127.0.0.1:3001/           # counts 1 to 10, one line every 100 ms, then ends
//! curl -i http://127.0.0.1:3001/once       # one line, a plain response with Content-Length
//! websocat ws://127.0.0.1:3001/            # every line you type comes back; "bye" closes
//! ```
//!
//! Without websocat, any WebSocket client does, e.g. in a browser console:
//! `ws = new WebSocket("ws://127.0.0.1:3001/"); ws.onmessage = e => console.log(e.data);
//! ws.send("hi")`.

use std::convert::Infallible;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use webchan::compat::{self, Handle, Options, SendOptions};
use webchan::{Incoming, Kind, Message};

/// HTTP stream: a counter, one line every 100 ms, closed after ten.
fn count(ch: &Handle) {
    if ch.originating_request().uri.path() == "/once" {
        // `close` on the first send: an ordinary response with Content-Length.
        let _ = ch.send("just once\n", SendOptions::new().close(true));
        return;
    }
    // The first send may be a response head: status, headers and a first body message.
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/plain; charset=utf-8"));
    let _ = ch.send(Message::response(StatusCode::OK, headers, "counting\n"), SendOptions::new());
    let ch = ch.clone();
    tokio::spawn(async move {
        for i in 1..=10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let last = i == 10;
            let options = SendOptions::new()
                .close(last)
                .on_error(|error| eprintln!("a line was not sent: {error}"));
            // Ok(false): the client went away, the channel is closed.
            if !matches!(ch.send(format!("{i}\n"), options), Ok(true)) {
                return;
            }
        }
    });
}

/// WebSocket: every message comes back; "bye" closes with a reason.
fn echo(ch: &Handle, message: Incoming) {
    if matches!(&message, Incoming::Text(text) if text.trim() == "bye") {
        ch.close_with(1000, "bye to you too");
        return;
    }
    if let Err(error) = ch.send(message, SendOptions::new()) {
        eprintln!("echo refused: {error}");
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3001);
    let options = Options::new()
        .on_open(|ch| {
            let r = ch.originating_request();
            println!("open: {:?} {} {}", ch.kind(), r.method, r.uri);
            if ch.kind() == Kind::HttpStream {
                count(ch);
            }
        })
        .on_message(echo)
        .on_error(|ch, error| eprintln!("error on {}: {error}", ch.originating_request().uri))
        .on_close(|ch, info| {
            println!(
                "closed: {} code={:?} reason={:?}",
                ch.originating_request().uri,
                info.code,
                info.reason
            )
        })
        .timeout(Duration::from_secs(300));

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "listening on http://127.0.0.1:{port}/ (HTTP stream) and ws://127.0.0.1:{port}/ (echo)"
    );
    loop {
        let (tcp, _) = listener.accept().await?;
        let options = options.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let mut response = compat::as_channel(request, options.clone());
                response.headers_mut().insert("x-example", HeaderValue::from_static("compat"));
                async move { Ok::<_, Infallible>(response.await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                .await;
        });
    }
}
