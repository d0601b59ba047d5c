//! [`BodyData`], the data of one frame of a [`Body`](crate::Body): one or more byte buffers
//! that go out as one HTTP chunk, and [`BytesBody`], the same body with `Bytes` data.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use http_body::{Frame, SizeHint};

use crate::shared::Shared;
use crate::{Body, Error};

/// The data of one frame of a [`Body`]: the bytes of one or more messages that were queued
/// behind each other (up to 32 buffers), kept as the buffers they came in (nothing is copied
/// to join them). The messages after the first keep their room in the channel's queue (see
/// [`Config::queue_limit`](crate::Config::queue_limit)) until the frame's buffers are dropped,
/// that is until hyper has written them: a frame may carry the whole queue, and a stream whose
/// client reads slowly still holds no more than the limit plus hyper's own buffer.
///
/// hyper writes a frame's buffers, with those of the frames it holds beside it, in one vectored
/// write (`writev`), so a stream whose sender keeps ahead of the socket goes out in writes of
/// hyper's whole buffer, not one per message. Over HTTP/1.1 a frame is one chunk of the chunked
/// encoding.
///
/// It is a [`Buf`]; [`Bytes::from`] turns it into one buffer (a copy only when it holds
/// several). A stack that wants `Bytes` frames (axum's body, `UnsyncBoxBody<Bytes, _>`) takes
/// [`Body::into_bytes_body`], which splits frames instead of copying them.
///
/// ```
/// use bytes::{Buf, Bytes};
/// use http_body_util::BodyExt;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let mut body = webchan::Body::full(Bytes::from_static(b"hello"));
/// let mut data = body.frame().await.unwrap().unwrap().into_data().unwrap();
/// assert_eq!(data.remaining(), 5);
/// assert_eq!(data.copy_to_bytes(5), "hello");
/// # });
/// ```
#[derive(Debug, Default)]
pub struct BodyData {
    /// The frame's buffers and receipt, boxed (`None`: no data). hyper keeps a few frames'
    /// room in its write queue for each connection's life, idle ones too, and two more in the
    /// state of a connection served by hyper-util's auto builder (its HTTP/2 half): a frame one
    /// pointer wide keeps those as small as they are for `Bytes` frames, or smaller. Before
    /// 2026-12-06 the frame was inline, 56 bytes: an idle HTTP stream held 256 bytes more for it
    /// (benches/HISTORY.md, "Memory of idle channels, 2026-12-06"); one allocation per frame
    /// is the price (~1 % of the throughput of 1 KiB chunks, measured).
    frame: Option<Box<FrameData>>,
}

#[derive(Debug, Default)]
struct FrameData {
    /// The first buffer not yet consumed; empty only when there is no other.
    first: Bytes,
    /// The buffers after it, only when there are any (a frame of one buffer is the most
    /// common).
    rest: Option<Box<Rest>>,
    /// The sends this frame completes once every byte of it was taken (written).
    receipt: Option<Receipt>,
}

impl Clone for BodyData {
    /// A copy completes no send: the original does, once it is written.
    fn clone(&self) -> Self {
        let frame = self.frame.as_ref().map(|f| {
            Box::new(FrameData { first: f.first.clone(), rest: f.rest.clone(), receipt: None })
        });
        Self { frame }
    }
}

#[derive(Debug, Default)]
struct Rest {
    /// The second buffer (a frame of two, the most common after one, allocates only this box).
    second: Bytes,
    /// The buffers after it. None of them, nor `second`, empty.
    more: VecDeque<Bytes>,
    /// Bytes in `second` and `more`.
    len: usize,
    /// The room these buffers take in their channel's queue, given back when they are dropped.
    held: Option<Held>,
}

impl Clone for Rest {
    /// A copy holds no queue room: the original gives it back when it is dropped.
    fn clone(&self) -> Self {
        Self { second: self.second.clone(), more: self.more.clone(), len: self.len, held: None }
    }
}

/// Room in a channel's queue that a frame's gathered messages keep until the frame's buffers
/// are dropped: until hyper has written them (or dropped the connection). So the messages a
/// stream's frames carry count against its queue limit for as long as they are in memory, and
/// a frame may gather the whole queue without a slow reader's stream holding more than the
/// limit plus hyper's own buffer. (It goes with the box of the buffers after the first, which
/// is dropped when the last buffer becomes the first: the room comes back with that one buffer
/// still unwritten.)
pub(crate) struct Held {
    shared: Arc<Shared>,
    bytes: usize,
}

