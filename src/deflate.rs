//! permessage-deflate (RFC 7692): the offer's negotiation, the connection's inflater, and the
//! compressor each thread keeps.
//!
//! What webchan agrees to, whatever the offer: `server_no_context_takeover`, so that each
//! message it sends is compressed on its own and one compressor per thread (~390 KiB) serves
//! every connection, instead of one per connection. What the client compresses it keeps its
//! context for (one inflater per connection, ~47 KiB, made at its first compressed message),
//! unless the client offered `client_no_context_takeover` or `Config::deflate_client_context`
//! is off (then the agreement says `client_no_context_takeover` anyway): then the inflater is
//! the thread's too. A client that asks for a server window under 32 KiB
//! (`server_max_window_bits` below 15) is answered with that window and gets every message
//! uncompressed, which RFC 7692 allows (a message's compression is its own choice, RSV1): the
//! thread's compressor, for messages of 1 KiB and more, has one window size. Messages of 128
//! bytes to 1 KiB are compressed by an encoder of webchan's own ([`compress_small`]), which
//! needs no state.
//!
//! DEFLATE itself is flate2's zlib-rs backend (a Rust port of zlib), since stop 33
//! (2026-12-06); miniz (flate2's `rust_backend`) before. zlib rejects a reference back past
//! the data the inflater has seen ("invalid distance too far back"): miniz read the zeros of its
//! fresh window there, and a client's invalid message was taken with NUL bytes instead of
//! closed with 1002. zlib-rs is also faster on this project's machine (a throwaway program on
//! one core, varied JSON, level 1, reset before each message: compressing 1 KiB 4.4 µs against
//! 9.5, 16 KiB 19 against 36; inflating 300 bytes 0.63 against 2.55, 16 KiB 17 against 21), at
//! a lower ratio at level 1 (zlib-rs's fastest level uses the fixed codes: 16 KiB to 32 %
//! against 28 %).

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use http::header::{HeaderMap, HeaderValue, SEC_WEBSOCKET_EXTENSIONS};

use crate::negotiate::is_tchar;

/// What was agreed with a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Agreed {
    /// Messages may be sent compressed (the client's window for them is 32 KiB).
    pub(crate) compress: bool,
    /// The client keeps its compression context from message to message (it did not offer
    /// `client_no_context_takeover`): so does the connection's inflater.
    pub(crate) client_takeover: bool,
}

/// Messages shorter than this are sent as they are: DEFLATE saves little on them.
pub(crate) const MIN_SIZE: usize = 128;

/// The four bytes a sender strips from the end of each compressed message (RFC 7692 §7.2.1):
/// an empty stored block, put back before inflating.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Reads the client's `Sec-WebSocket-Extensions` and accepts the first permessage-deflate
/// offer webchan can honour (RFC 7692 §7): the agreement and the response header, or `None`
/// when there is no such offer (the connection goes on without compression). An offer with a
/// parameter RFC 7692 does not define for offers, an invalid value or a parameter twice is
/// declined, and the next one tried. `Err` is a header that does not parse as an extension
/// list (RFC 6455 §9.1). `client_context`: whether the client may keep its compression context
/// (`Config::deflate_client_context`); if not, every agreement says `client_no_context_takeover`
/// (RFC 7692 §7.1.1.2 lets a server add it to any offer).
pub(crate) fn negotiate(
    headers: &HeaderMap,
    client_context: bool,
) -> Result<Option<(Agreed, HeaderValue)>, &'static str> {
    let mut chosen = None;
    for value in headers.get_all(SEC_WEBSOCKET_EXTENSIONS) {
        let offers = parse(value.as_bytes())
            .ok_or("Sec-WebSocket-Extensions is not a valid extension list (RFC 6455 §9.1)")?;
        if chosen.is_none() {
            chosen = offers.iter().find_map(|offer| accept(offer, client_context));
        }
    }
    Ok(chosen)
}

