//! An echo server for the Autobahn WebSocket conformance suite written with the callback API
//! ([`webchan::compat`]): `on_message` sends every text and binary message back unchanged.
//!
//! ```sh
//! cargo run --release --example autobahn_compat     # ws://127.0.0.1:9002
//! ../shared/tools/autobahn/run.sh ws://127.0.0.1:9002
//! ```
//!
//! `PORT` sets the port (`PORT=0`: one the system chooses; the address line says which),
//! `DEFLATE=1` turns permessage-deflate on. `scripts/autobahn.sh` runs the suite against it.

use std::convert::Infallible;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use webchan::compat::{self, Options, SendOptions};
use webchan::Config;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(9002);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    // The port bound (`PORT=0`: one the system chose; scripts/autobahn.sh reads it here).
    let port = listener.local_addr()?.port();
    println!("autobahn compat echo server on ws://127.0.0.1:{port}");
    // Autobahn's limit cases send messages up to 16 MiB.
    let options = Options::new()
        .config(
            Config::default()
                .max_message_size(64 << 20)
                .max_frame_size(64 << 20)
                // `DEFLATE=1`: permessage-deflate (Autobahn's chapters 12 and 13 then run).
                .permessage_deflate(std::env::var("DEFLATE").is_ok_and(|v| v == "1")),
        )
        .queue_limit(64 << 20)
        .on_open(|ch| {
            if ch.kind() == webchan::Kind::HttpStream {
                // A plain request: no message will come, so say what this server is, and end.
                let mut headers = http::HeaderMap::new();
                headers.insert(http::header::UPGRADE, http::HeaderValue::from_static("websocket"));
                headers.insert(http::header::CONNECTION, http::HeaderValue::from_static("upgrade"));
                let text = "an echo server for Autobahn: connect with a WebSocket\n";
                let refusal =
                    webchan::Message::response(http::StatusCode::UPGRADE_REQUIRED, headers, text);
                let _ = ch.send(refusal, SendOptions::new().close(true));
            }
        })
        .on_message(|ch, message| {
            let _ = ch.send(message, SendOptions::new());
        });
    loop {
        let (tcp, _) = listener.accept().await?;
        let options = options.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let options = options.clone();
                async move { Ok::<_, Infallible>(compat::as_channel(request, options).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                .await;
        });
    }
}
