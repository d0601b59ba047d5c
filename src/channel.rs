//! [`Channel`] and its halves, [`Sender`] and [`Receiver`].

use std::collections::VecDeque;
use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_core::{FusedStream, Stream};
use futures_sink::Sink;
use http::request::Parts;

use crate::shared::{Shared, Taken};
use crate::{Error, Event, Message};

/// Which transport a channel runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// A WebSocket (RFC 6455).
    WebSocket,
    /// A streamed HTTP response body (chunked on HTTP/1.1, DATA frames on HTTP/2).
    HttpStream,
}

/// `WebSocket` or `HTTP stream`.
///
/// ```
/// assert_eq!(webchan::Kind::HttpStream.to_string(), "HTTP stream");
/// ```
impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::WebSocket => "WebSocket",
            Self::HttpStream => "HTTP stream",
        })
    }
}

/// One connection to a client, the same type for both transports: a
/// [`Stream`] of [`Event`]s and a [`Sink`] of [`Message`]s.
///
/// Made by [`as_channel`](crate::as_channel). Events come in a fixed order: at most one
/// [`Event::Open`], first; then messages and errors; then exactly one [`Event::Closed`]; then
/// the stream ends. Messages sent before `Open` are queued and go out in order after it.
///
/// The sink side waits (`poll_ready`) while the outgoing queue holds
/// [`Config::queue_limit`](crate::Config::queue_limit) bytes or more; `poll_flush` is ready when
/// everything sent through this handle was written to the connection (see [`Sender::send`]),
/// and fails with [`Error::Closed`] if the channel closed before that; `poll_close`
/// closes gracefully (close frame 1000, or the end of the body) and waits until closed.
///
/// [`split`](Self::split) gives a [`Receiver`] and a cloneable [`Sender`] for use from
/// different tasks. When every handle is dropped, the channel closes (1000).
///
/// # Examples
///
/// An echo over either transport:
///
/// ```
/// use futures::StreamExt;
/// use webchan::{Channel, Event};
///
/// async fn echo(mut channel: Channel) -> Result<(), webchan::Error> {
///     while let Some(event) = channel.next().await {
///         if let Event::Message(message) = event {
///             channel.send(message.into()).await?;
///         }
///     }
///     Ok(())
/// }
/// ```
#[must_use = "a channel does nothing unless its stream or sink is used"]
pub struct Channel {
    sender: Sender,
    receiver: Receiver,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("kind", &self.kind())
            .field("open", &self.is_open())
            .finish_non_exhaustive()
    }
}

impl Channel {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            sender: Sender { shared: Arc::clone(&shared), last_seq: 0 },
            receiver: Receiver { shared, local: VecDeque::new(), ended: false },
        }
    }

    /// Splits into a receiving half and a sending half (which can be cloned).
    pub fn split(self) -> (Sender, Receiver) {
        (self.sender, self.receiver)
    }

    /// Puts the two halves of one channel back together.
    ///
    /// # Errors
    ///
    /// Gives the halves back when they belong to different channels.
    pub fn reunite(sender: Sender, receiver: Receiver) -> Result<Self, (Sender, Receiver)> {
        if Arc::ptr_eq(&sender.shared, &receiver.shared) {
            Ok(Self { sender, receiver })
        } else {
            Err((sender, receiver))
        }
    }

    /// A new sending handle for this channel.
    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }

    /// Is the channel open: opened, and not closed or closing?
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.sender.is_open()
    }

    /// WebSocket or HTTP stream.
    #[must_use]
    pub fn kind(&self) -> Kind {
        self.sender.kind()
    }

    /// The request that made this channel (method, URI, version, headers, extensions).
    #[must_use]
    pub fn originating_request(&self) -> &Parts {
        self.sender.originating_request()
    }

    /// The WebSocket subprotocol webchan chose from [`Config::protocols`](crate::Config::protocols)
    /// for this request's `101`: the first of that list the client offered. `None` when the
    /// client offered none of them, when no list was set (a protocol set on the `Reply` by hand
    /// is not seen here), and for an HTTP stream. It is worked out from the request and the
    /// list at each call, so it is the same before the `101` went out (to decide whether to
    /// refuse the client) and after, also when the upgrade was refused (the refusal names no
    /// subprotocol).
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(request: http::Request<()>) -> Result<(), Box<dyn std::error::Error>> {
    /// let config = webchan::Config::default().protocols(["v2.chat", "v1.chat"]);
    /// let (reply, channel) = webchan::as_channel(request, config)?;
    /// match channel.protocol() {
    ///     Some("v2.chat") => { /* ... */ }
    ///     Some(_) => { /* v1.chat */ }
    ///     None => { /* no protocol in common: close, or answer 400 instead of the reply */ }
    /// }
    /// # drop(reply);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn protocol(&self) -> Option<&str> {
        self.sender.protocol()
    }

    /// The `Last-Event-ID` header of the request: the id of the last server-sent event a
    /// reconnecting browser saw (see [`crate::sse`]), in UTF-8 as browsers send it. `None`
    /// without the header, or if it is not UTF-8.
    #[must_use]
    pub fn last_event_id(&self) -> Option<&str> {
        last_event_id(self.originating_request())
    }

    /// Sends a message and waits until it was written to the connection (see [`Sender::send`]).
    ///
    /// # Errors
    ///
    /// See [`Sender::send`].
    pub async fn send(&mut self, message: Message) -> Result<(), Error> {
        self.sender.send(message).await
    }

    /// Closes the channel gracefully and waits until it is closed. See [`Sender::close`].
    pub async fn close(&self) {
        self.sender.close().await;
    }

    /// The next event; `None` after [`Event::Closed`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event is only taken when this returns it.
    pub async fn recv(&mut self) -> Option<Event> {
        self.receiver.recv().await
    }
}