/// An offer: the extension's name and its parameters (name, value unquoted).
type Offer<'a> = (&'a [u8], Vec<(&'a [u8], Option<Vec<u8>>)>);

fn accept((name, params): &Offer<'_>, client_context: bool) -> Option<(Agreed, HeaderValue)> {
    if !name.eq_ignore_ascii_case(b"permessage-deflate") {
        return None;
    }
    let mut server_nct = false;
    let mut client_nct = false;
    let mut server_bits: Option<u8> = None;
    let mut client_bits: Option<Option<u8>> = None;
    for (param, value) in params {
        let param = std::str::from_utf8(param).ok()?.to_ascii_lowercase();
        match (param.as_str(), value) {
            ("server_no_context_takeover", None) if !server_nct => server_nct = true,
            ("client_no_context_takeover", None) if !client_nct => client_nct = true,
            ("server_max_window_bits", Some(v)) if server_bits.is_none() => {
                server_bits = Some(window_bits(v)?);
            }
            ("client_max_window_bits", v) if client_bits.is_none() => {
                client_bits = Some(match v {
                    None => None,
                    Some(v) => Some(window_bits(v)?),
                });
            }
            _ => return None,
        }
    }
    // Offered or not, when the server wants no context kept for what the client sends.
    let client_nct = client_nct || !client_context;
    let mut response = String::from("permessage-deflate; server_no_context_takeover");
    if client_nct {
        response.push_str("; client_no_context_takeover");
    }
    if let Some(bits) = server_bits {
        response.push_str(&format!("; server_max_window_bits={bits}"));
    }
    let agreed =
        Agreed { compress: server_bits.map_or(true, |b| b == 15), client_takeover: !client_nct };
    Some((agreed, HeaderValue::from_str(&response).ok()?))
}

/// A window size parameter's value: `8` to `15`, no leading zero (RFC 7692 §7.1.2).
fn window_bits(value: &[u8]) -> Option<u8> {
    match value {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

/// `extension-list` of RFC 6455 §9.1, over HTTP's list syntax (empty elements allowed, RFC
/// 9110 §5.6.1): `name *( ";" param [ "=" ( token / quoted-string ) ] )`, separated by commas,
/// optional whitespace around every separator. `None`: not that.
fn parse(input: &[u8]) -> Option<Vec<Offer<'_>>> {
    let mut at = 0;
    let mut offers = Vec::new();
    loop {
        skip_space(input, &mut at);
        match input.get(at) {
            None => return Some(offers),
            Some(b',') => {
                at += 1;
                continue;
            }
            Some(_) => {}
        }
        let name = token(input, &mut at)?;
        let mut params = Vec::new();
        loop {
            skip_space(input, &mut at);
            match input.get(at) {
                None | Some(b',') => break,
                Some(b';') => at += 1,
                Some(_) => return None,
            }
            skip_space(input, &mut at);
            let param = token(input, &mut at)?;
            skip_space(input, &mut at);
            let value = if input.get(at) == Some(&b'=') {
                at += 1;
                skip_space(input, &mut at);
                Some(if input.get(at) == Some(&b'"') {
                    quoted(input, &mut at)?
                } else {
                    token(input, &mut at)?.to_vec()
                })
            } else {
                None
            };
            params.push((param, value));
        }
        offers.push((name, params));
    }
}

fn skip_space(input: &[u8], at: &mut usize) {
    while matches!(input.get(*at), Some(b' ' | b'\t')) {
        *at += 1;
    }
}

fn token<'a>(input: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let start = *at;
    while input.get(*at).copied().is_some_and(is_tchar) {
        *at += 1;
    }
    (*at > start).then(|| &input[start..*at])
}

/// A quoted string, unescaped. Its value must be a token (RFC 6455 §9.1).
fn quoted(input: &[u8], at: &mut usize) -> Option<Vec<u8>> {
    *at += 1;
    let mut value = Vec::new();
    loop {
        match *input.get(*at)? {
            b'"' => {
                *at += 1;
                return (!value.is_empty() && value.iter().copied().all(is_tchar)).then_some(value);
            }
            b'\\' => {
                value.push(*input.get(*at + 1)?);
                *at += 2;
            }
            b => {
                value.push(b);
                *at += 1;
            }
        }
    }
}

/// Why a compressed message could not be inflated.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// Over the message size limit once inflated.
    TooLarge,
    /// Not valid DEFLATE data.
    Invalid,
}

/// A connection's inflater: kept from message to message while the client keeps its context,
/// made at the first compressed message.
#[derive(Debug)]
pub(crate) struct Inflater {
    takeover: bool,
    own: Option<Box<Decompress>>,
}

thread_local! {
    /// The inflater of connections whose client resets its context for each message.
    static INFLATER: RefCell<Option<Box<Decompress>>> = const { RefCell::new(None) };
    /// The compressor of every connection (webchan resets its context for each message).
    static COMPRESSOR: RefCell<Option<Box<Compress>>> = const { RefCell::new(None) };
}

impl Inflater {
    pub(crate) fn new(agreed: Agreed) -> Self {
        Self { takeover: agreed.client_takeover, own: None }
    }

