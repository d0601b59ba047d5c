//! The WebSocket wire format (RFC 6455 §5), server side: decoding client frames (masked) into
//! messages, encoding server frames (unmasked). Pure code over buffers; `ws.rs` moves the bytes.
//!
//! Why not tungstenite's codec: its read and write buffers only grow (a connection that once
//! moved a 64 KiB message keeps ~130 KiB for life) and it works through a blocking-style
//! `Read`/`Write` bridge. Owning the buffers lets an idle connection hold none at all, and
//! lets the transport batch a whole wake-up's frames into one write.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::bufpool;
use crate::deflate;
use crate::event::Text;
use crate::Error;

pub(crate) const OP_CONTINUATION: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;
/// The first header byte's RSV1 bit: a message compressed with permessage-deflate (RFC 7692).
/// Given with an opcode to `encode`, it sets the bit; from `Decoder::frame`, it marks one.
pub(crate) const RSV1: u8 = 0x40;

/// Why the connection must be failed, and with which close code.
#[derive(Debug)]
pub(crate) struct Violation {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
    pub(crate) error: Error,
}

// Out of line and cold, as is every rare path of the decoder: inlined, their code sat between
// the lines of the common path and spread it over more of the instruction cache (see
// benches/HISTORY.md, "Code footprint of a round trip").
impl Violation {
    #[cold]
    #[inline(never)]
    fn protocol(reason: &'static str) -> Self {
        Self { code: 1002, reason: "protocol error", error: Error::Protocol(reason.to_owned()) }
    }

    #[cold]
    #[inline(never)]
    fn too_large(what: String) -> Self {
        Self { code: 1009, reason: "message too big", error: Error::TooLarge(what) }
    }

    #[cold]
    #[inline(never)]
    fn utf8() -> Self {
        Self { code: 1007, reason: "invalid utf-8", error: Error::InvalidUtf8 }
    }
}

/// What a decoded frame means for the connection.
#[derive(Debug)]
pub(crate) enum Decoded {
    Text(Text),
    Binary(Bytes),
    Ping(Bytes),
    Pong,
    /// A close frame: the code (1005 when none) and reason.
    Close(u16, String),
}

/// A text or binary message being reassembled from fragments.
#[derive(Debug)]
struct Partial {
    text: bool,
    data: BytesMut,
    /// For text: bytes known to be valid UTF-8 (an incomplete sequence may follow).
    valid: usize,
    /// Compressed (permessage-deflate): checked once inflated.
    compressed: bool,
}

/// Decodes client frames; keeps the fragments of an unfinished message.
#[derive(Debug)]
pub(crate) struct Decoder {
    max_message: usize,
    max_frame: usize,
    /// The smaller of the two: a frame this long or shorter that starts a message meets both.
    data_limit: u64,
    /// Bytes of the data frames taken so far, headers included (see
    /// [`Decoder::message_progress`]).
    data_bytes: u64,
    partial: Option<Partial>,
    /// Bytes at the front of the read buffer already decoded (small frames, copied out): the
    /// buffer is advanced past them once, by [`Decoder::settle`], not frame by frame (~55
    /// instructions a frame).
    consumed: usize,
    /// permessage-deflate was agreed: messages with RSV1 set are inflated by this.
    inflater: Option<Box<deflate::Inflater>>,
}

/// Is this close code allowed in a close frame on the wire (RFC 6455 §7.4)?
pub(crate) fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999)
}

/// Unmasks (or masks) `data` in place with the 4-byte `key`.
pub(crate) fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    // 128 bytes at a time: a block of fixed size, which the compiler turns into eight 16-byte
    // vector xors and one loop step. 8 bytes at a time, it ran ~4.6 instructions per 16
    // bytes: 4,750 of the 9,823 a 16 KiB echo ran per message, against 3,800 now (64-byte
    // blocks: 4,070). Only payloads that hold a block build one: built for every payload, it
    // cost a 16-byte ping-pong message ~220 instructions.
    let data = if data.len() >= MASK_BLOCK { mask_blocks(data, key) } else { data };
    // Blocks and words are multiples of 4 bytes long: the key's phase carries over.
    let word = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

/// The block [`apply_mask`] unmasks at a time.
const MASK_BLOCK: usize = 128;

/// Unmasks the whole blocks of `data`; returns what is left after them. With AVX2 where the
/// CPU has it (detected at run time, once: `is_x86_feature_detected!` caches the answer), 32
/// bytes per instruction instead of the 16 of x86-64's baseline SSE2: the 16 KiB echo ran
/// 1.5 % faster (`scripts/ab.sh`, 12 paired rounds, 2026-12-06, benches/HISTORY.md,
/// "Unmasking with AVX2, and the rest of the 16 KiB gap"). AVX-512 was no faster there, and
/// lowers the clock of some CPUs.
fn mask_blocks(data: &mut [u8], key: [u8; 4]) -> &mut [u8] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // The crate's second `unsafe` (see `text` for the first): calling a function compiled
        // for a CPU feature. Nothing else is unsafe in it.
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX2, checked just above; that is the only requirement of a
        // `#[target_feature]` function whose body is safe code.
        return unsafe { mask_blocks_avx2(data, key) };
    }
    mask_blocks_portable(data, key)
}

/// [`mask_blocks_portable`] compiled for AVX2 (256-bit vector xors).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn mask_blocks_avx2(data: &mut [u8], key: [u8; 4]) -> &mut [u8] {
    mask_blocks_portable(data, key)
}

/// The blocks in plain code, which the compiler vectorises for whatever the target has
/// (inlined into [`mask_blocks_avx2`], so that it is compiled for AVX2 there).
#[inline(always)]
fn mask_blocks_portable(data: &mut [u8], key: [u8; 4]) -> &mut [u8] {
    let block: [u8; MASK_BLOCK] = std::array::from_fn(|i| key[i % 4]);
    let mut blocks = data.chunks_exact_mut(MASK_BLOCK);
    for chunk in &mut blocks {
        for (byte, mask) in chunk.iter_mut().zip(&block) {
            *byte ^= mask;
        }
    }
    blocks.into_remainder()
}

/// Checks the next UTF-8 bytes of a text message: `Ok(valid_upto)`; an incomplete sequence
/// at the end is only an error when `last`.
///
/// With `simdutf8`, not `std::str::from_utf8`: the standard check runs at ~30 bytes/ns on
/// ASCII but at ~1 byte/ns as soon as the text holds other characters (even a few, as in
/// JSON with accented names); `simdutf8` checks any text at ~10 bytes/ns (see `text`).
fn check_utf8(data: &[u8], from: usize, last: bool) -> Result<usize, Violation> {
    match simdutf8::compat::from_utf8(&data[from..]) {
        Ok(_) => Ok(data.len()),
        Err(e) if e.error_len().is_none() && !last => Ok(from + e.valid_up_to()),
        Err(_) => Err(Violation::utf8()),
    }
}

