//! Sending a file and a reader, on either kind of channel.
//!
//! Both are read lazily, 16 KiB at a time and only as fast as the client takes them: each
//! piece is one HTTP chunk, or one binary WebSocket message.
//!
//! Run:
//!
//! ```text
//! cargo run --example files
//! PORT=3100 cargo run --example files   # another port (3000 by default)
//! ```
//!
//! Try:
//!
//! ```text
//! curl -i http://127.0.0.1:3000/file                # this source file, chunked
//! curl -N http://127.0.0.1:3000/reader              # lines written by a task, as it writes them
//! curl -s http://127.0.0.1:3000/reader | wc -c      # 20 lines of 64 bytes: 1280
//! websocat --binary ws://127.0.0.1:3000/file        # the same over a WebSocket: binary messages
//! ```

use std::convert::Infallible;
use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::AsyncWriteExt;
use webchan::{Body, Config, Kind, Message, Sender};

/// The file to send: this example's own source.
const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/files.rs");

/// A reader fed by another task: twenty 64-byte lines, one every 100 ms. Any `AsyncRead` works
/// the same way (a process's stdout, a decompressor, a socket...).
fn slow_lines() -> impl tokio::io::AsyncRead + Send + 'static {
    let (mut writer, reader) = tokio::io::duplex(4096);
    tokio::spawn(async move {
        for n in 1..=20 {
            let line = format!("{:<63}\n", format!("line {n} of 20, written by a task"));
            if writer.write_all(line.as_bytes()).await.is_err() {
                return; // the client went away: the reader was dropped
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    reader
}

/// Sends `body` and closes. An HTTP stream gets a `Content-Type` first.
async fn send(sender: Sender, body: Message) {
    let message = if sender.kind() == Kind::HttpStream {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        Message::response(StatusCode::OK, headers, body)
    } else {
        body
    };
    if let Err(error) = sender.send_and_close(message).await {
        eprintln!("send failed: {error}");
    }
}

async fn handle(request: http::Request<Incoming>) -> Result<http::Response<Body>, Infallible> {
    let path = request.uri().path().to_owned();
    let (reply, channel) = match webchan::as_channel(request, Config::default()) {
        Ok(pair) => pair,
        Err(rejection) => return Ok(rejection.into_response()),
    };
    let sender = channel.sender();
    drop(channel); // nothing to receive; the Sender keeps the channel open
    match path.as_str() {
        "/file" => {
            tokio::spawn(send(sender, Message::file(FILE)));
        }
        "/reader" => {
            tokio::spawn(send(sender, Message::reader(slow_lines())));
        }
        _ => {
            let not_found = if sender.kind() == Kind::HttpStream {
                Message::response(StatusCode::NOT_FOUND, HeaderMap::new(), "try /file or /reader\n")
            } else {
                Message::from("try /file or /reader")
            };
            tokio::spawn(async move { sender.send_and_close(not_found).await });
        }
    }
    Ok(reply.await)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port())).await?;
    let port = listener.local_addr()?.port();
    println!("files on http://127.0.0.1:{port}/file and http://127.0.0.1:{port}/reader");
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
