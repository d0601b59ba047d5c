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
//!   Through the `Sink`, as its contract says, a message is sure to go out once flushed
//!   (`SinkExt::send` and `send_all` flush; see [`Sender`]).
//! - `Closed` carries the cause: the peer's code and reason; 1006 for a dropped connection;
//!   1000 when the server closes; 1002/1007/1009 for protocol errors, invalid UTF-8 and
//!   oversized messages; no code for HTTP streams.
//! - Backpressure: the sink waits while the outgoing queue is at or over
//!   [`Config::queue_limit`]; a slow client never makes the server buffer without bound.
//!
//! ## A WebSocket: echo, with a greeting
//!
//! ```
//! use futures::StreamExt;
//! use webchan::{Channel, Event};
//!
//! async fn chat(mut channel: Channel) {
//!     while let Some(event) = channel.next().await {
//!         let sent = match event {
//!             Event::Open => channel.send("welcome".into()).await,
//!             Event::Message(message) => channel.send(message.into()).await,
//!             Event::Error(error) => {
//!                 eprintln!("channel error: {error}");
//!                 Ok(())
//!             }
//!             Event::Closed(info) => {
//!                 println!("closed: {:?} {:?}", info.code, info.reason);
//!                 Ok(())
//!             }
//!             _ => Ok(()),
//!         };
//!         if sent.is_err() {
//!             break;
//!         }
//!     }
//! }
//! ```
//!
//! ## An HTTP stream: a counter, one line a second, then the end of the response
//!
//! ```
//! use std::time::Duration;
//! use webchan::{Channel, Message};
//!
//! async fn counter(channel: Channel) -> Result<(), webchan::Error> {
//!     let sender = channel.sender();
//!     let mut headers = http::HeaderMap::new();
//!     headers.insert("content-type", http::HeaderValue::from_static("text/plain"));
//!     // The first send may set the status and headers: the head waits for it.
//!     sender.send(Message::response(http::StatusCode::OK, headers, "counting\n")).await?;
//!     for i in 1..=3 {
//!         tokio::time::sleep(Duration::from_secs(1)).await;
//!         sender.send(format!("{i}\n").into()).await?;
//!     }
//!     sender.close().await;
//!     Ok(())
//! }
//! ```
//!
//! ## Serving: one handler for both kinds, with hyper
//!
//! ```no_run
//! use std::convert::Infallible;
//! use hyper::service::service_fn;
//! use hyper_util::rt::{TokioExecutor, TokioIo};
//! use webchan::{Channel, Config, Kind};
//! # async fn chat(_: Channel) {}
//! # async fn counter(_: Channel) -> Result<(), webchan::Error> { Ok(()) }
//!
//! async fn handle(
//!     request: http::Request<hyper::body::Incoming>,
//! ) -> Result<http::Response<webchan::Body>, Infallible> {
//!     let (reply, channel) = match webchan::as_channel(request, Config::default()) {
//!         Ok(pair) => pair,
//!         // A malformed WebSocket upgrade: 400/405/426 with the reason.
//!         Err(rejection) => return Ok(rejection.into_response()),
//!     };
//!     match channel.kind() {
//!         Kind::WebSocket => drop(tokio::spawn(chat(channel))),
//!         _ => drop(tokio::spawn(counter(channel))),
//!     }
//!     Ok(reply.await)
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     loop {
//!         let (tcp, _) = listener.accept().await?;
//!         tokio::spawn(async move {
//!             let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
//!                 .serve_connection_with_upgrades(TokioIo::new(tcp), service_fn(handle))
//!                 .await;
//!         });
//!     }
//! }
//! ```
//!
//! ## What happens to bad input
//!
//! - A malformed WebSocket upgrade gets no channel: [`as_channel`] returns a [`Rejection`]
//!   whose response says why (400; 405 for a method other than GET; 426 with
//!   `Sec-WebSocket-Version: 13` for another version).
//! - A protocol violation closes the WebSocket with the RFC 6455 code (1002, 1007 for invalid
//!   UTF-8, 1009 for a message over [`Config::max_message_size`]) after an [`Event::Error`].
//! - A panic in a message source (a reader or a stream being sent) fails that send with
//!   [`Error::Panicked`]; the connection goes on. A panic in a source's `Drop` (once it
//!   ended, or when a failed send or a closing channel discards it) is caught and logged
//!   (`tracing::error!`, with its text; so is the first kind): it fails nothing that was sent
//!   whole.
//! - Every accepted send completes or reports its error: to the caller that waits for it, or
//!   else as an [`Event::Error`]; sends still queued when a channel closes fail with
//!   [`Error::Closed`].
//!
//! ## What it logs
//!
//! Through [`tracing`](https://docs.rs/tracing), under the targets `webchan::*` (`webchan::ws`,
//! `webchan::stream`, `webchan::compat`, ...). What a peer does is logged at `debug` only, at
//! most a couple of lines per connection however much it sends (a close, a dropped
//! connection, a protocol violation, a keepalive that gave up), and what it sent appears
//! escaped (`Debug` formatting). `warn`: a server set up wrong (served without upgrades, or a
//! layer that dropped the request's extensions: the first such WebSocket in the process), a
//! close code the application may not send, a shutdown that had to force channels off, the
//! keepalive thread not starting. `error`: a panic in the application's code (a message
//! source, a source's `Drop`, a `compat` callback with no `on_error`), with its text. A
//! WebSocket's connection task, an HTTP stream's body (polled by hyper's task) and `compat`'s
//! callbacks run in the span that was current when [`as_channel`] was called: a handler's span
//! (a peer's address, a request id) is on what they log.
//!
//! ## Memory
//!
//! Each WebSocket is driven by one task, with its own frame codec whose read and write buffers
//! (4 KiB each) go back to a small per-thread pool once the connection is idle: an idle
//! WebSocket channel costs about 4 KiB of server RSS (measured with 5,000 connections:
//! `scripts/idle-rss.sh`), against ~135 KiB for tokio-tungstenite with its default 128 KiB
//! read buffer. With keepalive on (the default), a connection in a conversation keeps its two
//! buffers from one message to the next, and gives them back when a sweep of the keepalive
//! thread finds its peer silent (within two seconds); at most 256 connections keep theirs at
//! once (2 MiB), and a connection that only opened keeps none. An HTTP stream has no task of
//! its own (hyper's connection task polls its body).
#![doc(test(attr(deny(warnings), allow(dead_code))))]
#![deny(missing_docs)]

mod bufpool;
mod channel;
mod charset;
pub mod compat;
mod config;
mod data;
mod deflate;
mod error;
mod event;
mod frame;
mod head;
mod keepalive;
mod message;
mod negotiate;
mod shared;
mod shutdown;
pub mod sse;
mod stream;
mod ws;

pub use channel::{Channel, Completion, Kind, Receiver, Sender};
pub use config::Config;
pub use data::{BodyData, BytesBody};
pub use error::{Error, Result};
pub use event::{CloseInfo, Event, Incoming, Text};
pub use message::{Message, ResponseHead, CHUNK_SIZE};
pub use negotiate::{as_channel, Rejection, Reply};
pub use shutdown::{Shutdown, ShutdownReport};
pub use stream::Body;

/// The `http` crate (1.x) whose types this crate's API takes and gives (`Request`, `Parts`,
/// `HeaderMap`, `StatusCode`), re-exported so that its version always matches.
pub use http;

/// The `bytes` crate (1.x) whose `Bytes` messages and bodies carry, re-exported likewise.
pub use bytes;
