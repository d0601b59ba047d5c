//! The HTTP stream transport: the response head that waits for the first send, and
//! [`Body`], the response body fed by the channel.
//!
//! No task of its own: hyper's connection task polls the body, and the body takes what the
//! channel queued, a whole batch per lock.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::charset::Charset;
use crate::data::{BodyData, Held, Receipt};
use crate::message::{Piece, Pump, YIELD_AFTER};
use crate::shared::{Item, Queued, Shared, BINARY_ON_SSE, SSE_ON_PLAIN};
use crate::{CloseInfo, Error, Message};

/// The body of every response this crate makes: an HTTP stream's body, fed by its channel, or
/// the fixed body of a `101`, a rejection or a response sent whole.
///
/// The body ends normally when the channel is closed (also by its timeout). It ends with an
/// error (hyper then aborts the response) only if it is polled after the channel failed.
pub struct Body {
    inner: Inner,
}

enum Inner {
    Full(Option<Bytes>),
    Stream(Box<Streaming>),
}

/// Dropped in its span too: the body's drop reports its failed sends and drops the
/// application's sources (whose panicking `Drop` is logged). Before stop 30 (2026-12-06) that
/// ran outside the handler's span.
impl Drop for Streaming {
    fn drop(&mut self) {
        let _span = self.span.as_deref().map(tracing::Span::enter);
        drop(self.body.take());
    }
}

/// An HTTP stream's body, as [`Body`] holds it.
struct Streaming {
    /// In a `Mutex` only to make the body `Sync`, as hyper's `BoxBody` asks (the application's
    /// readers and streams in it need only be `Send`): reached through `&mut`
    /// (`Mutex::get_mut`), never locked. Before stop 30 (2026-12-06) the body was not `Sync`:
    /// `BodyExt::boxed` refused it. `None` only while it is dropped (in the span, see `Drop`).
    body: Option<Mutex<StreamBody>>,
    /// Its `finished`, for `is_end_stream`.
    finished: bool,
    /// The span current when the channel was made (the handler's), if any (boxed: 8 bytes of an
    /// idle stream's memory, not 32, where no subscriber is installed), entered while hyper's task
    /// polls the body: what the stream logs is tied to its request, as a WebSocket's is.
    span: Option<Box<tracing::Span>>,
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Full(b) => {
                f.debug_tuple("Body::Full").field(&b.as_ref().map(Bytes::len)).finish()
            }
            Inner::Stream(..) => f.write_str("Body::Stream"),
        }
    }
}

impl Body {
    /// An empty body.
    #[must_use]
    pub fn empty() -> Self {
        Self { inner: Inner::Full(None) }
    }

    /// A body of these bytes.
    #[must_use]
    pub fn full(bytes: Bytes) -> Self {
        Self { inner: Inner::Full(if bytes.is_empty() { None } else { Some(bytes) }) }
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Self::full(bytes)
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Self::full(Bytes::from_static(s.as_bytes()))
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Self::full(Bytes::from(s))
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Self::full(Bytes::from(v))
    }
}

impl Default for Body {
    fn default() -> Self {
        Self::empty()
    }
}

impl http_body::Body for Body {
    type Data = BodyData;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<BodyData>, Error>>> {
        match &mut self.inner {
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b.into())))),
            Inner::Stream(s) => {
                let _span = s.span.as_deref().map(tracing::Span::enter);
                let Some(body) = s.body.as_mut() else { return Poll::Ready(None) };
                let body = body.get_mut().unwrap_or_else(PoisonError::into_inner);
                let poll = body.poll_frame(cx);
                s.finished = body.finished;
                poll
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => b.is_none(),
            Inner::Stream(s) => s.finished,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Stream(..) => SizeHint::default(),
        }
    }
}

fn deadline_sleep(deadline: Option<Instant>) -> Option<Pin<Box<Sleep>>> {
    deadline.map(|d| Box::pin(tokio::time::sleep_until(d)))
}

/// An HTTP stream before its head was sent.
pub(crate) struct StreamHead {
    shared: Arc<Shared>,
    /// The handler's span, for the body (see [`Streaming::span`]).
    span: Option<Box<tracing::Span>>,
    deadline: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    done: bool,
    /// A sequence sent first, taken from the queue while its first item is awaited: that item
    /// may be a response head (see [`peek_sequence`](Self::peek_sequence)).
    peeking: Option<Box<Peek>>,
    /// A head without content (204, 304) came first in a sequence, with more after it.
    extra_content: bool,
    /// Such a head came, and the timeout before the end of its sequence.
    cut_short: bool,
}

type Items = Pin<Box<dyn futures_core::Stream<Item = Message> + Send>>;

/// A sequence being peeked by [`StreamHead::peek_sequence`].
struct Peek {
    /// The queue item it was taken from.
    seq: u64,
    /// The sequence and those nested first in it, innermost last.
    stack: Vec<Items>,
    /// A head without content found first: the rest must be empty.
    head: Option<Box<crate::message::ResponseHead>>,
}

impl Peek {
    /// The message to put back as it stands: the head found, or what is left of the sequence.
    fn take_message(&mut self) -> Message {
        match self.head.take() {
            Some(head) => Message::Response(head),
            None => Message::stream(Self::flat(std::mem::take(&mut self.stack))),
        }
    }

    /// `first`, then what is left of the sequence, innermost first.
    fn rest_after(&mut self, first: Message) -> Message {
        use futures_util::StreamExt;
        let rest = Self::flat(std::mem::take(&mut self.stack));
        Message::stream(futures_util::stream::once(std::future::ready(first)).chain(rest))
    }

