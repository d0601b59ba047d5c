//! A review of permessage-deflate (RFC 7692, stop 32): what tests/deflate.rs and the unit
//! tests leave out, over real sockets on 127.0.0.1 with a raw client that compresses as a
//! browser does. (The review also ran Python's `websockets` and Node's `ws` with every option
//! of theirs; scripts/interop.sh keeps their default offers.)

mod support;

use std::time::Duration;

use flate2::{Compress, Compression, FlushCompress};
use futures::StreamExt;
use support::deflate::{extensions_of, h2_request_with_offer, inflate, Deflater, AGREED, OFFER};
use support::{echo_or_ok, h2_client, raw_http, serve, RawWs};
use webchan::{Channel, Config, Event, Message};

fn text_of(len: usize, seed: usize) -> String {
    let words = ["channel ", "stream ", "sink ", "événement ", "message ", "✓ ", "deflate "];
    let mut s = String::new();
    let mut i = seed;
    while s.len() < len {
        s.push_str(words[i % words.len()]);
        i = i.wrapping_mul(31).wrapping_add(7) % 1009;
    }
    s
}

/// The next data frame's message: (opcode, payload inflated if RSV1), answering pings.
async fn next_message(ws: &mut RawWs) -> Option<(u8, Vec<u8>)> {
    loop {
        let (first, payload) = ws.read_frame().await?;
        assert_eq!(first & 0x80, 0x80, "a fragmented server message: {first:#x}");
        match first & 0x0f {
            0x9 => ws.frame(0x8A, &payload).await,
            0xA => {}
            0x8 => return Some((0x8, payload)),
            op => {
                let data = if first & 0x40 != 0 { inflate(&payload) } else { payload };
                return Some((op, data));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Limits.

/// `max_message_size(usize::MAX)` is the documented "no limit" (tests/config_edges.rs uses it):
/// a compressed message must inflate under it as under any other limit.
#[tokio::test]
async fn deflate_with_max_message_size_usize_max_still_inflates() {
    let addr =
        serve(Config::default().permessage_deflate(true).max_message_size(usize::MAX), echo_or_ok)
            .await;
    let (mut ws, head) = RawWs::connect_with(addr, OFFER).await;
    assert_eq!(extensions_of(&head), [AGREED]);
    let text = text_of(100_000, 1);
    ws.frame(0xC1, &Deflater::new().compress(text.as_bytes())).await;
    let echo = next_message(&mut ws).await;
    assert_eq!(echo.map(|(op, d)| (op, d.len())), Some((0x1, text.len())));
}

/// A compressed message in fragments: at the limit once inflated it is taken, one byte over it
/// closes with 1009; a bomb in 50 small fragments too. Small wire frames under
/// `max_frame_size` are accepted whatever they inflate to.
#[tokio::test]
async fn fragmented_compressed_messages_at_and_over_the_limit() {
    let limit = 10_000;
    let addr = serve(
        Config::default().permessage_deflate(true).max_message_size(limit).max_frame_size(500),
        echo_or_ok,
    )
    .await;
    let send_in_pieces = |z: Vec<u8>, pieces: usize| async move {
        let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
        let step = z.len().div_ceil(pieces).max(1);
        let chunks: Vec<&[u8]> = z.chunks(step).collect();
        for (i, c) in chunks.iter().enumerate() {
            let first = match (i == 0, i + 1 == chunks.len()) {
                (true, true) => 0xC2,
                (true, false) => 0x42,
                (false, true) => 0x80,
                (false, false) => 0x00,
            };
            ws.frame(first, c).await;
        }
        next_message(&mut ws).await
    };
    let at = text_of(limit, 3).into_bytes()[..limit].to_vec();
    let z = Deflater::new().compress(&at);
    assert!(z.len() < 1500);
    assert_eq!(send_in_pieces(z, 4).await, Some((0x2, at.clone())));
    let mut over = at.clone();
    over.push(b'x');
    let got = send_in_pieces(Deflater::new().compress(&over), 4).await;
    assert_eq!(
        got.map(|(op, p)| (op, p[..2].to_vec())),
        Some((0x8, 1009u16.to_be_bytes().to_vec()))
    );
    let bomb = Deflater::new().compress(&vec![0u8; 1 << 20]);
    let got = send_in_pieces(bomb, 50).await;
    assert_eq!(
        got.map(|(op, p)| (op, p[..2].to_vec())),
        Some((0x8, 1009u16.to_be_bytes().to_vec()))
    );
}

/// The read pause counts messages inflated: a client that sends many small compressed
/// messages of 1 MiB each cannot make the server hold them all while the application does
/// not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_pause_holds_with_compressed_messages_the_application_reads_slowly() {
    let (addr, mut channels) =
        support::serve_channels(Config::default().permessage_deflate(true).queue_limit(64 << 10))
            .await;
    let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
    let mut ch: Channel = support::next_channel(&mut channels).await;
    let before = support::rss_kib();
    let mut client = Deflater::new();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..120 {
        let z = client.compress(&zeros);
        ws.frame(0xC2, &z).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let grown = support::rss_kib().saturating_sub(before);
    assert!(grown < 60 << 10, "the server grew by {grown} KiB with 64 KiB of queue limit");
    // All of them come, once read.
    let mut got = 0;
    while got < 120 {
        match support::next_of(&mut ch).await {
            Some(Event::Message(m)) => {
                assert_eq!(m.len(), 1 << 20);
                got += 1;
            }
            Some(_) => {}
            None => panic!("ended after {got}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Several connections, closing, timers.

/// Connections that each keep their context, and ones that do not, interleaved message by
/// message: each connection's inflater follows its own client only.
#[tokio::test]
async fn interleaved_connections_each_keep_their_own_context() {
    let addr = serve(Config::default().permessage_deflate(true), echo_or_ok).await;
    let mut keeping = Vec::new();
    for _ in 0..4 {
        keeping.push((RawWs::connect_with(addr, OFFER).await.0, Deflater::new()));
    }
    let nct = "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n";
    let mut resetting = Vec::new();
    for _ in 0..2 {
        let (ws, head) = RawWs::connect_with(addr, nct).await;
        assert!(extensions_of(&head)[0].contains("client_no_context_takeover"));
        resetting.push(ws);
    }
    for round in 0..6 {
        for (i, (ws, client)) in keeping.iter_mut().enumerate() {
            let text = text_of(1500 + 300 * i + round, i * 7 + round % 2);
            ws.frame(0xC1, &client.compress(text.as_bytes())).await;
            assert_eq!(next_message(ws).await, Some((0x1, text.into_bytes())), "conn {i} {round}");
            if i == 1 {
                for (j, ws) in resetting.iter_mut().enumerate() {
                    let text = text_of(2000 + j, j + round);
                    ws.frame(0xC1, &Deflater::new().compress(text.as_bytes())).await;
                    assert_eq!(next_message(ws).await, Some((0x1, text.into_bytes())));
                }
            }
        }
    }
}

/// A close in the middle of a compressed fragmented message is answered (1000), and the
/// idle timeout does not end a connection whose client sends a large compressed message
/// slowly; the server's keepalive pings go out between its fragments.
#[tokio::test]
async fn close_and_timers_during_compressed_fragments() {
    let addr = serve(
        Config::default()
            .permessage_deflate(true)
            .timeout(Duration::from_secs(3))
            .keepalive(Some((Duration::from_secs(1), Duration::from_secs(10)))),
        echo_or_ok,
    )
    .await;
    let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
    let text = text_of(300_000, 5);
    let z = Deflater::new().compress(text.as_bytes());
    ws.frame(0x41, &z[..z.len() / 2]).await;
    ws.frame(0x88, &1000u16.to_be_bytes()).await;
    assert_eq!(ws.read_close().await.map(|c| c.0), Some(1000));

    let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
    let pieces: Vec<&[u8]> = z.chunks(z.len().div_ceil(5)).collect();
    let mut pings = 0;
    for (i, piece) in pieces.iter().enumerate() {
        let first = match (i == 0, i + 1 == pieces.len()) {
            (true, _) => 0x41,
            (false, true) => 0x80,
            (false, false) => 0x00,
        };
        ws.frame(first, piece).await;
        if i + 1 == pieces.len() {
            break;
        }
        // 1.6 s between fragments (a ping is due after 1 s of silence), 6.4 s in all: past
        // the 3 s idle timeout.
        let wait = tokio::time::sleep(Duration::from_millis(1600));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                f = ws.read_frame() => {
                    let (first, payload) = f.expect("closed while the message came");
                    assert_eq!(first, 0x89, "{first:#x}");
                    pings += 1;
                    ws.frame(0x8A, &payload).await;
                }
            }
        }
    }
    assert_eq!(next_message(&mut ws).await, Some((0x1, text.into_bytes())));
    assert!(pings >= 1, "no keepalive ping in 6.4 s");
}

// ---------------------------------------------------------------------------------------
// Messages of every kind from the application.

#[tokio::test]
async fn files_readers_and_sequences_go_out_compressed_message_by_message() {
    let dir = std::env::temp_dir().join(format!("zz_review_d_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("file.txt");
    let file_data = text_of(50_000, 9).into_bytes();
    std::fs::write(&path, &file_data).unwrap();
    let reader_data = text_of(40_000, 11).into_bytes();
    let seq_text = text_of(2000, 13);
    let (p, r, s) = (path.clone(), reader_data.clone(), seq_text.clone());
    let addr = serve(Config::default().permessage_deflate(true), move |mut ch: Channel| {
        let (p, r, s) = (p.clone(), r.clone(), s.clone());
        async move {
            while let Some(e) = ch.next().await {
                if let Event::Message(_) = e {
                    let seq = Message::seq(vec![
                        Message::from(s.clone()),
                        Message::from(vec![1u8; 10]),
                        Message::from(vec![0u8; 5000]),
                    ]);
                    ch.send(seq).await.unwrap();
                    ch.send(Message::reader(std::io::Cursor::new(r.clone()))).await.unwrap();
                    ch.send(Message::file(p.clone())).await.unwrap();
                    ch.send("end".into()).await.unwrap();
                }
            }
        }
    })
    .await;
    let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
    ws.frame(0x81, b"go").await;
    let mut frames = Vec::new();
    loop {
        let (first, payload) = ws.read_frame().await.expect("a frame");
        if first & 0x0f == 0x1 && payload == b"end" {
            break;
        }
        frames.push((first, payload));
    }
    let firsts: Vec<u8> = frames.iter().map(|f| f.0).collect();
    assert_eq!(&firsts[..3], &[0xC1, 0x82, 0xC2], "{firsts:x?}");
    assert_eq!(inflate(&frames[0].1), seq_text.as_bytes());
    assert_eq!(inflate(&frames[2].1), vec![0u8; 5000]);
    let mut rest = Vec::new();
    for (first, payload) in &frames[3..] {
        // Pieces under 1 KiB (the file's last) go plain.
        if payload.len() < 1024 && *first == 0x82 {
            rest.extend(payload);
            continue;
        }
        assert_eq!(*first, 0xC2, "{firsts:x?}");
        rest.extend(inflate(payload));
    }
    let mut expected = reader_data.clone();
    expected.extend(&file_data);
    assert_eq!(rest.len(), expected.len());
    assert!(rest == expected);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_compat_api_with_deflate_in_its_config() {
    use webchan::compat::{Options, SendOptions};
    let options = Options::new()
        .config(Config::default().permessage_deflate(true).max_message_size(1 << 20))
        .on_message(|h, m| {
            let _ = h.send(m, SendOptions::new());
        });
    let addr = support::serve_compat(options).await;
    let (mut ws, head) = RawWs::connect_with(addr, OFFER).await;
    assert_eq!(extensions_of(&head), [AGREED], "{head}");
    let mut client = Deflater::new();
    for len in [10, 3000, 3000, 200_000] {
        let text = text_of(len, len);
        ws.frame(0xC1, &client.compress(text.as_bytes())).await;
        let (first, payload) = ws.read_frame().await.unwrap();
        assert_eq!(first, if len >= 1024 { 0xC1 } else { 0x81 });
        let data = if first & 0x40 != 0 { inflate(&payload) } else { payload };
        assert_eq!(data, text.as_bytes());
    }
}

// ---------------------------------------------------------------------------------------
// Negotiation.

#[tokio::test]
async fn odd_but_valid_offers_are_answered_as_the_rfc_says() {
    let addr = serve(Config::default().permessage_deflate(true), echo_or_ok).await;
    let h = |v: &str| format!("Sec-WebSocket-Extensions: {v}\r\n");
    let cases = [
        (h("permessage-deflate; client_max_window_bits=\"10\""), AGREED.to_owned()),
        (
            h("permessage-deflate;server_max_window_bits=\"15\" ;client_no_context_takeover"),
            format!("{AGREED}; client_no_context_takeover; server_max_window_bits=15"),
        ),
        (
            format!("{}{}", h("foo"), h(", PERMESSAGE-DEFLATE ;\tCLIENT_MAX_WINDOW_BITS ,")),
            AGREED.to_owned(),
        ),
        (
            h("permessage-deflate; server_no_context_takeover; server_no_context_takeover, \
               permessage-deflate; client_no_context_takeover"),
            format!("{AGREED}; client_no_context_takeover"),
        ),
        (h("permessage-deflate; client_max_window_bits=16, permessage-deflate"), AGREED.into()),
        (
            h("permessage-deflate; server_max_window_bits=15; server_max_window_bits=15, \
               permessage-deflate; server_max_window_bits=9"),
            format!("{AGREED}; server_max_window_bits=9"),
        ),
        (
            h("permessage-deflate; server_max_window_bits=\"1\\5\""),
            format!("{AGREED}; server_max_window_bits=15"),
        ),
        (
            h("permessage-deflate; client_no_context_takeover=\"x\", permessage-deflate"),
            AGREED.into(),
        ),
    ];
    for (extra, expected) in cases {
        let (mut ws, head) = RawWs::connect_with(addr, &extra).await;
        assert_eq!(extensions_of(&head), std::slice::from_ref(&expected), "{extra}");
        let text = text_of(3000, 2);
        ws.frame(0xC1, &Deflater::new().compress(text.as_bytes())).await;
        let (first, payload) = ws.read_frame().await.unwrap();
        let data = if first & 0x40 != 0 { inflate(&payload) } else { payload };
        assert_eq!(data, text.as_bytes(), "{extra}");
        if expected.contains("server_max_window_bits=9") {
            assert_eq!(first, 0x81, "a 2^9 window asked for: plain");
        } else {
            assert_eq!(first, 0xC1, "{extra}");
        }
    }
}

#[tokio::test]
async fn over_http2_a_refused_upgrade_carries_no_agreement() {
    let addr = support::serve_forbidding(Config::default().permessage_deflate(true)).await;
    let mut sender = h2_client(addr).await;
    let response = sender.send_request(h2_request_with_offer(addr)).await.unwrap();
    assert_eq!(response.status(), 403);
    assert!(response.headers().get("sec-websocket-extensions").is_none(), "{response:?}");
    // And HTTP/1.1 with the header line several times.
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{OFFER}{OFFER}\
         Connection: close\r\n\r\n"
    );
    let answer = String::from_utf8(raw_http(addr, request.as_bytes()).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert_eq!(extensions_of(&answer), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------
// The thresholds (128 bytes; webchan's own encoder under 1 KiB, zlib from it), and DEFLATE
// streams that are valid but unusual.

#[tokio::test]
async fn the_threshold_and_unusual_but_valid_compressed_messages() {
    let addr = serve(Config::default().permessage_deflate(true), echo_or_ok).await;
    let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
    let mut client = Deflater::new();
    // 127 bytes go plain, 128 and more compressed (by either encoder).
    for (len, first) in [(127, 0x81), (128, 0xC1), (1023, 0xC1), (1024, 0xC1), (1025, 0xC1)] {
        let text = "a".repeat(len);
        ws.frame(0xC1, &client.compress(text.as_bytes())).await;
        let (got, payload) = ws.read_frame().await.unwrap();
        assert_eq!(got, first, "{len}");
        let data = if got & 0x40 != 0 { inflate(&payload) } else { payload };
        assert_eq!(data, text.as_bytes());
    }
    // An empty compressed message: `00` (RFC 7692 §7.2.3.6's empty stored block, tail
    // stripped).
    ws.frame(0xC1, &[0u8]).await;
    assert_eq!(ws.read_frame().await, Some((0x81, Vec::new())));
    // A plain message between compressed ones does not touch the client's context.
    let text = text_of(3000, 21);
    ws.frame(0xC1, &client.compress(text.as_bytes())).await;
    assert_eq!(next_message(&mut ws).await, Some((0x1, text.clone().into_bytes())));
    ws.frame(0x81, b"plain in between").await;
    assert_eq!(next_message(&mut ws).await, Some((0x1, b"plain in between".to_vec())));
    ws.frame(0xC1, &client.compress(text.as_bytes())).await;
    assert_eq!(next_message(&mut ws).await, Some((0x1, text.clone().into_bytes())));
    // A message ending its DEFLATE stream with a final block (RFC 7692 §7.2.3.3 allows
    // BFINAL): the next message starts a stream of its own.
    ws.frame(0xC1, &finished(text.as_bytes())).await;
    assert_eq!(next_message(&mut ws).await, Some((0x1, text.clone().into_bytes())));
    let mut fresh = Deflater::new();
    ws.frame(0xC1, &fresh.compress(text.as_bytes())).await;
    assert_eq!(next_message(&mut ws).await, Some((0x1, text.clone().into_bytes())));
    ws.frame(0xC1, &fresh.compress(text.as_bytes())).await;
    assert_eq!(next_message(&mut ws).await, Some((0x1, text.into_bytes())));
}

/// A client that keeps its context sends a compressed message with an empty payload (RSV1, no
/// bytes), which the server takes as an empty message (its own unit test says so: "the
/// client sent `00` ... or nothing"). Appended to nothing, the tail `00 00 ff ff` is not a
/// whole block (a stored block's header, LEN 0xff00, half its NLEN): the server must either
/// refuse that message (1002, RFC 7692 §7.2.2: it does not inflate) or leave the context as
/// it was; it must not fail the client's next, valid message.
#[tokio::test]
async fn an_empty_compressed_payload_does_not_break_the_next_message() {
    let addr = serve(Config::default().permessage_deflate(true), echo_or_ok).await;
    let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
    let mut client = Deflater::new();
    let text = text_of(3000, 21);
    ws.frame(0xC1, &client.compress(text.as_bytes())).await;
    assert_eq!(next_message(&mut ws).await.map(|m| m.1.len()), Some(text.len()));
    ws.frame(0xC1, &[]).await;
    let (first, payload) = ws.read_frame().await.expect("an answer");
    if first & 0x0f == 0x8 {
        // Refused at once: acceptable.
        assert_eq!(&payload[..2], &1002u16.to_be_bytes());
        return;
    }
    assert_eq!((first, payload.len()), (0x81, 0), "taken as an empty message");
    // Then the next message, compressed by the same client, must come back.
    the_next_message_comes_back(&mut ws, &mut client, &text, "the empty one").await;
}

/// The client's next message, compressed with its kept context, comes back whole.
async fn the_next_message_comes_back(
    ws: &mut RawWs,
    client: &mut Deflater,
    text: &str,
    after: &str,
) {
    ws.frame(0xC1, &client.compress(text.as_bytes())).await;
    let (first, payload) = next_message(ws).await.unwrap();
    let shown = String::from_utf8_lossy(&payload[..payload.len().min(40)]).into_owned();
    assert_eq!(
        (first, payload.len()),
        (0x1, text.len()),
        "the valid message after {after} was answered with {shown:?}"
    );
}

fn finished(data: &[u8]) -> Vec<u8> {
    let mut last = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 100);
    last.compress_vec(data, &mut out, FlushCompress::Finish).unwrap();
    out
}

/// The same with the tail left on: a payload ending in `00 00 ff ff` (RFC 7692 §7.2.1: the
/// sender removes it). With the receiver's tail appended, the data ends inside a stored
/// block's header: it does not inflate. Right: 1002 for that message (the docs: "data that
/// does not inflate closes it with 1002"), or, taken, a context the next message still
/// inflates with; never a valid next message refused.
#[tokio::test]
async fn a_payload_with_its_tail_left_on_does_not_break_the_next_message() {
    let addr = serve(Config::default().permessage_deflate(true), echo_or_ok).await;
    let (mut ws, _) = RawWs::connect_with(addr, OFFER).await;
    let mut client = Deflater::new();
    let text = text_of(3000, 21);
    let mut z = client.compress(text.as_bytes());
    z.extend_from_slice(&[0, 0, 0xff, 0xff]);
    ws.frame(0xC1, &z).await;
    let (first, payload) = next_message(&mut ws).await.expect("an answer");
    if first == 0x8 {
        assert_eq!(&payload[..2], &1002u16.to_be_bytes());
        return;
    }
    assert_eq!((first, payload.len()), (0x1, text.len()));
    the_next_message_comes_back(&mut ws, &mut client, &text, "it").await;
}

/// Binary data cut short does not inflate (docs: 1002); it must not reach the application.
#[tokio::test]
async fn truncated_compressed_binary_is_not_delivered() {
    let addr = serve(Config::default().permessage_deflate(true), echo_or_ok).await;
    let data: Vec<u8> = text_of(3000, 23).into_bytes();
    let z = Deflater::new().compress(&data);
    let mut outcomes = Vec::new();
    for cut in [2usize, 5, 20, z.len() / 2] {
        let nct = "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n";
        let (mut ws, _) = RawWs::connect_with(addr, nct).await;
        ws.frame(0xC2, &z[..z.len() - cut]).await;
        match next_message(&mut ws).await {
            Some((0x8, p)) => {
                outcomes.push(format!("cut {cut}: close {}", u16::from_be_bytes([p[0], p[1]])))
            }
            Some((op, p)) => outcomes.push(format!(
                "cut {cut}: delivered opcode {op}, {} of {} bytes, a prefix of the data: {}",
                p.len(),
                data.len(),
                data.starts_with(&p)
            )),
            None => outcomes.push(format!("cut {cut}: dropped")),
        }
    }
    assert!(outcomes.iter().all(|o| o.ends_with("close 1002")), "{outcomes:#?}");
}