impl Held {
    pub(crate) fn new(shared: Arc<Shared>, bytes: usize) -> Self {
        Self { shared, bytes }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.shared.release(self.bytes);
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held").field("bytes", &self.bytes).finish_non_exhaustive()
    }
}

/// A frame's account of the sends it carries: settled when hyper has taken the frame's last
/// byte (written it to the connection, or copied it into a buffer of its own where it does
/// that: an IO without vectored writes, HTTP/2's small frames), which completes the items up
/// to `upto`; dropped before that (the connection failed), it fails them and every later one.
/// The stream's end waits for its frames' receipts: see [`Shared::frame_written`].
pub(crate) struct Receipt {
    shared: Arc<Shared>,
    /// The last item this frame completes (0: none), [`SETTLED`] once written.
    upto: u64,
}

/// A [`Receipt`]'s `upto` once it is settled (no item has this number).
const SETTLED: u64 = u64::MAX;

impl Receipt {
    /// The receipt of a frame about to go to hyper (counted out by [`Shared::frame_out`]).
    pub(crate) fn new(shared: Arc<Shared>, upto: u64) -> Self {
        Self { shared, upto }
    }

    /// The frame was written whole.
    pub(crate) fn written(mut self) {
        let upto = std::mem::replace(&mut self.upto, SETTLED);
        self.shared.frame_written(upto);
    }
}

impl Drop for Receipt {
    fn drop(&mut self) {
        if self.upto != SETTLED {
            self.shared.frame_lost();
        }
    }
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receipt").field("upto", &self.upto).finish_non_exhaustive()
    }
}

impl FrameData {
    fn push(&mut self, bytes: Bytes) {
        if self.first.is_empty() {
            self.first = bytes;
        } else if let Some(rest) = &mut self.rest {
            rest.len += bytes.len();
            rest.more.push_back(bytes);
        } else {
            self.rest = Some(Box::new(Rest {
                len: bytes.len(),
                second: bytes,
                more: VecDeque::new(),
                held: None,
            }));
        }
    }

    /// Settles the receipt once every byte was taken.
    fn settle_if_taken(&mut self) {
        if self.first.is_empty() && self.rest.is_none() {
            if let Some(receipt) = self.receipt.take() {
                receipt.written();
            }
        }
    }

    /// Keeps `held` until the buffers after the first are dropped. Gives it back (drops it) now
    /// when there are none.
    fn hold(&mut self, held: Held) {
        if let Some(rest) = &mut self.rest {
            rest.held = Some(held);
        }
    }

    /// The number of buffers.
    fn buffers(&self) -> usize {
        usize::from(!self.first.is_empty()) + self.rest.as_ref().map_or(0, |r| 1 + r.more.len())
    }

    /// The buffer after `first`, taken out of `rest`.
    fn next_buffer(&mut self) -> Bytes {
        let Some(rest) = &mut self.rest else { return Bytes::new() };
        let next = match rest.more.pop_front() {
            Some(after) => std::mem::replace(&mut rest.second, after),
            None => return self.rest.take().map(|r| r.second).unwrap_or_default(),
        };
        rest.len -= next.len();
        next
    }

    /// The buffers, in order (empty ones left out), the queue room they hold and the sends
    /// they complete.
    fn into_buffers(mut self) -> (impl Iterator<Item = Bytes>, Option<Held>, Option<Receipt>) {
        let receipt = self.receipt.take();
        let (second, more, held) = match self.rest.take() {
            Some(rest) => {
                let Rest { second, more, held, .. } = *rest;
                (second, more, held)
            }
            None => Default::default(),
        };
        let first = std::mem::take(&mut self.first);
        let buffers = [first, second].into_iter().chain(more).filter(|b| !b.is_empty());
        (buffers, held, receipt)
    }
}

impl BodyData {
    pub(crate) fn push(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        match &mut self.frame {
            Some(frame) => frame.push(bytes),
            None => self.frame = Some(Box::new(FrameData { first: bytes, ..FrameData::default() })),
        }
    }

    /// Completes what `receipt` stands for once every byte is taken: now, when there is none.
    pub(crate) fn with_receipt(mut self, receipt: Receipt) -> Self {
        match &mut self.frame {
            Some(frame) => {
                frame.receipt = Some(receipt);
                frame.settle_if_taken();
            }
            None => receipt.written(),
        }
        self
    }

    /// Keeps `held` until the buffers after the first are dropped. Gives it back (drops it) now
    /// when there are none.
    pub(crate) fn hold(&mut self, held: Held) {
        if let Some(frame) = &mut self.frame {
            frame.hold(held);
        }
    }