impl Stream for Channel {
    type Item = Event;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        Pin::new(&mut self.receiver).poll_next(cx)
    }
}

impl FusedStream for Channel {
    fn is_terminated(&self) -> bool {
        self.receiver.is_terminated()
    }
}

impl Sink<Message> for Channel {
    type Error = Error;
    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.sender).poll_ready(cx)
    }
    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        Pin::new(&mut self.sender).start_send(item)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.sender).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.sender).poll_close(cx)
    }
}

/// The sending half of a [`Channel`]. Cheap to clone; every clone sends on the same channel,
/// in the order the sends were made, from any task or thread.
///
/// As a [`Sink`], `poll_flush` waits for the messages sent through this clone only, and, as
/// the `Sink` contract says, a message is sure to go out once it is flushed (`SinkExt::send`
/// and `send_all` flush; `feed` does not). On a WebSocket the flush writes the queued frames
/// from the flushing task itself when the connection's task is not busy, which saves two task
/// switches per burst (from a thread that runs no tokio task, `futures::executor::block_on` on
/// a `std::thread` say, the connection's task writes them: that work may start timers and open
/// files, which need the runtime; from a task of another runtime the flush writes them, and
/// what it starts belongs to the connection's runtime all the same); messages fed and never flushed still go out when this `Sender` is
/// dropped, or at the connection's next wake-up. [`Sender::send`] and [`Sender::try_send`]
/// need no flush. `poll_ready` waits while the queue is at or over
/// [`Config::queue_limit`](crate::Config::queue_limit); `start_send` itself takes the message
/// whatever the queue holds (the `Sink` contract asks for `poll_ready` first, and every
/// `SinkExt` method does it).
#[must_use = "sinks do nothing unless polled"]
pub struct Sender {
    shared: Arc<Shared>,
    /// The last item sent through this handle (for `poll_flush`).
    last_seq: u64,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").field("kind", &self.kind()).finish_non_exhaustive()
    }
}

impl Clone for Sender {
    fn clone(&self) -> Self {
        self.shared.add_handle();
        Self { shared: Arc::clone(&self.shared), last_seq: 0 }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.shared.drop_handle(false);
    }
}

