//! Server-Sent Events: the HTTP stream channel in `text/event-stream` mode.
//!
//! An HTTP stream becomes an SSE stream when [`Config::sse`](crate::Config::sse) says
//! [`Mode::Always`], or by default ([`Mode::Auto`]) when the request's `Accept` header asks
//! for `text/event-stream` (as a browser's `EventSource` does). Then:
//!
//! - the response head goes out at once, with `Content-Type: text/event-stream`,
//!   `Cache-Control: no-cache` and `X-Accel-Buffering: no` (browsers fire `open`, and proxies
//!   forward the stream, only once the head has arrived); set the status or other headers on
//!   the [`Reply`](crate::Reply) before awaiting it — a [`Message::Response`](crate::Message)
//!   is refused;
//! - a text message is sent as one event whose `data` is the text, one `data:` line for each
//!   of its lines (split on CRLF, LF and CR, as the WHATWG HTML standard reads them back);
//! - an [`Event`] gives the `event`, `id` and `retry` fields too;
//! - binary messages, files and readers are refused ([`Error::InvalidMessage`]), empty ones
//!   too; an [`Event`] on a stream that is not in SSE mode (or on a WebSocket) is refused the
//!   same way, alone or inside a sequence;
//! - after [`Config::sse_keepalive`](crate::Config::sse_keepalive) of quiet (15 s by
//!   default) a comment line `:` goes out, so proxies do not drop the connection;
//! - [`Channel::last_event_id`](crate::Channel::last_event_id) gives the `Last-Event-ID` a
//!   reconnecting browser sends.
//!
//! A handler that wants a browser to stop reconnecting answers with status 204.
//!
//! # Examples
//!
//! ```
//! use webchan::sse;
//!
//! async fn feed(channel: webchan::Channel) -> Result<(), webchan::Error> {
//!     let sender = channel.sender();
//!     sender.send("plain text: one event\nof two lines".into()).await?;
//!     let event = sse::Event::new().event("tick").id("42").data("{\"n\":42}");
//!     sender.send(event.into()).await?;
//!     Ok(())
//! }
//! ```

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;

use crate::Error;

/// When an HTTP stream is an SSE stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Mode {
    /// When the request's `Accept` header names `text/event-stream`, with a `q` other than 0
    /// (wildcards such as `*/*` do not count). The default.
    #[default]
    Auto,
    /// Always.
    Always,
    /// Never: a plain HTTP stream whatever the request accepts.
    Never,
}

/// One server-sent event: its `data`, and optionally `event` (the type), `id`, `retry` and a
/// comment.
///
/// # Examples
///
/// ```
/// let event = webchan::sse::Event::new().event("update").id("7").data("a\nb");
/// assert_eq!(event.to_bytes().unwrap(), "event: update\ndata: a\ndata: b\nid: 7\n\n");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct Event {
    data: Option<String>,
    event: Option<String>,
    id: Option<String>,
    retry: Option<Duration>,
    comment: Option<String>,
}

impl Event {
    /// An empty event (with no field it is only a blank line, which browsers ignore). Browsers
    /// dispatch an event only if it has [`data`](Self::data) (WHATWG HTML §9.2.6, an empty data
    /// buffer dispatches nothing): without it, an `event` type reaches no listener, and only
    /// an `id` or `retry` takes effect.
    pub fn new() -> Self {
        Self::default()
    }

    /// The data: any text; each line becomes one `data:` field.
    pub fn data(mut self, data: impl Into<String>) -> Self {
        self.data = Some(data.into());
        self
    }

    /// The event type (`event:`), which selects the `EventSource` listener. It may not hold a
    /// line break: sending such an event fails with [`Error::InvalidMessage`].
    pub fn event(mut self, event: impl Into<String>) -> Self {
        self.event = Some(event.into());
        self
    }

    /// The event id (`id:`), which a reconnecting browser sends back as `Last-Event-ID`. It
    /// must be something an HTTP header can carry back: no control character other than tab
    /// (no line break, no NUL): sending such an event fails with [`Error::InvalidMessage`].
    /// Whitespace at either end does not come back (HTTP trims a field's value): `" 9 "`
    /// reconnects as `"9"`.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// How long a browser waits before reconnecting (`retry:`, sent in milliseconds).
    pub fn retry(mut self, retry: Duration) -> Self {
        self.retry = Some(retry);
        self
    }