    /// The number of buffers.
    pub(crate) fn buffers(&self) -> usize {
        self.frame.as_ref().map_or(0, |f| f.buffers())
    }

    /// The buffers, in order (empty ones left out), the queue room they hold and the sends
    /// they complete.
    fn into_buffers(mut self) -> (impl Iterator<Item = Bytes>, Option<Held>, Option<Receipt>) {
        self.frame.take().map(|f| *f).unwrap_or_default().into_buffers()
    }
}

impl From<Bytes> for BodyData {
    fn from(bytes: Bytes) -> Self {
        let mut data = Self::default();
        data.push(bytes);
        data
    }
}

impl From<BodyData> for Bytes {
    /// One buffer: the one the data holds, or a copy of them all when it holds several. The
    /// data counts as taken (the sends it carries complete).
    fn from(mut data: BodyData) -> Self {
        let len = data.remaining();
        data.copy_to_bytes(len)
    }
}

impl Buf for FrameData {
    fn remaining(&self) -> usize {
        self.first.len() + self.rest.as_ref().map_or(0, |r| r.len)
    }

    fn chunk(&self) -> &[u8] {
        &self.first
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.remaining(), "advance past the end of the body data");
        if let Some(receipt) = &self.receipt {
            receipt.shared.note_progress();
        }
        while cnt > 0 {
            if cnt < self.first.len() {
                self.first.advance(cnt);
                return;
            }
            cnt -= self.first.len();
            self.first = self.next_buffer();
        }
        self.settle_if_taken();
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let rest = self.rest.iter().flat_map(|r| std::iter::once(&r.second).chain(&r.more));
        let buffers = std::iter::once(&self.first).chain(rest).filter(|b| !b.is_empty());
        let mut filled = 0;
        for (slot, bytes) in dst.iter_mut().zip(buffers) {
            *slot = IoSlice::new(bytes);
            filled += 1;
        }
        filled
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        if len <= self.first.len() {
            if let Some(receipt) = &self.receipt {
                receipt.shared.note_progress();
            }
            // Within the first buffer: a slice of it, no copy.
            let out = self.first.split_to(len);
            if self.first.is_empty() {
                self.first = self.next_buffer();
                self.settle_if_taken();
            }
            return out;
        }
        assert!(len <= self.remaining(), "copy_to_bytes past the end of the body data");
        let mut out = bytes::BytesMut::with_capacity(len);
        out.put((&mut *self).take(len));
        out.freeze()
    }
}

impl Buf for BodyData {
    fn remaining(&self) -> usize {
        self.frame.as_ref().map_or(0, |f| f.remaining())
    }

    fn chunk(&self) -> &[u8] {
        self.frame.as_ref().map_or(&[], |f| f.chunk())
    }

