//! Review of stop 33 (permessage-deflate on zlib-rs, `Config::deflate_client_context`), over
//! real sockets on 127.0.0.1 with a raw client.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use inflate_big as inflate;
use support::deflate::{extensions_of, inflate_up_to, read_message, Deflater, AGREED, OFFER, TAIL};
use support::{echo_or_ok, serve, RawWs, Rng};
use webchan::Config;

const RESET_OFFER: &str =
    "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n";

async fn server(config: Config) -> SocketAddr {
    serve(config.permessage_deflate(true), echo_or_ok).await
}

/// What the server sent back: a message (inflated if RSV1), or the close code.
async fn recv<S: tokio::io::AsyncRead + Unpin>(ws: &mut RawWs<S>) -> Result<Vec<u8>, u16> {
    let (compressed, payload) = read_message(ws).await?;
    Ok(if compressed { inflate_big(&payload) } else { payload })
}

/// What a fresh inflater makes of a server message (up to 64 MiB).
fn inflate_big(payload: &[u8]) -> Vec<u8> {
    inflate_up_to(payload, 64 << 20)
}

/// What a fresh inflater makes of `z` + the tail, valid or not (`None`: an error).
fn loose(z: &[u8]) -> Option<Vec<u8>> {
    let mut d = Decompress::new(false);
    let mut out = Vec::with_capacity(64 << 20);
    d.decompress_vec(&[z, &TAIL[..]].concat(), &mut out, FlushDecompress::Sync).ok()?;
    Some(out)
}

/// `Some(n)`: a fresh inflater fed `z` then the tail reaches the end of a final block only in
/// the tail, with `n` bytes coming out of the tail.
fn ends_in_tail(z: &[u8]) -> Option<usize> {
    let mut d = Decompress::new(false);
    let mut out = Vec::with_capacity(64 << 20);
    let st = d.decompress_vec(z, &mut out, FlushDecompress::Sync).ok()?;
    if st == Status::StreamEnd {
        return None;
    }
    let n = out.len();
    let st = d.decompress_vec(&TAIL, &mut out, FlushDecompress::Sync).ok()?;
    (st == Status::StreamEnd).then(|| out.len() - n)
}

/// Compresses `data` with `c` and `flush`, all of it; the output whole (tail not stripped).
fn deflate_raw(c: &mut Compress, data: &[u8], flush: FlushCompress) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * 2 + 1024);
    let before = c.total_in();
    loop {
        let done = (c.total_in() - before) as usize;
        let st = c.compress_vec(&data[done..], &mut out, flush).unwrap();
        if (c.total_in() - before) as usize == data.len()
            && out.len() < out.capacity()
            && (st == Status::StreamEnd || !matches!(flush, FlushCompress::Finish))
        {
            return out;
        }
        out.reserve(out.capacity());
    }
}

/// RFC 7692 §7.2.1 for a sender: append an empty stored block if the data does not end with
/// one (as `00 00 ff ff`), then strip the last four bytes.
fn strip(mut z: Vec<u8>) -> Vec<u8> {
    if z.ends_with(&TAIL) {
        z.truncate(z.len() - 4);
    } else {
        z.push(0); // BFINAL 0, BTYPE 00 then padding (after a final block, byte-aligned)
    }
    z
}

fn text_of(len: usize, seed: u64) -> Vec<u8> {
    let words = ["channel ", "stream ", "sink ", "événement ", "message ", "✓ ", "日本 ", "😀 "];
    let mut r = Rng(seed | 1);
    let mut s = String::new();
    while s.len() < len {
        s.push_str(words[r.below(words.len())]);
    }
    s.into_bytes()
}

/// The reference: what a message's compressed payload inflates to with a fresh inflater when
/// it is valid RFC 7692 data (the four bytes put back yield nothing and the data ends between
/// blocks, or in a final block); `None` otherwise.
fn reference(z: &[u8]) -> Option<Vec<u8>> {
    reference_with(&mut Decompress::new(false), z)
}

/// [`reference`] with an inflater that has seen earlier messages (a kept context).
fn reference_with(d: &mut Decompress, z: &[u8]) -> Option<Vec<u8>> {
    if z.is_empty() {
        return Some(Vec::new());
    }
    let base = d.total_in() as usize;
    let mut out = Vec::with_capacity(64 << 20);
    let st = d.decompress_vec(z, &mut out, FlushDecompress::Sync).ok()?;
    assert!(out.len() < out.capacity());
    let used = d.total_in() as usize - base;
    if st == Status::StreamEnd {
        let rest = &z[used..];
        return (rest.is_empty() || rest == [0]).then_some(out);
    }
    if used != z.len() {
        return None;
    }
    let n = out.len();
    let st = d.decompress_vec(&TAIL, &mut out, FlushDecompress::Sync).ok()?;
    if out.len() != n {
        return None;
    }
    if st == Status::StreamEnd {
        // A final block whose end-of-block code the tail's zero bits supply: nothing out.
        return Some(out);
    }
    if d.total_in() as usize - base != z.len() + 4 {
        return None;
    }
    let probe = [0u8, 0, 0, 0xff, 0xff];
    let st = d.decompress_vec(&probe, &mut out, FlushDecompress::Sync).ok()?;
    (st != Status::StreamEnd && out.len() == n && d.total_in() as usize - base == z.len() + 9)
        .then_some(out)
}

