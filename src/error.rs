//! The crate's one error type.

use std::fmt;
use std::io;
use std::sync::Arc;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong with a channel, one variant per cause a caller can act on.
///
/// The [`Display`](fmt::Display) text is meant for people and logs, and it includes the text
/// of the error it wraps (an [`Io`](Self::Io), [`Upgrade`](Self::Upgrade) or
/// [`Callback`](Self::Callback) error's); so [`source`](std::error::Error::source) goes on
/// from that error's own source, and a chain printer (anyhow's `{:#}`) shows each cause once.
/// (A file that could not be opened is an `Io` error whose text names the path and the
/// system's error; that `io::Error`'s inner error holds the system's as its source, with its
/// `raw_os_error`.) Match on the variant (or use the `is_*` helpers) in code: the wrapped
/// error is its field. The error is cheap to clone, so the same error can be
/// reported to several places (an [`Event::Error`](crate::Event::Error) and a send's caller).
///
/// # Examples
///
/// ```
/// let error = webchan::Error::Closed;
/// assert!(error.is_closed());
/// assert_eq!(error.to_string(), "channel is closed");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// The channel is closed (or closing): the message was not sent, or is not known to have
    /// been written (it was still in hyper's or the kernel's hands when the channel ended:
    /// conservative, never a false success). Nothing to retry on this channel; a client has to
    /// connect again.
    Closed,
    /// The request tried to become a WebSocket but the handshake was malformed. The
    /// [`Rejection`](crate::Rejection) holds the 4xx response that says why.
    Handshake(&'static str),
    /// The [`Shutdown`](crate::Shutdown) of the request's `Config` has begun: no new channel
    /// (the [`Rejection`](crate::Rejection) answers 503).
    ShuttingDown,
    /// The HTTP upgrade to a WebSocket did not complete (the handler answered with another
    /// status or dropped its [`Reply`](crate::Reply), or the client went away before the `101`
    /// was sent).
    Upgrade(Arc<dyn std::error::Error + Send + Sync>),
    /// The message cannot be sent on this channel, as it is (e.g. a response head after the
    /// first send of an HTTP stream, or on a WebSocket). The channel stays usable.
    InvalidMessage(&'static str),
    /// The message would take the send queue over its byte limit
    /// ([`Config::queue_limit`](crate::Config::queue_limit)); the message was not queued and
    /// nothing queued before it is lost. Wait (the [`Sink`](futures_sink::Sink) does) or send
    /// less.
    QueueFull {
        /// The configured limit, in bytes.
        limit: usize,
    },
    /// The peer sent a message or frame over the configured size limit; the WebSocket was
    /// closed with 1009.
    TooLarge(String),
    /// The peer broke the WebSocket protocol (RFC 6455); the connection was closed with 1002
    /// (or, when the violation was the peer's answer to our close frame, with that frame's
    /// code: no second close frame is sent).
    Protocol(String),
    /// The peer sent a text message or close reason that is not valid UTF-8; the WebSocket was
    /// closed with 1007.
    InvalidUtf8,
    /// An I/O error: reading a file or reader that was being sent, or the connection itself.
    Io(Arc<io::Error>),
    /// The text of a message cannot be encoded: the response's `Content-Type` names a charset
    /// this crate does not know. The message was not sent; the channel stays usable.
    UnknownCharset(String),
    /// A callback or a message source panicked; the panic was caught and the connection kept.
    Panicked(String),
    /// A callback returned this error (the [`compat`](crate::compat) API's `on_success` and a
    /// send's `on_error` may fail); it is reported, and the connection kept.
    Callback {
        /// Which callback.
        callback: &'static str,
        /// What it returned.
        error: Arc<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// Is this [`Error::Closed`]?
    #[must_use]
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed)
    }

    /// Is this [`Error::InvalidMessage`]?
    #[must_use]
    pub fn is_invalid_message(&self) -> bool {
        matches!(self, Self::InvalidMessage(_))
    }

    /// Is this [`Error::QueueFull`]?
    #[must_use]
    pub fn is_queue_full(&self) -> bool {
        matches!(self, Self::QueueFull { .. })
    }

    pub(crate) fn io(error: io::Error) -> Self {
        Self::Io(Arc::new(error))
    }

    /// The error for a caught panic; its payload is dropped here (see [`drop_payload`]).
    pub(crate) fn from_panic(payload: Box<dyn std::any::Any + Send>) -> Self {
        let error = Self::panicked(&*payload);
        drop_payload(payload);
        error
    }

    pub(crate) fn panicked(payload: &(dyn std::any::Any + Send)) -> Self {
        let text = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "panic with a non-string payload".to_owned()
        };
        Self::Panicked(text)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => f.write_str("channel is closed"),
            Self::Handshake(why) => write!(f, "websocket handshake rejected: {why}"),
            Self::ShuttingDown => f.write_str("the server is shutting down"),
            Self::Upgrade(e) => write!(f, "websocket upgrade did not complete: {e}"),
            Self::InvalidMessage(why) => write!(f, "invalid message for this channel: {why}"),
            Self::QueueFull { limit } => {
                write!(f, "send queue is full (limit {limit} bytes); the message was not queued")
            }
            Self::TooLarge(what) => write!(f, "message too large: {what}"),
            Self::Protocol(what) => write!(f, "websocket protocol error: {what}"),
            Self::InvalidUtf8 => f.write_str("invalid utf-8 in a text message or close reason"),
            Self::Io(e) => write!(f, "i/o error: {e}"),
            Self::UnknownCharset(label) => {
                write!(f, "cannot encode text: unknown charset {label:?} in Content-Type")
            }
            Self::Panicked(what) => write!(f, "panicked: {what}"),
            Self::Callback { callback, error } => {
                write!(f, "{callback} returned an error: {error}")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The wrapped error's text is in ours already (see the type's docs). Before stop 30
        // (2026-12-06) `source` gave the wrapped error itself: chain printers showed its text
        // twice ("i/o error: disk on fire: disk on fire").
        match self {
            Self::Upgrade(e) => e.source(),
            // A file that could not be opened says its cause in its text already.
            Self::Io(e) if e.get_ref().is_some_and(|e| e.is::<crate::message::OpenFailed>()) => {
                None
            }
            Self::Io(e) => e.source(),
            Self::Callback { error, .. } => error.source(),
            _ => None,
        }
    }
}

