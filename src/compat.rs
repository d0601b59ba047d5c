//! The callback API of Clojure's `immutant.web.async`, rebuilt on the Stream/Sink channel.
//!
//! [`as_channel`] turns a request into a channel, as [`crate::as_channel`] does, but instead of
//! a [`Channel`](crate::Channel) to poll, it takes callbacks ([`Options`]) and calls them from
//! a task of its own for each channel: one callback at a time and in order for a channel
//! (different channels' callbacks run at the same time). Callbacks get a [`Handle`]: cheap to
//! clone, `Send + Sync`, usable from any thread or task, also after the handler returned.
//!
//! This module uses only the crate's public API: everything here can be written with the
//! [`Channel`](crate::Channel) directly, as the table shows.
//!
//! # The spec's API, this module, and the Stream/Sink equivalent
//!
//! | `immutant.web.async` | `webchan::compat` | `webchan` (Stream/Sink) |
//! |---|---|---|
//! | `(as-channel request opts)` | [`as_channel(request, options)`](as_channel) → [`ResponseFuture`] | [`crate::as_channel(request, config)`](crate::as_channel) → `(Reply, Channel)` |
//! | the returned response map | `ResponseFuture.await` → `Response<Body>` | `reply.await` |
//! | `:headers` of the handler's response | [`ResponseFuture::headers_mut`] | [`Reply::headers_mut`](crate::Reply::headers_mut) |
//! | `:on-open (fn [ch])` | [`Options::on_open`] | [`Event::Open`] |
//! | `:on-message (fn [ch msg])` | [`Options::on_message`] | [`Event::Message`] |
//! | `:on-error (fn [ch throwable])` | [`Options::on_error`] | [`Event::Error`] |
//! | `:on-close (fn [ch {:keys [code reason]}])` | [`Options::on_close`] | [`Event::Closed`] |
//! | `:timeout` (milliseconds, 0 = none) | [`Options::timeout`] (a `Duration`, zero = none) | [`Config::timeout`] |
//! | `(send! ch msg)` → `true` | [`Handle::send`] → `Ok(true)` | [`Sender::try_send`](crate::Sender::try_send) → `Ok(Completion)`, or the [`Sink`](futures_sink::Sink) |
//! | `send!` → `nil` (channel closed) | `Ok(false)`, no callback | `Err((Error::Closed, message))` |
//! | `send!` throws (a map where it is not allowed) | `Err(Error::InvalidMessage)`, no callback | `Err((Error::InvalidMessage, message))` |
//! | `:close? true` | [`SendOptions::close`] | [`Sender::try_send_and_close`](crate::Sender::try_send_and_close) |
//! | `:on-success (fn [])` | [`SendOptions::on_success`] | the [`Completion`] resolves to `Ok(())` |
//! | `:on-error (fn [throwable])` of `send!` | [`SendOptions::on_error`] | the `Completion` resolves to `Err(error)` |
//! | `(close ch)` | [`Handle::close`] | [`Sender::start_close`](crate::Sender::start_close), [`Sender::close`](crate::Sender::close) |
//! | `(open? ch)` | [`Handle::is_open`] | [`Channel::is_open`](crate::Channel::is_open) |
//! | `(originating-request ch)` | [`Handle::originating_request`] | [`Channel::originating_request`](crate::Channel::originating_request) |
//!
//! # Order of callbacks
//!
//! All callbacks of one channel run on one task, one at a time:
//!
//! - `on_open` first, once (for a WebSocket after the `101` went out and before any
//!   `on_message`; for an HTTP stream once its [`ResponseFuture`] is awaited, before any byte
//!   of the response is written unless a send made on [`ResponseFuture::handle`] came first,
//!   so a first [`Message::Response`] sent from it still sets the status and headers; never for
//!   a channel whose response was dropped unawaited);
//! - then `on_message`, `on_error`, and the sends' `on_success`/`on_error`, the latter in the
//!   order the sends were made (across threads: the order in which [`Handle::send`] calls
//!   took the handle's lock);
//! - `on_close` last, once, for every kind of close (local, peer, timeout, error, dropped
//!   connection), after the `on_success`/`on_error` of every send made before it; the channel
//!   is already closed when it runs. An error that forces a close calls `on_error`, then
//!   `on_close`.
//!
//! The only callback that can follow `on_close` is `on_error` reporting a panic of `on_close`
//! itself.
//!
//! # Errors and panics in callbacks
//!
//! A callback that panics does not kill the channel's task, the connection or the server: the
//! panic is caught and given to `on_error` as [`Error::Panicked`] (if `on_error` itself
//! panics, that panic is logged with `tracing::error!`). A send's `on_success` and `on_error`
//! may also return an error (any closure returning `()` or `Result<(), E>` works, see
//! [`CallbackResult`]): the spec's "if this callback throws an exception, it will be reported
//! to the as-channel `:on-error` callback". Such an error reaches `on_error` as
//! [`Error::Callback`], which names the callback and holds the error.
//!
//! Errors with no `on_error` to go to are logged: a callback's panic with `tracing::error!`,
//! others with `tracing::debug!` (a message source's panic among them: it was logged with
//! `tracing::error!` where it was caught).
//!
//! # Example
//!
//! An echo over WebSocket; a greeting over HTTP:
//!
//! ```no_run
//! use std::convert::Infallible;
//! use hyper::service::service_fn;
//! use hyper_util::rt::{TokioExecutor, TokioIo};
//! use webchan::compat::{self, Options, SendOptions};
//! use webchan::Kind;
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let options = Options::new()
//!         .on_open(|ch| {
//!             if ch.kind() == Kind::HttpStream {
//!                 let _ = ch.send("hello\n", SendOptions::new().close(true));
//!             }
//!         })
//!         .on_message(|ch, message| {
//!             let _ = ch.send(message, SendOptions::new());
//!         })
//!         .on_close(|_ch, info| println!("closed: {info:?}"));
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     loop {
//!         let (tcp, _) = listener.accept().await?;
//!         let options = options.clone();
//!         tokio::spawn(async move {
//!             let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
//!                 let response = compat::as_channel(request, options.clone());
//!                 async move { Ok::<_, Infallible>(response.await) }
//!             });
//!             let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
//!                 .serve_connection_with_upgrades(TokioIo::new(tcp), service)
//!                 .await;
//!         });
//!     }
//! }
//! ```

use std::fmt;
use std::future::{poll_fn, Future};
use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use http::request::Parts;
use http::{HeaderMap, Request, Response, StatusCode};
use tokio::sync::mpsc;

use crate::{
    Body, CloseInfo, Completion, Config, Error, Event, Incoming, Kind, Message, Receiver, Reply,
    Sender,
};

/// The default byte limit of a compat channel's send queue: 16 MiB. See
/// [`Options::queue_limit`].
pub const DEFAULT_QUEUE_LIMIT: usize = 16 * 1024 * 1024;

/// A boxed error, as a send callback may return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type OnOpen = Arc<dyn Fn(&Handle) + Send + Sync>;
type OnMessage = Arc<dyn Fn(&Handle, Incoming) + Send + Sync>;
type OnError = Arc<dyn Fn(&Handle, Error) + Send + Sync>;
type OnClose = Arc<dyn Fn(&Handle, CloseInfo) + Send + Sync>;
type OnSuccess = Box<dyn FnOnce() -> Result<(), BoxError> + Send>;
type OnSendError = Box<dyn FnOnce(Error) -> Result<(), BoxError> + Send>;

/// The options of [`as_channel`]: the channel's callbacks, its timeout and its send queue's
/// byte limit. Every callback is optional.
///
/// Cheap to clone (the callbacks are shared), so one value can serve every request.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use webchan::compat::{Options, SendOptions};
///
/// let options = Options::new()
///     .on_open(|ch| {
///         let _ = ch.send("welcome", SendOptions::new());
///     })
///     .on_message(|ch, message| {
///         let _ = ch.send(message, SendOptions::new());
///     })
///     .on_error(|_ch, error| eprintln!("channel error: {error}"))
///     .on_close(|_ch, info| eprintln!("closed: {:?} {:?}", info.code, info.reason))
///     .timeout(Duration::from_secs(60));
/// assert_eq!(options.timeout_duration(), Duration::from_secs(60));
/// ```
#[derive(Clone, Default)]
#[must_use]
pub struct Options {
    on_open: Option<OnOpen>,
    on_message: Option<OnMessage>,
    on_error: Option<OnError>,
    on_close: Option<OnClose>,
    config: Option<Config>,
    timeout: Option<Duration>,
    queue_limit: Option<usize>,
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("on_open", &self.on_open.is_some())
            .field("on_message", &self.on_message.is_some())
            .field("on_error", &self.on_error.is_some())
            .field("on_close", &self.on_close.is_some())
            .field("timeout", &self.timeout_duration())
            .field("queue_limit", &self.queue_limit_bytes())
            .finish_non_exhaustive()
    }
}