impl Sender {
    /// Is the channel open: opened, and not closed or closing?
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.shared.is_open()
    }

    /// WebSocket or HTTP stream.
    #[must_use]
    pub fn kind(&self) -> crate::Kind {
        self.shared.kind
    }

    /// The request that made this channel.
    #[must_use]
    pub fn originating_request(&self) -> &Parts {
        self.shared.request.parts()
    }

    /// The request's `Last-Event-ID` (see [`Channel::last_event_id`]).
    #[must_use]
    pub fn last_event_id(&self) -> Option<&str> {
        last_event_id(self.originating_request())
    }

    /// The WebSocket subprotocol chosen (see [`Channel::protocol`]).
    #[must_use]
    pub fn protocol(&self) -> Option<&str> {
        self.shared.protocol()
    }

    /// Sends a message, waiting for room in the queue first, and waits until it was written to
    /// the connection: a WebSocket's frame to the socket (not only into webchan's buffer); an
    /// HTTP stream's bytes by hyper (to the socket over HTTP/1 with an IO that writes vectored,
    /// as a `TcpStream` does; into hyper's or h2's own buffer where they copy: an IO without
    /// vectored writes, HTTP/2's small frames). A connection dropped right after loses no send
    /// that completed. Two exceptions: through
    /// [`Body::into_bytes_body`](crate::Body::into_bytes_body) (axum's path), whose `Bytes`
    /// frames cannot be followed into hyper, a send completes once hyper has taken its bytes,
    /// and hyper holds up to its write buffer's limit (~400 KiB by default) not yet written,
    /// which a connection dropped then loses; and a response sent whole by
    /// [`send_and_close`](Self::send_and_close) as the first send completes, and its channel
    /// closes, when the response is decided, before hyper writes it (so a handler may wait for
    /// that send before it returns the response).
    ///
    /// Any other send, on a channel whose [`Reply`](crate::Reply) the handler has not returned
    /// yet, waits for the reply to go out: awaited in the handler before it returns the reply,
    /// it waits for ever. Send from a task of its own, or queue with
    /// [`try_send`](Self::try_send).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the channel is closed or closes before the message went out;
    /// [`Error::InvalidMessage`] for a message this channel cannot carry (the channel stays
    /// usable); the error of the message's own source (a file that cannot be opened, a reader
    /// that fails) after the part before the error was sent.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future after the message was queued does not unsend it; its error, if
    /// any, then goes to the event stream as [`Event::Error`].
    pub async fn send(&self, message: Message) -> Result<(), Error> {
        if let Err(error) = poll_fn(|cx| self.shared.poll_capacity(cx)).await {
            return Err(refused((error, message)));
        }
        self.send_now(message, false).map_err(refused)?.await
    }

    /// Sends a message and then closes the channel. On the first send of an HTTP stream this
    /// gives an ordinary response with `Content-Length` (for text and binary messages) instead
    /// of a chunked one.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub async fn send_and_close(&self, message: Message) -> Result<(), Error> {
        if let Err(error) = poll_fn(|cx| self.shared.poll_capacity(cx)).await {
            return Err(refused((error, message)));
        }
        self.send_now(message, true).map_err(refused)?.await
    }

    /// Queues a message now, without waiting, and gives a [`Completion`] that resolves when
    /// it was sent. Dropping the completion does not cancel the send (its error then goes to
    /// the event stream).
    ///
    /// # Errors
    ///
    /// The message comes back with [`Error::QueueFull`] if it would take the queue over its
    /// limit (a message is always accepted by an empty queue; the `Sink` and
    /// [`send`](Self::send) instead wait while the queue is at its limit or over, then queue
    /// the message whatever its size), [`Error::Closed`] if the channel is
    /// closed or closing, [`Error::InvalidMessage`] if this channel cannot carry it.
    pub fn try_send(&self, message: Message) -> Result<Completion, (Error, Message)> {
        self.try_send_inner(message, false)
    }

    /// [`try_send`](Self::try_send), and close the channel after the message.
    ///
    /// # Errors
    ///
    /// As [`try_send`](Self::try_send).
    pub fn try_send_and_close(&self, message: Message) -> Result<Completion, (Error, Message)> {
        self.try_send_inner(message, true)
    }

    fn try_send_inner(
        &self,
        message: Message,
        close: bool,
    ) -> Result<Completion, (Error, Message)> {
        let seq = self.shared.enqueue(message, true, close, true, false)?;
        Ok(Completion { shared: Arc::clone(&self.shared), seq, finished: false })
    }

    /// Queues for [`send`](Self::send) and [`send_and_close`](Self::send_and_close), which poll
    /// the completion at once: that poll gets the message moving (written from this task when
    /// the connection allows, see `Inline`), so the connection's task is not woken for it too.
    fn send_now(&self, message: Message, close: bool) -> Result<Completion, (Error, Message)> {
        let seq = self.shared.enqueue(message, true, close, false, true)?;
        Ok(Completion { shared: Arc::clone(&self.shared), seq, finished: false })
    }

    /// Starts a graceful close after everything queued: a close frame with code 1000 on a
    /// WebSocket, the end of the body on an HTTP stream; then waits until the channel is
    /// closed (a WebSocket waits for the client's close frame at most
    /// [`Config::close_timeout`](crate::Config::close_timeout) once that frame goes out, after
    /// what was queued before it, which a client that reads nothing holds back until keepalive
    /// finds it dead; an HTTP stream, until hyper has written the body's last bytes, or
    /// dropped the connection).
    pub async fn close(&self) {
        self.close_with(1000, "").await;
    }

    /// [`close`](Self::close) with a chosen close code and reason (WebSocket; an HTTP stream
    /// ignores both). The reason is cut to 123 bytes, the most a close frame holds. A code
    /// that RFC 6455 does not let an endpoint send goes out as 1000 (see
    /// [`start_close`](Self::start_close)).
    pub async fn close_with(&self, code: u16, reason: &str) {
        self.start_close(code, reason);
        self.closed().await;
    }

    /// Asks for a graceful close after everything queued, without waiting. Returns false when
    /// the channel was already closing or closed. Everything queued includes a sequence or
    /// stream message still being sent: behind one that never ends, the close never goes out
    /// (end its stream first, or let a [`Shutdown`](crate::Shutdown)'s deadline drop the
    /// connection).
    ///
    /// A WebSocket's close code must be one RFC 6455 lets an endpoint send: 1000-1003,
    /// 1007-1013 or 3000-4999. 1005 ("no status") sends a close frame without a code (and
    /// without the reason). Any other code (1004, 1006, 1015, below 1000, 1014-2999, 5000 and
    /// up) is sent as 1000, with a warning logged: a peer would take it for a protocol error
    /// (before 2026-12-05 it went out as given).
    pub fn start_close(&self, code: u16, reason: &str) -> bool {
        let code = if crate::frame::close_code_allowed(code) || code == 1005 {
            code
        } else {
            tracing::warn!(
                code,
                "close code not allowed on the wire (RFC 6455 §7.4): sent as 1000"
            );
            1000
        };
        self.shared.request_close(code, truncate_reason(reason))
    }

    /// Waits until the channel is closed.
    pub async fn closed(&self) {
        poll_fn(|cx| self.shared.poll_closed(cx)).await;
    }
}

fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

/// The error of a send the channel refused; its message is dropped (see `Message::discard`).
fn refused((error, message): (Error, Message)) -> Error {
    message.discard();
    error
}

impl Sink<Message> for Sender {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.shared.poll_capacity(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        let seq = self.shared.enqueue(item, false, false, false, true).map_err(refused)?;
        self.last_seq = seq;
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.last_seq == 0 {
            return Poll::Ready(Ok(()));
        }
        self.shared.poll_flushed(cx, self.last_seq)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let flushed = if self.last_seq == 0 {
            Ok(())
        } else {
            ready!(self.shared.poll_flushed(cx, self.last_seq))
        };
        self.shared.request_close(1000, String::new());
        ready!(self.shared.poll_closed(cx));
        Poll::Ready(flushed)
    }
}

/// The outcome of one queued send: resolves to `Ok(())` once the message was written to the
/// connection (see [`Sender::send`]), or to the error that stopped it. Once it has resolved,
/// do not poll it again: what a second poll gives is unspecified (it may differ from the
/// first answer).
#[must_use = "dropping a completion does not cancel the send; its error goes to the event stream"]
pub struct Completion {
    shared: Arc<Shared>,
    seq: u64,
    finished: bool,
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion").field("seq", &self.seq).finish_non_exhaustive()
    }
}

impl Future for Completion {
    type Output = Result<(), Error>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = ready!(self.shared.poll_done(cx, self.seq));
        self.finished = true;
        Poll::Ready(result)
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.untrack(self.seq);
        }
    }
}

