//! A small per-thread pool of I/O buffers.
//!
//! A WebSocket connection gives its read and write buffers back whenever it goes idle with them
//! empty, so that an idle connection holds no buffer. Freeing and allocating a 4 KiB buffer at
//! every burst of traffic is not free, though (glibc serves that size from its bins, not its
//! per-thread cache): the buffers go to this pool instead and the next connection to wake on
//! the same thread takes one back. The pool keeps at most [`KEEP`] buffers per thread, so what
//! it holds is bounded whatever the number of connections.

use std::cell::RefCell;

use bytes::BytesMut;

/// The size of a pooled buffer.
pub(crate) const SIZE: usize = 4096;
/// Buffers kept per thread at most.
const KEEP: usize = 32;

thread_local! {
    static FREE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
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

/// Hands a buffer back. Only a pool-sized buffer that nothing else shares is kept; anything
/// else is simply dropped.
pub(crate) fn give(mut buf: BytesMut) {
    if buf.capacity() == 0 {
        // Most often a buffer never allocated (`BytesMut::new()`): nothing to keep. (One whose
        // every byte was consumed reads 0 too; it is freed, not pooled: rare, and harmless.)
        return;
    }
    buf.clear();
    // `try_reclaim` fails when other handles still share the allocation (a frozen payload).
    if !buf.try_reclaim(SIZE) || buf.capacity() != SIZE {
        return;
    }
    let _ = FREE.try_with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < KEEP {
            free.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