impl Options {
    /// Options with no callbacks, no timeout and a send queue limit of
    /// [`DEFAULT_QUEUE_LIMIT`].
    ///
    /// # Examples
    ///
    /// ```
    /// let options = webchan::compat::Options::new();
    /// assert!(options.timeout_duration().is_zero());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the spec's `:on-open`: called once, when the channel is available for sending.
    ///
    /// For a WebSocket that is after the `101` went out, and before any `on_message`; for an
    /// HTTP stream, once its [`ResponseFuture`] is awaited, and before any byte of the
    /// response was written (a [`Message::Response`] sent from here still sets the status and
    /// headers) unless a send made on [`ResponseFuture::handle`] came first. A WebSocket whose
    /// upgrade does not complete never opens: it gets `on_error` and `on_close` only; nor does
    /// an HTTP stream whose `ResponseFuture` is dropped unawaited (a handler that answers with
    /// a response of its own): it gets `on_close` only. The default is none.
    ///
    /// # Examples
    ///
    /// ```
    /// use webchan::compat::{Options, SendOptions};
    ///
    /// let options = Options::new().on_open(|ch| {
    ///     let _ = ch.send("hello", SendOptions::new());
    /// });
    /// # let _ = options;
    /// ```
    pub fn on_open(mut self, f: impl Fn(&Handle) + Send + Sync + 'static) -> Self {
        self.on_open = Some(Arc::new(f));
        self
    }

    /// Set the spec's `:on-message`: called for each message from a WebSocket client, text or
    /// binary ([`Incoming`]). HTTP streams carry nothing inbound: it is never called for them
    /// (the request body is not read). The default is none.
    ///
    /// # Examples
    ///
    /// ```
    /// use webchan::compat::{Options, SendOptions};
    /// use webchan::Incoming;
    ///
    /// let options = Options::new().on_message(|ch, message| match message {
    ///     Incoming::Text(text) => {
    ///         let _ = ch.send(text.to_uppercase(), SendOptions::new());
    ///     }
    ///     Incoming::Binary(bytes) => {
    ///         let _ = ch.send(bytes, SendOptions::new());
    ///     }
    ///     _ => {}
    /// });
    /// # let _ = options;
    /// ```
    pub fn on_message(mut self, f: impl Fn(&Handle, Incoming) + Send + Sync + 'static) -> Self {
        self.on_message = Some(Arc::new(f));
        self
    }