    /// Inflates one message's compressed payload (its frames' payloads, joined), at most
    /// `limit` bytes of it.
    pub(crate) fn inflate(&mut self, data: &[u8], limit: usize) -> Result<Bytes, InflateError> {
        if self.takeover {
            let d = self.own.get_or_insert_with(|| Box::new(Decompress::new(false)));
            return inflate(d, data, limit);
        }
        INFLATER.with(|cell| {
            // Taken out while in use: a panic inside cannot leave it borrowed.
            let mut d =
                cell.borrow_mut().take().unwrap_or_else(|| Box::new(Decompress::new(false)));
            d.reset(false);
            let result = inflate(&mut d, data, limit);
            *cell.borrow_mut() = Some(d);
            result
        })
    }
}

fn inflate(d: &mut Decompress, data: &[u8], limit: usize) -> Result<Bytes, InflateError> {
    if data.is_empty() {
        // No DEFLATE data at all (a block header at least, `00` for an empty message, RFC 7692
        // §7.2.3.6): taken for an empty message, and the inflater left as it is. Fed to it, the
        // four bytes put back would begin a stored block that the next message continued
        // (before stop 32's review, 2026-12-06: a client keeping its context then had its next
        // valid message refused with 1002).
        return Ok(Bytes::new());
    }
    // Room for one byte over the limit: that is how a message over it is seen.
    let room = limit.saturating_add(1);
    let mut out: Vec<u8> = Vec::with_capacity(room.min(data.len().saturating_mul(4).max(1024)));
    let mut before_tail = 0;
    for (put_back, input) in [(false, data), (true, &TAIL[..])] {
        before_tail = d.total_out();
        let mut input = input;
        loop {
            if out.len() == out.capacity() {
                if out.len() > limit {
                    return Err(InflateError::TooLarge);
                }
                let grow = out.len().max(1024).min(room - out.len());
                out.reserve_exact(grow);
            }
            let (before_in, before_out) = (d.total_in(), d.total_out());
            let status = d
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Invalid)?;
            let used = (d.total_in() - before_in) as usize;
            input = &input[used..];
            if out.len() > limit {
                return Err(InflateError::TooLarge);
            }
            if status == Status::StreamEnd {
                // A final block ends the DEFLATE stream: the next message starts a new one.
                // Of the message, all that may follow it is the header byte of the empty
                // stored block a sender appends and then strips to its first byte (RFC 7692
                // §7.2.1, and §7.2.3.4's example `f3 48 cd c9 c9 07 00 00`: before stop 32's
                // second review, 2026-12-06, that `00` was refused with 1002). A final block
                // that only the bytes put back end must take nothing out of them: else the
                // message was cut short inside it (before stop 33's review, 2026-12-06, it was
                // taken with bytes made of those four).
                let from_tail = put_back && d.total_out() != before_tail;
                d.reset(false);
                if from_tail || (!put_back && !input.is_empty() && input != [0x00]) {
                    return Err(InflateError::Invalid);
                }
                return Ok(kept(out));
            }
            let progressed = used > 0 || d.total_out() > before_out;
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if !progressed && out.len() < out.capacity() {
                return Err(InflateError::Invalid);
            }
        }
    }
    // The bytes put back are the LEN and NLEN of an empty stored block whose header ended the
    // message: nothing comes out of them.
    if d.total_out() != before_tail {
        return Err(InflateError::Invalid);
    }
    ended_between_blocks(d)?;
    Ok(kept(out))
}

/// An empty stored block, byte-aligned: `ended_between_blocks`' probe.
const PROBE: [u8; 5] = [0x00, 0x00, 0x00, 0xff, 0xff];

/// Checks that the message ended between two blocks, as the four bytes put back end an empty
/// stored block (RFC 7692 §7.2.2): an empty stored block more is then taken whole, with nothing
/// out, and leaves the inflater as it was. One still inside a block (the message was cut short,
/// or its sender left those four bytes on) takes it as data, or fails. Before stop 32's review
/// (2026-12-06) such a message was accepted as whatever came out, and a client keeping its
/// context had its next valid message refused instead.
fn ended_between_blocks(d: &mut Decompress) -> Result<(), InflateError> {
    let (before_in, before_out) = (d.total_in(), d.total_out());
    let mut scratch = Vec::with_capacity(PROBE.len());
    let status = d.decompress_vec(&PROBE, &mut scratch, FlushDecompress::Sync);
    let whole = d.total_in() - before_in == PROBE.len() as u64 && d.total_out() == before_out;
    match status {
        Ok(Status::Ok | Status::BufError) if whole => Ok(()),
        _ => Err(InflateError::Invalid),
    }
}

