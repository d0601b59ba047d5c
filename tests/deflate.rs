//! permessage-deflate (RFC 7692, `Config::permessage_deflate`), over real sockets on
//! 127.0.0.1: a raw client that compresses as a browser does (one context for all its
//! messages) and checks every frame the server sends: RSV1, and a payload that inflates on its
//! own (the server agreed to `server_no_context_takeover`). Python's `websockets`, Node's `ws`
//! and Autobahn's chapters 12 and 13 run against the same setting in `scripts/interop.sh` and
//! `scripts/autobahn.sh`.

mod support;

use std::net::SocketAddr;

use support::deflate::{extensions_of, h2_request_with_offer, inflate, Deflater, AGREED, OFFER};
use support::{echo_or_ok, h2_client, raw_http, serve, RawWs};
use webchan::Config;

fn text_of(len: usize) -> String {
    let words = ["channel ", "stream ", "sink ", "événement ", "message ", "✓ "];
    let mut s = String::new();
    let mut i = 0usize;
    while s.len() < len {
        s.push_str(words[i % words.len()]);
        i = i.wrapping_mul(31).wrapping_add(7) % 1009;
    }
    s
}

fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn deflate_server(config: Config) -> SocketAddr {
    serve(config.permessage_deflate(true), echo_or_ok).await
}

/// Sends `message` compressed by `client` (in `pieces` frames), and checks the echo: RSV1 set
/// and the same message once inflated, or (`expect_plain`) sent as it is.
async fn round_trip<S>(ws: &mut RawWs<S>, client: &mut Deflater, opcode: u8, message: &[u8])
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let z = client.compress(message);
    ws.frame(0xC0 | opcode, &z).await;
    let (first, payload) = ws.read_frame().await.expect("an echo");
    assert_eq!(
        first,
        0xC0 | opcode,
        "the echo of {} bytes is not one compressed frame",
        message.len()
    );
    assert!(
        payload.len() < message.len() / 2,
        "{} bytes compressed to {}",
        message.len(),
        payload.len()
    );
    assert_eq!(inflate(&payload), message);
}