    /// A comment (`:` lines), ignored by browsers.
    pub fn comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }

    /// The event as it goes on the wire.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidMessage`] when the `event` holds a line break, or the `id` a control
    /// character other than tab.
    pub fn to_bytes(&self) -> Result<Bytes, Error> {
        self.validate()?;
        let mut out = String::new();
        if let Some(comment) = &self.comment {
            for line in lines(comment) {
                out.push(':');
                if !line.is_empty() {
                    out.push(' ');
                    out.push_str(line);
                }
                out.push('\n');
            }
        }
        if let Some(event) = &self.event {
            let _ = writeln!(out, "event: {event}");
        }
        if let Some(data) = &self.data {
            for line in lines(data) {
                let _ = writeln!(out, "data: {line}");
            }
        }
        if let Some(id) = &self.id {
            let _ = writeln!(out, "id: {id}");
        }
        if let Some(retry) = self.retry {
            let _ = writeln!(out, "retry: {}", retry.as_millis());
        }
        out.push('\n');
        Ok(Bytes::from(out))
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        let breaks = |s: &str| s.contains(['\r', '\n']);
        if self.event.as_deref().is_some_and(breaks) {
            return Err(Error::InvalidMessage("an SSE event type may not hold a line break"));
        }
        // An id comes back as a `Last-Event-ID` header: before stop 29 (2026-12-05) one with a
        // control character was sent, and a browser could then never reconnect (Node's
        // `EventSource` refused to send the header; a client that sent it got hyper's 400).
        let control = |c: char| c.is_ascii_control() && c != '\t';
        if self.id.as_deref().is_some_and(|id| id.contains(control)) {
            return Err(Error::InvalidMessage(
                "an SSE id may hold no control character other than tab (no line break, no NUL)",
            ));
        }
        Ok(())
    }

    /// Every field counts: before 2026-12-05 only the data did, and events with large
    /// comments went past the queue limit (50 MiB queued under a 64 KiB limit).
    pub(crate) fn queued_size(&self) -> usize {
        let len = |field: &Option<String>| field.as_ref().map_or(0, String::len);
        len(&self.data) + len(&self.event) + len(&self.id) + len(&self.comment) + 64
    }
}

/// Text sent as an event: its lines as `data:` fields.
pub(crate) fn data_event(text: &str) -> Bytes {
    let mut out = String::with_capacity(text.len() + 8);
    for line in lines(text) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// Lines split on CRLF, LF and CR (the WHATWG HTML standard's end-of-line rule); one empty
/// line for empty text.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.find(['\r', '\n']) {
            None => {
                rest = None;
                Some(s)
            }
            Some(i) => {
                let skip = if s[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&s[i + skip..]);
                Some(&s[..i])
            }
        }
    })
}

impl From<Event> for crate::Message {
    fn from(event: Event) -> Self {
        Self::Sse(Box::new(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: Bytes) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn text_becomes_one_data_line_per_line_on_every_line_ending() {
        assert_eq!(text(data_event("one")), "data: one\n\n");
        assert_eq!(text(data_event("a\nb\r\nc\rd")), "data: a\ndata: b\ndata: c\ndata: d\n\n");
        assert_eq!(text(data_event("")), "data: \n\n");
        assert_eq!(text(data_event("end\n")), "data: end\ndata: \n\n");
        assert_eq!(text(data_event("\r\n\r\n")), "data: \ndata: \ndata: \n\n");
    }

    #[test]
    fn every_field_in_order() {
        let event = Event::new()
            .comment("hi")
            .event("tick")
            .data("x\ny")
            .id("5")
            .retry(Duration::from_millis(1500));
        assert_eq!(
            text(event.to_bytes().unwrap()),
            ": hi\nevent: tick\ndata: x\ndata: y\nid: 5\nretry: 1500\n\n"
        );
        assert_eq!(text(Event::new().id("").to_bytes().unwrap()), "id: \n\n");
    }

    #[test]
    fn invalid_fields_are_errors_not_corrupt_streams() {
        for bad in [Event::new().event("a\nb"), Event::new().event("a\rb"), Event::new().id("1\n")]
        {
            assert!(bad.to_bytes().unwrap_err().is_invalid_message());
        }
        assert!(Event::new().id("a\0b").to_bytes().unwrap_err().is_invalid_message());
        // Line breaks in data and comments are fine: they become more lines.
        assert!(Event::new().data("a\nb").comment("c\nd").to_bytes().is_ok());
    }
}