    /// Set the spec's `:on-error`: called for any error related to the channel — a protocol
    /// error of the peer, an upgrade that did not complete, the error of a send that has no
    /// [`on_error`](SendOptions::on_error) of its own, a panic in a callback
    /// ([`Error::Panicked`]), an error returned by a send's callback. If the error forces the
    /// channel to close, `on_close` follows. The default is none (errors are logged).
    ///
    /// # Examples
    ///
    /// ```
    /// let options = webchan::compat::Options::new()
    ///     .on_error(|ch, error| eprintln!("{}: {error}", ch.originating_request().uri));
    /// # let _ = options;
    /// ```
    pub fn on_error(mut self, f: impl Fn(&Handle, Error) + Send + Sync + 'static) -> Self {
        self.on_error = Some(Arc::new(f));
        self
    }

    /// Set the spec's `:on-close`: called once, for every close — [`Handle::close`], a send
    /// with [`close`](SendOptions::close), the peer, the timeout, an error, a dropped
    /// connection — as the channel's last callback. The channel is already closed when it
    /// runs ([`Handle::is_open`] is false, sends return `Ok(false)`).
    ///
    /// [`CloseInfo`] holds the WebSocket close code and reason (RFC 6455 §7.4; 1006 for a
    /// dropped connection), both `None` for HTTP streams. The default is none.
    ///
    /// # Examples
    ///
    /// ```
    /// let options = webchan::compat::Options::new()
    ///     .on_close(|_ch, info| println!("closed: {:?} {:?}", info.code, info.reason));
    /// # let _ = options;
    /// ```
    pub fn on_close(mut self, f: impl Fn(&Handle, CloseInfo) + Send + Sync + 'static) -> Self {
        self.on_close = Some(Arc::new(f));
        self
    }

    /// Set the spec's `:timeout`. A WebSocket is closed (code 1000, reason `"idle timeout"`)
    /// once idle for this long — no message either way, so sends keep it open too (pings and
    /// pongs do not count: see [`Config::timeout`](crate::Config::timeout)); an HTTP
    /// stream is closed this long after it opened, whatever the traffic, with a complete
    /// response. Zero means no timeout. The default is zero.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let options = webchan::compat::Options::new().timeout(Duration::from_millis(1500));
    /// assert_eq!(options.timeout_duration(), Duration::from_millis(1500));
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        // As `Config` takes it (cut to 30 years), so that the getter says what channels get.
        self.timeout = Some(crate::config::bounded(timeout));
        self
    }

    /// The timeout: the one set with [`timeout`](Self::timeout), else the one of the
    /// [`config`](Self::config), else zero (none).
    #[must_use]
    pub fn timeout_duration(&self) -> Duration {
        self.timeout.unwrap_or_else(|| {
            self.config.as_ref().map_or(Duration::ZERO, |c| c.timeout_duration())
        })
    }

    /// Set the byte limit of the send queue ([`Config::queue_limit`]): a [`Handle::send`]
    /// that would take the queue (messages accepted and not yet written) over it is not
    /// queued and fails with [`Error::QueueFull`], given to the send's `on_error` (or the
    /// channel's), while nothing queued before it is lost. A message is always accepted by an
    /// empty queue, whatever its size; files, readers and sequences count as 16 KiB. The
    /// limit also bounds the received messages not yet given to `on_message`. The default is
    /// [`DEFAULT_QUEUE_LIMIT`] (16 MiB), whatever the [`config`](Self::config) says.
    ///
    /// # Examples
    ///
    /// ```
    /// let options = webchan::compat::Options::new().queue_limit(256 * 1024);
    /// assert_eq!(options.queue_limit_bytes(), 256 * 1024);
    /// ```
    pub fn queue_limit(mut self, bytes: usize) -> Self {
        // As `Config` takes it (0 counts as 1): before stop 28 (2026-12-05) the getter and
        // `Debug` said 0 where channels had 1.
        self.queue_limit = Some(bytes.max(1));
        self
    }

    /// The send queue's byte limit.
    #[must_use]
    pub fn queue_limit_bytes(&self) -> usize {
        self.queue_limit.unwrap_or(DEFAULT_QUEUE_LIMIT)
    }

    /// Set the rest of the channel's settings (message size limits, close timeout...). Its
    /// timeout applies unless [`timeout`](Self::timeout) is set; its queue limit is replaced
    /// by [`queue_limit`](Self::queue_limit) (default [`DEFAULT_QUEUE_LIMIT`]). The default is
    /// [`Config::default`].
    ///
    /// # Examples
    ///
    /// ```
    /// let options = webchan::compat::Options::new()
    ///     .config(webchan::Config::default().max_message_size(1 << 20));
    /// # let _ = options;
    /// ```
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// Without a `config` of the application's, the default with compat's queue limit: one
    /// value for the process, which the setters below leave as it is unless the options
    /// change it (before 2026-12-06 each compat channel copied the settings, 160 bytes).
    fn channel_config(&self) -> Config {
        static DEFAULT: std::sync::OnceLock<Config> = std::sync::OnceLock::new();
        let base = self.config.clone().unwrap_or_else(|| {
            DEFAULT.get_or_init(|| Config::default().queue_limit(DEFAULT_QUEUE_LIMIT)).clone()
        });
        base.timeout(self.timeout_duration()).queue_limit(self.queue_limit_bytes())
    }
}

