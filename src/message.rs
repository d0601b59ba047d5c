//! Outgoing messages and the lazy sources behind files, readers and sequences.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use http::{HeaderMap, StatusCode};
use tokio::io::AsyncRead;

use crate::Error;

/// The size of the pieces files and readers are cut into: each piece is one binary WebSocket
/// message or one HTTP chunk.
pub const CHUNK_SIZE: usize = 16 * 1024;

/// Something to send on a channel.
///
/// Text and binary are sent as they are. Files and readers are read lazily, [`CHUNK_SIZE`]
/// bytes at most at a time, and only as fast as the client takes them, so a file of any size
/// is sent in constant memory: on a WebSocket each piece is one binary message, on an HTTP
/// stream one chunk. A sequence sends each of its items in turn, in order, before anything
/// sent after it. A [`Response`](Message::Response) head sets the status and headers of an
/// HTTP stream and is only valid as its first message.
///
/// Text is sent as UTF-8 on a WebSocket, and on an HTTP stream in the charset named by the
/// response's `Content-Type` (UTF-8 if none): characters that charset cannot hold are sent as
/// `?`. A `Content-Type` naming an unknown charset makes the send fail with
/// [`Error::UnknownCharset`]. Labels resolve as the WHATWG Encoding Standard has them, except
/// where it reads one charset as another: ISO-8859-1, US-ASCII, ISO-8859-9, TIS-620 and
/// ISO-8859-11 are written exactly (not as windows-1252, -1254 or -874), bare UTF-16 and the
/// UCS-2 labels big-endian without a byte order mark (RFC 2781 §4.3). The CJK labels get the
/// superset browsers decode under them (`gb2312` is GBK, `euc-kr` is UHC): a character only
/// the superset holds goes out in its bytes, which a strict decoder refuses. ISO-2022-JP,
/// which has state, is encoded as one text across a stream's messages, back in ASCII at the
/// stream's end.
///
/// # Examples
///
/// ```
/// use webchan::Message;
///
/// let hello = Message::from("hello");
/// let bytes = Message::from(vec![1u8, 2, 3]);
/// let file = Message::file("/etc/hostname");
/// let reader = Message::reader(&b"from any AsyncRead"[..]);
/// let seq = Message::seq(vec![Message::from("a"), Message::from("b")]);
/// let head = Message::response(http::StatusCode::CREATED, http::HeaderMap::new(), "done");
/// # let _ = (hello, bytes, file, reader, seq, head);
/// ```
#[non_exhaustive]
pub enum Message {
    /// Text, shared without copying: a `String` is taken as it is, and a received
    /// [`Text`](crate::Text) sent back (an echo, a broadcast to many channels) goes out from
    /// the buffer it arrived in.
    Text(crate::Text),
    /// Binary data, sent without copying.
    Binary(Bytes),
    /// The content of the file at this path, opened when its turn comes.
    Path(PathBuf),
    /// Everything an [`AsyncRead`] yields, until its end.
    Reader(Pin<Box<dyn AsyncRead + Send>>),
    /// Each message of a stream (or iterator, see [`Message::seq`]), in order.
    Seq(Pin<Box<dyn Stream<Item = Self> + Send>>),
    /// An HTTP stream's response head and its first body message: only valid as the first
    /// message of an HTTP stream.
    Response(Box<ResponseHead>),
    /// A server-sent event, for an HTTP stream in SSE mode (see [`crate::sse`]).
    Sse(Box<crate::sse::Event>),
}

/// The head of an HTTP stream's response, sent as its first message
/// ([`Message::Response`]): overrides the status, and the headers it names, of the response
/// the handler prepared.
///
/// [`Message::response`] makes one with a status and a body; [`ResponseHead::new`] one that
/// changes nothing yet, to fill in:
///
/// ```
/// use http::{header, HeaderValue};
///
/// let mut head = webchan::ResponseHead::new();
/// head.headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
/// // The handler's status stays; no body message comes with the head.
/// let message = webchan::Message::from(head);
/// assert!(matches!(message, webchan::Message::Response(_)));
/// ```
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ResponseHead {
    /// The status, if it should change.
    pub status: Option<StatusCode>,
    /// Headers to set (each replaces the handler's values of that name).
    pub headers: HeaderMap,
    /// The first body message, if any.
    pub body: Option<Box<Message>>,
}

