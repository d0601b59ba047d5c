//! What a channel's [`Stream`](futures_core::Stream) yields.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

use crate::Error;

/// One event of a channel, in this order: at most one [`Open`](Event::Open), always first;
/// then messages and errors; then exactly one [`Closed`](Event::Closed), last, after which
/// the stream ends.
///
/// # Examples
///
/// ```
/// use webchan::{Event, Incoming};
///
/// fn describe(event: &Event) -> String {
///     match event {
///         Event::Open => "open".to_owned(),
///         Event::Message(Incoming::Text(text)) => format!("text {}", text.as_str()),
///         Event::Message(Incoming::Binary(bytes)) => format!("{} bytes", bytes.len()),
///         Event::Error(error) => format!("error: {error}"),
///         Event::Closed(info) => format!("closed with {:?}", info.code),
///         _ => "something new".to_owned(),
///     }
/// }
/// assert_eq!(describe(&Event::Open), "open");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// The channel can carry messages: a WebSocket's `101` went out and the upgrade completed,
    /// or an HTTP stream was created. Comes once, first; a WebSocket whose upgrade fails has none.
    Open,
    /// A message from the client (WebSockets only: HTTP streams carry nothing inbound).
    Message(Incoming),
    /// Something went wrong. If it forced the channel to close, [`Event::Closed`] follows.
    Error(Error),
    /// The channel is closed; nothing follows. Carries the cause.
    Closed(CloseInfo),
}

/// A message received from a WebSocket client.
///
/// Memory: a message of up to 1 KiB is copied out of the connection's read buffer into a
/// 4 KiB block that the small messages received on the same thread share (no allocation per
/// message; when the application is behind, into storage of its own: see
/// [`Config::queue_limit`](crate::Config::queue_limit)); a larger one is a view of the buffer
/// it was read into when it fills at least half of it (else a copy of its own size), or of its
/// own buffer when it came in fragments. Either way the message is a refcounted view, so one that the
/// application keeps holds its whole block or buffer alive.
/// To keep a few small messages out of many for a long time, copy them
/// (`Bytes::copy_from_slice`, `String::from`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Incoming {
    /// A text message (valid UTF-8).
    Text(Text),
    /// A binary message.
    Binary(Bytes),
}

impl Incoming {
    /// Is it a text message?
    #[must_use]
    pub fn is_text(&self) -> bool {
        matches!(self, Self::Text(_))
    }

    /// Its length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Self::Text(t) => t.len(),
            Self::Binary(b) => b.len(),
        }
    }

    /// Is it empty?
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The text, if it is a text message.
    #[must_use]
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(t) => Some(t.as_str()),
            Self::Binary(_) => None,
        }
    }

    /// Its bytes (a text message's UTF-8), shared without copying.
    #[must_use]
    pub fn into_bytes(self) -> Bytes {
        match self {
            Self::Text(t) => t.into_bytes(),
            Self::Binary(b) => b,
        }
    }
}

/// Text: valid UTF-8, shared without copying. What a client sent ([`Incoming::Text`]), and what
/// [`Message::Text`](crate::Message::Text) sends: received text sent on (an echo, a broadcast to
/// many channels) goes out from the buffer it arrived in.
///
/// Derefs to `str`; made from a `String` without a copy, or from a `&str` with one; turned
/// into a `String` with [`String::from`] (a copy).
///
/// # Examples
///
/// ```
/// let text = webchan::Text::from("hé");
/// assert_eq!(text.as_str(), "hé");
/// assert_eq!(text.len(), 3);
/// assert_eq!(String::from(text), "hé");
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Text(pub(crate) tokio_tungstenite::tungstenite::Utf8Bytes);

impl Text {
    /// The text as a `&str`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The UTF-8 bytes, shared without copying.
    #[must_use]
    pub fn into_bytes(self) -> Bytes {
        self.0.into()
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Self(s.into())
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Self(s.into())
    }
}

impl From<Text> for String {
    fn from(t: Text) -> Self {
        t.as_str().to_owned()
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<Text> for String {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<Text> for str {
    fn eq(&self, other: &Text) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Text> for &str {
    fn eq(&self, other: &Text) -> bool {
        *self == other.as_str()
    }
}

/// As `str`'s, so that a `Text` key is found by a `&str` (see [`Borrow`](std::borrow::Borrow)).
impl std::hash::Hash for Text {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for Text {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Text {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}

impl std::borrow::Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

/// The UTF-8 bytes, shared without copying.
impl From<Text> for Bytes {
    fn from(t: Text) -> Self {
        t.into_bytes()
    }
}

/// Why a channel closed: the WebSocket close code and reason (RFC 6455 §7.4).
///
/// - the peer closed: exactly the peer's code and reason (1005 and an empty reason when its
///   close frame had no code);
/// - the connection dropped without a close frame: 1006 and an empty reason;
/// - the server closed: 1000 (or the code given to [`close_with`](crate::Sender::close_with));
/// - a protocol violation: 1002, invalid UTF-8: 1007, a message over the limit: 1009 (unless
///   our close frame was out already: then our code, and the violation as an
///   [`Event::Error`](crate::Event::Error) before `Closed`);
/// - the idle timeout: 1000 with the reason `"idle timeout"`;
/// - HTTP streams: both `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CloseInfo {
    /// The close code; `None` for HTTP streams.
    pub code: Option<u16>,
    /// The close reason; `None` for HTTP streams.
    pub reason: Option<String>,
}

impl CloseInfo {
    /// A WebSocket close with this code and reason.
    ///
    /// # Examples
    ///
    /// ```
    /// let info = webchan::CloseInfo::websocket(1000, "bye");
    /// assert_eq!(info.code, Some(1000));
    /// assert_eq!(info.reason.as_deref(), Some("bye"));
    /// ```
    #[must_use]
    pub fn websocket(code: u16, reason: impl Into<String>) -> Self {
        Self { code: Some(code), reason: Some(reason.into()) }
    }

    /// An HTTP stream's close: no code, no reason.
    #[must_use]
    pub fn http() -> Self {
        Self { code: None, reason: None }
    }
}

/// The code, then the reason if there is one, escaped as Rust escapes a string (the reason is
/// the peer's text: a log line showing it cannot be broken in two); an HTTP stream's close
/// reads `HTTP stream ended`.
///
/// ```
/// assert_eq!(webchan::CloseInfo::websocket(1000, "bye").to_string(), r#"1000 "bye""#);
/// assert_eq!(webchan::CloseInfo::websocket(1006, "").to_string(), "1006");
/// assert_eq!(webchan::CloseInfo::websocket(4000, "a\nb").to_string(), r#"4000 "a\nb""#);
/// assert_eq!(webchan::CloseInfo::http().to_string(), "HTTP stream ended");
/// ```
impl fmt::Display for CloseInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.reason.as_deref()) {
            (Some(code), Some(reason)) if !reason.is_empty() => write!(f, "{code} {reason:?}"),
            (Some(code), _) => write!(f, "{code}"),
            (None, Some(reason)) if !reason.is_empty() => write!(f, "{reason:?}"),
            (None, _) => f.write_str("HTTP stream ended"),
        }
    }
}