/// What a send's [`on_success`](SendOptions::on_success) or
/// [`on_error`](SendOptions::on_error) callback may return: `()`, or a `Result<(), E>` whose
/// error is reported to the channel's `on_error`.
///
/// Sealed: implemented for `()` and for `Result<(), E>` where `E` converts into a [`BoxError`].
///
/// # Examples
///
/// ```
/// use webchan::compat::SendOptions;
///
/// let plain = SendOptions::new().on_success(|| println!("sent"));
/// let fallible = SendOptions::new().on_success(|| -> Result<(), std::io::Error> {
///     Err(std::io::Error::other("bookkeeping failed"))
/// });
/// # let _ = (plain, fallible);
/// ```
pub trait CallbackResult: sealed::Sealed {
    /// The outcome as a `Result`.
    ///
    /// # Errors
    ///
    /// The callback's error, boxed.
    fn into_result(self) -> Result<(), BoxError>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for () {}
    impl<E> Sealed for Result<(), E> {}
}

impl CallbackResult for () {
    fn into_result(self) -> Result<(), BoxError> {
        Ok(())
    }
}

impl<E: Into<BoxError>> CallbackResult for Result<(), E> {
    fn into_result(self) -> Result<(), BoxError> {
        self.map_err(Into::into)
    }
}

/// The options of one [`Handle::send`], the spec's `send!` options.
///
/// # Examples
///
/// ```
/// use webchan::compat::SendOptions;
///
/// let options = SendOptions::new()
///     .close(true)
///     .on_success(|| println!("sent, closing"))
///     .on_error(|error| eprintln!("not sent: {error}"));
/// assert!(options.closes());
/// ```
#[derive(Default)]
#[must_use]
pub struct SendOptions {
    close: bool,
    on_success: Option<OnSuccess>,
    on_error: Option<OnSendError>,
}

impl fmt::Debug for SendOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendOptions")
            .field("close", &self.close)
            .field("on_success", &self.on_success.is_some())
            .field("on_error", &self.on_error.is_some())
            .finish()
    }
}

impl SendOptions {
    /// No close, no callbacks: a send error goes to the channel's `on_error`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the spec's `:close?`: close the channel once this message is sent (a WebSocket
    /// sends a close frame with 1000 after it; an HTTP stream ends its body). On the first
    /// send of an HTTP stream with text or bytes this gives a plain response with
    /// `Content-Length` instead of a chunked one. Nothing sent after it is accepted. If the
    /// send fails at once ([`Error::QueueFull`]), the channel is not closed. The default is
    /// false.
    ///
    /// # Examples
    ///
    /// ```
    /// let last = webchan::compat::SendOptions::new().close(true);
    /// assert!(last.closes());
    /// ```
    pub fn close(mut self, close: bool) -> Self {
        self.close = close;
        self
    }

    /// Does this send close the channel?
    #[must_use]
    pub fn closes(&self) -> bool {
        self.close
    }

    /// Set the spec's `:on-success`: called once the message was sent whole (written to the
    /// connection, see [`Sender::send`](crate::Sender::send)). Not called when the send returns anything but
    /// `Ok(true)`. If it returns an error or panics, that goes to the channel's `on_error`.
    /// The default is none.
    ///
    /// # Examples
    ///
    /// ```
    /// let options = webchan::compat::SendOptions::new().on_success(|| println!("sent"));
    /// # let _ = options;
    /// ```
    pub fn on_success<F, R>(mut self, f: F) -> Self
    where
        F: FnOnce() -> R + Send + 'static,
        R: CallbackResult,
    {
        self.on_success = Some(Box::new(move || f().into_result()));
        self
    }

    /// Set the spec's `:on-error` of `send!`: called with the error that stopped this send
    /// (a file that cannot be read, [`Error::Closed`] when the channel closed before the
    /// message went out, [`Error::QueueFull`]...). If the error closes the channel, the
    /// channel's `on_close` follows. If this callback returns an error or panics, that goes
    /// to the channel's `on_error`. The default (none) gives the error to the channel's
    /// `on_error`, as the spec's `#(throw %)` does.
    ///
    /// # Examples
    ///
    /// ```
    /// let options = webchan::compat::SendOptions::new()
    ///     .on_error(|error| eprintln!("send failed: {error}"));
    /// # let _ = options;
    /// ```
    pub fn on_error<F, R>(mut self, f: F) -> Self
    where
        F: FnOnce(Error) -> R + Send + 'static,
        R: CallbackResult,
    {
        self.on_error = Some(Box::new(move |e| f(e).into_result()));
        self
    }
}

/// A channel made by [`as_channel`], as its callbacks see it: the spec's `ch`.
///
/// Cheap to clone, `Send + Sync`: keep it, and send or close from any thread or task, also
/// after the handler returned. Clones compare equal (and hash the same) when they are handles
/// of the same channel.
///
/// The channel lives until it is closed — by [`close`](Self::close), a send with
/// [`close`](SendOptions::close), the client, the timeout or an error — whether or not
/// handles are kept.
///
/// # Examples
///
/// ```
/// use webchan::compat::{Handle, SendOptions};
///
/// fn greet(ch: &Handle) {
///     let path = ch.originating_request().uri.path().to_owned();
///     if ch.is_open() {
///         let _ = ch.send(format!("welcome to {path}"), SendOptions::new());
///     }
/// }
/// # let _ = greet;
/// ```
#[derive(Clone)]
pub struct Handle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    sender: Sender,
    /// The outcomes the channel's task waits for, in call order. The lock is held from the
    /// send's `try_send` to its push here, so the order here is the order on the wire, and
    /// once the task took the lock after seeing `Closed`, every accepted send is in here.
    pending: Mutex<mpsc::UnboundedSender<Pending>>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("kind", &self.kind())
            .field("open", &self.is_open())
            .field("uri", &self.originating_request().uri)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Handle {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for Handle {}

impl Hash for Handle {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.inner), state);
    }
}