impl ResponseHead {
    /// A head that changes nothing: no status, no headers, no body message. (The type is
    /// `#[non_exhaustive]`: this is how code outside the crate makes one.)
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl From<ResponseHead> for Message {
    fn from(head: ResponseHead) -> Self {
        Self::Response(Box::new(head))
    }
}

impl Message {
    /// A file, by path; it is opened when its turn comes, and a failure to open it fails that
    /// send only.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::Path(path.into())
    }

    /// Any reader, read to its end.
    pub fn reader(reader: impl AsyncRead + Send + 'static) -> Self {
        Self::Reader(Box::pin(reader))
    }

    /// A sequence of messages from an iterator, each sent in turn.
    ///
    /// Sent first on an HTTP stream, a sequence may begin with a response head
    /// ([`Message::response`]; also first in a sequence nested first): it is the stream's
    /// head, as if sent alone. The head waits for the sequence's first item (after a 204 or
    /// 304 head, for the sequence's end: anything but empty items after it fails the send,
    /// and the timeout before the end fails it with `Closed`). Anywhere else a response head
    /// in a sequence fails the send, after the items before it went out.
    pub fn seq<I>(items: I) -> Self
    where
        I: IntoIterator<Item = Self>,
        I::IntoIter: Send + 'static,
    {
        Self::Seq(Box::pin(futures_util::stream::iter(items)))
    }

    /// A sequence of messages from a stream, each sent in turn as the stream yields it.
    pub fn stream(items: impl Stream<Item = Self> + Send + 'static) -> Self {
        Self::Seq(Box::pin(items))
    }

    /// A response head for the first send of an HTTP stream.
    ///
    /// The headers may declare a `Content-Length` for the stream (a file of known size, say):
    /// the body is then not chunked, and exactly that many bytes go out (with ISO-2022-JP,
    /// count the 3 bytes that return it to ASCII at the end). A text or binary message sent
    /// with `send_and_close` is the exception: it goes out whole, with its own length, whatever
    /// the headers declared (a HEAD keeps the declared one). The send whose bytes
    /// reach the length completes, even when it held more (a file that grew since its size was
    /// taken): the bytes past the length are not sent. Sends after it fail with
    /// [`Error::Closed`](crate::Error::Closed). A stream that ends before the length (closed,
    /// timed out) reports `Error::Io` of kind `UnexpectedEof`: the client gets a truncated
    /// response. Each message then goes out in a frame of its own.
    pub fn response(status: StatusCode, headers: HeaderMap, body: impl Into<Self>) -> Self {
        Self::Response(Box::new(ResponseHead {
            status: Some(status),
            headers,
            body: Some(Box::new(body.into())),
        }))
    }

    /// The bytes this message holds in memory, for the queue's byte limit. Files, readers and
    /// sequences count as one chunk: they are read lazily.
    pub(crate) fn queued_size(&self) -> usize {
        match self {
            Self::Text(s) => s.len(),
            Self::Binary(b) => b.len(),
            Self::Response(head) => head.body.as_ref().map_or(0, |b| b.queued_size()),
            Self::Path(_) | Self::Reader(_) | Self::Seq(_) => CHUNK_SIZE,
            Self::Sse(event) => event.queued_size(),
        }
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(s) => f.debug_tuple("Text").field(s).finish(),
            Self::Binary(b) => f.debug_tuple("Binary").field(&b.len()).finish(),
            Self::Path(p) => f.debug_tuple("Path").field(p).finish(),
            Self::Reader(_) => f.write_str("Reader"),
            Self::Seq(_) => f.write_str("Seq"),
            Self::Response(head) => f.debug_tuple("Response").field(head).finish(),
            Self::Sse(event) => f.debug_tuple("Sse").field(event).finish(),
        }
    }
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        Self::Text(s.into())
    }
}