#[tokio::test]
async fn compressed_messages_go_both_ways_and_small_or_incompressible_ones_go_plain() {
    let addr = deflate_server(Config::default()).await;
    let (mut ws, head) = RawWs::connect_with(addr, OFFER).await;
    assert_eq!(extensions_of(&head), [AGREED], "{head}");
    let mut client = Deflater::new();
    let text = text_of(4000);
    // The same text three times: the client's context makes the second and third tiny, and
    // each echo inflates on its own.
    for _ in 0..3 {
        round_trip(&mut ws, &mut client, 0x1, text.as_bytes()).await;
    }
    round_trip(&mut ws, &mut client, 0x2, &vec![7u8; 100_000]).await;
    // Under 1 KiB: webchan's own encoder (fixed codes); over it, zlib (flate2's zlib-rs backend).
    for len in [200, 1000, 1100] {
        round_trip(&mut ws, &mut client, 0x1, text_of(len).as_bytes()).await;
    }
    // Large: past the read buffer and the write path's vectored threshold.
    round_trip(&mut ws, &mut client, 0x1, text_of(1 << 20).as_bytes()).await;

    // A compressed message in three frames (RSV1 on the first only), a ping between them.
    let z = client.compress(text.as_bytes());
    let (a, rest) = z.split_at(z.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    ws.frame(0x41, a).await;
    ws.frame(0x00, b).await;
    ws.frame(0x89, b"between").await;
    ws.frame(0x80, c).await;
    assert_eq!(ws.read_frame().await, Some((0x8A, b"between".to_vec())));
    let (first, payload) = ws.read_frame().await.unwrap();
    assert_eq!(first, 0xC1);
    assert_eq!(inflate(&payload), text.as_bytes());

    // Under 128 bytes: compressed by the client, echoed as it is.
    ws.frame(0xC1, &client.compress(b"short")).await;
    assert_eq!(ws.read_frame().await, Some((0x81, b"short".to_vec())));
    // Uncompressed from the client: still compressed by the server when it pays.
    ws.frame(0x81, text.as_bytes()).await;
    let (first, payload) = ws.read_frame().await.unwrap();
    assert_eq!(first, 0xC1);
    assert_eq!(inflate(&payload), text.as_bytes());
    // Incompressible: echoed as it is.
    let random = noise(5000);
    ws.frame(0xC2, &client.compress(&random)).await;
    assert_eq!(ws.read_frame().await, Some((0x82, random)));

    ws.frame(0x88, &1000u16.to_be_bytes()).await;
    assert_eq!(ws.read_close().await, Some((1000, String::new())));
}

#[tokio::test]
async fn a_client_without_context_takeover_and_one_limiting_the_servers_window() {
    let addr = deflate_server(Config::default()).await;
    // client_no_context_takeover: the client resets its context per message; the server
    // agrees and inflates each message on its own.
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n";
    let (mut ws, head) = RawWs::connect_with(addr, offer).await;
    assert_eq!(extensions_of(&head), [format!("{AGREED}; client_no_context_takeover")]);
    let text = text_of(3000);
    for _ in 0..3 {
        round_trip(&mut ws, &mut Deflater::new(), 0x1, text.as_bytes()).await;
    }

    // A server window of 2^10 asked for: agreed, and every message sent plain.
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n";
    let (mut ws, head) = RawWs::connect_with(addr, offer).await;
    assert_eq!(extensions_of(&head), [format!("{AGREED}; server_max_window_bits=10")]);
    let mut client = Deflater::new();
    ws.frame(0xC1, &client.compress(text.as_bytes())).await;
    assert_eq!(ws.read_frame().await, Some((0x81, text.clone().into_bytes())));

    // Offers the server cannot honour are declined, the next one taken.
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=16, \
                 x-webkit-deflate-frame\r\nSec-WebSocket-Extensions: permessage-deflate\r\n";
    let (_, head) = RawWs::connect_with(addr, offer).await;
    assert_eq!(extensions_of(&head), [AGREED], "{head}");
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; foo=1\r\n";
    let (mut ws, head) = RawWs::connect_with(addr, offer).await;
    assert_eq!(extensions_of(&head), Vec::<String>::new(), "{head}");
    // Nothing agreed: RSV1 is a protocol error.
    ws.frame(0xC1, &client.compress(b"x")).await;
    assert_eq!(ws.read_close().await.map(|c| c.0), Some(1002));
}

/// A client's message that refers back to data the server never inflated (before the
/// connection's first message, or into an earlier message when the client agreed to reset its
/// context): RFC 1951 data that is not valid, closed with 1002. With miniz (before stop 33,
/// 2026-12-06) such references read the zeros of a fresh window and the message was taken
/// with NUL bytes in their place.
#[tokio::test]
async fn a_reference_back_past_what_was_inflated_is_a_protocol_error() {
    let addr = deflate_server(Config::default()).await;
    let text = text_of(3000);
    let mut client = Deflater::new();
    // Compressed once and not sent: the next copy is all references back into it.
    let _ = client.compress(text.as_bytes());
    let z = client.compress(text.as_bytes());
    let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
    ws.frame(0xC1, &z).await;
    assert_eq!(ws.read_close().await.map(|c| c.0), Some(1002));
    assert!(ws.eof().await, "the connection stayed open");
    // A client that offered to reset its context and did not.
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n";
    let (mut ws, _) = RawWs::connect_with(addr, offer).await;
    let mut client = Deflater::new();
    round_trip(&mut ws, &mut client, 0x1, text.as_bytes()).await;
    ws.frame(0xC1, &client.compress(text.as_bytes())).await;
    assert_eq!(ws.read_close().await.map(|c| c.0), Some(1002));
    // Where the context is kept, the same two messages are right.
    let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
    let mut client = Deflater::new();
    for _ in 0..2 {
        round_trip(&mut ws, &mut client, 0x1, text.as_bytes()).await;
    }
}

#[tokio::test]
async fn without_client_context_every_client_is_told_to_reset_its_own() {
    let addr = deflate_server(Config::default().deflate_client_context(false)).await;
    // A browser's offer, which does not ask for it: the agreement says it all the same.
    let (mut ws, head) = RawWs::connect_with(addr, OFFER).await;
    assert_eq!(extensions_of(&head), [format!("{AGREED}; client_no_context_takeover")]);
    let text = text_of(3000);
    for opcode in [0x1, 0x2, 0x1] {
        round_trip(&mut ws, &mut Deflater::new(), opcode, text.as_bytes()).await;
    }
    // A client that keeps its context anyway: its first message inflates on its own; the
    // second, the same text, is a reference back into the first, which the server no longer
    // has.
    let mut client = Deflater::new();
    round_trip(&mut ws, &mut client, 0x1, text.as_bytes()).await;
    let z = client.compress(text.as_bytes());
    let alone = Deflater::new().compress(text.as_bytes()).len();
    assert!(z.len() * 4 < alone, "the second copy is {} bytes ({alone} alone)", z.len());
    ws.frame(0xC1, &z).await;
    assert_eq!(ws.read_close().await.map(|c| c.0), Some(1002));
    assert!(ws.eof().await, "the connection stayed open");
}

#[tokio::test]
async fn off_by_default_the_offer_is_declined_and_rsv1_is_a_protocol_error() {
    let addr = serve(Config::default(), echo_or_ok).await;
    let (mut ws, head) = RawWs::connect_with(addr, OFFER).await;
    assert_eq!(extensions_of(&head), Vec::<String>::new(), "{head}");
    ws.frame(0x81, b"plain").await;
    assert_eq!(ws.read_frame().await, Some((0x81, b"plain".to_vec())));
    ws.frame(0xC1, &Deflater::new().compress(b"compressed")).await;
    assert_eq!(ws.read_close().await.map(|c| c.0), Some(1002));
}

#[tokio::test]
async fn bad_compressed_data_closes_with_the_right_code() {
    let addr = deflate_server(Config::default().max_message_size(64 << 10)).await;
    let cases: [(&str, Vec<u8>, u8, u16); 5] = [
        // 64 KiB and one byte of zeros: ~100 bytes on the wire.
        (
            "over the limit once inflated",
            Deflater::new().compress(&[0; (64 << 10) + 1]),
            0xC2,
            1009,
        ),
        ("not DEFLATE data (a reserved block type)", vec![0xff, 0xff, 0xff], 0xC2, 1002),
        ("invalid UTF-8 once inflated", Deflater::new().compress(&[0xC3; 500]), 0xC1, 1007),
        ("RSV1 on a ping", b"x".to_vec(), 0xC9, 1002),
        ("RSV2", Deflater::new().compress(b"x"), 0xA1, 1002),
    ];
    for (what, payload, first, code) in cases {
        let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
        ws.frame(first, &payload).await;
        assert_eq!(ws.read_close().await.map(|c| c.0), Some(code), "{what}");
        assert!(ws.eof().await, "{what}: the connection stayed open");
    }
    // At the limit exactly: echoed (compressed, ~100 bytes).
    let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
    let zeros = vec![0; 64 << 10];
    round_trip(&mut ws, &mut Deflater::new(), 0x2, &zeros).await;
    // RSV1 on a continuation frame.
    let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
    let z = Deflater::new().compress(text_of(1000).as_bytes());
    ws.frame(0x41, &z[..10]).await;
    ws.frame(0xC0, &z[10..]).await;
    assert_eq!(ws.read_close().await.map(|c| c.0), Some(1002));
}

#[tokio::test]
async fn an_extension_header_that_does_not_parse_gets_400_and_its_reason() {
    let request = |addr: SocketAddr| {
        format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; =15\r\nConnection: close\r\n\r\n"
        )
    };
    let addr = deflate_server(Config::default()).await;
    let answer = String::from_utf8(raw_http(addr, request(addr).as_bytes()).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("Sec-WebSocket-Extensions is not a valid extension list"), "{answer}");
    // Off, the header is not read: the upgrade goes on (`upgrade_with` checks the 101).
    let addr = serve(Config::default(), echo_or_ok).await;
    let (mut ws, head) =
        RawWs::connect_with(addr, "Sec-WebSocket-Extensions: permessage-deflate; =15\r\n").await;
    assert_eq!(extensions_of(&head), Vec::<String>::new(), "{head}");
    ws.frame(0x81, b"on").await;
    assert_eq!(ws.read_frame().await, Some((0x81, b"on".to_vec())));
}

#[tokio::test]
async fn over_http2_the_agreement_and_compressed_frames_work_the_same() {
    let addr = deflate_server(Config::default()).await;
    let mut sender = h2_client(addr).await;
    let response = sender.send_request(h2_request_with_offer(addr)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["sec-websocket-extensions"], AGREED);
    let io = hyper_util::rt::TokioIo::new(hyper::upgrade::on(response).await.unwrap());
    let mut ws = RawWs { tcp: io, buf: Vec::new() };
    let mut client = Deflater::new();
    for len in [2000, 100_000] {
        round_trip(&mut ws, &mut client, 0x1, text_of(len).as_bytes()).await;
    }
}

#[tokio::test]
async fn a_refused_upgrade_carries_no_agreement() {
    let addr = support::serve_forbidding(Config::default().permessage_deflate(true)).await;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{OFFER}\
         Connection: close\r\n\r\n"
    );
    let answer = String::from_utf8(raw_http(addr, request.as_bytes()).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert_eq!(extensions_of(&answer), Vec::<String>::new(), "{answer}");
}