/// Received text, checked to be UTF-8 with `simdutf8` and kept in the buffer it arrived in.
///
/// This is one of the crate's two `unsafe` blocks (its lint is `deny`, not `forbid`, for these
/// lines; the other calls the AVX2 unmasking, see `mask_blocks`). Without
/// it a `str` over received bytes comes either from `std`'s check (tungstenite's
/// `Utf8Bytes::try_from`), slow on long text and on any text that is not ASCII, or from
/// `simdutf8`, whose `&str` then had to be copied. Measured (ns per message on this machine's
/// kind, 2026-12-05: `std` / `simdutf8` / `simdutf8` and a copy): ASCII 100 B 15.6 / 17.3 /
/// 49.8, 1 KiB 57.5 / 21.5 / 70.6, 16 KiB 801 / 251 / 680; JSON with accented names 100 B
/// 135 / 28.9 / 61.4, 16 KiB 21,381 / 1,875 / 2,345. Until then webchan took `std` for text
/// that starts with ASCII and the copy for other text: the 16 KiB text echo ran 4,800 more
/// instructions per message (18,700 against 13,900) and ran ~4 % slower.
#[inline(never)]
#[allow(unsafe_code)]
fn text(data: Bytes) -> Result<Text, Violation> {
    if simdutf8::basic::from_utf8(&data).is_err() {
        return Err(Violation::utf8());
    }
    // SAFETY: `from_bytes_unchecked` asks for valid UTF-8, and `simdutf8` has just checked
    // these very bytes (a `Bytes` is immutable: nothing can change them since).
    Ok(Text(unsafe { tokio_tungstenite::tungstenite::Utf8Bytes::from_bytes_unchecked(data) }))
}

#[cold]
#[inline(never)]
fn frame_too_large(len: u64, max: usize) -> Violation {
    Violation::too_large(format!("frame of {len} bytes, over the limit of {max}"))
}

#[cold]
#[inline(never)]
fn message_too_large(max: usize) -> Violation {
    Violation::too_large(format!("message of more than {max} bytes"))
}

/// The most a compressed message (or a frame of one) may take on the wire, for a limit of `max`
/// (`max_message_size`, `max_frame_size`): the limit and what DEFLATE adds to data it cannot
/// shrink (with the fixed codes, 9 bits for half the byte values: an eighth at most; stored
/// blocks, 5 bytes per 64 KiB), so that a message the limit allows is not refused because its
/// client compressed it (every browser compresses every message). Before stop 33's review
/// (2026-12-06) the wire bytes were held to the limit itself: 64 KiB of random bytes,
/// compressed by zlib at level 6 to 65,557 bytes, got 1009 from a 64 KiB limit. What inflating
/// gives is held to the limit exactly.
fn compressed_limit(max: usize) -> usize {
    max.saturating_add(max / 8 + 64)
}

/// How many bytes at the front of `buf` belong to a data frame: none when it starts with a
/// control frame, else the frame's bytes there, not what follows it (a pong behind a message
/// that waits unread: counted, it hid the message bytes read next from the idle timer, until
/// stop 28's last review).
fn data_frame_begun(buf: &[u8]) -> u64 {
    let Some(b0) = buf.first() else { return 0 };
    if b0 & 0x08 != 0 {
        return 0;
    }
    let Some(b1) = buf.get(1) else { return 1 };
    let (len, header) = match b1 & 0x7F {
        126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")), 10),
        126 | 127 => return buf.len() as u64,
        n => (u64::from(n), 2),
    };
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    (buf.len() as u64).min(len.saturating_add(header + mask))
}

/// Payloads up to this size are copied out of the read buffer rather than split off.
const COPY_MAX: usize = bufpool::SMALL_MAX;

impl Decoder {
    pub(crate) fn new(max_message: usize, max_frame: usize) -> Self {
        let data_limit = max_message.min(max_frame) as u64;
        Self {
            max_message,
            max_frame,
            data_limit,
            data_bytes: 0,
            partial: None,
            consumed: 0,
            inflater: None,
        }
    }

    /// Takes messages compressed as agreed (RSV1 set on their first frame).
    pub(crate) fn with_deflate(mut self, agreed: Option<deflate::Agreed>) -> Self {
        self.inflater = agreed.map(|agreed| Box::new(deflate::Inflater::new(agreed)));
        self
    }

    /// Bytes of data frames received: those taken whole, headers included, and what `buf`
    /// holds of one begun at its front (after [`Decoder::settle`]). It grows with every byte of
    /// a message a peer sends in pieces, which is not idle (see `Config::timeout`), and never
    /// with pings or pongs. (Counting the fragments kept instead, a read that ended a fragment
    /// with its last few bytes made the count shrink by the header: the idle timeout closed
    /// a slow upload, in stop 28's first version.)
    #[inline(never)]
    pub(crate) fn message_progress(&self, buf: &[u8]) -> u64 {
        self.data_bytes + data_frame_begun(&buf[self.consumed.min(buf.len())..])
    }

    /// Drops what was decoded from the front of `buf`. `decode` does it before it asks for
    /// more bytes; the caller does it when it stops calling `decode` before that.
    pub(crate) fn settle(&mut self, buf: &mut BytesMut) {
        if self.consumed > 0 {
            buf.advance(self.consumed);
            self.consumed = 0;
        }
    }

    /// Takes the next complete frame off the front of `buf` (after what it decoded before:
    /// see [`Decoder::settle`]). `Ok(None)`: more bytes are needed, `buf` holds only the
    /// frame begun, and `need` says how many `buf` must hold before a call can tell more: the
    /// extended length's bytes while the header is incomplete (so that a frame over the limit
    /// fails as soon as its length is known, before its mask), else the whole frame.
    pub(crate) fn decode(
        &mut self,
        buf: &mut BytesMut,
        need: &mut usize,
    ) -> Result<Option<Decoded>, Violation> {
        loop {
            let Some((fin, opcode, payload)) = self.frame(buf, need)? else {
                self.settle(buf);
                return Ok(None);
            };
            if let Some(decoded) = self.message(fin, opcode, payload)? {
                return Ok(Some(decoded));
            }
        }
    }