impl From<&str> for Message {
    fn from(s: &str) -> Self {
        Self::Text(s.into())
    }
}

/// Received text sent on: no copy.
impl From<crate::Text> for Message {
    fn from(t: crate::Text) -> Self {
        Self::Text(t)
    }
}

impl From<Bytes> for Message {
    fn from(b: Bytes) -> Self {
        Self::Binary(b)
    }
}

impl From<Vec<u8>> for Message {
    fn from(b: Vec<u8>) -> Self {
        Self::Binary(b.into())
    }
}

impl From<&'static [u8]> for Message {
    fn from(b: &'static [u8]) -> Self {
        Self::Binary(Bytes::from_static(b))
    }
}

/// A byte string literal (`b"ping"`): binary.
impl<const N: usize> From<&'static [u8; N]> for Message {
    fn from(b: &'static [u8; N]) -> Self {
        Self::Binary(Bytes::from_static(b))
    }
}

impl From<&String> for Message {
    fn from(s: &String) -> Self {
        Self::Text(s.as_str().into())
    }
}

impl From<Box<str>> for Message {
    fn from(s: Box<str>) -> Self {
        Self::Text(String::from(s).into())
    }
}

impl From<std::borrow::Cow<'_, str>> for Message {
    fn from(s: std::borrow::Cow<'_, str>) -> Self {
        Self::Text(s.into_owned().into())
    }
}

/// An open file is sent from its current position to its end, like any reader.
impl From<tokio::fs::File> for Message {
    fn from(f: tokio::fs::File) -> Self {
        Self::Reader(Box::pin(f))
    }
}

impl From<crate::Incoming> for Message {
    fn from(m: crate::Incoming) -> Self {
        match m {
            crate::Incoming::Text(t) => Self::Text(t),
            crate::Incoming::Binary(b) => Self::Binary(b),
        }
    }
}

/// One piece of output, ready for the wire.
#[derive(Debug)]
pub(crate) enum Piece {
    Text(crate::Text),
    Binary(Bytes),
    /// Bytes already framed for an SSE stream.
    Sse(Bytes),
}

/// Steps through empty sources (or, in a body, empty pieces) before a task yields to its
/// other work (tokio's own budget is 128 operations).
pub(crate) const YIELD_AFTER: usize = 64;

/// A file that could not be opened: its text names the path and the system's error, which
/// stays reachable as the source (its `raw_os_error`); [`Error::source`](std::error::Error::source)
/// of the `Error::Io` that holds it stops there, so a chain printer shows the cause once.
#[derive(Debug)]
pub(crate) struct OpenFailed {
    path: PathBuf,
    error: io::Error,
}

impl fmt::Display for OpenFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot open {}: {}", self.path.display(), self.error)
    }
}

impl std::error::Error for OpenFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

type Opening = Pin<Box<dyn Future<Output = io::Result<tokio::fs::File>> + Send>>;

impl Message {
    /// Drops a message the channel refused (and so never queued), as [`Message::quiet`] would
    /// have: a panic of its source's `Drop` is caught and logged. Before stop 29 (2026-12-05)
    /// it reached the caller of `Sender::send` (a reader refused on an SSE stream, say).
    pub(crate) fn discard(self) {
        match self {
            Self::Text(_) | Self::Binary(_) => {}
            other => crate::error::drop_quietly(other),
        }
    }

    /// The message with its readers and streams (user code) wrapped in [`Quiet`], whose drop
    /// catches a panic: webchan drops sources in many places (a failed send, a channel that
    /// closes with sends queued, the end of a connection), and a panic there escaped before
    /// stop 29 (2026-12-05): a source that panicked in `poll_read` and again when dropped
    /// killed the task that polled it (the connection, hyper's, or the application's own
    /// through an inline send), and one dropped with the queue at a close left the channel
    /// without `Closed` and its sends waiting for good.
    #[inline(never)]
    pub(crate) fn quiet(self) -> Self {
        match self {
            Self::Reader(reader) => Self::Reader(Box::pin(Quiet(Some(reader)))),
            Self::Seq(items) => Self::Seq(Box::pin(Quiet(Some(items)))),
            Self::Response(mut head) => {
                head.body = head.body.map(|body| Box::new(body.quiet()));
                Self::Response(head)
            }
            other => other,
        }
    }
}