impl Handle {
    /// The spec's `send!`: sends a message, asynchronously. Never blocks and never waits for
    /// I/O: the message is queued and the call returns; the outcome goes to the callbacks of
    /// `options`, called from the channel's task in the order the sends were made.
    ///
    /// `message` is anything that converts into a [`Message`]: a `String` or `&str` (sent
    /// as UTF-8 on a WebSocket, in the charset of the response's `Content-Type` on an HTTP
    /// stream), bytes (`Vec<u8>`, `Bytes`), a file ([`Message::file`], a `tokio::fs::File`)
    /// or any `AsyncRead` ([`Message::reader`]) — read in pieces of 16 KiB, each a binary
    /// message on a WebSocket —, a sequence ([`Message::seq`], [`Message::stream`]) whose
    /// items are sent in turn, in order, and may be any of these; or a response head
    /// ([`Message::response`]: status, headers and a body), valid only as the first send of
    /// an HTTP stream, or first in a sequence sent first. Sends go out in the order they were made, a sequence's items included.
    ///
    /// Returns `Ok(true)` when the send was started: exactly one of the options'
    /// `on_success` or `on_error` (or the channel's `on_error`) will be called. Returns
    /// `Ok(false)` — the spec's `nil` — when the channel is already closed or closing; then
    /// no callback is called. A send over the queue's byte limit
    /// ([`Options::queue_limit`]) returns `Ok(true)` and fails with [`Error::QueueFull`]
    /// through `on_error`, like any other error of a send (nothing queued is lost).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidMessage`] — the spec's "exception thrown" — for a message this channel
    /// cannot carry: a response head on a WebSocket or after the first send of an HTTP
    /// stream; a server-sent event on a WebSocket or on an HTTP stream not in SSE mode; bytes,
    /// a file or a reader on an SSE stream. No callback is called and the channel stays
    /// usable.
    ///
    /// # Examples
    ///
    /// ```
    /// use webchan::compat::{Handle, SendOptions};
    /// use webchan::Message;
    ///
    /// fn send_report(ch: &Handle) -> Result<(), webchan::Error> {
    ///     let items = vec![Message::from("header\n"), Message::file("/tmp/report.csv")];
    ///     let sent = ch.send(
    ///         Message::seq(items),
    ///         SendOptions::new()
    ///             .close(true)
    ///             .on_error(|error| eprintln!("report not sent: {error}")),
    ///     )?;
    ///     if !sent {
    ///         eprintln!("the client was gone");
    ///     }
    ///     Ok(())
    /// }
    /// # let _ = send_report;
    /// ```
    pub fn send(&self, message: impl Into<Message>, options: SendOptions) -> Result<bool, Error> {
        let message = message.into();
        let pending = self.inner.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let sender = &self.inner.sender;
        let attempt = if options.close {
            sender.try_send_and_close(message)
        } else {
            sender.try_send(message)
        };
        let outcome = match attempt {
            Ok(completion) => Outcome::Waiting(completion),
            Err((error, refused)) => {
                discard(refused);
                match error {
                    Error::Closed => return Ok(false),
                    Error::InvalidMessage(_) => return Err(error),
                    error => Outcome::Failed(error),
                }
            }
        };
        let SendOptions { on_success, on_error, .. } = options;
        // The task only stops receiving after the channel closed, and then no send gets here.
        let _ = pending.send(Pending { outcome, on_success, on_error });
        Ok(true)
    }

    /// The spec's `close`: starts a graceful close after everything already sent — a close
    /// frame with code 1000 on a WebSocket, the end of the body on an HTTP stream — and
    /// returns at once. `on_close` is called once the channel is closed. "After everything
    /// already sent" includes a sequence or stream still being sent: behind one that never
    /// ends, the close never goes out (`is_open` is false from now on all the same). Returns false if the
    /// channel was already closing or closed (then `on_close` was or will be called anyway,
    /// once).
    ///
    /// # Examples
    ///
    /// ```
    /// use webchan::compat::Handle;
    ///
    /// fn kick(ch: &Handle) {
    ///     if !ch.close() {
    ///         println!("already closing");
    ///     }
    /// }
    /// # let _ = kick;
    /// ```
    pub fn close(&self) -> bool {
        self.inner.sender.start_close(1000, "")
    }

    /// [`close`](Self::close) with a WebSocket close code and reason (an HTTP stream ignores
    /// both). The reason is cut to 123 bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(ch: &webchan::compat::Handle) {
    /// ch.close_with(4001, "kicked");
    /// # }
    /// # let _ = f;
    /// ```
    pub fn close_with(&self, code: u16, reason: &str) -> bool {
        self.inner.sender.start_close(code, reason)
    }

    /// The spec's `open?`: is the channel open — opened, and not closing or closed? For a
    /// WebSocket, false before `on_open` (its upgrade is not complete); an HTTP stream is open
    /// from the start, also before `on_open` has run (sends made then are accepted, and may be
    /// written before `on_open` runs; their `on_success` comes after it). False from the
    /// moment a close started, whoever began it; always false in `on_close`.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(ch: &webchan::compat::Handle) {
    /// if ch.is_open() {
    ///     // sends will be accepted
    /// }
    /// # }
    /// # let _ = f;
    /// ```
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.inner.sender.is_open()
    }

    /// The spec's `originating-request`: the request that made this channel (method, URI,
    /// version, headers, extensions; the body was not read).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(ch: &webchan::compat::Handle) {
    /// let room = ch.originating_request().uri.query().unwrap_or("lobby");
    /// # let _ = room;
    /// # }
    /// # let _ = f;
    /// ```
    #[must_use]
    pub fn originating_request(&self) -> &Parts {
        self.inner.sender.originating_request()
    }

    /// WebSocket or HTTP stream.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(ch: &webchan::compat::Handle) {
    /// let websocket = ch.kind() == webchan::Kind::WebSocket;
    /// # let _ = websocket;
    /// # }
    /// # let _ = f;
    /// ```
    #[must_use]
    pub fn kind(&self) -> Kind {
        self.inner.sender.kind()
    }
}

