//! A small per-thread pool of I/O buffers.
//!
//! A WebSocket connection gives its read and write buffers back whenever it goes idle with them
//! empty, so that an idle connection holds no buffer. Freeing and allocating a 4 KiB buffer at
//! every burst of traffic is not free, though (glibc serves that size from its bins, not its
//! per-thread cache): the buffers go to this pool instead and the next connection to wake on
//! the same thread takes one back. The pool keeps at most [`KEEP`] buffers per thread, so what
//! it holds is bounded whatever the number of connections.
//!
//! Frames larger than that (up to 64 KiB) are read into a buffer of one of a few sizes
//! ([`take_large`]) that holds that frame alone and becomes the storage of its payload
//! ([`Returning`], no copy); when the application drops the last handle on the payload, the
//! buffer comes back here, on the dropping thread. Without it, every such message was a fresh
//! allocation freed again after its echo, and glibc gave the top of its heap back to the
//! kernel and took it again, page by page (16 KiB echo: 18,000 page faults in 3 s, against 0
//! for fastwebsockets, and ~20 % more server CPU per message than with trimming off).
//!
//! Small payloads (see [`copy_small`]) are copied out of the read buffer into the thread's
//! payload arena, a few KiB that the payloads of every connection on the thread are carved from,
//! each a refcounted slice: no allocation per message, and no memory held by an idle
//! connection.

use std::cell::RefCell;

use bytes::BytesMut;

/// The size of a pooled buffer.
pub(crate) const SIZE: usize = 4096;
/// Buffers kept per thread at most.
const KEEP: usize = 32;

/// The sizes of the large buffers: a frame of up to 8, 16, 32 or 64 KiB of payload, its header
/// and mask, and the one byte more that a sized read asks for (see `ws.rs`).
const LARGE: [usize; 4] = [8 * 1024 + 64, 16 * 1024 + 64, 32 * 1024 + 64, 64 * 1024 + 64];
/// The largest read [`take_large`] serves.
pub(crate) const LARGE_MAX: usize = LARGE[LARGE.len() - 1];
/// Bytes of large buffers kept per thread and size at most (1 MiB in all).
const KEEP_LARGE_BYTES: usize = 256 * 1024;

/// The size of a payload arena (see [`copy_small`]).
const ARENA: usize = 4096;
/// The largest payload [`copy_small`] takes (a quarter of an arena: at most that much of an
/// arena goes unused when the next payload does not fit).
pub(crate) const SMALL_MAX: usize = ARENA / 4;

thread_local! {
    static SMALL: RefCell<Option<BytesMut>> = const { RefCell::new(None) };
    static FREE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static FREE_LARGE: RefCell<[Vec<BytesMut>; 4]> = const {
        RefCell::new([Vec::new(), Vec::new(), Vec::new(), Vec::new()])
    };
}

/// An empty buffer with room for at least `want` bytes: a pooled one when `want` fits one.
pub(crate) fn take(want: usize) -> BytesMut {
    if want <= SIZE {
        if let Some(buf) = FREE.try_with(|free| free.borrow_mut().pop()).ok().flatten() {
            return buf;
        }
        return BytesMut::with_capacity(SIZE);
    }
    BytesMut::with_capacity(want)
}