/// The receiving half of a [`Channel`]: a [`Stream`] of [`Event`]s.
///
/// Dropping it discards messages that arrive later (the channel stays open for sending).
///
/// The connection has a task of its own that reads the socket, answers pings and notices a
/// close whether or not the receiver is polled. While a WebSocket receives large messages
/// (over the read chunk, up to 64 KiB), a poll that finds no event reads the socket on the
/// polling task instead, so that a message is read, handled and answered in one go; when the
/// receiver is not polled, the connection's task reads as before. (A receiver woken for the
/// next message and then not polled, as in a `select!` that took another branch, leaves the
/// reading to the connection's task at the keepalive thread's next look, within a second with
/// the default [`Config::keepalive`](crate::Config::keepalive); at once with keepalive off.)
pub struct Receiver {
    shared: Arc<Shared>,
    /// Events taken from the shared queue a burst at a time, not yet returned.
    local: VecDeque<Event>,
    /// `Closed` was returned: the stream has ended.
    ended: bool,
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").field("kind", &self.shared.kind).finish_non_exhaustive()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.drop_handle(true);
    }
}

impl Receiver {
    /// The next event, taking a whole burst from the shared queue when the local one is empty.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        loop {
            if let Some(event) = self.local.pop_front() {
                if let Event::Closed(_) = event {
                    // Errors that came after `Closed` was taken (a send that failed with the
                    // channel, its `Completion` dropped late) go out before it: before
                    // 2026-12-05 they were lost.
                    let mut late = std::mem::take(&mut self.local);
                    self.shared.take_late(&mut late);
                    late.retain(|e| matches!(e, Event::Error(_)));
                    if !late.is_empty() {
                        late.push_back(event);
                        self.local = late;
                        continue;
                    }
                    self.ended = true;
                }
                if self.local.is_empty() && self.local.capacity() > crate::shared::KEPT_SLOTS {
                    // Drained after a burst: no room kept for the next one (it would stay with
                    // an idle channel, here or, swapped, in the shared queue).
                    self.local = VecDeque::new();
                }
                return Poll::Ready(Some(event));
            }
            if self.ended {
                return Poll::Ready(None);
            }
            match ready!(self.shared.poll_events(cx, &mut self.local)) {
                Taken::Open => return Poll::Ready(Some(Event::Open)),
                Taken::Events => {}
                Taken::End => {
                    self.ended = true;
                    return Poll::Ready(None);
                }
            }
        }
    }

    /// The next event; `None` after [`Event::Closed`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event is only taken when this returns it.
    pub async fn recv(&mut self) -> Option<Event> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Is the channel open: opened, and not closed or closing?
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.shared.is_open()
    }

    /// The request that made this channel.
    #[must_use]
    pub fn originating_request(&self) -> &Parts {
        self.shared.request.parts()
    }

    /// WebSocket or HTTP stream.
    #[must_use]
    pub fn kind(&self) -> Kind {
        self.shared.kind
    }

    /// The request's `Last-Event-ID` (see [`Channel::last_event_id`]).
    #[must_use]
    pub fn last_event_id(&self) -> Option<&str> {
        last_event_id(self.originating_request())
    }

    /// The WebSocket subprotocol chosen (see [`Channel::protocol`]).
    #[must_use]
    pub fn protocol(&self) -> Option<&str> {
        self.shared.protocol()
    }
}

/// A request's `Last-Event-ID`, in UTF-8. Not `HeaderValue::to_str`, which takes visible ASCII
/// only: an id such as "é-7", which `sse::Event::id` accepts, came back as `None` (before
/// 2026-12-05).
fn last_event_id(request: &Parts) -> Option<&str> {
    let value = request.headers.get("last-event-id")?;
    std::str::from_utf8(value.as_bytes()).ok()
}

impl Stream for Receiver {
    type Item = Event;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.poll_recv(cx)
    }
}

impl FusedStream for Receiver {
    fn is_terminated(&self) -> bool {
        self.ended
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn assert<T: Send + Sync + Unpin + 'static>() {}
    assert::<Channel>();
    assert::<Sender>();
    assert::<Receiver>();
    assert::<Completion>();
}
