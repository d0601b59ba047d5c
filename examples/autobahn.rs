//! An echo server for the Autobahn WebSocket conformance suite: every text and binary message
//! comes back unchanged, through the public `Channel` API.
//!
//! ```sh
//! cargo run --release --example autobahn            # ws://127.0.0.1:9001
//! ../shared/tools/autobahn/run.sh ws://127.0.0.1:9001
//! ```
//!
//! `PORT` sets the port, `DEFLATE=1` turns permessage-deflate on (`DEFLATE=reset`: on, and
//! every client told to compress each message on its own, `Config::deflate_client_context`),
//! `PROTOCOLS=a,b` lists the subprotocols to choose from. `scripts/autobahn.sh` runs the suite against it.

use std::convert::Infallible;

use futures::{SinkExt, StreamExt};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use webchan::{Config, Event};

async fn echo(channel: webchan::Channel) {
    if channel.kind() == webchan::Kind::HttpStream {
        // A plain request: no message will come, so say what this server is, and end.
        let _ = channel.sender().send_and_close(refusal()).await;
        return;
    }
    // Forward every incoming message to the sink; the sink batches and flushes once per
    // wake-up.
    let (mut sender, receiver) = channel.split();
    let mut messages = receiver.filter_map(|event| {
        futures::future::ready(match event {
            Event::Message(m) => Some(Ok(m.into())),
            _ => None,
        })
    });
    let _ = sender.send_all(&mut messages).await;
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(9001);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    // The port bound (`PORT=0`: one the system chose; the browser test reads it here).
    let port = listener.local_addr()?.port();
    println!("autobahn echo server on ws://127.0.0.1:{port}");
    // Autobahn's limit cases send messages up to 16 MiB.
    let config = Config::default().max_message_size(64 << 20).max_frame_size(64 << 20);
    // `DEFLATE=1`: permessage-deflate (Autobahn's chapters 12 and 13 then run); `reset`: and
    // clients told not to keep their compression context.
    let deflate = std::env::var("DEFLATE").unwrap_or_default();
    let mut config = config
        .permessage_deflate(deflate == "1" || deflate == "reset")
        .deflate_client_context(deflate != "reset");
    // `PROTOCOLS=a,b`: the subprotocols to choose from (`Config::protocols`).
    if let Some(list) = std::env::var("PROTOCOLS").ok().filter(|l| !l.is_empty()) {
        config = config.protocols(list.split(','));
    }
    loop {
        let (tcp, _) = listener.accept().await?;
        let config = config.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let config = config.clone();
                async move {
                    Ok::<_, Infallible>(match webchan::as_channel(request, config) {
                        Ok((reply, channel)) => {
                            tokio::spawn(echo(channel));
                            reply.await
                        }
                        Err(rejection) => rejection.into_response(),
                    })
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// The answer to a plain HTTP request: 426, with the headers RFC 9110 §7.8 asks for.
fn refusal() -> webchan::Message {
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::UPGRADE, http::HeaderValue::from_static("websocket"));
    headers.insert(http::header::CONNECTION, http::HeaderValue::from_static("upgrade"));
    let text = "an echo server for Autobahn: connect with a WebSocket\n";
    webchan::Message::response(http::StatusCode::UPGRADE_REQUIRED, headers, text)
}