/// Hands a buffer back. Only a buffer of one of the pool's sizes that nothing else shares is
/// kept; anything else is simply dropped.
pub(crate) fn give(mut buf: BytesMut) {
    if buf.capacity() == 0 {
        // Most often a buffer never allocated (`BytesMut::new()`): nothing to keep. (One whose
        // every byte was consumed reads 0 too; it is freed, not pooled: rare, and harmless.)
        return;
    }
    buf.clear();
    // Which size is it? `try_reclaim` gives an unshared buffer its whole allocation back (and
    // fails when other handles still share it, a frozen payload). The small size first: it is
    // the common case (ping-pong: 380 instructions more per round trip the other way round).
    if buf.try_reclaim(SIZE) && buf.capacity() == SIZE {
        keep(buf);
        return;
    }
    // A large buffer that still starts where its allocation does (one handed over whole as a
    // payload's storage, the common case) is recognised by its capacity alone. A shared one
    // has been split, which moved its start (`split_to`, what `frame.rs` and `seal` do) and
    // so changed its capacity; only a `split_off` at exactly a pool size would pass, which
    // nothing here does, and even then `BytesMut` keeps the two views apart: the allocation
    // would merely live longer. Asking `try_reclaim` size after size cost two failed
    // reclaims per large message (16 KiB echo: ~180 instructions).
    let capacity = buf.capacity();
    if let Some(class) = LARGE.iter().position(|size| *size == capacity) {
        keep_large(buf, class);
        return;
    }
    // Else: among the large sizes the largest first, since a request the buffer meets as it
    // is does not move it back to its start, so a smaller size could be matched by what is
    // left.
    for (class, size) in LARGE.iter().enumerate().rev() {
        if buf.try_reclaim(*size) {
            if buf.capacity() == *size {
                keep_large(buf, class);
            }
            return;
        }
    }
}

/// An empty buffer that its owner keeps instead of giving it back and taking another: made
/// whole again when it is one of the pool's small buffers that nothing else shares (its start
/// moved back to that of its allocation), else given back (see [`give`]) and `buf` left
/// without one.
pub(crate) fn rewind(buf: &mut BytesMut) {
    buf.clear();
    if buf.capacity() == SIZE || (buf.try_reclaim(SIZE) && buf.capacity() == SIZE) {
        return;
    }
    give(std::mem::take(buf));
}

fn keep(buf: BytesMut) {
    let _ = FREE.try_with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < KEEP {
            free.push(buf);
        }
    });
}

fn keep_large(buf: BytesMut, class: usize) {
    let _ = FREE_LARGE.try_with(|free| {
        let list = &mut free.borrow_mut()[class];
        if (list.len() + 1) * LARGE[class] <= KEEP_LARGE_BYTES {
            list.push(buf);
        }
    });
}

/// An empty buffer of one of the large sizes with room for at least `want` bytes (at most
/// [`LARGE_MAX`]).
pub(crate) fn take_large(want: usize) -> BytesMut {
    let class = LARGE.iter().position(|size| *size >= want).unwrap_or(LARGE.len() - 1);
    let pooled = FREE_LARGE.try_with(|free| free.borrow_mut()[class].pop()).ok().flatten();
    pooled.unwrap_or_else(|| BytesMut::with_capacity(LARGE[class]))
}

/// A copy of `data` (at most [`SMALL_MAX`] bytes) carved from the thread's payload arena.
///
/// Before, each connection copied the payloads of one read into an arena of its own, dropped
/// when the connection went idle (so that an idle connection keeps nothing), and the one
/// payload of a ping-pong read into an allocation of its own: a `malloc` and a `free` per
/// message there, two per read in a burst. An arena per thread is shared by every connection
/// and outlives their wake-ups: a new one is allocated every 4 KiB of payloads. What a payload
/// kept by the application holds alive is the same as before: at most its arena.
pub(crate) fn copy_small(data: &[u8]) -> bytes::Bytes {
    debug_assert!(data.len() <= SMALL_MAX);
    let carve = |arena: &mut BytesMut| {
        if arena.capacity() < data.len() {
            *arena = BytesMut::with_capacity(ARENA);
        }
        arena.extend_from_slice(data);
        arena.split().freeze()
    };
    match SMALL.try_with(|arena| carve(arena.borrow_mut().get_or_insert_with(BytesMut::new))) {
        Ok(payload) => payload,
        // The thread is going away: a copy of its own, of its own size.
        Err(_) => bytes::Bytes::copy_from_slice(data),
    }
}

/// A read buffer that holds one frame and nothing else, handed over whole as the storage of
/// that frame's payload (`Bytes::from_owner`): dropped with the payload's last handle, it goes
/// back to the pool (when it is of one of its sizes).
#[derive(Debug)]
pub(crate) struct Returning(pub(crate) BytesMut);