    fn advance(&mut self, cnt: usize) {
        match &mut self.frame {
            Some(frame) => frame.advance(cnt),
            None => assert!(cnt == 0, "advance past the end of the body data"),
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        self.frame.as_ref().map_or(0, |f| f.chunks_vectored(dst))
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        match &mut self.frame {
            Some(frame) => frame.copy_to_bytes(len),
            None => {
                assert!(len == 0, "copy_to_bytes past the end of the body data");
                Bytes::new()
            }
        }
    }
}

/// A [`Body`] whose frames carry [`Bytes`]: each buffer of a [`BodyData`] becomes a frame of
/// its own, so nothing is copied. For stacks that want `Bytes` data, such as
/// `axum::body::Body::new` or `http_body_util::combinators::UnsyncBoxBody<Bytes, _>`. Made by
/// [`Body::into_bytes_body`]. The messages behind a frame's first buffer keep their room in the
/// channel's queue until the last of its buffers is given out.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::BodyExt;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let body: http_body_util::combinators::UnsyncBoxBody<Bytes, webchan::Error> =
///     webchan::Body::full(Bytes::from_static(b"hello")).into_bytes_body().boxed_unsync();
/// assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
/// # });
/// ```
#[derive(Debug)]
pub struct BytesBody {
    body: Body,
    /// Buffers of the last frame not given out yet.
    pending: VecDeque<Bytes>,
    /// The queue room of the last frame's buffers: given back with the last of them.
    held: Option<Held>,
    /// The sends of the last frame: done once its last buffer is given out.
    receipt: Option<Receipt>,
}

impl Body {
    /// This body with [`Bytes`] frames (see [`BytesBody`]).
    #[must_use]
    pub fn into_bytes_body(self) -> BytesBody {
        BytesBody { body: self, pending: VecDeque::new(), held: None, receipt: None }
    }
}

impl http_body::Body for BytesBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        if let Some(next) = this.pending.pop_front() {
            if this.pending.is_empty() {
                // Each buffer given out is held by hyper (within its own limit) from now on.
                this.held = None;
                if let Some(receipt) = this.receipt.take() {
                    receipt.written();
                }
            }
            return Poll::Ready(Some(Ok(Frame::data(next))));
        }
        loop {
            let frame = match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => frame,
                other => return other.map(|o| o.map(|r| r.map(|f| f.map_data(Bytes::from)))),
            };
            match frame.into_data() {
                Ok(data) => {
                    let (mut buffers, held, receipt) = data.into_buffers();
                    let first = buffers.next();
                    this.pending.extend(buffers);
                    if this.pending.is_empty() {
                        // Given out whole (or empty): what hyper does with `Bytes` frames
                        // cannot be seen from here.
                        if let Some(receipt) = receipt {
                            receipt.written();
                        }
                    } else {
                        this.held = held;
                        this.receipt = receipt;
                    }
                    let Some(first) = first else { continue };
                    return Poll::Ready(Some(Ok(Frame::data(first))));
                }
                Err(frame) => return Poll::Ready(Some(Ok(frame.map_data(Bytes::from)))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let queued: u64 = self.pending.iter().map(|b| b.len() as u64).sum();
        let mut hint = self.body.size_hint();
        hint.set_lower(hint.lower() + queued);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + queued);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(parts: &[&'static [u8]]) -> BodyData {
        let mut d = BodyData::default();
        for p in parts {
            d.push(Bytes::from_static(p));
        }
        d
    }

    #[test]
    fn advancing_walks_the_buffers_in_order() {
        let mut d = data(&[b"abc", b"", b"de", b"fghi"]);
        assert_eq!(d.buffers(), 3);
        assert_eq!(d.remaining(), 9);
        d.advance(2);
        assert_eq!(d.chunk(), b"c");
        d.advance(1);
        assert_eq!(d.chunk(), b"de");
        d.advance(3);
        assert_eq!(d.chunk(), b"ghi");
        assert_eq!(d.remaining(), 3);
        d.advance(3);
        assert_eq!(d.remaining(), 0);
        assert!(d.chunk().is_empty());
    }

    #[test]
    fn vectored_chunks_list_every_buffer_and_respect_the_room_given() {
        let d = data(&[b"ab", b"cd", b"ef"]);
        let mut slots = [IoSlice::new(&[]); 8];
        assert_eq!(d.chunks_vectored(&mut slots), 3);
        let joined: Vec<u8> = slots[..3].iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(joined, b"abcdef");
        let mut two = [IoSlice::new(&[]); 2];
        assert_eq!(d.chunks_vectored(&mut two), 2);
        assert_eq!(&*two[1], b"cd");
    }

    #[test]
    fn body_data_is_one_pointer() {
        // hyper's write queue keeps room for a few frames per connection, idle ones too.
        assert_eq!(std::mem::size_of::<BodyData>(), std::mem::size_of::<usize>());
        let one = BodyData::from(Bytes::from_static(b"x"));
        assert!(one.frame.as_ref().is_some_and(|f| f.rest.is_none()));
        assert!(BodyData::from(Bytes::new()).frame.is_none(), "no data allocated a frame");
        let mut empty = BodyData::default();
        assert_eq!((empty.remaining(), empty.chunk(), empty.buffers()), (0, &b""[..], 0));
        empty.advance(0);
        assert!(empty.copy_to_bytes(0).is_empty());
        assert_eq!(empty.chunks_vectored(&mut [IoSlice::new(&[])]), 0);
    }

    #[test]
    fn into_bytes_copies_only_several_buffers() {
        let one = Bytes::from(vec![7u8; 100]);
        let ptr = one.as_ptr();
        assert_eq!(Bytes::from(BodyData::from(one)).as_ptr(), ptr, "one buffer is not copied");
        assert_eq!(Bytes::from(data(&[b"ab", b"cd"])), "abcd");
        let mut d = data(&[b"abc", b"def"]);
        assert_eq!(d.copy_to_bytes(2), "ab");
        assert_eq!(d.copy_to_bytes(3), "cde");
        assert_eq!(d.remaining(), 1);
        assert_eq!(d.chunk(), b"f");
    }
}
