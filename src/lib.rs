//! # webchan
//!
//! One channel abstraction for WebSockets and HTTP streaming on tokio and hyper 1.x.
//!
//! A request handled by [`as_channel`] becomes a [`Channel`]: a WebSocket when the request is
//! a WebSocket upgrade, an HTTP stream (a streamed response body) otherwise. Either way the
//! channel is a [`Stream`](futures_core::Stream) of [`Event`]s — [`Open`](Event::Open),
//! [`Message`](Event::Message), [`Error`](Event::Error), [`Closed`](Event::Closed) — and a
//! [`Sink`](futures_sink::Sink) of [`Message`]s, so the code that uses it is the same.
//!
//! The [`compat`] module rebuilds the callback API of Clojure's `immutant.web.async` on top.
//!
//! ## Guarantees
//!
//! - Events: at most one `Open`, first; no message before it; exactly one `Closed`, last;
//!   then the stream ends.
//! - Every accepted send completes or fails with an error; none hangs, also when the channel
//!   closes mid-send. Sends go out in the order they were made, a sequence's items included.
//! - `Closed` carries the cause: the peer's code and reason; 1006 for a dropped connection;
//!   1000 when the server closes; 1002/1007/1009 for protocol errors, invalid UTF-8 and
//!   oversized messages; no code for HTTP streams.
//! - Backpressure: the sink waits while the outgoing queue is over
//!   [`Config::queue_limit`]; a slow client never makes the server buffer without bound.
//!
//! ## Example: a WebSocket or HTTP stream server
//!
//! ```no_run
//! use std::convert::Infallible;
//! use futures::StreamExt;
//! use hyper::server::conn::http1;
//! use hyper::service::service_fn;
//! use hyper_util::rt::TokioIo;
//! use webchan::{Config, Event};
//!
//! async fn handle(
//!     request: http::Request<hyper::body::Incoming>,
//! ) -> Result<http::Response<webchan::Body>, Infallible> {
//!     let (reply, mut channel) = match webchan::as_channel(request, Config::default()) {
//!         Ok(pair) => pair,
//!         Err(rejection) => return Ok(rejection.into_response()),
//!     };
//!     tokio::spawn(async move {
//!         while let Some(event) = channel.next().await {
//!             match event {
//!                 // An HTTP stream gets one message and ends; a WebSocket echoes.
//!                 Event::Open if channel.kind() == webchan::Kind::HttpStream => {
//!                     let _ = channel.sender().send_and_close("hello\n".into()).await;
//!                 }
//!                 Event::Message(message) => {
//!                     let _ = channel.send(message.into()).await;
//!                 }
//!                 _ => {}
//!             }
//!         }
//!     });
//!     Ok(reply.await)
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     loop {
//!         let (tcp, _) = listener.accept().await?;
//!         tokio::spawn(async move {
//!             let connection = http1::Builder::new()
//!                 .serve_connection(TokioIo::new(tcp), service_fn(handle))
//!                 .with_upgrades();
//!             let _ = connection.await;
//!         });
//!     }
//! }
//! ```
#![doc(test(attr(deny(warnings))))]
#![deny(missing_docs)]

mod channel;
mod charset;
pub mod compat;
mod config;
mod error;
mod event;
mod message;
mod negotiate;
mod shared;
mod stream;
mod ws;

pub use channel::{Channel, Completion, Kind, Receiver, Sender};
pub use config::Config;
pub use error::{Error, Result};
pub use event::{CloseInfo, Event, Incoming, Text};
pub use message::{Message, ResponseHead, CHUNK_SIZE};
pub use negotiate::{as_channel, Rejection, Reply};
pub use stream::Body;