/// The outcome of one accepted send, waited for by the channel's task.
struct Pending {
    outcome: Outcome,
    on_success: Option<OnSuccess>,
    on_error: Option<OnSendError>,
}

enum Outcome {
    Waiting(Completion),
    Failed(Error),
}

impl Pending {
    fn poll_outcome(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        match &mut self.outcome {
            Outcome::Waiting(completion) => Pin::new(completion).poll(cx),
            Outcome::Failed(error) => Poll::Ready(Err(error.clone())),
        }
    }
}

/// The spec's `as-channel`: turns a request into a channel driven by the callbacks of
/// `options`, and gives the response to return from the hyper service.
///
/// A WebSocket upgrade request (RFC 6455 §4.2.1) becomes a WebSocket channel; any request
/// that does not ask for an upgrade becomes an HTTP stream channel (see
/// [`crate::as_channel`]). The [`ResponseFuture`] resolves to the response, which the service
/// must return: the `101` for a WebSocket (at once), or an HTTP stream's head and body (once
/// the first send or a close is made, so that a first [`Message::Response`] can still set the
/// status and headers). Before awaiting it, add headers to it with
/// [`ResponseFuture::headers_mut`] (the spec's headers of the handler's response map: they are
/// included in the upgrade response; sessions have no equivalent here beyond the
/// `Set-Cookie` headers this allows).
///
/// A request that asks for a WebSocket but gets the handshake wrong makes no channel and calls
/// no callback: the future resolves to a response that says why (see
/// [`as_channel`](crate::as_channel)'s errors: 400, 403, 405, 426 with
/// `Sec-WebSocket-Version: 13`, 501; and 503 once a shutdown began).
///
/// The callbacks run on a task spawned for the channel (see the [module docs](self) for their
/// order); it ends after `on_close`. A callback should not block: it holds up the channel's
/// other callbacks, and the thread it runs on, which on a current-thread runtime stalls every
/// connection (pings are not answered meanwhile) and on a multi-thread one may stall the
/// runtime's I/O. Hand blocking work to `tokio::task::spawn_blocking`, and send from there
/// with the [`Handle`], which never blocks.
///
/// # Panics
///
/// If called outside a tokio runtime (for a request that makes a channel).
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use webchan::compat::{self, Options, SendOptions};
///
/// async fn handle(
///     request: http::Request<hyper::body::Incoming>,
/// ) -> Result<http::Response<webchan::Body>, Infallible> {
///     let options = Options::new().on_open(|ch| {
///         let _ = ch.send("bye\n", SendOptions::new().close(true));
///     });
///     let mut response = compat::as_channel(request, options);
///     response.headers_mut().insert("cache-control", http::HeaderValue::from_static("no-store"));
///     Ok(response.await)
/// }
/// # let _ = handle;
/// ```
pub fn as_channel<B>(request: Request<B>, options: Options) -> ResponseFuture {
    let config = options.channel_config();
    match crate::as_channel(request, config) {
        Ok((reply, channel)) => {
            let (sender, receiver) = channel.split();
            let (tx, rx) = mpsc::unbounded_channel();
            let handle =
                Handle { inner: Arc::new(HandleInner { sender, pending: Mutex::new(tx) }) };
            let callbacks = Callbacks {
                on_open: options.on_open,
                on_message: options.on_message,
                on_error: options.on_error,
                on_close: options.on_close,
            };
            let gate = Arc::new(Gate::default());
            let runner = Runner {
                handle: handle.clone(),
                callbacks,
                receiver,
                pending: rx,
                front: None,
                opened: false,
                gate: Arc::clone(&gate),
            };
            // In the handler's span, for the callbacks' logs and the crate's.
            tokio::spawn(tracing::Instrument::in_current_span(runner.run()));
            ResponseFuture { state: State::Channel(reply), handle: Some(handle), gate: Some(gate) }
        }
        Err(rejection) => ResponseFuture {
            state: State::Rejected(Some(rejection.into_response())),
            handle: None,
            gate: None,
        },
    }
}

/// The response of [`as_channel`]: a future of the `Response<Body>` the hyper service must
/// return. Change its status or add headers before awaiting it.
///
/// A WebSocket's resolves at once to the `101` (over HTTP/2, RFC 8441, a `200`); any other
/// status set here refuses the upgrade (the channel gets `on_error` and `on_close`, never `on_open`), and so does dropping
/// it unawaited, as a handler that answers with a response of its own (a 403) does: the
/// channel then gets `on_error` and `on_close` at once. An HTTP stream's
/// resolves when its head is due: at the first send or close, or at the timeout; dropping it
/// before then closes the channel.
///
/// # Examples
///
/// ```
/// # fn f(request: http::Request<()>) -> webchan::compat::ResponseFuture {
/// let mut response = webchan::compat::as_channel(request, webchan::compat::Options::new());
/// response.headers_mut().insert("set-cookie", http::HeaderValue::from_static("session=1"));
/// if let Some(ch) = response.handle() {
///     println!("new channel for {}", ch.originating_request().uri);
/// }
/// response
/// # }
/// # let _ = f;
/// ```
#[must_use = "the response must be returned to the client"]
pub struct ResponseFuture {
    state: State,
    handle: Option<Handle>,
    /// Tells the channel's task whether the response is returned (see [`Gate`]).
    gate: Option<Arc<Gate>>,
}