/// A refused [`try_send`](crate::Sender::try_send)'s error, for `?`: the message is dropped.
impl From<(Self, crate::Message)> for Error {
    fn from((error, _message): (Self, crate::Message)) -> Self {
        error
    }
}

impl From<io::Error> for Error {
    fn from(error: io::Error) -> Self {
        Self::io(error)
    }
}

/// For code that speaks `io::Result` (an `AsyncWrite` over a channel, say): an
/// [`Error::Io`] gives back its `io::Error` (the same value when nothing else holds it, else
/// one of the same kind around this error); every other error is the source of an `io::Error`
/// of the nearest kind ([`Error::Closed`]: `BrokenPipe`, as a closed pipe's writer gets; the
/// peer's violations: `InvalidData`; a message the channel refuses: `InvalidInput`; the rest:
/// `Other`), which [`io::Error::get_ref`] gives back.
///
/// ```
/// let error = std::io::Error::from(webchan::Error::Closed);
/// assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe);
/// assert!(error.get_ref().unwrap().downcast_ref::<webchan::Error>().unwrap().is_closed());
/// ```
impl From<Error> for io::Error {
    fn from(error: Error) -> Self {
        let kind = match &error {
            Error::Io(e) => e.kind(),
            Error::Closed => io::ErrorKind::BrokenPipe,
            Error::Handshake(_) | Error::TooLarge(_) | Error::Protocol(_) | Error::InvalidUtf8 => {
                io::ErrorKind::InvalidData
            }
            Error::InvalidMessage(_) | Error::UnknownCharset(_) => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::Other,
        };
        match error {
            Error::Io(e) => Arc::try_unwrap(e).unwrap_or_else(|e| Self::new(kind, Error::Io(e))),
            error => Self::new(kind, error),
        }
    }
}

/// Drops a caught panic's payload; one whose own `Drop` panics too is leaked instead, so that
/// the second panic does not escape where the first was caught.
pub(crate) fn drop_payload(payload: Box<dyn std::any::Any + Send>) {
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(payload)));
    if let Err(again) = dropped {
        std::mem::forget(again);
    }
}

/// Drops something that holds the application's code (a reader, a stream), catching a panic
/// of its `Drop`: logged, never passed on (see `Message::quiet`).
pub(crate) fn drop_quietly<T>(value: T) {
    if let Err(payload) =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(value)))
    {
        tracing::error!(panic = ?Error::panicked(&*payload), "a message source panicked when dropped");
        drop_payload(payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_come_back_whole_and_the_others_as_sources() {
        let original = io::Error::new(io::ErrorKind::TimedOut, "disk asleep");
        let back = io::Error::from(Error::from(original));
        assert_eq!(back.kind(), io::ErrorKind::TimedOut);
        assert_eq!(back.to_string(), "disk asleep", "not the same io::Error");
        // Held elsewhere too (errors are `Clone`): the same kind, around the error.
        let shared = Error::io(io::Error::from_raw_os_error(32));
        let kept = shared.clone();
        let back = io::Error::from(shared);
        assert_eq!(back.kind(), io::ErrorKind::BrokenPipe);
        assert!(matches!(back.get_ref().unwrap().downcast_ref::<Error>(), Some(Error::Io(_))));
        drop(kept);
        for (error, kind) in [
            (Error::Closed, io::ErrorKind::BrokenPipe),
            (Error::Protocol("bad".into()), io::ErrorKind::InvalidData),
            (Error::InvalidUtf8, io::ErrorKind::InvalidData),
            (Error::InvalidMessage("no"), io::ErrorKind::InvalidInput),
            (Error::QueueFull { limit: 1 }, io::ErrorKind::Other),
        ] {
            let text = error.to_string();
            let back = io::Error::from(error);
            assert_eq!(back.kind(), kind, "{text}");
            assert_eq!(back.to_string(), text);
        }
    }
}