    /// One raw frame: (FIN, opcode, unmasked payload).
    fn frame(
        &mut self,
        buf: &mut BytesMut,
        need: &mut usize,
    ) -> Result<Option<(bool, u8, Bytes)>, Violation> {
        let at = self.consumed;
        let rest = &buf[at..];
        if rest.len() < 2 {
            *need = 2;
            return Ok(None);
        }
        let (b0, b1) = (rest[0], rest[1]);
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0F;
        if b0 & 0x70 != 0 {
            self.reserved_bits(b0, opcode)?;
        }
        // What `message` is given: the opcode, with RSV1 when it marks a compressed message
        // (the only reserved bit `reserved_bits` lets through).
        let marked = b0 & (0x0F | RSV1);
        if b1 & 0x80 == 0 {
            return Err(Violation::protocol("unmasked frame from a client"));
        }
        match opcode {
            OP_CONTINUATION | OP_TEXT | OP_BINARY => {}
            OP_CLOSE | OP_PING | OP_PONG => {
                if !fin {
                    return Err(Violation::protocol("fragmented control frame"));
                }
                if b1 & 0x7F > 125 {
                    return Err(Violation::protocol("control frame over 125 bytes"));
                }
            }
            _ => return Err(Violation::protocol("reserved opcode")),
        }
        let (len, header) = match b1 & 0x7F {
            126 => {
                if rest.len() < 4 {
                    *need = 4;
                    return Ok(None);
                }
                (u64::from(u16::from_be_bytes([rest[2], rest[3]])), 4)
            }
            127 => {
                if rest.len() < 10 {
                    *need = 10;
                    return Ok(None);
                }
                let mut be = [0u8; 8];
                be.copy_from_slice(&rest[2..10]);
                let len = u64::from_be_bytes(be);
                if len >> 63 != 0 {
                    return Err(Violation::protocol("frame length with the top bit set"));
                }
                (len, 10)
            }
            n => (u64::from(n), 2),
        };
        // A data frame is refused at its header when it is over the frame limit, or would take
        // its message over the message limit, before its payload is read. Before stop 28
        // (2026-12-05) the message limit was checked only once the frame had come whole: with
        // `max_message_size` under `max_frame_size`, 16 clients held 128 MiB of frames that
        // could only be refused. Control frames (125 bytes at most, checked above) are not
        // data: a small frame limit refused the client's pongs and closes. (One compare in the
        // common case: a whole message in one frame under both limits.)
        if opcode & 0x8 == 0 && (len > self.data_limit || self.partial.is_some()) {
            self.check_data_header(marked, len)?;
        }
        let len = len as usize; // at most max_frame or 125, a usize
        let total = header + 4 + len;
        if rest.len() < total {
            *need = total;
            return Ok(None);
        }
        let key = [rest[header], rest[header + 1], rest[header + 2], rest[header + 3]];
        *need = 0;
        if opcode & 0x8 == 0 {
            self.data_bytes += total as u64;
        }
        let (start, end) = (at + header + 4, at + total);
        if len <= COPY_MAX {
            // A small payload is unmasked where it is and copied out (to the thread's arena),
            // so that the read buffer stays unshared and can be reused.
            apply_mask(&mut buf[start..end], key);
            let payload = bufpool::copy_small(&buf[start..end]);
            if end == buf.len() {
                // All of `buf` is consumed: `clear` keeps its start where it is, so the pool
                // takes it back without moving it (`advance` then `try_reclaim`: ~90
                // instructions more per read).
                buf.clear();
                self.consumed = 0;
            } else {
                self.consumed = end;
            }
            return Ok(Some((fin, marked, payload)));
        }
        Ok(Some((fin, marked, self.large_payload(buf, start, end, key))))
    }

    /// Reserved bits are a protocol error (RFC 6455 §5.2, RFC 7692 §6.1), but for RSV1 on a
    /// message's first frame once permessage-deflate was agreed: a compressed message.
    #[cold]
    #[inline(never)]
    fn reserved_bits(&self, b0: u8, opcode: u8) -> Result<(), Violation> {
        if self.inflater.is_none() {
            return Err(Violation::protocol("reserved bits set without an extension"));
        }
        if b0 & 0x70 != RSV1 {
            return Err(Violation::protocol("RSV2 or RSV3 set: no extension defines them"));
        }
        if opcode != OP_TEXT && opcode != OP_BINARY {
            return Err(Violation::protocol("RSV1 set on a frame other than a message's first"));
        }
        Ok(())
    }

    /// The payload of a frame over [`COPY_MAX`], unmasked, without a copy.
    #[inline(never)]
    fn large_payload(
        &mut self,
        buf: &mut BytesMut,
        start: usize,
        end: usize,
        key: [u8; 4],
    ) -> Bytes {
        if (end - start) * 2 < buf.capacity() {
            return self.mid_payload(buf, start, end, key);
        }
        if end == buf.len() {
            // The frame ends the read buffer (most often alone in it: a read sized for it, see
            // `ws.rs`): the whole buffer becomes the payload's storage, no copy, and goes back
            // to the pool once the payload is dropped, instead of to malloc. Small frames
            // decoded before it in the same read (`consumed`, already copied out) go with the
            // buffer, so the next read starts a new one from its first byte.
            apply_mask(&mut buf[start..end], key);
            self.consumed = 0;
            let whole = bufpool::Returning(std::mem::take(buf));
            // Narrowed in place, not `slice`d: a slice is a second handle, an atomic
            // increment and decrement more per message.
            let mut payload = Bytes::from_owner(whole);
            payload.advance(start);
            payload.truncate(end - start);
            return payload;
        }
        // A large one is split off without a copy.
        buf.advance(start);
        self.consumed = 0;
        let mut payload = buf.split_to(end - start);
        apply_mask(&mut payload, key);
        payload.freeze()
    }

    /// The payload of a frame that fills less than half of the read buffer: copied out into
    /// storage of its own size (as a small one is), and the buffer kept for the next read.
    /// As a view, it would keep the whole buffer alive as long as the message lives: before
    /// stop 29 (2026-12-05), with `read_buffer_size` at 1 MiB, 247 unread messages of 1,025
    /// bytes held 233 MiB (each read alone, each the whole buffer's payload).
    #[cold]
    fn mid_payload(&mut self, buf: &mut BytesMut, start: usize, end: usize, key: [u8; 4]) -> Bytes {
        apply_mask(&mut buf[start..end], key);
        let payload = Bytes::copy_from_slice(&buf[start..end]);
        if end == buf.len() {
            buf.clear();
            self.consumed = 0;
        } else {
            self.consumed = end;
        }
        payload
    }

    /// What a frame means: a whole text or binary message (the common case, kept short), or
    /// anything else ([`Decoder::message_rare`]).
    fn message(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: Bytes,
    ) -> Result<Option<Decoded>, Violation> {
        if fin && self.partial.is_none() && payload.len() <= self.max_message {
            if opcode == OP_BINARY {
                return Ok(Some(Decoded::Binary(payload)));
            }
            if opcode == OP_TEXT {
                return text(payload).map(|t| Some(Decoded::Text(t)));
            }
        }
        self.message_rare(fin, opcode, payload)
    }

