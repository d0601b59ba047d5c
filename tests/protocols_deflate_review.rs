//! A second review of stop 32's changes (2026-12-06): subprotocols (`Config::protocols`), the
//! small messages' DEFLATE encoder, and the inflater's check that a message ends between two
//! blocks, over real sockets on 127.0.0.1.

mod support;

use std::net::SocketAddr;

use flate2::{Compress, Compression, FlushCompress};
use support::{echo, next_channel, raw_http, serve, serve_channels, serve_with, RawWs};
use tokio::net::TcpStream;
use webchan::Config;

use support::deflate::{inflate, read_message as read_msg, TAIL};

fn chat() -> Config {
    Config::default().protocols(["v2.chat", "v1.chat"])
}

fn protocols_of(head: &str) -> Vec<String> {
    support::header_values(head, "sec-websocket-protocol")
}

fn upgrade_request(addr: SocketAddr, extra: &str) -> Vec<u8> {
    format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\
         Connection: close\r\n\r\n"
    )
    .into_bytes()
}

// ---------------------------------------------------------------- subprotocols

#[tokio::test]
async fn e_odd_offers_are_read() {
    let (addr, mut channels) = serve_channels(chat()).await;
    let cases: &[(&[u8], Option<&str>)] = &[
        (b"Sec-WebSocket-Protocol: ,, ,v1.chat,,\r\n", Some("v1.chat")),
        (b"Sec-WebSocket-Protocol: x\t,\tv1.chat\t, v1.chat\r\n", Some("v1.chat")),
        (
            b"Sec-WebSocket-Protocol: v1.chat\r\nSec-WebSocket-Protocol: v1.chat, v2.chat\r\n",
            Some("v2.chat"),
        ),
        (b"Sec-WebSocket-Protocol: \xff\xfe\x80, v1.chat\r\n", Some("v1.chat")),
        (b"Sec-WebSocket-Protocol: v2.chat\xff, v1.chat\r\n", Some("v1.chat")),
        (b"Sec-WebSocket-Protocol: V2.CHAT, v1.chat2, \"v1.chat\"\r\n", None),
        (b"Sec-WebSocket-Protocol: v2 .chat\r\n", None),
        (b"Sec-WebSocket-Protocol:\r\n", None),
    ];
    for (offer, want) in cases {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut req = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        )
        .into_bytes();
        req.extend_from_slice(offer);
        req.extend_from_slice(b"\r\n");
        tcp.write_all(&req).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{:?}: {head}", String::from_utf8_lossy(offer));
        let named = protocols_of(&head);
        let want_v: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(named, want_v, "{:?}", String::from_utf8_lossy(offer));
        let ch = next_channel(&mut channels).await;
        assert_eq!(ch.protocol(), *want, "{:?}", String::from_utf8_lossy(offer));
        let (s, r) = ch.split();
        assert_eq!((s.protocol(), r.protocol()), (*want, *want));
    }
    // A very long offer: many names, ours last.
    let mut long = String::from("Sec-WebSocket-Protocol: ");
    for i in 0..2000 {
        long.push_str(&format!("p{i}, "));
    }
    long.push_str("v1.chat\r\n");
    let (_raw, head) = RawWs::connect_with(addr, &long).await;
    assert_eq!(protocols_of(&head), ["v1.chat"]);
    assert_eq!(next_channel(&mut channels).await.protocol(), Some("v1.chat"));
}

/// The handler refuses the upgrade (another status on the `Reply`): the WebSocket handshake's
/// headers are removed (Upgrade, Connection, Accept, Extensions, as `Reply` does) — the
/// subprotocol's too, since there is no WebSocket (RFC 6455 §4.2.2: it belongs to the 101).
#[tokio::test]
async fn e_a_refused_reply_names_no_subprotocol() {
    let addr = support::serve_forbidding(chat().permessage_deflate(true)).await;
    let out = raw_http(
        addr,
        &upgrade_request(
            addr,
            "Sec-WebSocket-Protocol: v1.chat\r\nSec-WebSocket-Extensions: permessage-deflate\r\n",
        ),
    )
    .await;
    let text = String::from_utf8_lossy(&out).to_string();
    let head = text.split("\r\n\r\n").next().unwrap();
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(support::header_values(head, "sec-websocket-extensions").is_empty(), "{head}");
    assert!(support::header_values(head, "sec-websocket-accept").is_empty(), "{head}");
    assert_eq!(protocols_of(head), Vec::<String>::new(), "403 still names a subprotocol: {head}");
}