/// A reader or stream of the application's, dropped under `catch_unwind` (see
/// [`Message::quiet`]). Its polls are already guarded by [`Pump::poll_next`].
struct Quiet<T: ?Sized>(Option<Pin<Box<T>>>);

impl<T: ?Sized> Drop for Quiet<T> {
    fn drop(&mut self) {
        crate::error::drop_quietly(self.0.take());
    }
}

impl AsyncRead for Quiet<dyn AsyncRead + Send> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().0.as_mut() {
            Some(reader) => reader.as_mut().poll_read(cx, buf),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl Stream for Quiet<dyn Stream<Item = Message> + Send> {
    type Item = Message;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        match self.get_mut().0.as_mut() {
            // What a sequence yields is the application's too.
            Some(items) => items.as_mut().poll_next(cx).map(|item| item.map(Message::quiet)),
            None => Poll::Ready(None),
        }
    }
}

enum Source {
    One(Option<Piece>),
    Opening(Opening),
    /// A reader, and the buffer of the chunk being read: kept while a read is pending, so a
    /// poll that finds nothing ready costs no allocation (and nothing is zero-filled: the read
    /// goes to spare capacity).
    Reader(Pin<Box<dyn AsyncRead + Send>>, BytesMut),
    Seq(Pin<Box<dyn Stream<Item = Message> + Send>>),
}

/// Turns one message into pieces, lazily: a stack of sources (a sequence can hold files and
/// further sequences).
pub(crate) struct Pump {
    /// A plain text or binary message: no stack, no allocation.
    single: Option<Piece>,
    stack: Vec<Source>,
    /// For an SSE stream: files and readers in a sequence are refused as they come (their
    /// pieces would be refused one by one, and an empty one has none: it was accepted before
    /// stop 27, 2026-12-05).
    text_only: bool,
}

impl fmt::Debug for Pump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pump").field("depth", &self.stack.len()).finish()
    }
}

impl Pump {
    pub(crate) fn new(message: Message) -> Result<Self, Error> {
        Self::with(message, false)
    }

    /// A pump for an SSE stream: a file or reader anywhere in the message fails it.
    pub(crate) fn text_only(message: Message) -> Result<Self, Error> {
        Self::with(message, true)
    }

    fn with(message: Message, text_only: bool) -> Result<Self, Error> {
        let single = match message {
            Message::Text(s) => Piece::Text(s),
            Message::Binary(b) => Piece::Binary(b),
            other => {
                let mut pump = Self { single: None, stack: Vec::with_capacity(2), text_only };
                pump.push(other)?;
                return Ok(pump);
            }
        };
        Ok(Self { single: Some(single), stack: Vec::new(), text_only })
    }

    fn push(&mut self, message: Message) -> Result<(), Error> {
        if self.text_only && matches!(message, Message::Path(_) | Message::Reader(_)) {
            return Err(Error::InvalidMessage(crate::shared::BINARY_ON_SSE));
        }
        let source = match message {
            Message::Text(s) => Source::One(Some(Piece::Text(s))),
            Message::Binary(b) => Source::One(Some(Piece::Binary(b))),
            // The error names the file: it comes long after the send was made (before stop 30,
            // 2026-12-06, a file in a sequence of files failed with "No such file" alone).
            Message::Path(p) => Source::Opening(Box::pin(async move {
                tokio::fs::File::open(&p)
                    .await
                    .map_err(|error| io::Error::new(error.kind(), OpenFailed { path: p, error }))
            })),
            Message::Reader(r) => Source::Reader(r, BytesMut::new()),
            Message::Seq(s) => Source::Seq(s),
            Message::Sse(event) => Source::One(Some(Piece::Sse(event.to_bytes()?))),
            Message::Response(_) => {
                return Err(Error::InvalidMessage(
                    "a response head is only valid as the first message of an HTTP stream",
                ))
            }
        };
        self.stack.push(source);
        Ok(())
    }