/// Whether a [`ResponseFuture`] was awaited, or dropped first. An HTTP stream opens as soon as
/// it is made, but it is available for sending (the spec's condition for `on-open`) only once
/// its response is on its way: its `on_open` waits for this. Before stop 29 (2026-12-05) a
/// handler that made the channel and then answered with a response of its own (a 403 after an
/// auth check) had `on_open` called on a stream that would never send.
#[derive(Debug, Default)]
struct Gate {
    /// `UNDECIDED`, `AWAITED` or `DROPPED`.
    state: std::sync::atomic::AtomicU8,
    waker: futures_util::task::AtomicWaker,
}

const UNDECIDED: u8 = 0;
const AWAITED: u8 = 1;
const DROPPED: u8 = 2;

impl Gate {
    /// Decides, if not yet decided, and wakes the channel's task.
    fn decide(&self, state: u8) {
        let decided = self.state.compare_exchange(UNDECIDED, state, AcqRel, Relaxed).is_ok();
        if decided {
            self.waker.wake();
        }
    }

    /// Waits for the decision: true if the response was awaited.
    async fn awaited(&self) -> bool {
        poll_fn(|cx| {
            let state = self.state.load(Acquire);
            if state != UNDECIDED {
                return Poll::Ready(state == AWAITED);
            }
            self.waker.register(cx.waker());
            match self.state.load(Acquire) {
                UNDECIDED => Poll::Pending,
                state => Poll::Ready(state == AWAITED),
            }
        })
        .await
    }
}

impl Drop for ResponseFuture {
    fn drop(&mut self) {
        if let Some(gate) = &self.gate {
            gate.decide(DROPPED);
        }
    }
}

enum State {
    Channel(Reply),
    Rejected(Option<Response<Body>>),
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("rejected", &matches!(self.state, State::Rejected(_)))
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl ResponseFuture {
    /// The channel's handle (before it opened: sends are queued until then); `None` when the
    /// request was refused. The `on_success` of a send made here comes after `on_open`; on an
    /// HTTP stream its bytes may already be written by the time `on_open` runs (the response
    /// is under way as soon as it is awaited).
    #[must_use]
    pub fn handle(&self) -> Option<&Handle> {
        self.handle.as_ref()
    }

    /// Was the request refused (a malformed WebSocket handshake, an `Origin` not allowed, a
    /// shutdown under way)? The response then says why (see [`as_channel`]).
    #[must_use]
    pub fn is_rejected(&self) -> bool {
        matches!(self.state, State::Rejected(_))
    }

    /// The status, to change it (an HTTP stream's first [`Message::Response`] can still
    /// override it).
    ///
    /// # Panics
    ///
    /// If called after the future completed.
    pub fn status_mut(&mut self) -> &mut StatusCode {
        match &mut self.state {
            State::Channel(reply) => {
                assert!(!reply.is_done(), "ResponseFuture used after completion");
                reply.status_mut()
            }
            State::Rejected(response) => {
                response.as_mut().expect("ResponseFuture used after completion").status_mut()
            }
        }
    }

    /// The headers, to add to them. For a WebSocket they are sent with the `101` (cookies, a
    /// chosen `Sec-WebSocket-Protocol`...); for an HTTP stream a first [`Message::Response`]
    /// replaces the ones it names.
    ///
    /// # Panics
    ///
    /// If called after the future completed.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        match &mut self.state {
            State::Channel(reply) => {
                assert!(!reply.is_done(), "ResponseFuture used after completion");
                reply.headers_mut()
            }
            State::Rejected(response) => {
                response.as_mut().expect("ResponseFuture used after completion").headers_mut()
            }
        }
    }
}

impl Future for ResponseFuture {
    type Output = Response<Body>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response<Body>> {
        if let Some(gate) = &self.gate {
            gate.decide(AWAITED);
        }
        match &mut self.state {
            State::Channel(reply) => Pin::new(reply).poll(cx),
            State::Rejected(response) => {
                Poll::Ready(response.take().expect("ResponseFuture polled after completion"))
            }
        }
    }
}

struct Callbacks {
    on_open: Option<OnOpen>,
    on_message: Option<OnMessage>,
    on_error: Option<OnError>,
    on_close: Option<OnClose>,
}

/// The channel's task: takes events and send outcomes, calls the callbacks.
struct Runner {
    handle: Handle,
    callbacks: Callbacks,
    receiver: Receiver,
    pending: mpsc::UnboundedReceiver<Pending>,
    /// The oldest send whose outcome is awaited.
    front: Option<Pending>,
    /// `on_open` ran: until then no send's outcome is looked at, so that a send made before
    /// the channel opened (on [`ResponseFuture::handle`]) has its `on_success` after
    /// `on_open`, not before (on a WebSocket its frame can go out in the poll that opens it).
    opened: bool,
    gate: Arc<Gate>,
}

enum Step {
    Event(Option<Event>),
    Sent(Pending, Result<(), Error>),
}