/// Sends `z` as one compressed message (`first`: its first byte, e.g. 0xC2) in frames of
/// `piece` bytes (0: one frame).
async fn send(ws: &mut RawWs, opcode: u8, z: &[u8], piece: usize) {
    if piece == 0 || z.len() <= piece {
        ws.frame(0xC0 | opcode, z).await;
        return;
    }
    let chunks: Vec<&[u8]> = z.chunks(piece).collect();
    for (i, c) in chunks.iter().enumerate() {
        let mut b = if i == 0 { 0x40 | opcode } else { 0 };
        if i + 1 == chunks.len() {
            b |= 0x80;
        }
        ws.frame(b, c).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Valid streams from zlib at every level and flush.

#[tokio::test]
async fn zlib_streams_at_every_level_and_flush_with_a_kept_context_are_taken() {
    zlib_streams(OFFER).await;
}

#[tokio::test]
async fn zlib_streams_at_every_level_and_flush_without_context_are_taken() {
    zlib_streams(RESET_OFFER).await;
}

async fn zlib_streams(offer: &str) {
    let addr = server(Config::default()).await;
    let texts = [text_of(5000, 1), text_of(200, 2), text_of(130, 3), text_of(34_000, 4)];
    {
        let keep = offer == OFFER;
        for level in 0..=9u32 {
            for flush in ["sync", "full", "multi", "finish", "finish-bare"] {
                let (mut ws, head) = RawWs::connect_with(addr, offer).await;
                assert!(extensions_of(&head)[0].starts_with(AGREED), "{head}");
                let mut c = Compress::new(Compression::new(level), false);
                for (i, t) in texts.iter().enumerate() {
                    if !keep || flush.starts_with("finish") {
                        c.reset();
                    }
                    let z = match flush {
                        "sync" => strip(deflate_raw(&mut c, t, FlushCompress::Sync)),
                        "full" => strip(deflate_raw(&mut c, t, FlushCompress::Full)),
                        "multi" => {
                            let mut z = Vec::new();
                            for part in t.chunks(t.len() / 3 + 1) {
                                z.extend(deflate_raw(&mut c, part, FlushCompress::Sync));
                            }
                            z.extend(deflate_raw(&mut c, b"", FlushCompress::Sync));
                            strip(z)
                        }
                        "finish" => strip(deflate_raw(&mut c, t, FlushCompress::Finish)),
                        _ => deflate_raw(&mut c, t, FlushCompress::Finish),
                    };
                    let piece = [0, 1, 7, 0][i % 4];
                    send(&mut ws, 0x1, &z, if t.len() > 10_000 { 0 } else { piece }).await;
                    let got = recv(&mut ws).await;
                    assert!(
                        got.as_deref() == Ok(&t[..]),
                        "level {level} {flush} keep {keep} msg {i} ({} B, {} compressed): {:?}",
                        t.len(),
                        z.len(),
                        got.map(|g| g.len())
                    );
                }
                // Empty messages: `00` and nothing, then the context goes on.
                for empty in [&[0u8][..], &[]] {
                    ws.frame(0xC1, empty).await;
                    assert_eq!(recv(&mut ws).await, Ok(Vec::new()), "level {level} {flush}");
                }
                if !flush.starts_with("finish") {
                    if !keep {
                        c.reset();
                    }
                    let z = strip(deflate_raw(&mut c, &texts[0], FlushCompress::Sync));
                    ws.frame(0xC1, &z).await;
                    assert_eq!(recv(&mut ws).await.as_deref(), Ok(&texts[0][..]));
                }
            }
        }
    }
}

#[tokio::test]
async fn a_message_fragmented_at_every_byte_and_text_split_across_output_chunks() {
    let addr = server(Config::default()).await;
    let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
    let mut client = Deflater::new();
    // 4-byte characters at every offset against the inflater's 1 KiB growth steps.
    for shift in 0..4 {
        let mut t = "a".repeat(shift).into_bytes();
        while t.len() < 70_000 {
            t.extend_from_slice("😀日é".as_bytes());
        }
        let z = client.compress(&t);
        send(&mut ws, 0x1, &z, 1).await;
        assert_eq!(recv(&mut ws).await.as_deref(), Ok(&t[..]), "shift {shift}");
    }
}

#[tokio::test]
async fn large_messages_and_the_limit_exactly() {
    let limit = 4 << 20;
    let addr = server(Config::default().max_message_size(limit)).await;
    let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
    let mut client = Deflater::new();
    for len in [1 << 20, 3 << 20, limit] {
        let mut t = text_of(len, len as u64);
        t.truncate(len);
        while std::str::from_utf8(&t).is_err() {
            t.pop();
        }
        t.resize(len, b'x');
        assert_eq!(t.len(), len);
        let z = client.compress(&t);
        send(&mut ws, 0x1, &z, 0).await;
        assert!(recv(&mut ws).await.as_deref() == Ok(&t[..]), "{len}");
    }
    // Stored blocks (level 0) and full flushes, 3 MiB, in 64 KiB fragments.
    for (level, flush) in
        [(0u32, FlushCompress::Sync), (1, FlushCompress::Full), (9, FlushCompress::Full)]
    {
        let t = text_of(3 << 20, 5);
        let mut c = Compress::new(Compression::new(level), false);
        let z = strip(deflate_raw(&mut c, &t, flush));
        send(&mut ws, 0x1, &z, 64 << 10).await;
        assert!(recv(&mut ws).await.as_deref() == Ok(&t[..]), "level {level}");
    }
    let over = vec![b'y'; limit + 1];
    let z = client.compress(&over);
    ws.frame(0xC2, &z).await;
    assert_eq!(recv(&mut ws).await, Err(1009));
    // A fresh one, without context, one byte over: 1009 too.
    let (mut ws, _) = RawWs::connect_with(addr, RESET_OFFER).await;
    let z = Deflater::new().compress(&over);
    ws.frame(0xC2, &z).await;
    assert_eq!(recv(&mut ws).await, Err(1009));
}

/// What the server compresses (its own encoder under 1 KiB, zlib-rs level 1 above) inflates
/// with a fresh inflater to the message, for many sizes and kinds of content.
#[tokio::test]
async fn what_the_server_compresses_inflates_on_its_own() {
    let addr = server(Config::default()).await;
    let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
    let mut r = Rng(0xfeed_beef_1234_5679);
    for i in 0..300 {
        let len = match i % 5 {
            0 => r.between(128, 1023),
            1 => r.between(1024, 4096),
            2 => r.between(4096, 70_000),
            3 => r.between(1000, 1100),
            _ => r.between(70_000, 300_000),
        };
        let data: Vec<u8> = match i % 3 {
            0 => text_of(len, r.next()),
            1 => (0..len).map(|_| b"ab\x00\xff"[r.below(4)]).collect(),
            _ => {
                let mut v = r.bytes(len.min(500));
                while v.len() < len {
                    let from = r.below(v.len());
                    let n = r.between(3, 400).min(v.len() - from);
                    let piece = v[from..from + n].to_vec();
                    v.extend(piece);
                    if r.chance(30) {
                        let n = r.between(1, 20);
                        v.extend(r.bytes(n));
                    }
                }
                v.truncate(len);
                v
            }
        };
        ws.frame(0x82, &data).await;
        assert!(recv(&mut ws).await.as_deref() == Ok(&data[..]), "case {i}: {len} bytes");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Damaged data: exactly the reference's answer.

#[tokio::test]
async fn corrupted_messages_get_the_references_answer() {
    let addr = server(Config::default().max_message_size(1 << 20)).await;
    let mut r = Rng(0x0dd_ba11_5eed_0001);
    let mut wrong = Vec::new();
    let mut counts = [0usize; 3];
    // A bystander on the same thread, without context (the thread's inflater) and with.
    let (mut bystander, _) = RawWs::connect_with(addr, RESET_OFFER).await;
    let (mut keeper, _) = RawWs::connect_with(addr, OFFER).await;
    let mut keeper_c = Deflater::new();
    let calm = text_of(2500, 1234);
    for case in 0..600 {
        if case % 10 == 0 {
            ws_roundtrip(&mut bystander, &calm).await;
            ws_roundtrip_z(&mut keeper, &keeper_c.compress(&calm), &calm).await;
        }
        let len = r.between(1, 6000);
        let data = match case % 3 {
            0 => text_of(len, r.next()),
            1 => (0..len).map(|_| b"abcdefgh"[r.below(8)]).collect(),
            _ => r.bytes(len),
        };
        let level = r.below(10) as u32;
        let mut c = Compress::new(Compression::new(level), false);
        let mut z = if r.chance(15) {
            strip(deflate_raw(&mut c, &data, FlushCompress::Finish))
        } else {
            strip(deflate_raw(&mut c, &data, FlushCompress::Sync))
        };
        let kind = r.below(6);
        match kind {
            0 => {
                for _ in 0..r.between(1, 3) {
                    let at = r.below(z.len());
                    z[at] ^= 1 << r.below(8);
                }
            }
            1 => {
                let cut = r.between(1, z.len().min(8));
                z.truncate(z.len() - cut);
            }
            2 => {
                let n = r.between(1, 4);
                z.extend(r.bytes(n));
            }
            3 => {
                let at = r.below(z.len() + 1);
                z.insert(at, r.next() as u8);
            }
            4 => {
                let n = [1, 2, 4][r.below(3)];
                z.extend(&[0u8, 0, 0xff, 0xff][..n]);
            }
            _ => {
                let at = r.below(z.len());
                z.remove(at);
            }
        }
        let expected = reference(&z);
        let offer = if case % 2 == 0 { OFFER } else { RESET_OFFER };
        let (mut ws, _) = RawWs::connect_with(addr, offer).await;
        ws.frame(0xC2, &z).await;
        let got = recv(&mut ws).await;
        match (&expected, &got) {
            (Some(e), Ok(g)) if e == g => counts[0] += 1,
            (Some(e), Err(1009)) if e.len() > 1 << 20 => counts[1] += 1,
            (None, Err(1002)) => counts[2] += 1,
            _ => wrong.push(format!(
                "case {case} kind {kind} level {level} ({} B from {len}): reference {:?} (same as \
                 original: {}), server {:?} (same as original: {}, same as a fresh inflater's \
                 output for it + tail: {}), last bytes {:02x?}, a final block ends inside the tail \
                 with bytes out of the tail: {:?}",
                z.len(),
                expected.as_ref().map(Vec::len),
                expected.as_deref() == Some(&data[..]),
                got.as_ref().map(Vec::len),
                got.as_deref() == Ok(&data[..]),
                got.as_ref().ok() == loose(&z).as_ref(),
                &z[z.len().saturating_sub(8)..],
                ends_in_tail(&z),
            )),
        }
    }
    eprintln!("delivered {}, 1009 {}, 1002 {}", counts[0], counts[1], counts[2]);
    assert!(wrong.is_empty(), "{} of 600 differ:\n{}", wrong.len(), wrong.join("\n"));
}

/// A final fixed-Huffman block cut inside a literal's code such that the four bytes put back
/// complete a literal, then end the block: the `00 00 ff ff` yield a byte. RFC 7692 §7.2.2's
/// tail must yield nothing (as `ended_between_blocks`' docs say); the message is not what any
/// sender could have made.
#[tokio::test]
async fn the_bytes_put_back_after_a_cut_final_block_yield_nothing() {
    // Bits, least significant first.
    let mut bits: Vec<u8> = Vec::new();
    let code = |v: u32, n: u32, bits: &mut Vec<u8>| {
        for i in (0..n).rev() {
            bits.push(((v >> i) & 1) as u8);
        }
    };
    bits.extend([1, 1, 0]); // BFINAL 1, BTYPE 01 (fixed)
    for &b in b"hi" {
        code(0x30 + u32::from(b), 8, &mut bits);
    }
    // The first five bits of literal 0 (00110000); the rest (000) will come from the tail.
    bits.extend([0, 0, 1, 1, 0]);
    assert_eq!(bits.len() % 8, 0);
    let z: Vec<u8> = bits
        .chunks(8)
        .map(|c| c.iter().enumerate().fold(0u8, |acc, (i, b)| acc | (b << i)))
        .collect();
    assert_eq!(reference(&z), None, "the reference: the tail yields a byte");
    // A fresh inflater makes "hi\0" of it with the tail.
    let mut d = Decompress::new(false);
    let mut out = Vec::with_capacity(100);
    let input = [&z[..], &TAIL].concat();
    assert_eq!(
        d.decompress_vec(&input, &mut out, FlushDecompress::Sync).unwrap(),
        Status::StreamEnd
    );
    assert_eq!(out, b"hi\0");

    let addr = server(Config::default()).await;
    let mut results = Vec::new();
    for offer in [OFFER, RESET_OFFER] {
        let (mut ws, _) = RawWs::connect_with(addr, offer).await;
        ws.frame(0xC2, &z).await;
        results.push((offer.trim_end(), recv(&mut ws).await));
    }
    assert!(
        results.iter().all(|(_, got)| *got == Err(1002)),
        "compressed payload {z:02x?}: {results:?}"
    );
}

/// The same with a longer message: a text's last literal cut, the tail finishing it.
#[tokio::test]
async fn a_cut_final_block_is_not_taken_with_a_byte_from_the_tail() {
    let addr = server(Config::default()).await;
    let mut hits = 0;
    for n in 1..200usize {
        let t: Vec<u8> = (0..n).map(|i| b"0123456789"[i % 10]).collect();
        // Level 1 of zlib-rs: fixed codes.
        let mut c1 = Compress::new(Compression::new(1), false);
        let full = deflate_raw(&mut c1, &t, FlushCompress::Finish);
        for cut in 1..3 {
            if full.len() <= cut {
                continue;
            }
            let z = full[..full.len() - cut].to_vec();
            if reference(&z).is_some() {
                continue;
            }
            let mut d = Decompress::new(false);
            let mut out = Vec::with_capacity(1000);
            let input = [&z[..], &TAIL].concat();
            if !matches!(
                d.decompress_vec(&input, &mut out, FlushDecompress::Sync),
                Ok(Status::StreamEnd)
            ) {
                continue;
            }
            hits += 1;
            let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
            ws.frame(0xC2, &z).await;
            let got = recv(&mut ws).await;
            // The original whole (the bits cut were zeros the tail supplies) or 1002.
            assert!(
                got == Err(1002) || got.as_deref() == Ok(&t[..]),
                "{n} bytes cut by {cut}: taken as {:?} (original {:?})",
                got.as_ref().map(|g| String::from_utf8_lossy(g).into_owned()),
                String::from_utf8_lossy(&t)
            );
        }
    }
    eprintln!("{hits} cut final blocks that the tail completes");
}

// ---------------------------------------------------------------------------------------------
// 3. deflate_client_context(false).

#[tokio::test]
async fn without_client_context_the_agreement_for_every_kind_of_offer() {
    let addr = server(Config::default().deflate_client_context(false)).await;
    let reset = format!("{AGREED}; client_no_context_takeover");
    for (offer, expected) in [
        ("permessage-deflate", reset.clone()),
        ("permessage-deflate; client_max_window_bits", reset.clone()),
        ("permessage-deflate; client_max_window_bits=9", reset.clone()),
        ("permessage-deflate; client_no_context_takeover", reset.clone()),
        ("permessage-deflate; server_no_context_takeover", reset.clone()),
        ("permessage-deflate; server_max_window_bits=15", format!("{reset}; server_max_window_bits=15")),
        ("permessage-deflate; server_max_window_bits=10", format!("{reset}; server_max_window_bits=10")),
        (
            "permessage-deflate; server_max_window_bits=\"12\"; client_max_window_bits; client_no_context_takeover",
            format!("{reset}; server_max_window_bits=12"),
        ),
        ("permessage-deflate; foo, permessage-deflate; client_max_window_bits", reset.clone()),
        ("x-webkit-deflate-frame, permessage-deflate", reset.clone()),
        (
            "permessage-deflate; server_max_window_bits=9, permessage-deflate",
            format!("{reset}; server_max_window_bits=9"),
        ),
    ] {
        let (mut ws, head) =
            RawWs::connect_with(addr, &format!("Sec-WebSocket-Extensions: {offer}\r\n")).await;
        assert_eq!(extensions_of(&head), std::slice::from_ref(&expected), "{offer}");
        // Messages go both ways (uncompressed back when the window is limited).
        let t = text_of(3000, 9);
        for _ in 0..2 {
            ws.frame(0xC1, &Deflater::new().compress(&t)).await;
            let (first, payload) = ws.read_frame().await.unwrap();
            let limited = offer.contains("server_max_window_bits=") && !offer.contains("=15");
            if limited {
                assert_eq!((first, &payload), (0x81, &t), "{offer}");
            } else {
                assert_eq!(first, 0xC1, "{offer}");
                assert_eq!(inflate(&payload), t, "{offer}");
            }
        }
    }
    // A declined offer stays declined.
    let (_ws, head) =
        RawWs::connect_with(addr, "Sec-WebSocket-Extensions: permessage-deflate; x=1\r\n").await;
    assert!(extensions_of(&head).is_empty(), "{head}");
}

/// Clients that keep their context though told not to: each message referring back to an
/// earlier one (its own, or another client's on the same thread) closes with 1002, and never
/// delivers other data.
#[tokio::test]
async fn a_client_keeping_its_context_anyway_and_another_clients_data_never_mix() {
    for context in [false, true] {
        let addr = server(Config::default().deflate_client_context(context)).await;
        let secret = text_of(3000, 77);
        // A sends the secret (the thread's inflater saw it last).
        let (mut a, _) = RawWs::connect_with(addr, RESET_OFFER).await;
        ws_roundtrip(&mut a, &secret).await;
        // B's compressor saw the secret, then compresses it again: all references back.
        let mut bc = Deflater::new();
        let _ = bc.compress(&secret);
        let z = bc.compress(&secret);
        assert!(z.len() < 100, "{}", z.len());
        let (mut b, _) = RawWs::connect_with(addr, RESET_OFFER).await;
        b.frame(0xC1, &z).await;
        assert_eq!(recv(&mut b).await.map(|v| v.len()), Err(1002), "context {context}");
        // A itself keeping its context.
        let mut ac = Deflater::new();
        let z = ac.compress(&secret);
        a.frame(0xC1, &z).await;
        assert_eq!(recv(&mut a).await.as_deref(), Ok(&secret[..]));
        let z = ac.compress(&secret);
        a.frame(0xC1, &z).await;
        assert_eq!(recv(&mut a).await.map(|v| v.len()), Err(1002), "context {context}");
    }
    // With deflate_client_context(false), even a client offering plain permessage-deflate.
    let addr = server(Config::default().deflate_client_context(false)).await;
    let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
    let mut c = Deflater::new();
    let t = text_of(2000, 5);
    ws_roundtrip_z(&mut ws, &c.compress(&t), &t).await;
    ws.frame(0xC1, &c.compress(&t)).await;
    assert_eq!(recv(&mut ws).await.map(|v| v.len()), Err(1002));
}

async fn ws_roundtrip(ws: &mut RawWs, t: &[u8]) {
    let z = Deflater::new().compress(t);
    ws_roundtrip_z(ws, &z, t).await;
}

async fn ws_roundtrip_z(ws: &mut RawWs, z: &[u8], t: &[u8]) {
    ws.frame(0xC1, z).await;
    assert!(recv(ws).await.as_deref() == Ok(t));
}

/// Many clients on a two-thread server, interleaving fragmented compressed messages: the
/// threads' shared inflaters never mix them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_share_the_threads_inflater_without_mixing() {
    let addr = server(Config::default().deflate_client_context(false)).await;
    let mut tasks = Vec::new();
    for k in 0..12u64 {
        tasks.push(tokio::spawn(async move {
            let (mut ws, head) = RawWs::connect_with(addr, OFFER).await;
            assert!(extensions_of(&head)[0].ends_with("client_no_context_takeover"));
            let mut r = Rng(0x1234 + k * 7919);
            for i in 0..40 {
                let t = text_of(r.between(100, 20_000), r.next());
                let z = Deflater::new().compress(&t);
                // Fragments with pauses, so that other clients' messages complete meanwhile.
                let piece = z.len() / 3 + 1;
                let chunks: Vec<&[u8]> = z.chunks(piece).collect();
                for (j, c) in chunks.iter().enumerate() {
                    let mut b = if j == 0 { 0x41 } else { 0 };
                    if j + 1 == chunks.len() {
                        b |= 0x80;
                    }
                    ws.frame(b, c).await;
                    tokio::time::sleep(Duration::from_millis(r.below(3) as u64)).await;
                }
                assert!(recv(&mut ws).await.as_deref() == Ok(&t[..]), "client {k} msg {i}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// The thread's shared inflater after a message that failed in it (invalid data, or over the
/// limit) on one connection: the next connection's message on that thread is whole.
#[tokio::test]
async fn the_shared_inflater_after_a_failed_message_serves_the_next_connection() {
    let addr =
        server(Config::default().deflate_client_context(false).max_message_size(100_000)).await;
    let t = text_of(5000, 31);
    for bad in 0..3 {
        let (mut a, _) = RawWs::connect_with(addr, OFFER).await;
        let (mut b, _) = RawWs::connect_with(addr, OFFER).await;
        let mut z = Deflater::new().compress(&t);
        match bad {
            0 => {
                let at = z.len() / 2;
                z[at] ^= 0x55;
                z.truncate(z.len() - 3);
            }
            1 => z = Deflater::new().compress(&vec![b'q'; 100_001]),
            _ => z.extend_from_slice(&TAIL),
        }
        a.frame(0xC1, &z[..z.len() / 2]).await;
        ws_roundtrip(&mut b, &t).await;
        a.frame(0x80, &z[z.len() / 2..]).await;
        // a's message is refused (1002, or 1009 over the limit).
        let code = recv(&mut a).await.map(|v| v.len());
        assert!(matches!(code, Err(1002 | 1009 | 1007)), "bad {bad}: {code:?}");
        ws_roundtrip(&mut b, &t).await;
        let (mut c, _) = RawWs::connect_with(addr, RESET_OFFER).await;
        ws_roundtrip(&mut c, &t).await;
    }
}

/// Text: bad UTF-8 once inflated closes with 1007, whatever the context setting; over the
/// limit with 1009.
#[tokio::test]
async fn compressed_text_with_bad_utf8_and_at_the_limit() {
    for context in [true, false] {
        let addr =
            server(Config::default().deflate_client_context(context).max_message_size(10_000))
                .await;
        let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
        let mut c = Deflater::new();
        let mut t = text_of(10_000, 3);
        t.truncate(10_000);
        while std::str::from_utf8(&t).is_err() {
            t.pop();
        }
        t.resize(10_000, b'z');
        let mut fresh = if context { None } else { Some(()) };
        let mut next = |d: &[u8]| {
            if fresh.take().is_some() || !context {
                c = Deflater::new();
            }
            c.compress(d)
        };
        let z = next(&t);
        send(&mut ws, 0x1, &z, 100).await;
        assert!(recv(&mut ws).await.as_deref() == Ok(&t[..]), "context {context}");
        let mut bad = t.clone();
        bad[9_999] = 0xe6; // a 3-byte character cut at the end
        let z = next(&bad);
        ws.frame(0xC1, &z).await;
        assert_eq!(recv(&mut ws).await.map(|v| v.len()), Err(1007), "context {context}");

        let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
        let mut over = t.clone();
        over.push(b'!');
        ws.frame(0xC1, &Deflater::new().compress(&over)).await;
        assert_eq!(recv(&mut ws).await.map(|v| v.len()), Err(1009), "context {context}");
    }
}

/// Clients with smaller windows (zlib's windowBits 9 to 15), keeping their context across many
/// messages whose references reach back across message boundaries.
#[tokio::test]
async fn clients_with_every_window_size_keeping_their_context() {
    let addr = server(Config::default()).await;
    let mut r = Rng(0xabcdef);
    for bits in 9..=15u8 {
        for level in [1u32, 9] {
            let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
            let mut c = Compress::new_with_window_bits(Compression::new(level), false, bits);
            for i in 0..12 {
                let t = text_of(r.between(128, 3000), r.next() % 4);
                let z = strip(deflate_raw(&mut c, &t, FlushCompress::Sync));
                send(&mut ws, 0x1, &z, [0, 1, 5][i % 3]).await;
                assert!(
                    recv(&mut ws).await.as_deref() == Ok(&t[..]),
                    "bits {bits} level {level} msg {i}"
                );
            }
        }
    }
}

/// The thread compressor (zlib-rs level 1) on large and mixed messages.
#[tokio::test]
async fn the_server_compresses_large_mixed_messages_that_inflate_on_their_own() {
    let addr = server(Config::default()).await;
    let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
    let mut r = Rng(0x5151_7777);
    for i in 0..16 {
        let len = r.between(200_000, 2_500_000);
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            match r.below(4) {
                0 => {
                    let n = r.between(1, 5000);
                    v.extend(r.bytes(n));
                }
                1 => {
                    let n = r.between(1, 9000);
                    v.extend(text_of(n, r.next()));
                }
                2 => {
                    let b = r.next() as u8;
                    let n = r.between(1, 70_000);
                    v.extend(std::iter::repeat(b).take(n));
                }
                _ => {
                    if v.len() > 40_000 {
                        let from = v.len() - r.between(1, 40_000);
                        let n = r.between(3, 40_000).min(v.len() - from);
                        let piece = v[from..from + n].to_vec();
                        v.extend(piece);
                    }
                }
            }
        }
        v.truncate(len);
        ws.frame(0x82, &v).await;
        assert!(recv(&mut ws).await.as_deref() == Ok(&v[..]), "case {i}: {len} bytes");
    }
}

/// A kept context: valid messages, then a damaged one. The server's answer to it is the
/// reference's (an inflater that saw the same valid messages).
#[tokio::test]
async fn a_damaged_message_after_valid_ones_in_a_kept_context() {
    let addr = server(Config::default().max_message_size(1 << 20)).await;
    let mut r = Rng(0x7777_1234_0000_0003);
    let mut wrong = Vec::new();
    let mut counts = [0usize; 2];
    for case in 0..300 {
        let level = r.between(1, 9) as u32;
        let mut c = Compress::new(Compression::new(level), false);
        let mut d = Decompress::new(false);
        let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
        let seed = r.next();
        for _ in 0..r.between(1, 3) {
            let t = text_of(r.between(100, 3000), seed);
            let z = strip(deflate_raw(&mut c, &t, FlushCompress::Sync));
            assert_eq!(reference_with(&mut d, &z).as_deref(), Some(&t[..]));
            send(&mut ws, 0x2, &z, 0).await;
            assert!(recv(&mut ws).await.as_deref() == Ok(&t[..]));
        }
        let t = text_of(r.between(100, 3000), seed);
        let mut z = strip(deflate_raw(&mut c, &t, FlushCompress::Sync));
        let kind = r.below(4);
        match kind {
            0 => {
                let at = r.below(z.len());
                z[at] ^= 1 << r.below(8);
            }
            1 => {
                let cut = r.between(1, z.len().min(6));
                z.truncate(z.len() - cut);
            }
            2 => {
                let n = r.between(1, 3);
                z.extend(r.bytes(n));
            }
            _ => {
                let at = r.below(z.len() + 1);
                z.insert(at, r.next() as u8);
            }
        }
        let expected = reference_with(&mut d, &z);
        send(&mut ws, 0x2, &z, 0).await;
        let got = recv(&mut ws).await;
        match (&expected, &got) {
            (Some(e), Ok(g)) if e == g => counts[0] += 1,
            (None, Err(1002)) => counts[1] += 1,
            _ => wrong.push(format!(
                "case {case} kind {kind} level {level}: reference {:?} (original: {}), server {:?} \
                 (original: {})",
                expected.as_ref().map(Vec::len),
                expected.as_deref() == Some(&t[..]),
                got.as_ref().map(Vec::len),
                got.as_deref() == Ok(&t[..]),
            )),
        }
    }
    eprintln!("delivered {}, 1002 {}", counts[0], counts[1]);
    assert!(wrong.is_empty(), "{} of 300 differ:\n{}", wrong.len(), wrong.join("\n"));
}

/// Over HTTP/2 (RFC 8441), `deflate_client_context(false)`: the agreement says
/// `client_no_context_takeover`, streams of one connection interleave compressed fragments
/// without mixing, and a stream whose client keeps its context is closed with 1002.
#[tokio::test]
async fn over_http2_without_client_context() {
    let addr = server(Config::default().deflate_client_context(false)).await;
    let mut sender = support::h2_client(addr).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let response =
            sender.send_request(support::deflate::h2_request_with_offer(addr)).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["sec-websocket-extensions"],
            format!("{AGREED}; client_no_context_takeover").as_str()
        );
        let io = hyper_util::rt::TokioIo::new(hyper::upgrade::on(response).await.unwrap());
        streams.push(RawWs { tcp: io, buf: Vec::new() });
    }
    let texts: Vec<Vec<u8>> = (0..3).map(|k| text_of(5000 + k * 999, k as u64 + 40)).collect();
    for round in 0..3 {
        let zs: Vec<Vec<u8>> = texts.iter().map(|t| Deflater::new().compress(t)).collect();
        // First halves of all, then second halves.
        for (ws, z) in streams.iter_mut().zip(&zs) {
            ws.frame(0x41, &z[..z.len() / 2]).await;
        }
        for (ws, z) in streams.iter_mut().zip(&zs) {
            ws.frame(0x80, &z[z.len() / 2..]).await;
        }
        for (k, ws) in streams.iter_mut().enumerate() {
            assert!(recv(ws).await.as_deref() == Ok(&texts[k][..]), "round {round} stream {k}");
        }
    }
    // Stream 0 keeps its context: refused, the others unaffected.
    let mut c = Deflater::new();
    let _ = c.compress(&texts[1]);
    streams[0].frame(0xC1, &c.compress(&texts[1])).await;
    assert_eq!(recv(&mut streams[0]).await.map(|v| v.len()), Err(1002));
    for k in 1..3 {
        streams[k].frame(0xC1, &Deflater::new().compress(&texts[k])).await;
        assert!(recv(&mut streams[k]).await.as_deref() == Ok(&texts[k][..]), "stream {k}");
    }
}

/// RFC 7692 §7.2.3's examples, byte for byte, with and without the client's context.
#[tokio::test]
async fn the_rfcs_examples() {
    for context in [true, false] {
        let addr = server(Config::default().deflate_client_context(context)).await;
        let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
        for z in [
            &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00][..], // §7.2.3.1
            &[0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00], // §7.2.3.3
            &[0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00], // §7.2.3.4
            &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00],                   // §7.2.3.5
            &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
        ] {
            ws.frame(0xC1, z).await;
            assert_eq!(recv(&mut ws).await.as_deref(), Ok(&b"Hello"[..]), "{z:02x?} {context}");
        }
        // §7.2.3.2: the second "Hello" refers back into the first (after the last message,
        // a plain "Hello" in its own block).
        ws.frame(0xC1, &[0xf2, 0x00, 0x11, 0x00, 0x00]).await;
        let got = recv(&mut ws).await;
        if context {
            assert_eq!(got.as_deref(), Ok(&b"Hello"[..]));
        } else {
            assert_eq!(got.map(|v| v.len()), Err(1002));
        }
    }
}
/// A message of exactly `max_message_size` bytes that does not compress (random bytes): a
/// client that compresses every message (as browsers do) sends more than the limit on the wire.
#[tokio::test]
async fn an_incompressible_message_at_the_limit_sent_compressed() {
    let limit = 64 << 10;
    let addr = server(Config::default().max_message_size(limit)).await;
    let data = Rng(99).bytes(limit);
    let mut results = Vec::new();
    for level in [0u32, 1, 6] {
        let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
        let mut c = Compress::new(Compression::new(level), false);
        let z = strip(deflate_raw(&mut c, &data, FlushCompress::Sync));
        ws.frame(0xC2, &z).await;
        let got = recv(&mut ws).await;
        results.push((level, z.len(), got.as_ref().map(|g| g == &data).map_err(|e| *e)));
    }
    assert!(results.iter().all(|r| r.2 == Ok(true)), "(level, wire bytes, result): {results:?}");
}

/// The wire's allowance for compressed messages ends: a compressed frame whose header
/// announces more than the limit, an eighth of it and 64 bytes is refused at its header with
/// 1009, as an uncompressed one a byte over the limit is; at the allowance, its fragments go
/// on being read (a compressed first frame at the allowance, then more: refused at the
/// continuation's header).
#[tokio::test]
async fn past_the_allowance_a_compressed_message_is_refused_at_its_header() {
    let limit = 64 << 10;
    let allowance = limit + limit / 8 + 64;
    let addr = server(Config::default().max_message_size(limit)).await;
    for (first, len) in [(0xC2u8, allowance + 1), (0x82, limit + 1)] {
        let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
        // The header alone: the verdict cannot wait for the payload.
        ws.raw(&support::encode_frame(first, Some([1, 2, 3, 4]), &[], Some(len as u64))).await;
        assert_eq!(recv(&mut ws).await, Err(1009), "first byte {first:#x}, {len} bytes");
    }
    let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
    ws.frame(0x42, &vec![0u8; allowance]).await;
    ws.raw(&support::encode_frame(0x80, Some([1, 2, 3, 4]), &[], Some(1))).await;
    assert_eq!(recv(&mut ws).await, Err(1009), "one byte past the allowance in a continuation");
}

/// The same allowance for `max_frame_size`: an incompressible message of exactly the frame
/// limit, compressed in one frame, is taken; a compressed frame past the allowance is not.
#[tokio::test]
async fn an_incompressible_frame_at_the_frame_limit_sent_compressed() {
    let limit = 32 << 10;
    let addr = server(Config::default().max_frame_size(limit)).await;
    let data = Rng(7).bytes(limit);
    let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
    let z = strip(deflate_raw(
        &mut Compress::new(Compression::new(6), false),
        &data,
        FlushCompress::Sync,
    ));
    assert!(z.len() > limit, "{} bytes compressed to {}", limit, z.len());
    ws.frame(0xC2, &z).await;
    assert_eq!(recv(&mut ws).await.map(|got| got == data), Ok(true));
    let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
    let past = limit + limit / 8 + 65;
    ws.raw(&support::encode_frame(0xC2, Some([1, 2, 3, 4]), &[], Some(past as u64))).await;
    assert_eq!(recv(&mut ws).await, Err(1009));
}