impl AsRef<[u8]> for Returning {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    #[test]
    fn a_given_buffer_is_taken_back_and_shared_or_odd_ones_are_not_kept() {
        let buf = take(100);
        assert!(buf.capacity() >= SIZE);
        let ptr = buf.as_ptr();
        give(buf);
        let again = take(SIZE);
        assert_eq!(again.as_ptr(), ptr, "the same allocation comes back");

        // A buffer with a frozen piece still alive is not pooled.
        let mut shared = again;
        shared.extend_from_slice(b"payload");
        let piece = shared.split_to(3).freeze();
        give(shared);
        let fresh = take(SIZE);
        assert_ne!(fresh.as_ptr(), piece.as_ptr());

        // A big buffer is not pooled either.
        give(BytesMut::with_capacity(SIZE * 4));
        assert_eq!(take(SIZE).capacity(), SIZE);
        // A request above the pool's size gets its own buffer.
        assert!(take(SIZE * 2).capacity() >= SIZE * 2);
    }

    #[test]
    fn a_rewound_buffer_is_whole_again_or_given_back() {
        // A small buffer read from and consumed: its room comes back, the allocation kept.
        let mut buf = take(SIZE);
        let ptr = buf.as_ptr();
        buf.extend_from_slice(&[7u8; 100]);
        buf.advance(100);
        assert!(buf.capacity() < SIZE);
        rewind(&mut buf);
        assert_eq!((buf.capacity(), buf.as_ptr()), (SIZE, ptr), "whole again, the same one");

        // One whose bytes a frozen piece still holds cannot be made whole: it goes to `give`,
        // which does not pool a shared buffer, and the owner is left with none.
        buf.extend_from_slice(b"payload");
        let piece = buf.split_to(7).freeze();
        rewind(&mut buf);
        assert_eq!(buf.capacity(), 0);
        assert_ne!(take(SIZE).as_ptr(), ptr, "a shared buffer is not pooled");
        assert_eq!(&piece[..], b"payload");

        // A large one is given back to its size's pool.
        let mut large = take_large(16 * 1024);
        let ptr = large.as_ptr();
        rewind(&mut large);
        assert_eq!(large.capacity(), 0);
        assert_eq!(take_large(16 * 1024).as_ptr(), ptr, "pooled");
    }

    #[test]
    fn a_large_buffer_handed_over_as_a_payload_comes_back_when_the_payload_is_dropped() {
        let mut buf = take_large(16 * 1024 + 9);
        assert_eq!(buf.capacity(), LARGE[1], "the smallest size that fits");
        let ptr = buf.as_ptr();
        buf.extend_from_slice(&[5u8; 16 * 1024 + 8]);
        let payload = bytes::Bytes::from_owner(Returning(buf)).slice(8..);
        let clone = payload.clone();
        drop(payload);
        assert_ne!(take_large(16 * 1024).as_ptr(), ptr, "still in use by the clone");
        assert!(clone.iter().all(|b| *b == 5));
        drop(clone);
        assert_eq!(take_large(16 * 1024).as_ptr(), ptr, "back in the pool");

        // A buffer of no pool size is not kept; an advanced one of a pool size is.
        give(BytesMut::with_capacity(20_000));
        let mut advanced = take_large(LARGE_MAX);
        let ptr = advanced.as_ptr();
        advanced.extend_from_slice(&[1u8; 100]);
        let piece = advanced.split_to(100);
        give(advanced);
        assert_ne!(take_large(LARGE_MAX).as_ptr(), ptr, "a split-off piece still shares it");
        drop(piece);
        let mut advanced = take_large(LARGE_MAX);
        let ptr = advanced.as_ptr();
        advanced.extend_from_slice(&[1u8; 100]);
        advanced.advance(100);
        give(advanced);
        assert_eq!(take_large(LARGE_MAX).as_ptr(), ptr, "reclaimed whole");
    }
}