/// A buffer as the message keeps it: given back what it has over twice its length (the room
/// made for a message before its size was known: 1 MiB for a compressed 2 KiB).
fn kept(mut out: Vec<u8>) -> Bytes {
    if out.capacity() > 2 * out.len() {
        out.shrink_to_fit();
    }
    out.into()
}

/// The payload compressed for a message of its own (RFC 7692 §7.2.1: the last four bytes
/// stripped), or `None` when compressing would not make it smaller.
pub(crate) fn compress(payload: &[u8]) -> Option<Bytes> {
    if payload.len() <= SMALL_MAX {
        return compress_small(payload);
    }
    COMPRESSOR.with(|cell| {
        let mut c = cell
            .borrow_mut()
            .take()
            .unwrap_or_else(|| Box::new(Compress::new(Compression::fast(), false)));
        c.reset();
        let result = compress_with(&mut c, payload);
        *cell.borrow_mut() = Some(c);
        result
    })
}

fn compress_with(c: &mut Compress, payload: &[u8]) -> Option<Bytes> {
    // Worth it only if the result, less its tail, is smaller than the payload.
    let mut out = Vec::with_capacity(payload.len() + TAIL.len());
    let mut input = payload;
    loop {
        let before = c.total_in();
        c.compress_vec(input, &mut out, FlushCompress::Sync).ok()?;
        input = &input[(c.total_in() - before) as usize..];
        if out.len() == out.capacity() {
            // Full before the end: no gain.
            return None;
        }
        if input.is_empty() && out.ends_with(&TAIL) {
            break;
        }
    }
    out.truncate(out.len() - TAIL.len());
    (out.len() < payload.len()).then(|| kept(out))
}

/// Messages under 1 KiB are compressed by [`compress_small`], larger ones by the thread's
/// compressor (zlib-rs at level 1), whose reset and setup for each message cost ~3.4 µs on this
/// project's machine whatever the message's size (varied JSON: 300 bytes 3.7 µs, 1 KiB 4.4 µs,
/// 16 KiB 19 µs), where `compress_small` takes ~1.2 µs for 300 bytes. When miniz compressed
/// these, its output was smaller than `compress_small`'s for text that repeats little (varied
/// JSON: 145 bytes against 134 for 200, 492 against 410 for 1,000, 1,655 against 1,318 for
/// 4,000), hence the library from 1 KiB on.
const SMALL_MAX: usize = 1023;