    #[inline(never)]
    fn message_rare(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: Bytes,
    ) -> Result<Option<Decoded>, Violation> {
        match opcode & !RSV1 {
            OP_TEXT | OP_BINARY => {
                if self.partial.is_some() {
                    return Err(Violation::protocol("new message before the last one ended"));
                }
                let text = opcode & !RSV1 == OP_TEXT;
                let compressed = opcode & RSV1 != 0;
                self.check_size(payload.len() as u64, compressed)?;
                if fin {
                    if compressed {
                        return self.inflated(text, &payload).map(Some);
                    }
                    return Self::complete(text, payload).map(Some);
                }
                let valid = if text && !compressed { check_utf8(&payload, 0, false)? } else { 0 };
                let data = BytesMut::from(payload);
                self.partial = Some(Partial { text, data, valid, compressed });
                Ok(None)
            }
            OP_CONTINUATION => {
                let Some(partial) = &self.partial else {
                    return Err(Violation::protocol("continuation frame with nothing to continue"));
                };
                self.check_size((partial.data.len() + payload.len()) as u64, partial.compressed)?;
                let partial = self.partial.as_mut().expect("checked above");
                partial.data.extend_from_slice(&payload);
                if partial.text && !partial.compressed {
                    partial.valid = check_utf8(&partial.data, partial.valid, fin)?;
                }
                if !fin {
                    return Ok(None);
                }
                let Partial { text, data, compressed, .. } =
                    self.partial.take().expect("checked above");
                if compressed {
                    return self.inflated(text, &data).map(Some);
                }
                Self::complete(text, data.freeze()).map(Some)
            }
            OP_PING => Ok(Some(Decoded::Ping(payload))),
            OP_PONG => Ok(Some(Decoded::Pong)),
            OP_CLOSE => match payload.len() {
                0 => Ok(Some(Decoded::Close(1005, String::new()))),
                1 => Err(Violation::protocol("close frame with a 1-byte payload")),
                _ => {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    if !close_code_allowed(code) {
                        return Err(Violation::protocol("close code not allowed on the wire"));
                    }
                    let reason =
                        std::str::from_utf8(&payload[2..]).map_err(|_| Violation::utf8())?;
                    Ok(Some(Decoded::Close(code, reason.to_owned())))
                }
            },
            _ => Err(Violation::protocol("reserved opcode")),
        }
    }

    /// The limits a data frame's header must meet (see [`Decoder::frame`]); `opcode` with RSV1
    /// when the frame begins a compressed message.
    #[cold]
    #[inline(never)]
    fn check_data_header(&self, opcode: u8, len: u64) -> Result<(), Violation> {
        // A protocol error first, as when the frame is read whole (RFC 6455 §5.4): found by
        // stop 28's review of this check, which gave 1009 for these when they were large.
        match (&self.partial, opcode & !RSV1) {
            (Some(_), OP_TEXT | OP_BINARY) => {
                return Err(Violation::protocol("new message before the last one ended"));
            }
            (None, OP_CONTINUATION) => {
                return Err(Violation::protocol("continuation frame with nothing to continue"));
            }
            _ => {}
        }
        let (before, compressed) = match (&self.partial, opcode) {
            (Some(partial), OP_CONTINUATION) => (partial.data.len() as u64, partial.compressed),
            _ => (0, opcode & RSV1 != 0),
        };
        let frame_limit =
            if compressed { compressed_limit(self.max_frame) } else { self.max_frame };
        if len > frame_limit as u64 {
            return Err(frame_too_large(len, self.max_frame));
        }
        self.check_size(before + len, compressed)
    }

    /// A message's bytes on the wire so far against the limit (see [`compressed_limit`]).
    fn check_size(&self, size: u64, compressed: bool) -> Result<(), Violation> {
        let limit = if compressed { compressed_limit(self.max_message) } else { self.max_message };
        if size > limit as u64 {
            return Err(message_too_large(self.max_message));
        }
        Ok(())
    }

    /// A compressed message, inflated (at most `max_message` bytes of it) and checked.
    fn inflated(&mut self, text: bool, data: &[u8]) -> Result<Decoded, Violation> {
        let inflater = self.inflater.as_mut().expect("RSV1 is taken only with an inflater");
        match inflater.inflate(data, self.max_message) {
            Ok(data) => Self::complete(text, data),
            Err(deflate::InflateError::TooLarge) => Err(message_too_large(self.max_message)),
            Err(deflate::InflateError::Invalid) => Err(Violation::protocol(
                "a compressed message that does not inflate (RFC 7692 §7.2.2)",
            )),
        }
    }

    fn complete(text: bool, data: Bytes) -> Result<Decoded, Violation> {
        if text {
            Ok(Decoded::Text(self::text(data)?))
        } else {
            Ok(Decoded::Binary(data))
        }
    }
}

/// Appends one unmasked server frame with FIN set.
pub(crate) fn encode(out: &mut BytesMut, opcode: u8, payload: &[u8]) {
    out.reserve(payload.len() + 10);
    encode_header(out, opcode, payload.len());
    out.extend_from_slice(payload);
}

/// The longest header of a server frame (unmasked): 2 bytes and a 64-bit length.
pub(crate) const MAX_HEADER: usize = 10;