impl Runner {
    async fn run(mut self) {
        loop {
            match poll_fn(|cx| self.poll_step(cx)).await {
                Step::Sent(pending, result) => self.sent(pending, result),
                Step::Event(Some(Event::Open)) => {
                    self.opened = true;
                    // A WebSocket opens only once its `101` went out, so its response was
                    // awaited; an HTTP stream opens when it is made (see `Gate`).
                    let stream = self.handle.kind() == Kind::HttpStream;
                    if stream && !self.gate.awaited().await {
                        continue;
                    }
                    if let Some(f) = self.callbacks.on_open.clone() {
                        self.guard("on_open", || f(&self.handle));
                    }
                }
                Step::Event(Some(Event::Message(message))) => {
                    if let Some(f) = self.callbacks.on_message.clone() {
                        self.guard("on_message", || f(&self.handle, message));
                    }
                }
                Step::Event(Some(Event::Error(error))) => self.report(error),
                Step::Event(Some(Event::Closed(info))) => return self.closed(info).await,
                Step::Event(None) => {
                    // The stream always ends with `Closed`; should it not, on_close still
                    // comes, once.
                    let info = match self.handle.kind() {
                        Kind::HttpStream => CloseInfo::http(),
                        Kind::WebSocket => CloseInfo::websocket(1006, ""),
                    };
                    return self.closed(info).await;
                }
            }
        }
    }

    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        if self.opened {
            if let Poll::Ready(Some(step)) = self.poll_sent(cx) {
                return Poll::Ready(step);
            }
        }
        Pin::new(&mut self.receiver).poll_next(cx).map(Step::Event)
    }

    /// The outcome of the oldest send, when it is known; `Ready(None)` when no send is
    /// pending any more.
    fn poll_sent(&mut self, cx: &mut Context<'_>) -> Poll<Option<Step>> {
        if self.front.is_none() {
            match self.pending.poll_recv(cx) {
                Poll::Ready(Some(pending)) => self.front = Some(pending),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
        let front = self.front.as_mut().expect("set just above");
        let result = std::task::ready!(front.poll_outcome(cx));
        let pending = self.front.take().expect("set just above");
        Poll::Ready(Some(Step::Sent(pending, result)))
    }

    /// The channel closed: the outcomes of every send made before, then `on_close`.
    async fn closed(mut self, info: CloseInfo) {
        // Every accepted send is in `pending` once no send holds the lock (see `HandleInner`),
        // and no send is accepted any more.
        drop(self.handle.inner.pending.lock().unwrap_or_else(PoisonError::into_inner));
        self.pending.close();
        // After the close, every outcome is known at once; waiting keeps this correct anyway.
        while let Some(Step::Sent(pending, result)) = poll_fn(|cx| self.poll_sent(cx)).await {
            self.sent(pending, result);
        }
        if let Some(f) = self.callbacks.on_close.clone() {
            self.guard("on_close", || f(&self.handle, info));
        }
    }

    fn sent(&self, pending: Pending, result: Result<(), Error>) {
        let Pending { on_success, on_error, .. } = pending;
        match result {
            Ok(()) => {
                if let Some(f) = on_success {
                    self.guard_fallible("on_success", f);
                }
            }
            Err(error) => match on_error {
                Some(f) => self.guard_fallible("a send's on_error", || f(error)),
                None => self.report(error),
            },
        }
    }

    /// Runs a callback; a panic goes to `on_error`.
    fn guard(&self, name: &'static str, f: impl FnOnce()) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
            self.report_panic(name, payload);
        }
    }

    /// Runs a send's callback; a panic or an error it returns goes to `on_error`.
    fn guard_fallible(&self, name: &'static str, f: impl FnOnce() -> Result<(), BoxError>) {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                self.report(Error::Callback { callback: name, error: error.into() });
            }
            Err(payload) => {
                self.report_panic(name, payload);
            }
        }
    }

    /// A callback panicked: its `Error::Panicked` goes to `on_error`, or is logged at error.
    fn report_panic(&self, name: &'static str, payload: Box<dyn std::any::Any + Send>) {
        let error = Error::Panicked(format!("{name} panicked: {}", panic_text(payload)));
        if self.callbacks.on_error.is_none() {
            // Debug formatting: a panic's text may quote the peer (escaped, no forged lines).
            tracing::error!(?error, "callback panicked and no on_error is set");
            return;
        }
        self.report(error);
    }

    /// Gives an error to the channel's `on_error`, or logs it at debug when there is none (a
    /// send's `Panicked` among them: its source's panic was logged at error where it was
    /// caught; before stop 30, 2026-12-06, it was logged again as a callback's). A panic of
    /// `on_error` itself is logged at error.
    fn report(&self, error: Error) {
        let Some(f) = &self.callbacks.on_error else {
            tracing::debug!(%error, "channel error and no on_error is set");
            return;
        };
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| f(&self.handle, error.clone()))) {
            tracing::error!(
                ?error,
                panic = ?panic_text(payload),
                "on_error panicked while handling an error"
            );
        }
    }
}

/// What a caught panic says. Its payload is dropped here; one whose own `Drop` panics too is
/// leaked, so that the second panic does not escape the callback's guard (stop 29).
fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    let text = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    };
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
    text
}

/// Drops a message the channel refused: a panic of its source's `Drop` is caught and logged,
/// not passed to the caller of [`Handle::send`] (stop 29).
fn discard(message: Message) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(message))) {
        tracing::error!(
            panic = ?panic_text(payload),
            "a refused message's source panicked when dropped"
        );
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn assert<T: Send + Sync + 'static>() {}
    fn assert_send<T: Send + 'static>() {}
    assert::<Handle>();
    assert::<Options>();
    assert_send::<SendOptions>();
    assert_send::<ResponseFuture>();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_of_default_options_share_one_config() {
        let (a, b) = (Options::new().channel_config(), Options::new().channel_config());
        assert!(a.shares_settings_with(&b), "each compat channel copied the settings");
        assert_eq!(a.queue_limit_bytes(), DEFAULT_QUEUE_LIMIT);
        let timed = Options::new().timeout(Duration::from_secs(3)).channel_config();
        assert!(!timed.shares_settings_with(&a));
        assert_eq!(timed.timeout_duration(), Duration::from_secs(3));
        assert_eq!(Options::new().channel_config().timeout_duration(), Duration::ZERO);
    }
}