    /// The next piece; `None` once the message is sent whole. An error ends the message.
    ///
    /// Readers and streams are user code: a panic in one is caught and fails this message
    /// with [`Error::Panicked`], and the connection goes on.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Piece, Error>>> {
        if let Some(piece) = self.single.take() {
            return Poll::Ready(Some(Ok(piece)));
        }
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.poll_inner(cx)));
        match polled {
            Ok(poll) => poll,
            Err(payload) => {
                let error = Error::from_panic(payload);
                tracing::error!(?error, "a message source panicked; that send fails");
                self.fail(error)
            }
        }
    }

    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Piece, Error>>> {
        for _ in 0..YIELD_AFTER {
            let Some(top) = self.stack.last_mut() else { return Poll::Ready(None) };
            match top {
                Source::One(piece) => match piece.take() {
                    Some(p) => {
                        self.stack.pop();
                        return Poll::Ready(Some(Ok(p)));
                    }
                    None => {
                        self.stack.pop();
                    }
                },
                Source::Opening(fut) => match ready!(fut.as_mut().poll(cx)) {
                    Ok(file) => *top = Source::Reader(Box::pin(file), BytesMut::new()),
                    Err(e) => return self.fail(Error::io(e)),
                },
                Source::Reader(reader, buf) => {
                    if buf.capacity() == 0 {
                        *buf = BytesMut::with_capacity(CHUNK_SIZE);
                    }
                    match ready!(tokio_util::io::poll_read_buf(reader.as_mut(), cx, buf)) {
                        Ok(0) => {
                            self.stack.pop();
                        }
                        Ok(_) => {
                            let chunk = std::mem::take(buf).freeze();
                            return Poll::Ready(Some(Ok(Piece::Binary(chunk))));
                        }
                        Err(e) => return self.fail(Error::io(e)),
                    }
                }
                Source::Seq(items) => match ready!(items.as_mut().poll_next(cx)) {
                    Some(message) => {
                        if let Err(e) = self.push(message) {
                            return self.fail(e);
                        }
                    }
                    None => {
                        self.stack.pop();
                    }
                },
            }
        }
        // Sources always ready and all empty (a feed of empty sequences, readers or files):
        // the task yields, so that its other work (pings, a close, a timeout) goes on. Before
        // stop 27 (2026-12-05) an endless such feed held its thread for good.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Every piece was given out.
    pub(crate) fn is_done(&self) -> bool {
        self.single.is_none() && self.stack.is_empty()
    }

    fn fail(&mut self, error: Error) -> Poll<Option<Result<Piece, Error>>> {
        self.stack.clear();
        Poll::Ready(Some(Err(error)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_becomes_a_message_without_a_copy() {
        // Received text sent on (an echo, a broadcast): the same bytes, not a copy of them.
        let received = crate::Text::from("héllo, everyone");
        let at = received.as_ptr();
        let Message::Text(sent) = Message::from(crate::Incoming::Text(received.clone())) else {
            panic!("text stays text")
        };
        assert_eq!(sent.as_ptr(), at);
        assert_eq!(sent, "héllo, everyone");
        let Message::Text(sent) = Message::from(received) else { panic!("text stays text") };
        assert_eq!(sent.as_ptr(), at);

        // A `String` is taken as it is.
        let owned = String::from("a line");
        let at = owned.as_ptr();
        let Message::Text(sent) = Message::from(owned) else { panic!("text stays text") };
        assert_eq!(sent.as_ptr(), at);
        assert_eq!(Message::from("a line").queued_size(), 6);

        // What the transports send: the same bytes again.
        let Ok(mut pump) = Pump::new(Message::Text(sent)) else { panic!("a plain message") };
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let Poll::Ready(Some(Ok(Piece::Text(piece)))) = pump.poll_next(&mut cx) else {
            panic!("one text piece")
        };
        assert_eq!(piece.into_bytes().as_ptr(), at);
        assert!(pump.is_done());
    }
}