#[tokio::test]
async fn e_compat_options_config_chooses_the_protocol() {
    let options = webchan::compat::Options::new().config(chat());
    let addr = support::serve_compat(options).await;
    let (_raw, head) =
        RawWs::connect_with(addr, "Sec-WebSocket-Protocol: v1.chat, v2.chat\r\n").await;
    assert_eq!(protocols_of(&head), ["v2.chat"], "{head}");
}

// ---------------------------------------------------------------- deflate helpers

const NCT: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n";
const KEEP: &str = "Sec-WebSocket-Extensions: permessage-deflate\r\n";

async fn deflate_echo() -> SocketAddr {
    serve(Config::default().permessage_deflate(true).max_message_size(1 << 22), echo).await
}

/// Sends `data` plain (binary) and checks the echo inflates back exactly.
async fn round_trip(ws: &mut RawWs, data: &[u8], what: &str) -> bool {
    ws.frame(0x82, data).await;
    let (rsv1, payload) = read_msg(ws).await.unwrap_or_else(|c| panic!("{what}: closed {c}"));
    let back = if rsv1 { inflate(&payload) } else { payload };
    assert!(back == data, "{what}: {} bytes sent, {} back, differ", data.len(), back.len());
    rsv1
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

// ---------------------------------------------------------------- the small encoder

#[tokio::test]
async fn e_small_encoder_round_trips_many_inputs() {
    let addr = deflate_echo().await;
    let (mut ws, head) = RawWs::connect_with(addr, NCT).await;
    assert!(head.contains("server_no_context_takeover"), "{head}");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut compressed = 0;
    // Periodic data at every period, lengths cycling through the range.
    for period in 1..=1023usize {
        let unit: Vec<u8> = (0..period).map(|_| rng.next() as u8).collect();
        let len = 128 + (period * 7) % 896;
        let data: Vec<u8> =
            unit.iter().copied().cycle().take(len.max(period + 3).min(1023)).collect();
        compressed += usize::from(round_trip(&mut ws, &data, &format!("period {period}")).await);
    }
    // Every length 120..=1100 with several kinds of data.
    for len in 120..=1100usize {
        let kind = len % 6;
        let data: Vec<u8> = match kind {
            0 => vec![(len % 256) as u8; len],
            1 => (0..len).map(|i| (i % 256) as u8).collect(),
            2 => (0..len).map(|_| (rng.next() % 3) as u8 + 0xfd).collect(),
            3 => "héllo wörld — ünïcödé ✓ ".repeat(60).into_bytes()[..len].to_vec(),
            4 => {
                let mut v: Vec<u8> = (0..40).map(|_| rng.next() as u8).collect();
                while v.len() < len {
                    let from = (rng.next() % v.len() as u64) as usize;
                    let n = 3 + (rng.next() % 258) as usize;
                    for i in 0..n {
                        v.push(v[from + i]);
                    }
                }
                v.truncate(len);
                v
            }
            _ => {
                // A long run ending exactly at the end, after random bytes.
                let mut v: Vec<u8> = (0..len / 3).map(|_| rng.next() as u8).collect();
                v.resize(len, 0xff);
                v
            }
        };
        compressed +=
            usize::from(round_trip(&mut ws, &data, &format!("len {len} kind {kind}")).await);
    }
    // Every byte value, runs of each at the end, and matches of each length reaching the end.
    for b in 0..=255u8 {
        let mut data: Vec<u8> = (0..=255u8).collect();
        data.extend(std::iter::repeat(b).take(3 + b as usize));
        compressed += usize::from(round_trip(&mut ws, &data, &format!("byte {b}")).await);
    }
    for l in 3..=300usize {
        let mut data: Vec<u8> = (0..200).map(|_| rng.next() as u8).collect();
        let copy = data[10..10 + l.min(190)].to_vec();
        data.extend_from_slice(&copy);
        data.extend(std::iter::repeat(7u8).take(l.saturating_sub(190)));
        compressed += usize::from(round_trip(&mut ws, &data, &format!("match {l}")).await);
    }
    eprintln!("{compressed} compressed");
    assert!(compressed > 1000);
}

// ---------------------------------------------------------------- the inflater's end check

/// Sends one compressed message (RSV1, in `pieces` fragments) and reads the echo.
async fn send_compressed(ws: &mut RawWs, payload: &[u8], cuts: &[usize]) -> Result<Vec<u8>, u16> {
    let mut at = 0;
    let mut bounds: Vec<usize> = cuts.to_vec();
    bounds.push(payload.len());
    for (i, &end) in bounds.iter().enumerate() {
        let fin = if i + 1 == bounds.len() { 0x80 } else { 0 };
        let first = if i == 0 { 0x40 | 0x02 } else { 0x00 };
        ws.frame(fin | first, &payload[at..end]).await;
        at = end;
    }
    let (rsv1, back) = read_msg(ws).await?;
    Ok(if rsv1 { inflate(&back) } else { back })
}

/// RFC 7692 §7.2.3.4: "Hello" in a block with BFINAL set, then one `00` octet — its example
/// payload `f3 48 cd c9 c9 07 00 00`. A valid message; the next starts a stream of its own.
#[tokio::test]
async fn e_rfc7692_bfinal_example_with_trailing_00_is_accepted() {
    for offer in [NCT, KEEP] {
        let addr = deflate_echo().await;
        let (mut ws, _) = RawWs::connect_with(addr, offer).await;
        let example = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        assert_eq!(send_compressed(&mut ws, &example, &[]).await, Ok(b"Hello".to_vec()), "{offer}");
        assert_eq!(send_compressed(&mut ws, &example, &[]).await, Ok(b"Hello".to_vec()), "{offer}");
    }
}

/// The same with flate2's Finish (a longer text), with and without the trailing `00`.
#[tokio::test]
async fn e_finished_streams_are_accepted() {
    let text = "a finished stream, a finished stream, once more a finished stream ".repeat(5);
    for offer in [NCT, KEEP] {
        for extra in [&[][..], &[0x00][..]] {
            let addr = deflate_echo().await;
            let (mut ws, _) = RawWs::connect_with(addr, offer).await;
            for _ in 0..3 {
                let mut c = Compress::new(Compression::default(), false);
                let mut z = Vec::with_capacity(1000);
                c.compress_vec(text.as_bytes(), &mut z, FlushCompress::Finish).unwrap();
                z.extend_from_slice(extra);
                assert_eq!(
                    send_compressed(&mut ws, &z, &[]).await,
                    Ok(text.as_bytes().to_vec()),
                    "{offer} extra {extra:?}"
                );
            }
        }
    }
}

/// Sync and Full flushes, levels 0/1/6/9, several flushes in one message, every split point
/// into two fragments, many one-byte fragments, empty messages; with and without context.
#[tokio::test]
async fn e_valid_client_streams_are_accepted() {
    let mut rng = Rng(77);
    let texts: Vec<Vec<u8>> = vec![
        b"short".to_vec(),
        "{\"user\":\"alice\",\"text\":\"hi there\"} ".repeat(20).into_bytes(),
        (0..3000).map(|_| rng.next() as u8).collect(),
        (0..5000).map(|_| b"abcdefgh"[(rng.next() % 8) as usize]).collect(),
    ];
    for offer in [NCT, KEEP] {
        let keep = offer == KEEP;
        for level in [0, 1, 6, 9] {
            for flush in [FlushCompress::Sync, FlushCompress::Full] {
                let addr = deflate_echo().await;
                let (mut ws, _) = RawWs::connect_with(addr, offer).await;
                let mut shared = Compress::new(Compression::new(level), false);
                for (n, text) in texts.iter().enumerate() {
                    let mut fresh = Compress::new(Compression::new(level), false);
                    let c = if keep { &mut shared } else { &mut fresh };
                    // In 1, 2 or 3 flushed pieces.
                    let mut z = Vec::with_capacity(text.len() * 2 + 100);
                    let pieces = 1 + n % 3;
                    let step = text.len() / pieces + 1;
                    for chunk in text.chunks(step) {
                        c.compress_vec(chunk, &mut z, flush).unwrap();
                    }
                    assert!(z.ends_with(&TAIL));
                    z.truncate(z.len() - 4);
                    let what = format!("{offer} level {level} {flush:?} text {n}");
                    assert_eq!(
                        send_compressed(&mut ws, &z, &[]).await.as_deref(),
                        Ok(&text[..]),
                        "{what}"
                    );
                    // Empty messages between: `00`, and nothing at all.
                    assert_eq!(send_compressed(&mut ws, &[0x00], &[]).await, Ok(vec![]), "{what}");
                    assert_eq!(send_compressed(&mut ws, &[], &[]).await, Ok(vec![]), "{what}");
                    if keep {
                        // An empty message compressed by the kept context.
                        let mut e = Vec::with_capacity(64);
                        c.compress_vec(b"", &mut e, flush).unwrap();
                        // zlib's compressor (flate2's zlib-rs backend, since stop 33) writes
                        // nothing for nothing after a flush: that case is the one above.
                        if e.is_empty() {
                            continue;
                        }
                        e.truncate(e.len() - 4);
                        assert_eq!(
                            send_compressed(&mut ws, &e, &[]).await,
                            Ok(vec![]),
                            "{what} empty {e:?}"
                        );
                    }
                }
            }
        }
    }
    // Every split point into two fragments, and one-byte fragments, with a kept context.
    let addr = deflate_echo().await;
    let (mut ws, _) = RawWs::connect_with(addr, KEEP).await;
    let mut c = Compress::new(Compression::default(), false);
    let text = "fragmented, fragmented again; fragments of fragments ".repeat(4).into_bytes();
    for cut in 0..=60usize {
        let mut z = Vec::with_capacity(1000);
        c.compress_vec(&text, &mut z, FlushCompress::Sync).unwrap();
        z.truncate(z.len() - 4);
        let cut = cut.min(z.len());
        assert_eq!(send_compressed(&mut ws, &z, &[cut]).await, Ok(text.clone()), "cut {cut}");
    }
    let mut z = Vec::with_capacity(1000);
    c.compress_vec(&text, &mut z, FlushCompress::Sync).unwrap();
    z.truncate(z.len() - 4);
    let cuts: Vec<usize> = (1..z.len()).collect();
    assert_eq!(send_compressed(&mut ws, &z, &cuts).await, Ok(text.clone()), "1-byte fragments");
}

/// Invalid messages are refused with 1002: the tail left on, cut short, data after a final
/// block, a stored block that runs past the message.
#[tokio::test]
async fn e_invalid_client_streams_are_refused() {
    let text = "refuse me if I am broken, refuse me if I am broken ".repeat(8).into_bytes();
    let mut c = Compress::new(Compression::default(), false);
    let mut z = Vec::with_capacity(1000);
    c.compress_vec(&text, &mut z, FlushCompress::Sync).unwrap();
    let mut fin = Vec::with_capacity(1000);
    Compress::new(Compression::default(), false)
        .compress_vec(&text, &mut fin, FlushCompress::Finish)
        .unwrap();
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("tail left on".into(), z.clone()),
        ("stored block past the end".into(), vec![0x00, 0x05, 0x00, 0xfa, 0xff, b'a']),
        ("after final: junk".into(), [&fin[..], &[0x12, 0x34][..]].concat()),
    ];
    for cut in 1..=12 {
        cases.push((format!("cut {cut}"), z[..z.len() - 4 - cut].to_vec()));
    }
    for offer in [NCT, KEEP] {
        for (what, payload) in &cases {
            let addr = deflate_echo().await;
            let (mut ws, _) = RawWs::connect_with(addr, offer).await;
            match send_compressed(&mut ws, payload, &[]).await {
                Err(1002) => {}
                Ok(back) => assert!(
                    back == text,
                    "{offer} {what}: accepted as {} bytes {:?}",
                    back.len(),
                    String::from_utf8_lossy(&back[..back.len().min(40)])
                ),
                Err(code) => panic!("{offer} {what}: closed {code}"),
            }
        }
    }
}

/// `Channel::protocol()` is the choice the request and the list make, also when the handler
/// refused the upgrade (documented so; the review first read the docs as "the one the `101`
/// named", and none went out): the refusal itself names no subprotocol.
#[tokio::test]
async fn e_protocol_of_a_refused_upgrade_is_the_choice_the_refusal_does_not_name() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve_with(
        chat(),
        |mut reply| {
            *reply.status_mut() = http::StatusCode::FORBIDDEN;
            reply
        },
        move |ch| {
            let _ = tx.send(ch);
            async {}
        },
    )
    .await;
    let out = raw_http(addr, &upgrade_request(addr, "Sec-WebSocket-Protocol: v1.chat\r\n")).await;
    assert!(out.starts_with(b"HTTP/1.1 403"));
    let head = String::from_utf8_lossy(&out).into_owned();
    assert_eq!(protocols_of(&head), Vec::<String>::new(), "{head}");
    let ch = next_channel(&mut rx).await;
    assert_eq!(ch.protocol(), Some("v1.chat"));
}