    fn flat(stack: Vec<Items>) -> impl futures_core::Stream<Item = Message> + Send {
        use futures_util::StreamExt;
        futures_util::stream::iter(stack.into_iter().rev()).flatten()
    }
}

/// What a step of [`StreamHead::poll_peek`] came to.
enum Peeked {
    /// The sequence failed; look at the next item.
    Again,
    /// The sequence (or what it became) is back in its place: decide the head.
    Done,
    /// Its first item is not there yet (or the step budget ran out: woken already).
    Waiting,
}

impl StreamHead {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let timeout = shared.config.get().timeout;
        let deadline = (!timeout.is_zero()).then(|| Instant::now() + timeout);
        if let Some(deadline) = deadline {
            let close_timeout = shared.config.get().close_timeout;
            let weak = Arc::downgrade(&shared);
            let watchdog = tokio::spawn(async move {
                tokio::time::sleep_until(deadline).await;
                // The stream's time is up: nothing sent from now on could go out. (The body
                // ends itself at the deadline when hyper next polls it.)
                let Some(mut shared) = weak.upgrade() else { return };
                shared.stop_accepting();
                // hyper does not poll the body while its buffer is full (a client that reads
                // nothing): such a stream is dropped once the client has taken nothing for a
                // close timeout, unless it closed before (the channel aborts this task). Before
                // stop 28 (2026-12-05) it was dropped a close timeout after the deadline
                // whatever the client did: one reading steadily, whose response was whole,
                // got `TimedOut` and its sends `Closed`.
                loop {
                    let seen = shared.progress();
                    drop(shared);
                    tokio::time::sleep(close_timeout).await;
                    let Some(now) = weak.upgrade() else { return };
                    if now.progress() == seen {
                        now.time_out();
                        return;
                    }
                    shared = now;
                }
            });
            shared.set_watchdog(watchdog.abort_handle());
        }
        Self {
            timer: deadline_sleep(deadline),
            deadline,
            shared,
            span: Some(tracing::Span::current()).filter(|span| !span.is_none()).map(Box::new),
            done: false,
            peeking: None,
            extra_content: false,
            cut_short: false,
        }
    }

    /// A sequence sent first has its first item looked at before the head is decided: the
    /// spec has each item of a sequence pass through `send!`, so a response head first in one
    /// is the stream's first message (and in a sequence nested first, the same). Before stop
    /// 27 (2026-12-05) it failed the whole send (`InvalidMessage`) and the stream went out
    /// with the handler's head. Pending while the sequence's first item is.
    fn peek_sequence(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let mut peek = match self.peeking.take() {
                Some(peek) => peek,
                None => {
                    let taken = self.shared.with_queue(|q| match q.front_mut() {
                        Some(Queued { seq, item: Item::Send(m @ Message::Seq(_)), .. }) => {
                            match std::mem::replace(m, Message::Binary(Bytes::new())) {
                                Message::Seq(items) => Some((*seq, items)),
                                _ => unreachable!("matched as a sequence just above"),
                            }
                        }
                        _ => None,
                    });
                    match taken {
                        Some((seq, items)) => {
                            Box::new(Peek { seq, stack: vec![items], head: None })
                        }
                        None => return Poll::Ready(()),
                    }
                }
            };
            match self.poll_peek(&mut peek, cx) {
                Peeked::Again => continue,
                Peeked::Done => return Poll::Ready(()),
                Peeked::Waiting => {
                    self.peeking = Some(peek);
                    return Poll::Pending;
                }
            }
        }
    }

    /// Polls the sequence being peeked until its first item decides, at most
    /// [`YIELD_AFTER`] steps at a time (a feed of empty sequences, always ready, must not hold
    /// the task; and nested sequences are a stack, not a chain of streams, which 5,000 empty
    /// ones made deep enough to overflow the thread's stack, before stop 27, 2026-12-05).
    fn poll_peek(&mut self, peek: &mut Peek, cx: &mut Context<'_>) -> Peeked {
        for _ in 0..YIELD_AFTER {
            let Some(top) = peek.stack.last_mut() else {
                // The sequence ended: nothing in it, or a head without content and nothing
                // after it.
                let message = peek.head.take().map_or_else(|| Message::seq([]), Message::Response);
                self.put_back(peek.seq, message);
                return Peeked::Done;
            };
            let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                top.as_mut().poll_next(cx)
            }));
            let item = match polled {
                Ok(Poll::Pending) if !self.shared.is_forced() => {
                    // A forced close (a shutdown's deadline) must reach the head meanwhile.
                    self.shared.register_transport(cx);
                    return Peeked::Waiting;
                }
                Ok(Poll::Pending) => {
                    self.put_back(peek.seq, peek.take_message());
                    return Peeked::Done;
                }
                Ok(Poll::Ready(None)) => {
                    peek.stack.pop();
                    continue;
                }
                Ok(Poll::Ready(Some(item))) => item,
                Err(payload) => {
                    let error = Error::from_panic(payload);
                    tracing::error!(?error, "a message source panicked; that send fails");
                    self.fail_front(peek.seq, error);
                    return Peeked::Again;
                }
            };
            if peek.head.is_some() {
                match item {
                    // Nothing that would be content: look on.
                    Message::Text(t) if t.is_empty() => continue,
                    Message::Binary(b) if b.is_empty() => continue,
                    Message::Seq(inner) => {
                        peek.stack.push(inner);
                        continue;
                    }
                    // Content after a head whose status has none: the send fails (see
                    // `First::HeadOnly`); the rest of the sequence is not read.
                    _ => {
                        self.extra_content = true;
                        self.put_back(peek.seq, peek.take_message());
                        return Peeked::Done;
                    }
                }
            }
            match item {
                Message::Seq(inner) => peek.stack.push(inner),
                Message::Response(head) if head.status.is_some_and(|s| s.is_informational()) => {
                    // As for a head sent alone (see `Shared::enqueue`).
                    self.fail_front(peek.seq, Error::InvalidMessage(INFORMATIONAL));
                    return Peeked::Again;
                }
                // A status without content: whether anything follows it decides.
                Message::Response(head) if head.status.is_some_and(has_no_content) => {
                    peek.head = Some(head);
                }
                Message::Response(mut head) => {
                    let body = head.body.take().map_or_else(|| Message::seq([]), |b| *b);
                    head.body = Some(Box::new(peek.rest_after(body)));
                    self.put_back(peek.seq, Message::Response(head));
                    return Peeked::Done;
                }
                item => {
                    let message = peek.rest_after(item);
                    self.put_back(peek.seq, message);
                    return Peeked::Done;
                }
            }
        }
        cx.waker().wake_by_ref();
        Peeked::Waiting
    }

    /// Fails the sequence taken by [`peek_sequence`](Self::peek_sequence), if it is still
    /// there.
    fn fail_front(&self, seq: u64, error: Error) {
        let failed = self.shared.with_queue(|q| {
            q.front().is_some_and(|f| f.seq == seq).then(|| q.pop_front()).flatten()
        });
        if let Some(failed) = failed {
            // A head sent after it may still be the stream's (before stop 27's last fix, one
            // sent alone was refused, one in a sequence taken).
            self.shared.unsend_first();
            self.shared.finish_items(seq, failed.size, &mut vec![(seq, error)]);
        }
    }

    /// Puts a sequence taken by [`peek_sequence`](Self::peek_sequence) back in its place, if
    /// the item is still there (a forced close may have failed it meanwhile).
    fn put_back(&self, seq: u64, message: Message) {
        self.shared.with_queue(|q| {
            if let Some(Queued { seq: front, item: Item::Send(m), .. }) = q.front_mut() {
                if *front == seq {
                    *m = message;
                }
            }
        });
    }

    /// Ready with the response once the head is due.
    pub(crate) fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        status: StatusCode,
        headers: &mut HeaderMap,
    ) -> Poll<Response<Body>> {
        if self.shared.sse {
            return Poll::Ready(self.sse_head(status, headers));
        }
        let mut status = status;
        let timed_out = self.timer.as_mut().is_some_and(|t| t.as_mut().poll(cx).is_ready());
        let mut timed_out = timed_out;
        if timed_out {
            if let Some(mut peek) = self.peeking.take() {
                if peek.head.is_some() {
                    // A head without content found, the rest of its sequence still to come:
                    // that head is the answer, and the send did not finish (`Closed`).
                    timed_out = false;
                    self.cut_short = true;
                }
                self.put_back(peek.seq, peek.take_message());
            }
        } else if self.peek_sequence(cx).is_pending() {
            return Poll::Pending;
        }
        let is_head = self.shared.request.method() == Method::HEAD;
        let first = self.shared.with_queue(|q| {
            if timed_out {
                return First::TimedOut;
            }
            match q.front() {
                None => First::Nothing,
                Some(Queued { item: Item::Close(..), .. }) => {
                    First::CloseOnly(q.pop_front().map_or(0, |c| c.seq))
                }
                Some(Queued { item: Item::Send(_), .. }) => {
                    // Unwrap a response head; the item keeps its place and number.
                    if let Some(Queued {
                        item: Item::Send(m @ Message::Response(_)), size, ..
                    }) = q.front_mut()
                    {
                        let Message::Response(head) =
                            std::mem::replace(m, Message::Binary(Bytes::new()))
                        else {
                            unreachable!("matched as a response head just above")
                        };
                        if let Some(s) = head.status {
                            status = s;
                        }
                        let mut last = None;
                        for (name, value) in head.headers {
                            if let Some(name) = name {
                                headers.remove(&name);
                                last = Some(name);
                            }
                            if let Some(name) = &last {
                                headers.append(name.clone(), value);
                            }
                        }
                        *m = head.body.map_or(Message::Binary(Bytes::new()), |b| *b);
                        *size = m.queued_size();
                    }
                    let closes_after =
                        matches!(q.get(1), Some(Queued { item: Item::Close(..), .. }));
                    let simple = matches!(
                        q.front(),
                        Some(Queued {
                            item: Item::Send(Message::Text(_) | Message::Binary(_)),
                            ..
                        })
                    );
                    let no_content = has_no_content(status);
                    if closes_after && simple && !no_content {
                        let first = q.pop_front().expect("front checked above");
                        let close_seq = if is_head { None } else { q.pop_front().map(|c| c.seq) };
                        First::Whole(first, close_seq)
                    } else if is_head || no_content || declares_zero(headers) {
                        // No body, whatever comes: the first send is the whole response (RFC
                        // 9110 §9.3.2, §6.4.1). Before stop 27 (2026-12-05) a 204 or 304 sent
                        // its messages as a body (over HTTP/2: DATA frames, a malformed
                        // response), and over HTTP/1.1 hyper never polled the body, so an
                        // empty first send reported `Err(Closed)`.
                        let first = q.pop_front().expect("front checked above");
                        First::HeadOnly(first, no_content)
                    } else {
                        First::Stream
                    }
                }
            }
        });
        let charset = Charset::from_content_type(headers.get(header::CONTENT_TYPE));
        if let Ok(c) = charset {
            tracing::trace!(charset = c.name(), "http stream head is due");
        }
        let (body, close) = match first {
            First::Nothing if self.shared.is_forced() => {
                // Forced off before its head (a shutdown's deadline while the head waited on a
                // sequence's first item; the queue is gone): the body fails at once, and hyper
                // aborts the response. Before, the head waited for good, and the client with it.
                (self.body(Encoding::Charset(charset), None), Some(()))
            }
            First::Nothing => {
                self.shared.register_transport(cx);
                // A send may have come in between the look and the registration.
                if self.shared.with_queue(|q| q.is_empty()) {
                    return Poll::Pending;
                }
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            First::TimedOut => (Body::empty(), None),
            First::CloseOnly(seq) => {
                self.shared.finish_items(seq, 0, &mut Vec::new());
                (Body::empty(), None)
            }
            First::Whole(first, close_seq) => {
                let mut failures = Vec::new();
                let bytes = match first.item {
                    Item::Send(Message::Text(s)) => match charset {
                        Ok(c) => c.encode(s),
                        Err(label) => {
                            failures.push((first.seq, Error::UnknownCharset(label)));
                            Bytes::new()
                        }
                    },
                    Item::Send(Message::Binary(b)) => b,
                    _ => Bytes::new(),
                };
                let upto = close_seq.unwrap_or(first.seq);
                // The send completes, and the channel closes, here, when the response is
                // decided: a handler may wait for this send before it returns the response
                // (`join!(reply, sender.send_and_close(..))`), and hyper writes nothing before
                // that. Waiting for hyper's write (tried at stop 28, 2026-12-05) deadlocked such
                // a handler. A connection dropped before hyper writes loses the response.
                self.shared.finish_items(upto, first.size, &mut failures);
                // The length is the message's; a `Transfer-Encoding` the handler set would
                // contradict it (hyper then refused the head: no response at all, the send
                // `Ok`, before stop 27, 2026-12-05). A HEAD keeps a length the handler
                // declared: the one its GET would send (RFC 9110 §9.3.2).
                headers.remove(header::TRANSFER_ENCODING);
                if !(is_head && headers.contains_key(header::CONTENT_LENGTH)) {
                    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                }
                (if is_head { Body::empty() } else { Body::full(bytes) }, None)
            }
            First::HeadOnly(first, no_content) => {
                let mut failures = Vec::new();
                if no_content {
                    // A 304 may say its 200's length (RFC 9110 §8.6; hyper's HTTP/1.1 encoder
                    // drops it all the same); a 204 may not.
                    if status != StatusCode::NOT_MODIFIED {
                        headers.remove(header::CONTENT_LENGTH);
                    }
                    headers.remove(header::TRANSFER_ENCODING);
                    // Content that cannot go out fails its send; a file, reader or sequence
                    // is not read, as after a HEAD (a sequence that began with this head
                    // holds the head's body and whatever followed it).
                    let content = self.extra_content
                        || match &first.item {
                            Item::Send(Message::Text(t)) => !t.is_empty(),
                            Item::Send(Message::Binary(b)) => !b.is_empty(),
                            _ => false,
                        };
                    if content {
                        failures.push((first.seq, Error::InvalidMessage(BODY_ON_NO_CONTENT)));
                    } else if self.cut_short {
                        failures.push((first.seq, Error::Closed));
                    }
                }
                self.shared.finish_items(first.seq, first.size, &mut failures);
                (Body::empty(), None)
            }
            First::Stream => {
                let declared = self.declared_length(headers);
                if declared.is_none() {
                    // No `X-Accel-Buffering: no` here, unlike SSE's head (README, "Behind
                    // nginx"): a head with no header of the application's own allocates no
                    // header map, which hyper keeps for the connection's life; this one would
                    // cost each idle stream ~0.8 KiB (18.19 against 17.42 KiB, measured in
                    // stop 30).
                    self.close_delimited_over_http10(headers);
                }
                let body = self.body(Encoding::Charset(charset), declared);
                (body, Some(()))
            }
        };
        if close.is_none() {
            // The whole response is decided: the channel is closed.
            self.shared.finish(CloseInfo::http(), None);
        }
        self.done = true;
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = std::mem::take(headers);
        Poll::Ready(response)
    }
}