/// A message of at most `SMALL_MAX` bytes compressed by webchan's own encoder: one DEFLATE
/// block with the fixed Huffman codes (RFC 1951 §3.2.6) and greedy LZ77 matching through a
/// hash table on the stack, then the sync flush's empty stored block, less its last four bytes
/// (RFC 7692 §7.2.1). The thread compressor's reset alone costs ~3.4 µs whatever the message
/// (see [`SMALL_MAX`]); this needs no state between messages, so nothing to reset. `None` when
/// the result would not be smaller.
fn compress_small(data: &[u8]) -> Option<Bytes> {
    const HASH_BITS: u32 = 10;
    debug_assert!(data.len() <= SMALL_MAX);
    let mut bits = Bits { out: Vec::with_capacity(data.len()), acc: 0, n: 0 };
    // BFINAL 0, BTYPE 01 (fixed codes).
    bits.put(0b010, 3);
    // Each slot: the last position (plus one) whose 3 bytes hashed there; 0 for none.
    let mut table = [0u16; 1 << HASH_BITS];
    let hash = |at: usize| {
        let v = u32::from(data[at]) | u32::from(data[at + 1]) << 8 | u32::from(data[at + 2]) << 16;
        (v.wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize
    };
    let mut at = 0;
    while at < data.len() {
        if at + 3 <= data.len() {
            let h = hash(at);
            let candidate = usize::from(table[h]);
            table[h] = (at + 1) as u16;
            if candidate > 0 {
                let from = candidate - 1;
                let max = (data.len() - at).min(258);
                let len = data[from..]
                    .iter()
                    .zip(&data[at..at + max])
                    .take_while(|(a, b)| a == b)
                    .count();
                if len >= 3 {
                    bits.length(len);
                    bits.distance(at - from);
                    // The positions inside the match go into the table too (a later match may
                    // start there), but for the last two, whose 3 bytes run past it.
                    for p in at + 1..(at + len).min(data.len() - 2) {
                        table[hash(p)] = (p + 1) as u16;
                    }
                    at += len;
                    if bits.out.len() >= data.len() {
                        return None;
                    }
                    continue;
                }
            }
        }
        bits.literal(data[at]);
        at += 1;
        if bits.out.len() >= data.len() {
            return None;
        }
    }
    // End of block (256: seven zero bits), then the empty stored block's header (BFINAL 0,
    // BTYPE 00) and the padding to a byte: its LEN and NLEN are the four bytes left out.
    bits.put(0, 7 + 3);
    bits.flush();
    (bits.out.len() < data.len()).then(|| Bytes::from(bits.out))
}

/// A DEFLATE bit stream: bits go in from the least significant end (RFC 1951 §3.1.1).
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    /// The `count` low bits of `value`, least significant first (`count` at most 32).
    fn put(&mut self, value: u32, count: u32) {
        self.acc |= u64::from(value) << self.n;
        self.n += count;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// A Huffman code of `len` bits, which goes in from its most significant bit.
    fn code(&mut self, code: u32, len: u32) {
        self.put(code.reverse_bits() >> (32 - len), len);
    }

    /// Literal/length symbol `symbol` in the fixed code (RFC 1951 §3.2.6).
    fn symbol(&mut self, symbol: u32) {
        match symbol {
            0..=143 => self.code(0x30 + symbol, 8),
            144..=255 => self.code(0x190 + symbol - 144, 9),
            256..=279 => self.code(symbol - 256, 7),
            _ => self.code(0xC0 + symbol - 280, 8),
        }
    }

    fn literal(&mut self, byte: u8) {
        self.symbol(u32::from(byte));
    }

    /// A match length of 3 to 258: its symbol (257-285), then its extra bits.
    fn length(&mut self, len: usize) {
        let n = (len - 3) as u32;
        if len == 258 {
            self.symbol(285);
        } else if n < 8 {
            self.symbol(257 + n);
        } else {
            let k = 31 - n.leading_zeros(); // 3..=7
            self.symbol(257 + 4 * (k - 1) + ((n >> (k - 2)) & 3));
            self.put(n & ((1 << (k - 2)) - 1), k - 2);
        }
    }

    /// A distance of 1 to 32,768: its 5-bit code (0-29), then its extra bits.
    fn distance(&mut self, distance: usize) {
        let n = (distance - 1) as u32;
        if n < 4 {
            self.code(n, 5);
        } else {
            let k = 31 - n.leading_zeros(); // 2..=14
            self.code(2 * k + ((n >> (k - 1)) & 1), 5);
            self.put(n & ((1 << (k - 1)) - 1), k - 1);
        }
    }

    /// Pads the last byte with zero bits.
    fn flush(&mut self) {
        if self.n > 0 {
            self.out.push(self.acc as u8);
            self.acc = 0;
            self.n = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(value: &str) -> Result<Option<(Agreed, String)>, &'static str> {
        offer_with(value, true)
    }

    fn offer_with(
        value: &str,
        client_context: bool,
    ) -> Result<Option<(Agreed, String)>, &'static str> {
        let mut headers = HeaderMap::new();
        for line in value.split('\n') {
            headers.append(SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_str(line).unwrap());
        }
        negotiate(&headers, client_context)
            .map(|o| o.map(|(a, v)| (a, v.to_str().unwrap().to_owned())))
    }

    const FULL: Agreed = Agreed { compress: true, client_takeover: true };

    #[test]
    fn the_offers_browsers_and_libraries_send_are_accepted() {
        let plain = "permessage-deflate; server_no_context_takeover";
        for (value, agreed, response) in [
            ("permessage-deflate", FULL, plain.to_owned()),
            // Chromium, Firefox, Node's ws, Python's websockets.
            ("permessage-deflate; client_max_window_bits", FULL, plain.to_owned()),
            ("permessage-deflate; client_max_window_bits=12", FULL, plain.to_owned()),
            (
                "permessage-deflate; server_max_window_bits=15",
                FULL,
                format!("{plain}; server_max_window_bits=15"),
            ),
            (
                "permessage-deflate; client_no_context_takeover",
                Agreed { compress: true, client_takeover: false },
                format!("{plain}; client_no_context_takeover"),
            ),
            (
                "PerMessage-Deflate ; Server_No_Context_Takeover ;server_max_window_bits=\"10\"",
                Agreed { compress: false, client_takeover: true },
                format!("{plain}; server_max_window_bits=10"),
            ),
        ] {
            assert_eq!(offer(value), Ok(Some((agreed, response))), "{value}");
        }
    }

    #[test]
    fn without_client_context_every_agreement_says_client_no_context_takeover() {
        let reset = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        let agreed = Agreed { compress: true, client_takeover: false };
        for value in [
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits",
            // Offered too: said once.
            "permessage-deflate; client_no_context_takeover",
        ] {
            assert_eq!(offer_with(value, false), Ok(Some((agreed, reset.to_owned()))), "{value}");
        }
        assert_eq!(
            offer_with("permessage-deflate; server_max_window_bits=10", false),
            Ok(Some((
                Agreed { compress: false, client_takeover: false },
                format!("{reset}; server_max_window_bits=10")
            )))
        );
        // Declined offers stay declined.
        assert_eq!(offer_with("permessage-deflate; x=1", false), Ok(None));
    }

    #[test]
    fn offers_webchan_cannot_honour_are_declined_and_the_next_is_tried() {
        for value in [
            "x-webkit-deflate-frame",
            "permessage-deflate; foo",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=08",
            "permessage-deflate; client_max_window_bits=1",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=9",
            "",
        ] {
            assert_eq!(offer(value), Ok(None), "{value:?}");
        }
        // The first acceptable offer wins, across commas and header lines.
        assert_eq!(
            offer("permessage-deflate; foo, permessage-deflate; client_no_context_takeover"),
            Ok(Some((
                Agreed { compress: true, client_takeover: false },
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover".into()
            )))
        );
        assert_eq!(
            offer("foo\npermessage-deflate; server_max_window_bits=9, permessage-deflate")
                .map(|o| o.map(|(a, _)| a)),
            Ok(Some(Agreed { compress: false, client_takeover: true }))
        );
    }

    #[test]
    fn a_header_that_is_no_extension_list_is_an_error() {
        for value in [
            "permessage-deflate;",
            "permessage-deflate; =1",
            "permessage-deflate x",
            "permessage-deflate; a=\"unterminated",
            "permessage-deflate; a=\"not a token\"",
            "permessage-deflate; a=",
            ";",
        ] {
            assert!(offer(value).is_err(), "{value:?}");
        }
        // Empty list elements are allowed (RFC 9110 §5.6.1).
        assert_eq!(offer(" , permessage-deflate ,").map(|o| o.map(|(a, _)| a)), Ok(Some(FULL)));
    }

    fn compressible(len: usize) -> Vec<u8> {
        (0..len).map(|i| b"webchan deflate "[i % 16] ^ (i / 977) as u8).collect()
    }

    #[test]
    fn what_is_compressed_inflates_back_with_and_without_context() {
        for takeover in [true, false] {
            let mut inflater = Inflater::new(Agreed { compress: true, client_takeover: takeover });
            for len in [256, 1000, 16 << 10, 1 << 20] {
                let data = compressible(len);
                let z = compress(&data).expect("compressible");
                assert!(z.len() < data.len() / 2, "{len}: {}", z.len());
                assert!(!z.ends_with(&TAIL));
                assert_eq!(inflater.inflate(&z, len).unwrap(), data, "{len}");
            }
        }
        // Random bytes do not shrink: sent as they are.
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert_eq!(compress(&noise), None);
    }

    /// `compress_small`'s output inflates back to its input through the crate's own inflater
    /// and through a fresh raw inflater, ends as RFC 7692 asks, and is smaller.
    fn check_small(data: &[u8]) -> Option<usize> {
        let z = compress_small(data)?;
        assert!(z.len() < data.len());
        assert_eq!(Inflater::new(FULL).inflate(&z, SMALL_MAX).unwrap(), data, "{data:?}");
        let mut d = Decompress::new(false);
        let mut out = Vec::with_capacity(SMALL_MAX + 1);
        let mut input = z.to_vec();
        input.extend_from_slice(&TAIL);
        d.decompress_vec(&input, &mut out, FlushDecompress::Sync).unwrap();
        assert_eq!(d.total_in() as usize, input.len());
        assert_eq!(out, data);
        Some(z.len())
    }

    #[test]
    fn the_small_encoder_round_trips_every_kind_of_input() {
        let mut rand = crate::frame::tests::Noise(0x1234_5678_9abc_def1);
        let words: [&[u8]; 6] =
            [b"\"user\":", b"\"alice\",", b"{\"seq\":", b"12345}", b" ", b"\xc3\xa9"];
        let mut compressed = 0;
        for case in 0..3000 {
            let len = (rand.next() % (SMALL_MAX as u64 + 1)) as usize;
            let data: Vec<u8> = match case % 4 {
                // Few distinct bytes: long matches, overlapping ones, lengths up to 258.
                0 => {
                    let alphabet = [1, 2, 3, 5, 17][case / 4 % 5];
                    (0..len).map(|_| (rand.next() % alphabet) as u8).collect()
                }
                // Every byte value: the 9-bit literals.
                1 => (0..len).map(|_| rand.next() as u8).collect(),
                // Words: matches at every distance.
                2 => {
                    let mut v = Vec::new();
                    while v.len() < len {
                        v.extend_from_slice(words[(rand.next() % 6) as usize]);
                    }
                    v.truncate(len);
                    v
                }
                // A random block, then copies of its pieces at random distances and lengths.
                _ => {
                    let mut v: Vec<u8> = (0..len.min(300)).map(|_| rand.next() as u8).collect();
                    while v.len() < len {
                        let from = (rand.next() % v.len() as u64) as usize;
                        let n = 3 + (rand.next() % 300) as usize;
                        for i in 0..n {
                            v.push(v[from + i]);
                        }
                    }
                    v.truncate(len);
                    v
                }
            };
            if check_small(&data).is_some() {
                compressed += 1;
            }
        }
        assert!(compressed > 1500, "only {compressed} of 3000 inputs were compressed");
        // Every match length, every distance code.
        for len in 3..=258 {
            let mut data = b"0123456789abcdefghijklmnopqrstuvwxyz".to_vec();
            data.extend(std::iter::repeat(b'q').take(len + 1));
            data.extend_from_slice(b"0123456789abcdefghijklmnopqrstuvwxyz");
            check_small(&data).expect("compressible");
        }
        for distance in [1, 2, 3, 4, 5, 7, 8, 9, 13, 100, 257, 300] {
            // Random bytes repeated with that period: every match is at that distance.
            let head: Vec<u8> = (0..distance).map(|_| rand.next() as u8).collect();
            let data: Vec<u8> =
                head.iter().copied().cycle().take(SMALL_MAX.min(distance * 3 + 300)).collect();
            check_small(&data).unwrap_or_else(|| panic!("distance {distance}: not compressed"));
        }
    }

    #[test]
    fn small_messages_compress_nearly_as_well_as_with_the_library() {
        let unit = r#"{"user":"alice","room":"general","text":"message number","seq":12345} "#;
        for len in [128, 256, 512, 1023] {
            let data = unit.repeat(len / unit.len() + 1)[..len].to_owned();
            let ours = compress_small(data.as_bytes()).unwrap().len();
            let mut c = Compress::new(Compression::fast(), false);
            let zlib = compress_with(&mut c, data.as_bytes()).unwrap().len();
            eprintln!("{len} bytes: {ours} ours, {zlib} zlib-rs");
            assert!(ours <= zlib * 3 / 2 + 8, "{len} bytes: {ours} against zlib-rs's {zlib}");
        }
    }

    #[test]
    fn a_client_that_keeps_its_context_is_followed_across_messages() {
        // The client's side, as a browser's: one compressor for every message.
        let mut client = Compress::new(Compression::default(), false);
        let mut inflater = Inflater::new(FULL);
        let text = b"the same sentence, sent again and again, refers back to the last message";
        let mut sizes = Vec::new();
        for _ in 0..3 {
            let mut out = Vec::with_capacity(200);
            client.compress_vec(text, &mut out, FlushCompress::Sync).unwrap();
            assert!(out.ends_with(&TAIL));
            out.truncate(out.len() - 4);
            sizes.push(out.len());
            assert_eq!(inflater.inflate(&out, 1000).unwrap(), &text[..]);
        }
        assert!(sizes[1] < sizes[0] / 2, "the second message did not refer back: {sizes:?}");
    }

    /// Messages that do not end between two blocks are refused, and the context of a client
    /// that keeps it is not disturbed by an empty one (stop 32's review).
    #[test]
    fn a_message_must_end_between_blocks() {
        let mut client = Compress::new(Compression::default(), false);
        let mut next = |text: &[u8]| {
            let mut out = Vec::with_capacity(text.len() + 64);
            client.compress_vec(text, &mut out, FlushCompress::Sync).unwrap();
            out.truncate(out.len() - 4);
            out
        };
        let text = b"the same sentence, sent again and again, refers back to the last message";
        let mut inflater = Inflater::new(FULL);
        assert_eq!(inflater.inflate(&next(text), 1000).unwrap(), &text[..]);
        // Nothing at all: an empty message, and the context goes on.
        assert_eq!(inflater.inflate(&[], 1000).unwrap(), Bytes::new());
        assert_eq!(inflater.inflate(&next(text), 1000).unwrap(), &text[..]);
        // The tail left on.
        let mut with_tail = next(text);
        with_tail.extend_from_slice(&TAIL);
        assert_eq!(inflater.inflate(&with_tail, 1000), Err(InflateError::Invalid));
        // Cut short, by a few bytes or many, with or without context.
        let mut rand = crate::frame::tests::Noise(0x5eed);
        let data: Vec<u8> = (0..3001).map(|_| b"abcdefgh"[(rand.next() % 8) as usize]).collect();
        let mut refused = 0;
        for cut in [1, 2, 3, 5, 20, 204] {
            let mut c = Compress::new(Compression::default(), false);
            let mut z = Vec::with_capacity(4000);
            c.compress_vec(&data, &mut z, FlushCompress::Sync).unwrap();
            z.truncate(z.len() - 4 - cut);
            for takeover in [true, false] {
                let agreed = Agreed { compress: true, client_takeover: takeover };
                // Refused; or, when the bits cut were zeros that the bytes put back supply
                // again, the message whole: never other data.
                match Inflater::new(agreed).inflate(&z, 1 << 20) {
                    Err(InflateError::Invalid) => refused += 1,
                    Ok(whole) => assert!(whole == data, "cut by {cut}: {} bytes", whole.len()),
                    Err(e) => panic!("cut by {cut}: {e:?}"),
                }
            }
        }
        eprintln!("refused {refused} of 12");
        assert_eq!(refused, 12, "cut messages accepted");
    }

    #[test]
    fn limits_and_damaged_data() {
        let data = vec![0u8; 1 << 20];
        let z = compress(&data).unwrap();
        assert!(z.len() < 12_000, "{}", z.len());
        let mut inflater = Inflater::new(FULL);
        assert_eq!(inflater.inflate(&z, (1 << 20) - 1), Err(InflateError::TooLarge));
        let mut inflater = Inflater::new(FULL);
        assert_eq!(inflater.inflate(&z, 1 << 20).unwrap().len(), 1 << 20);
        // A reserved block type (BTYPE 11).
        assert_eq!(
            Inflater::new(FULL).inflate(&[0xff, 0xff, 0xff], 100),
            Err(InflateError::Invalid)
        );
        // An empty message: the client sent `00` (RFC 7692 §7.2.3.6) or nothing.
        assert_eq!(Inflater::new(FULL).inflate(&[0x00], 100).unwrap(), Bytes::new());
        assert_eq!(Inflater::new(FULL).inflate(&[], 100).unwrap(), Bytes::new());
        // No limit at all (`max_message_size(usize::MAX)`): the room asked for does not
        // overflow (it did in debug builds, before stop 32's review).
        let z = compress(&[b'x'; 5000]).unwrap();
        assert_eq!(Inflater::new(FULL).inflate(&z, usize::MAX).unwrap().len(), 5000);
        // A final block: the message ends there, and the next starts a stream of its own.
        let mut last = Compress::new(Compression::default(), false);
        let mut out = Vec::with_capacity(100);
        last.compress_vec(b"final", &mut out, FlushCompress::Finish).unwrap();
        let mut inflater = Inflater::new(FULL);
        assert_eq!(inflater.inflate(&out, 100).unwrap(), &b"final"[..]);
        assert_eq!(inflater.inflate(&out, 100).unwrap(), &b"final"[..]);
        // RFC 7692 §7.2.3.4's example: "Hello" in a final block, then the first byte of an
        // empty stored block (the rest stripped). Anything else after a final block is not.
        let hello = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        assert_eq!(inflater.inflate(&hello, 100).unwrap(), &b"Hello"[..]);
        assert_eq!(inflater.inflate(&hello[..7], 100).unwrap(), &b"Hello"[..]);
        for rest in [&[0x01][..], &[0x00, 0x00], &TAIL] {
            let bad = [&hello[..7], rest].concat();
            assert_eq!(inflater.inflate(&bad, 100), Err(InflateError::Invalid), "{rest:?}");
        }
        assert_eq!(inflater.inflate(&hello, 100).unwrap(), &b"Hello"[..]);
    }
}