/// Appends the header of an unmasked server frame with FIN set and `len` bytes of payload
/// (at most [`MAX_HEADER`] bytes).
pub(crate) fn encode_header(out: &mut impl BufMut, opcode: u8, len: usize) {
    out.put_u8(0x80 | opcode);
    if len < 126 {
        out.put_u8(len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.put_u8(126);
        out.put_u16(len as u16);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
}

/// Appends a close frame (the reason is cut to fit 125 bytes).
pub(crate) fn encode_close(out: &mut BytesMut, code: u16, reason: &str) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode(out, OP_CLOSE, &payload);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        client_frame_masked(first, payload, [1, 2, 3, 4])
    }

    fn client_frame_masked(first: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut out = vec![first];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len < 65536 {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&key);
        let mut masked = payload.to_vec();
        apply_mask(&mut masked, key);
        out.extend_from_slice(&masked);
        out
    }

    fn decode_all(bytes: &[u8]) -> Result<Vec<Decoded>, Violation> {
        decode_with(Decoder::new(1 << 20, 1 << 20), bytes)
    }

    fn decode_with(mut decoder: Decoder, bytes: &[u8]) -> Result<Vec<Decoded>, Violation> {
        let mut buf = BytesMut::from(bytes);
        let mut need = 0;
        let mut out = Vec::new();
        while let Some(d) = decoder.decode(&mut buf, &mut need)? {
            out.push(d);
        }
        Ok(out)
    }

    #[test]
    fn mask_round_trips_at_every_length_and_offset() {
        // Across the 128-byte blocks, the 8-byte words and the last bytes.
        for len in 0..300 {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut x = data.clone();
            apply_mask(&mut x, [9, 8, 7, 6]);
            if len > 0 {
                assert_ne!(x, data);
            }
            for (i, b) in x.iter().enumerate() {
                assert_eq!(*b, data[i] ^ [9, 8, 7, 6][i % 4]);
            }
            apply_mask(&mut x, [9, 8, 7, 6]);
            assert_eq!(x, data);
        }
    }

    #[test]
    fn unmasking_in_blocks_matches_byte_by_byte_at_every_length_and_alignment() {
        // `mask_blocks` takes the AVX2 path on a CPU that has it; the portable one is checked
        // on its own too, so that both are, whatever the machine.
        let key = [0xA5, 0x3C, 0x0F, 0xF0];
        let data: Vec<u8> = (0..1200u32).map(|i| (i * 7 % 256) as u8).collect();
        for start in 0..33 {
            for len in (0..700).step_by(13).chain([128, 255, 256, 257, 1024, 1100]) {
                let want: Vec<u8> = data[start..start + len]
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ key[i % 4])
                    .collect();
                let whole = len / MASK_BLOCK * MASK_BLOCK;
                let mut fast = data.clone();
                let rest = mask_blocks(&mut fast[start..start + len], key).len();
                assert_eq!(rest, len - whole);
                assert_eq!(fast[start..start + whole], want[..whole], "{start} {len}");
                assert_eq!(fast[start + whole..], data[start + whole..], "{start} {len}");
                let mut portable = data.clone();
                let rest = mask_blocks_portable(&mut portable[start..start + len], key).len();
                assert_eq!(rest, len - whole);
                assert_eq!(portable, fast, "{start} {len}");
                let mut all = data.clone();
                apply_mask(&mut all[start..start + len], key);
                assert_eq!(all[start..start + len], want[..], "{start} {len}");
            }
        }
    }

    #[test]
    fn decodes_text_binary_and_lengths_of_every_header_size() {
        for len in [0usize, 1, 125, 126, 65535, 65536, 70000] {
            let payload = vec![b'a'; len];
            let got = decode_all(&client_frame(0x82, &payload)).unwrap();
            assert!(matches!(&got[..], [Decoded::Binary(b)] if b.len() == len));
            let got = decode_all(&client_frame(0x81, &payload)).unwrap();
            assert!(matches!(&got[..], [Decoded::Text(t)] if t.len() == len));
        }
    }

    #[test]
    fn frames_of_mixed_sizes_in_one_buffer_come_out_in_order_and_the_rest_waits() {
        // Small payloads are copied out and the buffer advanced once (`consumed`); a large
        // one in the middle is split off; a frame begun at the end stays, alone, in `buf`.
        let small = |n: u8| vec![n; 10 + n as usize];
        let large = vec![9u8; COPY_MAX + 500];
        let mut bytes = Vec::new();
        for n in 0..3 {
            bytes.extend(client_frame(0x82, &small(n)));
        }
        bytes.extend(client_frame(0x82, &large));
        bytes.extend(client_frame(0x82, &small(3)));
        let last = client_frame(0x82, &large);
        bytes.extend_from_slice(&last[..100]);
        let mut decoder = Decoder::new(1 << 20, 1 << 20);
        let mut buf = BytesMut::from(&bytes[..]);
        let mut need = 0;
        let mut got = Vec::new();
        while let Some(Decoded::Binary(b)) = decoder.decode(&mut buf, &mut need).unwrap() {
            got.push(b);
        }
        let want = [small(0), small(1), small(2), large.clone(), small(3)];
        assert_eq!(got.len(), want.len());
        for (got, want) in got.iter().zip(&want) {
            assert_eq!(&got[..], &want[..]);
        }
        assert_eq!(&buf[..], &last[..100], "only the frame begun is left");
        assert_eq!(need, last.len());
        buf.extend_from_slice(&last[100..]);
        let Some(Decoded::Binary(b)) = decoder.decode(&mut buf, &mut need).unwrap() else {
            panic!("the last frame, once whole");
        };
        assert_eq!(&b[..], &large[..]);
        assert!(buf.is_empty());
        // Stopping between frames and settling leaves the undecoded frames only.
        let mut buf = BytesMut::from(&bytes[..]);
        assert!(decoder.decode(&mut buf, &mut need).unwrap().is_some());
        decoder.settle(&mut buf);
        assert_eq!(&buf[..], &bytes[client_frame(0x82, &small(0)).len()..]);
    }

    #[test]
    fn small_payloads_are_carved_from_one_arena() {
        let a = bufpool::copy_small(b"first");
        let b = bufpool::copy_small(b"second");
        assert_eq!((&a[..], &b[..]), (&b"first"[..], &b"second"[..]));
        // Carved one after the other from the same allocation (no allocation each)...
        assert_eq!(b.as_ptr() as usize, a.as_ptr() as usize + a.len());
        // ...until the arena is full: then a new one, and the old payloads are untouched.
        let big = vec![7u8; COPY_MAX];
        let mut kept = Vec::new();
        for _ in 0..5 {
            kept.push(bufpool::copy_small(&big));
        }
        assert!(kept.iter().all(|p| p[..] == big[..]));
        assert_eq!((&a[..], &b[..]), (&b"first"[..], &b"second"[..]));
        let c = bufpool::copy_small(b"third");
        assert_eq!(&c[..], b"third");
    }

    #[test]
    fn waits_for_partial_frames_and_says_how_much_it_needs() {
        let frame = client_frame(0x82, &[7u8; 300]);
        let mut decoder = Decoder::new(1 << 20, 1 << 20);
        let mut buf = BytesMut::new();
        let mut need = 0;
        for (i, byte) in frame.iter().enumerate() {
            assert!(decoder.decode(&mut buf, &mut need).unwrap().is_none(), "at {i}");
            buf.put_u8(*byte);
        }
        assert_eq!(need, frame.len());
        assert!(
            matches!(decoder.decode(&mut buf, &mut need).unwrap(), Some(Decoded::Binary(b)) if b.len() == 300)
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn reassembles_fragments_with_control_frames_between() {
        let mut bytes = client_frame(0x01, "hé".as_bytes()[..2].as_ref());
        bytes.extend(client_frame(0x89, b"ping"));
        bytes.extend(client_frame(0x80, &"hé".as_bytes()[2..]));
        let got = decode_all(&bytes).unwrap();
        assert!(matches!(&got[0], Decoded::Ping(p) if &p[..] == b"ping"));
        assert!(matches!(&got[1], Decoded::Text(t) if t.as_str() == "hé"));
    }

    #[test]
    fn text_is_checked_whatever_it_holds() {
        // ASCII and not, short and long (past simdutf8's 64-byte blocks), valid and not,
        // whole and in fragments split inside a character.
        let long_ascii = "a".repeat(266);
        let samples = [
            "plain".to_owned(),
            "é at the start".to_owned(),
            "日本語のテキスト".repeat(40),
            format!("{long_ascii} then é"),
            r#"{"user":"josé","msg":"ça va"}"#.repeat(30),
        ];
        for sample in &samples {
            let got = decode_all(&client_frame(0x81, sample.as_bytes())).unwrap();
            assert!(matches!(&got[..], [Decoded::Text(t)] if t.as_str() == sample), "{sample}");
            // In three fragments, cut at every byte of the first 8 and near the end.
            let bytes = sample.as_bytes();
            for cut in (1..8.min(bytes.len())).chain([bytes.len() - 1]) {
                let mut frames = client_frame(0x01, &bytes[..cut]);
                frames.extend(client_frame(0x00, &bytes[cut..bytes.len() - 1]));
                frames.extend(client_frame(0x80, &bytes[bytes.len() - 1..]));
                let got = decode_all(&frames).unwrap();
                assert!(matches!(&got[..], [Decoded::Text(t)] if t.as_str() == sample), "{cut}");
            }
        }
        // Invalid UTF-8 inside the sample, after it, and a character cut off at the end.
        let mut bad = "é".repeat(10).into_bytes();
        bad[7] = 0xff;
        assert_eq!(violation(&client_frame(0x81, &bad)), 1007);
        let mut bad = long_ascii.into_bytes();
        bad.extend_from_slice(&[0xe6, 0x97, 0x41]);
        assert_eq!(violation(&client_frame(0x81, &bad)), 1007);
        let mut cut = "日本".as_bytes().to_vec();
        cut.pop();
        assert_eq!(violation(&client_frame(0x81, &cut)), 1007);
        let mut frames = client_frame(0x01, &cut);
        frames.extend(client_frame(0x80, b""));
        assert_eq!(violation(&frames), 1007, "an unfinished character at the message's end");
    }

    fn violation(bytes: &[u8]) -> u16 {
        decode_all(bytes).map(|_| ()).unwrap_err().code
    }

    /// A decoder that agreed to permessage-deflate, with a limit of 64 KiB.
    fn deflating() -> Decoder {
        let agreed = deflate::Agreed { compress: true, client_takeover: true };
        Decoder::new(64 << 10, 64 << 10).with_deflate(Some(agreed))
    }

    #[test]
    fn compressed_messages_whole_and_in_fragments() {
        let text = "deflated text, deflated text, deflated text, deflated text ✓".repeat(20);
        let z = deflate::compress(text.as_bytes()).unwrap();
        let mut wire = client_frame(0xC1, &z);
        // In three fragments: RSV1 on the first only; a ping between them.
        let (a, b) = z.split_at(z.len() / 3);
        let (b, c) = b.split_at(b.len() / 2);
        wire.extend(client_frame(0x41, a));
        wire.extend(client_frame(0x00, b));
        wire.extend(client_frame(0x89, b"p"));
        wire.extend(client_frame(0x80, c));
        // Binary, and an uncompressed message between compressed ones.
        wire.extend(client_frame(0xC2, &z));
        wire.extend(client_frame(0x81, b"plain"));
        let out: Vec<Out> =
            decode_with(deflating(), &wire).unwrap().into_iter().map(plain).collect();
        assert_eq!(
            out,
            [
                Out::Text(text.clone()),
                Out::Ping(b"p".to_vec()),
                Out::Text(text.clone()),
                Out::Binary(text.into_bytes()),
                Out::Text("plain".into()),
            ]
        );
    }

    #[test]
    fn compressed_messages_break_the_rules_with_the_right_codes() {
        let code = |bytes: &[u8]| decode_with(deflating(), bytes).map(|_| ()).unwrap_err().code;
        let z = deflate::compress(&[b'a'; 1000]).unwrap();
        let mut continued = client_frame(0x41, &z[..2]);
        continued.extend(client_frame(0xC0, &z[2..]));
        assert_eq!(code(&continued), 1002, "RSV1 on a continuation");
        assert_eq!(code(&client_frame(0xC9, b"x")), 1002, "RSV1 on a ping");
        assert_eq!(code(&client_frame(0xA1, &z)), 1002, "RSV2");
        assert_eq!(code(&client_frame(0x91, &z)), 1002, "RSV3");
        assert_eq!(code(&client_frame(0xE1, &z)), 1002, "RSV1 and RSV2");
        assert_eq!(code(&client_frame(0xC2, &[0xff, 0xff, 0xff])), 1002, "not DEFLATE");
        let bad_utf8 = deflate::compress(&[0xff; 400]).unwrap();
        assert_eq!(code(&client_frame(0xC1, &bad_utf8)), 1007, "invalid UTF-8 once inflated");
        // 64 KiB + 1 of zeros: a few hundred bytes on the wire, over the limit inflated.
        let bomb = deflate::compress(&[0; (64 << 10) + 1]).unwrap();
        assert!(bomb.len() < 1000);
        assert_eq!(code(&client_frame(0xC2, &bomb)), 1009, "over the limit once inflated");
        let at_limit = deflate::compress(&[0; 64 << 10]).unwrap();
        assert!(decode_with(deflating(), &client_frame(0xC2, &at_limit)).is_ok());
        // Without the agreement, RSV1 is an error as before.
        assert_eq!(violation(&client_frame(0xC1, &z)), 1002);
    }

    #[test]
    fn violations_and_their_codes() {
        assert_eq!(violation(&client_frame(0xC2, b"x")), 1002, "rsv1");
        assert_eq!(violation(&client_frame(0x83, b"x")), 1002, "reserved data opcode");
        assert_eq!(violation(&client_frame(0x8B, b"x")), 1002, "reserved control opcode");
        assert_eq!(violation(&client_frame(0x09, b"x")), 1002, "fragmented ping");
        assert_eq!(violation(&client_frame(0x89, &[0; 126])), 1002, "ping over 125");
        assert_eq!(violation(&client_frame(0x80, b"x")), 1002, "continuation alone");
        assert_eq!(violation(&[0x82, 0x01, b'x']), 1002, "unmasked");
        let mut two = client_frame(0x01, b"a");
        two.extend(client_frame(0x81, b"b"));
        assert_eq!(violation(&two), 1002, "new message inside a fragmented one");
        assert_eq!(violation(&client_frame(0x81, &[0xff])), 1007, "invalid utf-8");
        assert_eq!(violation(&client_frame(0x01, &[0xff])), 1007, "fail fast on a fragment");
        assert_eq!(violation(&client_frame(0x88, &[0x03])), 1002, "1-byte close");
        for code in [0u16, 999, 1004, 1005, 1006, 1014, 1015, 1016, 2999, 5000] {
            assert_eq!(violation(&client_frame(0x88, &code.to_be_bytes())), 1002, "code {code}");
        }
        assert_eq!(violation(&client_frame(0x88, &[0x03, 0xe8, 0xff])), 1007, "close reason");
        let mut small = Decoder::new(10, 100);
        let mut buf = BytesMut::from(&client_frame(0x82, &[0; 11])[..]);
        assert_eq!(small.decode(&mut buf, &mut 0).unwrap_err().code, 1009);
        let mut small = Decoder::new(100, 10);
        let mut buf = BytesMut::from(&client_frame(0x82, &[0; 11])[..]);
        assert_eq!(small.decode(&mut buf, &mut 0).unwrap_err().code, 1009);
        // At the limit exactly: whole frames take the short path, and pass.
        let mut small = Decoder::new(10, 100);
        let mut buf = BytesMut::from(&client_frame(0x82, &[7; 10])[..]);
        buf.extend_from_slice(&client_frame(0x81, b"0123456789"));
        buf.extend_from_slice(&client_frame(0x81, b"0123456789a"));
        assert!(
            matches!(small.decode(&mut buf, &mut 0), Ok(Some(Decoded::Binary(b))) if b[..] == [7; 10])
        );
        assert!(
            matches!(small.decode(&mut buf, &mut 0), Ok(Some(Decoded::Text(t))) if t.as_str() == "0123456789")
        );
        assert_eq!(small.decode(&mut buf, &mut 0).unwrap_err().code, 1009, "text over the limit");
    }

    #[test]
    fn close_frames() {
        let got = decode_all(&client_frame(0x88, b"")).unwrap();
        assert!(matches!(&got[0], Decoded::Close(1005, r) if r.is_empty()));
        let mut payload = 4001u16.to_be_bytes().to_vec();
        payload.extend_from_slice("bye é".as_bytes());
        let got = decode_all(&client_frame(0x88, &payload)).unwrap();
        assert!(matches!(&got[0], Decoded::Close(4001, r) if r == "bye é"));
    }

    #[test]
    fn encodes_server_frames() {
        let mut out = BytesMut::new();
        encode(&mut out, OP_TEXT, b"hi");
        assert_eq!(&out[..], &[0x81, 2, b'h', b'i']);
        out.clear();
        encode(&mut out, OP_BINARY, &[0; 200]);
        assert_eq!(&out[..4], &[0x82, 126, 0, 200]);
        out.clear();
        encode(&mut out, OP_BINARY, &[0; 70000]);
        assert_eq!(&out[..10], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        out.clear();
        encode_close(&mut out, 1000, &"é".repeat(100));
        assert_eq!(out[1] as usize, out.len() - 2);
        assert!(out.len() - 2 <= 125);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }

    // ---- property tests: the decoder against a model of the wire, byte by byte ----
    //
    // Random messages (text with 1- to 4-byte characters, binary; empty, small, around the
    // copy limit, over 64 KiB), cut into fragments with pings and pongs between them, ended
    // or not by a close, masked with random keys, then fed to the decoder in random chunks,
    // the way `ws.rs` reads: it must give exactly the messages sent, whatever the chunks, and
    // fail with 1009 at the first frame or message over the limits. Mutated streams (bytes
    // changed, cut out or repeated) must never panic, must fail only with 1002, 1007 or 1009,
    // and must decode the same in chunks as in one buffer. The read loop's decode-or-wait
    // decisions (`need`, `settle`) are what the chunking exercises: the perf work changes
    // them often. More cases: `PROPTEST_CASES=20000 cargo test --release --lib frame`.

    use proptest::prelude::*;

    /// What the decoder gave, in plain types.
    #[derive(Debug, Clone, PartialEq)]
    enum Out {
        Text(String),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong,
        Close(u16, String),
    }

    fn plain(decoded: Decoded) -> Out {
        match decoded {
            Decoded::Text(t) => Out::Text(t.as_str().to_owned()),
            Decoded::Binary(b) => Out::Binary(b.to_vec()),
            Decoded::Ping(p) => Out::Ping(p.to_vec()),
            Decoded::Pong => Out::Pong,
            Decoded::Close(code, reason) => Out::Close(code, reason),
        }
    }

    /// A deterministic byte source (xorshift), so that large payloads cost one `u64` to shrink.
    pub(crate) struct Noise(pub(crate) u64);

    impl Noise {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }

        /// At least `len` bytes of UTF-8 (one more character may end past it).
        fn text(&mut self, len: usize) -> String {
            const CHARS: [&str; 6] = ["a", "z", "é", "ß", "日", "😀"];
            let mut s = String::new();
            while s.len() < len {
                s.push_str(CHARS[(self.next() % 6) as usize]);
            }
            s
        }
    }

    /// One frame of a client's stream: FIN, opcode, payload.
    type WireFrame = (bool, u8, Vec<u8>);

    fn masked(frame: &WireFrame, key: [u8; 4]) -> Vec<u8> {
        let (fin, opcode, payload) = frame;
        client_frame_masked(if *fin { 0x80 } else { 0 } | opcode, payload, key)
    }

    /// A message as sent: text or not, its size, where it is cut, and the control frames
    /// (ping or pong, payload) sent before each of its fragments.
    #[derive(Debug, Clone)]
    struct Sent {
        text: bool,
        len: usize,
        seed: u64,
        cuts: Vec<u16>,
        controls: Vec<Option<(bool, u8)>>,
    }

    fn sent() -> impl Strategy<Value = Sent> {
        let len = prop_oneof![
            4 => 0usize..200,
            3 => (COPY_MAX - 40)..(COPY_MAX + 40),
            2 => 200usize..6000,
            1 => 65530usize..65545,
        ];
        (
            any::<bool>(),
            len,
            1..u64::MAX,
            prop::collection::vec(any::<u16>(), 0..4),
            prop::collection::vec(prop::option::weighted(0.3, (any::<bool>(), 0u8..=125)), 4),
        )
            .prop_map(|(text, len, seed, cuts, controls)| Sent {
                text,
                len,
                seed,
                cuts,
                controls,
            })
    }

    /// The frames of `messages` (and of a close if `close` is set), and what they mean.
    fn wire(messages: &[Sent], close: Option<(u16, u8)>) -> (Vec<WireFrame>, Vec<Out>) {
        let (mut frames, mut want) = (Vec::new(), Vec::new());
        for m in messages {
            let mut noise = Noise(m.seed);
            let payload = if m.text { noise.text(m.len).into_bytes() } else { noise.bytes(m.len) };
            let mut cuts: Vec<usize> =
                m.cuts.iter().map(|c| usize::from(*c) * payload.len() / 65536).collect();
            cuts.sort_unstable();
            cuts.push(payload.len());
            let mut from = 0;
            for (i, to) in cuts.iter().enumerate() {
                if let Some(Some((ping, size))) = m.controls.get(i) {
                    let data = noise.bytes(usize::from(*size));
                    let opcode = if *ping { OP_PING } else { OP_PONG };
                    want.push(if *ping { Out::Ping(data.clone()) } else { Out::Pong });
                    frames.push((true, opcode, data));
                }
                let opcode = match (i, m.text) {
                    (0, true) => OP_TEXT,
                    (0, false) => OP_BINARY,
                    _ => OP_CONTINUATION,
                };
                frames.push((i + 1 == cuts.len(), opcode, payload[from..*to].to_vec()));
                from = *to;
            }
            want.push(if m.text {
                Out::Text(String::from_utf8(payload).expect("made as text"))
            } else {
                Out::Binary(payload)
            });
        }
        if let Some((code, reason_len)) = close {
            let mut reason = Noise(u64::from(code) + 1).text(usize::from(reason_len));
            while reason.len() > 123 {
                reason.pop();
            }
            let mut payload = code.to_be_bytes().to_vec();
            payload.extend_from_slice(reason.as_bytes());
            want.push(Out::Close(code, reason));
            frames.push((true, OP_CLOSE, payload));
        }
        (frames, want)
    }

    /// What a decoder with these limits must give for `frames`: the model of the limits is
    /// "the first frame over `max_frame`, or the first data frame that takes its message
    /// over `max_message`, fails with 1009".
    fn within_limits(
        frames: &[WireFrame],
        want: &[Out],
        max_message: usize,
        max_frame: usize,
    ) -> (Vec<Out>, Option<u16>) {
        let (mut outs, mut message) = (0, 0);
        for (fin, opcode, payload) in frames {
            // The frame limit is for data frames (control frames hold 125 bytes at most).
            if *opcode & 0x8 == 0 && payload.len() > max_frame {
                return (want[..outs].to_vec(), Some(1009));
            }
            if *opcode & 0x8 == 0 {
                message += payload.len();
                if message > max_message {
                    return (want[..outs].to_vec(), Some(1009));
                }
                if *fin {
                    message = 0;
                    outs += 1;
                }
            } else {
                outs += 1;
            }
        }
        (want.to_vec(), None)
    }

    /// Feeds `bytes` to `decoder` in chunks of the sizes in `chunks` (cycled), decoding after
    /// each as `ws.rs` does: not called while the buffer holds less than `need` (unless
    /// `eager`), settled after every `settle_every`th message. Checks `need` on each wait.
    fn decode_chunked(
        mut decoder: Decoder,
        bytes: &[u8],
        chunks: &[usize],
        eager: bool,
        settle_every: usize,
    ) -> (Vec<Out>, Option<u16>) {
        let (mut buf, mut need, mut out) = (BytesMut::new(), 0, Vec::new());
        let (mut at, mut i) = (0, 0);
        loop {
            loop {
                if !eager && buf.len() < need.max(2) {
                    need = need.max(2);
                    break;
                }
                match decoder.decode(&mut buf, &mut need) {
                    Ok(Some(decoded)) => {
                        out.push(plain(decoded));
                        if out.len() % settle_every == 0 {
                            decoder.settle(&mut buf);
                        }
                    }
                    Ok(None) => {
                        assert!(need > buf.len(), "waits for {need} bytes with {}", buf.len());
                        break;
                    }
                    Err(violation) => return (out, Some(violation.code)),
                }
            }
            if at == bytes.len() {
                return (out, None);
            }
            let n = chunks[i % chunks.len()].min(bytes.len() - at);
            buf.extend_from_slice(&bytes[at..at + n]);
            (at, i) = (at + n, i + 1);
        }
    }

    fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
        prop::collection::vec(prop_oneof![1usize..16, 16usize..2000, 2000usize..70000], 1..6)
    }

    fn cases() -> ProptestConfig {
        let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok());
        ProptestConfig {
            cases: cases.unwrap_or(256),
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(cases())]

        #[test]
        fn any_chunking_gives_the_messages_sent(
            messages in prop::collection::vec(sent(), 1..6),
            close in prop::option::of(
                (prop::sample::select(vec![1000u16, 1001, 1003, 1011, 3000, 4999]), 0u8..140),
            ),
            keys in prop::collection::vec(any::<[u8; 4]>(), 1..4),
            chunks in chunk_sizes(),
            eager in any::<bool>(),
            settle_every in 1usize..4,
            limits in prop::option::of((0usize..70000, 0usize..70000)),
        ) {
            let (frames, want) = wire(&messages, close);
            let bytes: Vec<u8> = frames
                .iter()
                .enumerate()
                .flat_map(|(i, f)| masked(f, keys[i % keys.len()]))
                .collect();
            let (max_message, max_frame) = limits.unwrap_or((1 << 20, 1 << 20));
            let want = within_limits(&frames, &want, max_message, max_frame);
            let decoder = Decoder::new(max_message, max_frame);
            let got = decode_chunked(decoder, &bytes, &chunks, eager, settle_every);
            prop_assert_eq!(got, want);
        }

        #[test]
        fn damaged_streams_fail_with_a_protocol_code_and_the_same_in_any_chunks(
            messages in prop::collection::vec(sent(), 1..4),
            edits in prop::collection::vec((any::<u16>(), 0u8..3, any::<u8>()), 1..4),
            chunks in chunk_sizes(),
            eager in any::<bool>(),
            limits in prop::option::of((0usize..70000, 0usize..70000)),
        ) {
            let (frames, _) = wire(&messages, None);
            let mut bytes: Vec<u8> =
                frames.iter().flat_map(|f| masked(f, [7, 0, 0x80, 0xff])).collect();
            for (at, kind, byte) in edits {
                if bytes.is_empty() {
                    break;
                }
                let at = usize::from(at) % bytes.len();
                match kind {
                    0 => bytes[at] = byte,
                    1 => drop(bytes.drain(at..(at + usize::from(byte)).min(bytes.len()))),
                    _ => {
                        let copy = bytes[at..(at + usize::from(byte)).min(bytes.len())].to_vec();
                        bytes.splice(at..at, copy);
                    }
                }
            }
            let (max_message, max_frame) = limits.unwrap_or((1 << 20, 1 << 20));
            let whole = decode_chunked(
                Decoder::new(max_message, max_frame), &bytes, &[bytes.len().max(1)], true, 1,
            );
            if let Some(code) = whole.1 {
                prop_assert!(matches!(code, 1002 | 1007 | 1009), "code {}", code);
            }
            let chunked =
                decode_chunked(Decoder::new(max_message, max_frame), &bytes, &chunks, eager, 2);
            prop_assert_eq!(chunked, whole);
        }
    }
}