/// Statuses whose responses have no content (RFC 9110 §6.4.1): 1xx, 204 and 304.
fn has_no_content(status: StatusCode) -> bool {
    status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// A `Content-Length` of 0, alone and not overridden by a `Transfer-Encoding` (see
/// [`StreamHead::declared_length`]): a response with an empty body, decided at its head.
fn declares_zero(headers: &HeaderMap) -> bool {
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let only = (lengths.next(), lengths.next());
    !headers.contains_key(header::TRANSFER_ENCODING)
        && matches!(only, (Some(v), None) if v.as_bytes().trim_ascii() == b"0")
}

pub(crate) const INFORMATIONAL: &str = "a 1xx status is not a final response";

const BODY_ON_NO_CONTENT: &str = "a 1xx, 204 or 304 response has no body: the message was not sent";

impl StreamHead {
    /// The `Content-Length` a streamed response declares. With a `Transfer-Encoding` it is
    /// dropped (RFC 9112 §6.1: the encoding wins); a value that is not a number is dropped and
    /// reported, and the stream goes out chunked. Before stop 27 (2026-12-05) either made
    /// hyper refuse the head: no response at all, and every send `Err(Closed)`.
    fn declared_length(&self, headers: &mut HeaderMap) -> Option<u64> {
        let value = headers.get(header::CONTENT_LENGTH)?;
        if headers.contains_key(header::TRANSFER_ENCODING) {
            headers.remove(header::CONTENT_LENGTH);
            return None;
        }
        let declared = value.to_str().ok().and_then(|v| v.trim().parse().ok());
        if declared.is_none() || headers.get_all(header::CONTENT_LENGTH).iter().count() > 1 {
            headers.remove(header::CONTENT_LENGTH);
            self.shared.report(Error::InvalidMessage(
                "the response's Content-Length is not one number: it was dropped",
            ));
            return None;
        }
        declared
    }

    /// The streamed body that follows the head.
    fn body(&mut self, encoding: Encoding, declared: Option<u64>) -> Body {
        let sse_keepalive = match encoding {
            Encoding::Sse => self.shared.config.get().sse_keepalive,
            Encoding::Charset(_) => None,
        };
        let stateful = match &encoding {
            Encoding::Charset(Ok(charset)) => charset.stateful_encoder(),
            _ => None,
        };
        let body = StreamBody {
            shared: Arc::clone(&self.shared),
            encoding,
            sse_keepalive: sse_keepalive.map(|p| Box::pin(tokio::time::sleep(p))),
            stateful: stateful.map(Box::new),
            ending: false,
            declared,
            written: 0,
            batch: VecDeque::new(),
            current: None,
            done_upto: 0,
            receipted: 0,
            done_bytes: 0,
            failures: Vec::new(),
            // A timer of its own, on the runtime that polls the body (hyper's): the head's
            // was made where `as_channel` ran.
            timer: deadline_sleep(self.deadline),
            finished: false,
            // A declared length: no frame may carry a message past it (see `poll_data`).
            one_per_frame: declared.is_some()
                || self.shared.request.version() == http::Version::HTTP_2,
        };
        Body {
            inner: Inner::Stream(Box::new(Streaming {
                body: Some(Mutex::new(body)),
                finished: false,
                span: self.span.take(),
            })),
        }
    }

    /// A body with no length over HTTP/1.0 ends with the connection: say so (hyper would
    /// still echo a 1.0 client's keep-alive).
    fn close_delimited_over_http10(&self, headers: &mut HeaderMap) {
        if self.shared.request.version() == http::Version::HTTP_10 {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }

    /// An SSE stream's head goes out at open.
    fn sse_head(&mut self, status: StatusCode, headers: &mut HeaderMap) -> Response<Body> {
        self.done = true;
        for (name, value) in [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ] {
            if !headers.contains_key(&name) {
                headers.insert(name, HeaderValue::from_static(value));
            }
        }
        let ends_now = self.shared.request.method() == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || !status.is_success();
        let body = if ends_now {
            // No event will ever be read: a HEAD, or a status that ends the stream (204
            // tells a browser to stop reconnecting).
            self.shared.finish(CloseInfo::http(), None);
            Body::empty()
        } else {
            // Before stop 30 (2026-12-06) an HTTP/1.0 SSE stream answered a client's
            // keep-alive with `connection: keep-alive` on a body only its close could end.
            self.close_delimited_over_http10(headers);
            self.body(Encoding::Sse, None)
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = std::mem::take(headers);
        response
    }
}

impl Drop for StreamHead {
    fn drop(&mut self) {
        if !self.done {
            // The reply was dropped (the handler gave up, or the client went away before the
            // head): nobody will ever read this stream.
            self.shared.finish(CloseInfo::http(), None);
        }
    }
}

enum First {
    Nothing,
    TimedOut,
    CloseOnly(u64),
    Whole(Queued, Option<u64>),
    /// A HEAD request, a status without content (`true`), or a declared length of 0.
    HeadOnly(Queued, bool),
    Stream,
}

/// How text becomes bytes on this stream.
enum Encoding {
    /// In the charset of the `Content-Type` (or the unknown label).
    Charset(Result<Charset, String>),
    /// As server-sent events.
    Sse,
}

struct StreamBody {
    shared: Arc<Shared>,
    encoding: Encoding,
    /// SSE: a comment after `Config::sse_keepalive` without an event.
    sse_keepalive: Option<Pin<Box<Sleep>>>,
    /// The `Content-Length` the handler declared, if any: hyper stops polling (and drops the
    /// body) once that many bytes went out.
    declared: Option<u64>,
    /// Bytes given to hyper so far.
    written: u64,
    batch: VecDeque<Queued>,
    current: Option<(u64, usize, Pump)>,
    /// Every item up to this one was taken: into a frame, or done without one.
    done_upto: u64,
    /// The encoder of a stateful charset (ISO-2022-JP), kept from one message to the next;
    /// taken when the body ends, for the bytes that return it to ASCII. Boxed: 48 bytes that
    /// every other stream would carry.
    stateful: Option<Box<encoding_rs::Encoder>>,
    /// Those bytes were given out: the body ends next, with nothing gathered behind them.
    ending: bool,
    /// Items up to this one were handed on to complete once written (with a frame's receipt,
    /// or to the channel, for those after the last frame).
    receipted: u64,
    /// Queue room of taken items not yet given back.
    done_bytes: usize,
    failures: Vec<(u64, Error)>,
    timer: Option<Pin<Box<Sleep>>>,
    finished: bool,
    /// HTTP/2, or a declared `Content-Length`: each message in a frame of its own, neither
    /// gathered nor coalesced (with a declared length, so that a frame cut at it holds no
    /// message wholly after it: see [`poll_data`](Self::poll_data)). A frame's
    /// sends complete together once hyper has taken all of it, and HTTP/2's flow control
    /// often stops a frame midway (a client that reads slowly): a client that then reset its
    /// stream had the messages it had read whole reported `Err(Closed)` with the rest of their
    /// frame (48 read, 32 reported sent, before 2026-12-05). Over HTTP/1.1 frames are still
    /// gathered, for hyper's vectored writes; a connection that breaks midway fails a frame's
    /// messages the same way, conservatively: never a success for what was not written.
    one_per_frame: bool,
}

/// Tiny messages already queued behind each other are copied into one buffer: below a few
/// hundred bytes a copy costs less than an iovec and a trip through hyper for each (64 B
/// chunks: 0.54 against 0.33 GB/s). Larger ones go out as they came, each a buffer of the
/// frame (which is one chunk whatever it holds): the copy would be one more pass over memory
/// the kernel then reads again (1 KiB chunks: 3.3 against 2.2 GB/s when they were copied
/// into 16 KiB buffers; raw hyper 2.8).
const COALESCE_BELOW: usize = 512;
const COALESCE_UP_TO: usize = 16 * 1024;

/// At most this many buffers in one frame. hyper writes up to 64 iovecs at once, and each
/// chunk of the chunked encoding adds two (its size line and its end).
const GATHER_BUFFERS: usize = 32;

impl StreamBody {
    fn encode_piece(&mut self, piece: Piece) -> Result<Bytes, Error> {
        match (&self.encoding, piece) {
            (Encoding::Charset(Ok(_)), Piece::Text(s)) if self.stateful.is_some() => {
                let encoder = self.stateful.as_mut().expect("checked just above");
                Ok(crate::charset::encode_with(encoder, &s, false))
            }
            (Encoding::Sse, Piece::Sse(b)) => Ok(b),
            // Inside a sequence (alone, `enqueue` refuses it): the event's bytes would go out
            // raw, whatever the charset (before 2026-12-05).
            (Encoding::Charset(_), Piece::Sse(_)) => Err(Error::InvalidMessage(SSE_ON_PLAIN)),
            (Encoding::Sse, Piece::Text(s)) => Ok(crate::sse::data_event(&s)),
            (Encoding::Sse, Piece::Binary(_)) => Err(Error::InvalidMessage(BINARY_ON_SSE)),
            (Encoding::Charset(Ok(c)), Piece::Text(s)) => Ok(c.encode(s)),
            (Encoding::Charset(Err(label)), Piece::Text(_)) => {
                Err(Error::UnknownCharset(label.clone()))
            }
            (Encoding::Charset(_), Piece::Binary(b)) => Ok(b),
        }
    }

    /// The queued size of the batch's next message when it is plain text or binary (ready at
    /// once, no pump needed).
    fn next_simple(&self) -> Option<usize> {
        match self.batch.front() {
            Some(Queued {
                item: Item::Send(Message::Text(_) | Message::Binary(_)), size, ..
            }) => Some(*size),
            _ => None,
        }
    }

    /// Takes the batch's next message, checked with [`next_simple`](Self::next_simple), and
    /// counts it done: its bytes, empty when it failed (its error is kept for the report).
    fn take_simple(&mut self) -> Bytes {
        let Some(Queued { seq, size, item: Item::Send(message) }) = self.batch.pop_front() else {
            unreachable!("next_simple checked the front")
        };
        let piece = match message {
            Message::Binary(b) => Piece::Binary(b),
            Message::Text(t) => Piece::Text(t),
            _ => unreachable!("next_simple takes only text and binary"),
        };
        let bytes = self.encode_piece(piece).unwrap_or_else(|e| {
            self.failures.push((seq, e));
            Bytes::new()
        });
        self.done_upto = seq;
        self.done_bytes += size;
        bytes
    }

    /// Appends to `first` the small text and binary messages queued right behind it.
    fn coalesce(&mut self, first: Bytes) -> Bytes {
        let mut out: Option<bytes::BytesMut> = None;
        let mut total = first.len();
        while let Some(size) = self.next_simple() {
            if size >= COALESCE_BELOW || total + size > COALESCE_UP_TO {
                break;
            }
            let bytes = self.take_simple();
            total += bytes.len();
            out.get_or_insert_with(|| {
                let mut buf = bytes::BytesMut::with_capacity(COALESCE_UP_TO);
                buf.extend_from_slice(&first);
                buf
            })
            .extend_from_slice(&bytes);
        }
        out.map_or(first, bytes::BytesMut::freeze)
    }

    /// A buffer, with the small messages behind it when it is small itself.
    fn coalesced(&mut self, bytes: Bytes) -> Bytes {
        if bytes.len() < COALESCE_BELOW && self.current.is_none() && !self.one_per_frame {
            self.coalesce(bytes)
        } else {
            bytes
        }
    }

    /// Gives back the queue room of the items taken, and records the errors of those that
    /// failed (before anything can complete them).
    fn report(&mut self) {
        if self.done_bytes > 0 || !self.failures.is_empty() {
            self.shared.finish_items(0, self.done_bytes, &mut self.failures);
            self.done_bytes = 0;
        }
    }

    /// The items taken since the last frame complete once the frames before them are written.
    fn complete(&mut self) {
        self.report();
        if self.done_upto > self.receipted {
            self.shared.complete_after_frames(self.done_upto);
            self.receipted = self.done_upto;
        }
    }

    /// The frame `data` is about to go to hyper: it completes the items taken up to now once
    /// it is written (see [`Receipt`]).
    fn receipted(&mut self, data: BodyData) -> BodyData {
        let upto = if self.done_upto > self.receipted { self.done_upto } else { 0 };
        self.receipted = self.done_upto;
        self.shared.frame_out(std::mem::take(&mut self.done_bytes), &mut self.failures);
        data.with_receipt(Receipt::new(Arc::clone(&self.shared), upto))
    }

    /// The bytes that end a stateful charset's text in its initial state (ISO-2022-JP: back to
    /// ASCII), once, when the body is about to end; `None` when there are none.
    fn trailer(&mut self) -> Option<Bytes> {
        let bytes = crate::charset::encode_with(&mut *self.stateful.take()?, "", true);
        self.ending = true;
        (!bytes.is_empty()).then_some(bytes)
    }

    /// The body's end: what is done completes once the last frame is written, and the
    /// channel then closes.
    fn end(&mut self) -> Poll<Option<Bytes>> {
        if self.declared.is_some_and(|declared| self.written < declared) {
            // Ended (timeout, shutdown, close) before its declared length: hyper aborts the
            // response (see `poll_frame`), and the client gets a truncated one (HTTP/1.1) or a
            // reset stream (HTTP/2). Said, not hidden.
            self.shared.report(Error::io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the stream ended before the Content-Length its response head declared",
            )));
        }
        self.report();
        self.finished = true;
        self.shared.body_end(self.done_upto);
        Poll::Ready(None)
    }

    /// The whole declared length went out (or is in hyper's hands), and hyper needs no more:
    /// the message that was being sent is complete, and so is a close right behind it.
    fn declared_length_sent(&mut self) {
        if let Some((seq, size, _)) = self.current.take() {
            self.done_upto = seq;
            self.done_bytes += size;
        }
        if let Some(Queued { seq, item: Item::Close(..), .. }) = self.batch.front() {
            self.done_upto = *seq;
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<BodyData>, Error>>> {
        if self.shared.is_forced() && !self.finished {
            // Dropped (a shutdown's deadline, or a client that took nothing after the timeout;
            // the channel is closed already): hyper aborts the response.
            self.finished = true;
            self.report();
            self.shared.body_end(self.done_upto);
            return Poll::Ready(Some(Err(Error::Closed)));
        }
        if !self.finished && self.declared.is_some_and(|declared| self.written >= declared) {
            // The body is complete. HTTP/1.1 stops polling by itself; HTTP/2 needs the end.
            self.declared_length_sent();
            return self.end().map(|_| None);
        }
        let polled = self.poll_data(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                self.written += frame.data_ref().map_or(0, |d| d.remaining() as u64);
            }
            Poll::Ready(None) if self.declared.is_some_and(|declared| self.written < declared) => {
                // Ended short of its declared length (see `end`): an error, so that hyper
                // aborts the response. A clean end gave an HTTP/2 client END_STREAM on a body
                // shorter than its Content-Length (malformed, RFC 9113 §8.1.1), which a client
                // could take for whole (before stop 28, 2026-12-05); over HTTP/1.1 hyper
                // dropped the connection, as it still does.
                return Poll::Ready(Some(Err(Error::Closed)));
            }
            _ => {}
        }
        if let Some(sleep) = &mut self.sse_keepalive {
            let period = self.shared.config.get().sse_keepalive.unwrap_or_default();
            match &polled {
                Poll::Ready(Some(Ok(_))) => sleep.as_mut().reset(Instant::now() + period),
                Poll::Pending if sleep.as_mut().poll(cx).is_ready() => {
                    sleep.as_mut().reset(Instant::now() + period);
                    let comment = BodyData::from(Bytes::from_static(b":\n\n"));
                    return Poll::Ready(Some(Ok(Frame::data(self.receipted(comment)))));
                }
                _ => {}
            }
        }
        polled
    }

    /// The next frame: the next buffer, and with it the plain messages queued behind it, each
    /// as its own buffer (see [`BodyData`]).
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<BodyData>, Error>>> {
        let mut first = match self.poll_piece(cx) {
            Poll::Ready(Some(bytes)) => bytes,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(declared) = self.declared {
            // Past the declared length (a file that grew since the head was made, a message
            // longer than the handler said): the bytes after it are not sent. hyper would cut
            // the frame itself, but then drop it unwritten as far as its receipt can tell, and
            // its sends would fail though the client got a whole response (before stop 27,
            // 2026-12-05).
            // A frame here holds one message (`one_per_frame`): the one that reaches the length
            // completes, and those after it are never taken (they fail with `Closed`).
            let owed = declared - self.written;
            if first.len() as u64 > owed {
                tracing::debug!(
                    cut = first.len() as u64 - owed,
                    "bytes past the declared Content-Length are not sent"
                );
                first.truncate(owed as usize);
            }
        }
        let mut data = BodyData::from(first);
        let before = self.done_bytes;
        while !self.one_per_frame
            && !self.ending
            && self.current.is_none()
            && data.buffers() < GATHER_BUFFERS
            && self.next_simple().is_some()
        {
            let bytes = self.take_simple();
            let bytes = self.coalesced(bytes);
            data.push(bytes);
        }
        // hyper takes frames until it holds ~400 KiB (its default `max_buf_size`) and holds a
        // frame until it is written: the messages gathered behind the first keep their room in
        // the queue until then (see `Held`), so a frame may take the whole queue (one write
        // per refill) and a slow reader's stream still holds at most its queue limit plus
        // hyper's buffer.
        let gathered = self.done_bytes - before;
        if gathered > 0 && data.buffers() > 1 {
            self.done_bytes = before;
            data.hold(Held::new(self.shared.clone(), gathered));
        }
        Poll::Ready(Some(Ok(Frame::data(self.receipted(data)))))
    }

    /// The next non-empty buffer of the body; `None` at its end.
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.finished {
            return Poll::Ready(None);
        }
        if self.timer.as_mut().is_some_and(|t| t.as_mut().poll(cx).is_ready()) {
            if let Some(trailer) = self.trailer() {
                return Poll::Ready(Some(trailer));
            }
            return self.end();
        }
        for _ in 0..YIELD_AFTER {
            let Some((seq, size, pump)) = &mut self.current else {
                if self.batch.is_empty() {
                    self.complete();
                    self.shared.take_queue(&mut self.batch, cx, false);
                }
                match self.batch.pop_front() {
                    None => {
                        if self.shared.is_closed() {
                            if let Some(trailer) = self.trailer() {
                                return Poll::Ready(Some(trailer));
                            }
                            self.finished = true;
                            return Poll::Ready(None);
                        }
                        // Idle: the emptied batch gives its allocation back (the shared queue
                        // got an unallocated one in the swap), so an idle stream holds none.
                        if self.batch.capacity() > 0 {
                            self.batch = VecDeque::new();
                        }
                        return Poll::Pending;
                    }
                    Some(close @ Queued { item: Item::Close(..), .. }) => {
                        if let Some(trailer) = self.trailer() {
                            self.batch.push_front(close);
                            return Poll::Ready(Some(trailer));
                        }
                        self.done_upto = close.seq;
                        return self.end();
                    }
                    Some(Queued { seq, size, item: Item::Send(message) }) => {
                        let pump = match self.encoding {
                            Encoding::Sse => Pump::text_only(message),
                            Encoding::Charset(_) => Pump::new(message),
                        };
                        match pump {
                            Ok(pump) => self.current = Some((seq, size, pump)),
                            Err(e) => {
                                self.failures.push((seq, e));
                                self.done_upto = seq;
                                self.done_bytes += size;
                            }
                        }
                        continue;
                    }
                }
            };
            let (seq, size) = (*seq, *size);
            match pump.poll_next(cx) {
                Poll::Ready(Some(Ok(piece))) => {
                    let whole = pump.is_done();
                    let bytes = match self.encode_piece(piece) {
                        Ok(bytes) => bytes,
                        Err(e) => {
                            self.failures.push((seq, e));
                            self.current = None;
                            self.done_upto = seq;
                            self.done_bytes += size;
                            continue;
                        }
                    };
                    if whole {
                        self.current = None;
                        self.done_upto = seq;
                        self.done_bytes += size;
                    }
                    let bytes = self.coalesced(bytes);
                    if bytes.is_empty() {
                        continue;
                    }
                    return Poll::Ready(Some(bytes));
                }
                Poll::Ready(Some(Err(e))) => {
                    self.failures.push((seq, e));
                    self.current = None;
                    self.done_upto = seq;
                    self.done_bytes += size;
                }
                Poll::Ready(None) => {
                    self.current = None;
                    self.done_upto = seq;
                    self.done_bytes += size;
                }
                Poll::Pending => {
                    self.complete();
                    // Waiting for the source (a quiet `Message::stream`, say): a forced close
                    // must still reach the body (before 2026-12-05 nothing woke it).
                    self.shared.register_transport(cx);
                    return Poll::Pending;
                }
            }
        }
        // Messages that give no bytes (empty texts, sources that failed), always ready: hyper's
        // task yields, and the timer is looked at again. Before stop 27 (2026-12-05) an endless
        // feed of empty messages held its thread for good, past the stream's timeout.
        self.complete();
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Drop for StreamBody {
    fn drop(&mut self) {
        if !self.finished {
            if self.declared.is_some_and(|len| len == self.written) {
                self.declared_length_sent();
            }
            // Otherwise hyper dropped the body before its end: the client went away (or the
            // connection failed). Whatever was written counts; the rest fails with `Closed`
            // (once hyper has dropped the frames it held, see `Receipt`).
            self.report();
            self.shared.body_end(self.done_upto);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Buf, Bytes};
    use http_body_util::BodyExt;

    use crate::{Config, Error, Message, Sender};

    const SIZE: usize = 64 * 1024;

    /// Queues one 64 KiB message without waiting for it: `Ok`, or the error it was refused with.
    fn queue(sender: &Sender) -> Result<(), Error> {
        let message = Message::from(Bytes::from(vec![7u8; SIZE]));
        sender.try_send(message).map(drop).map_err(|(e, _)| e)
    }

    fn assert_full(sender: &Sender) {
        let refused = queue(sender).unwrap_err();
        assert!(matches!(refused, Error::QueueFull { .. }), "{refused}");
    }

    /// A stream whose queue has room for two 64 KiB messages, with both queued, and its body.
    async fn two_queued() -> (Sender, crate::Body) {
        let config = Config::default().queue_limit(2 * SIZE);
        let (reply, channel) = crate::as_channel(http::Request::new(()), config).unwrap();
        let sender = channel.sender();
        queue(&sender).unwrap();
        queue(&sender).unwrap();
        assert_full(&sender);
        (sender, reply.await.into_body())
    }

    #[tokio::test]
    async fn gathered_messages_keep_their_queue_room_until_the_frame_is_dropped() {
        let (sender, mut body) = two_queued().await;
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(frame.remaining(), 2 * SIZE, "both queued messages in one frame");
        // The first message's room is given back; the second's is held by the frame, which
        // hyper would still hold while writing it: one more fits, two do not.
        queue(&sender).unwrap();
        assert_full(&sender);
        // A sender waiting for room is woken when hyper drops the frame (wrote it).
        let mut sink = sender.clone();
        let message = Message::from(Bytes::from(vec![7u8; SIZE]));
        let mut blocked = std::pin::pin!(futures::SinkExt::feed(&mut sink, message));
        assert!(futures::poll!(blocked.as_mut()).is_pending());
        drop(frame);
        let woken = tokio::time::timeout(std::time::Duration::from_secs(10), blocked).await;
        woken.expect("the waiting sender was not woken").unwrap();
    }

    #[tokio::test]
    async fn a_bytes_body_gives_the_room_back_with_the_last_buffer_of_a_frame() {
        let (sender, body) = two_queued().await;
        let mut body = body.into_bytes_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first.len(), SIZE);
        // The second message waits in the body, still counted: one more fits, two do not.
        queue(&sender).unwrap();
        assert_full(&sender);
        let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(second.len(), SIZE);
        queue(&sender).unwrap();
    }
}
