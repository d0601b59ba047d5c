//! WebSockets over HTTP/2 (RFC 8441) frame by frame, with a raw HTTP/2 client written here
//! (frames by hand, HPACK literals) and with hyper's client, over 127.0.0.1: the settings, the
//! extended CONNECT's refusals, how streams end after a close from either side, resets,
//! flow control between WebSockets on one connection, keepalive. Written in a review of stop
//! 27 (2026-12-05).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use support::*;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use webchan::{CloseInfo, Config, Event};

use support::h2raw::*;

/// A WebSocket on stream 1 of a raw HTTP/2 connection to a server whose channels record their
/// events (`support::recorder`); the 200 checked.
async fn a_recorded_websocket() -> (H2Raw, tokio::sync::mpsc::UnboundedReceiver<Event>) {
    let (rec, rx) = recorder();
    let addr = serve(Config::default(), rec).await;
    let mut h2 = H2Raw::connect(addr).await;
    let resp = h2.connect_ws(addr, 1, &[]).await;
    assert_eq!(resp.payload.first(), Some(&0x88), "200: {resp:?}");
    (h2, rx)
}

/// An extended CONNECT for a WebSocket on `/` (RFC 8441 §4) with these headers.
fn extended_connect(
    addr: SocketAddr,
    headers: &[(&'static str, &'static str)],
) -> http::Request<http_body_util::Empty<bytes::Bytes>> {
    let mut req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("http://{addr}/"))
        .body(http_body_util::Empty::new())
        .unwrap();
    for (name, value) in headers {
        req.headers_mut().append(*name, http::HeaderValue::from_static(value));
    }
    req.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
    req
}

#[tokio::test]
async fn the_server_advertises_settings_enable_connect_protocol() {
    let addr = serve(Config::default(), echo_or_ok).await;
    let h2 = H2Raw::connect(addr).await;
    assert!(h2.settings.contains(&(8, 1)), "server SETTINGS: {:?}", h2.settings);
}

#[tokio::test]
async fn extended_connect_without_sec_websocket_version_is_426_and_two_versions_400() {
    let addr = serve(Config::default(), echo_or_ok).await;
    let mut sender = h2_client(addr).await;
    let resp = sender.send_request(extended_connect(addr, &[])).await.unwrap();
    assert_eq!(resp.status(), 426);
    assert_eq!(resp.headers()["sec-websocket-version"], "13");
    let two = [("sec-websocket-version", "13"), ("sec-websocket-version", "13")];
    let resp = sender.send_request(extended_connect(addr, &two)).await.unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn a_subprotocol_chosen_on_the_reply_goes_out_over_h2_and_no_extension_is_accepted() {
    let addr = serve_with(
        Config::default(),
        |reply| {
            reply.header(
                http::header::SEC_WEBSOCKET_PROTOCOL,
                http::HeaderValue::from_static("chat.v2"),
            )
        },
        echo_or_ok,
    )
    .await;
    let mut sender = h2_client(addr).await;
    let headers = [
        ("sec-websocket-version", "13"),
        ("sec-websocket-protocol", "chat.v1, chat.v2"),
        ("sec-websocket-extensions", "permessage-deflate; client_max_window_bits"),
    ];
    let resp = sender.send_request(extended_connect(addr, &headers)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["sec-websocket-protocol"], "chat.v2");
    assert!(resp.headers().get("sec-websocket-extensions").is_none());
    let io = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Client, None).await;
    ws.send(WsMessage::text("hi")).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("hi")));
}

/// Client-initiated close over h2: the client's close frame, then (after the server's answer)
/// its END_STREAM. Expected (RFC 8441 §5, orderly closure = END_STREAM): the server's close
/// frame, END_STREAM, and no RST_STREAM with an error code.
#[tokio::test]
async fn client_close_over_h2_ends_the_stream_with_end_stream() {
    let (mut h2, mut rx) = a_recorded_websocket().await;
    h2.ws_frame(1, 0x88, &[0x03, 0xe8, b'b', b'y', b'e'], 0).await;
    let mut frames = Vec::new();
    // Until the server's END_STREAM (or RST), then answer with ours.
    loop {
        let f = h2.next().await.expect("EOF");
        frames.push(f.clone());
        if f.ty == RST_STREAM || (f.ty == DATA && f.flags & END_STREAM != 0) {
            break;
        }
    }
    h2.send(DATA, END_STREAM, 1, &[]).await;
    frames.extend(h2.collect(Duration::from_millis(500)).await);
    let d = describe(&frames);
    eprintln!("{d:?}");
    let events = events_until_closed(&mut rx).await;
    assert_eq!(closed_of(&events), CloseInfo::websocket(1000, "bye"));
    let data: Vec<u8> =
        frames.iter().filter(|f| f.ty == DATA).flat_map(|f| f.payload.clone()).collect();
    assert_eq!(&data[..4], &[0x88, 0x02, 0x03, 0xe8], "{d:?}");
    assert_orderly_end(&frames);
}

/// The orderly end of an HTTP/2 WebSocket is END_STREAM both ways (RFC 8441 §5: END_STREAM is
/// TCP's FIN, RST_STREAM a TCP RST, an exception). The client sends its close frame, gets the
/// server's and its END_STREAM, and ends its own side 100 ms later (well within the 5 s close
/// timeout): the server must not reset the stream meanwhile, which makes a client's own
/// half-close fail (hyper's client: `BodyWrite, NO_ERROR` from tungstenite's `close()`).
#[tokio::test]
async fn after_an_orderly_close_the_server_does_not_reset_the_stream_before_the_clients_end_stream()
{
    let (mut h2, mut rx) = a_recorded_websocket().await;
    h2.ws_frame(1, 0x88, &[0x03, 0xe8], 0).await;
    let mut frames = Vec::new();
    loop {
        let f = h2.next().await.expect("EOF");
        frames.push(f.clone());
        if f.ty == RST_STREAM || (f.ty == DATA && f.flags & END_STREAM != 0) {
            break;
        }
    }
    // What comes in the 100 ms before the client ends its side.
    frames.extend(h2.collect(Duration::from_millis(100)).await);
    h2.send(DATA, END_STREAM, 1, &[]).await;
    frames.extend(h2.collect(Duration::from_millis(300)).await);
    let d = describe(&frames);
    eprintln!("{d:?}");
    let events = events_until_closed(&mut rx).await;
    assert_eq!(closed_of(&events), CloseInfo::websocket(1000, ""));
    assert!(
        !frames.iter().any(|f| f.ty == RST_STREAM),
        "the stream was reset after an orderly close, before the client's END_STREAM: {d:?}"
    );
}

/// The stream ended with END_STREAM and was never reset with an error (RFC 8441 §5: END_STREAM
/// is TCP's FIN, RST_STREAM with an error a TCP RST).
fn assert_orderly_end(frames: &[Frame]) {
    let d = describe(frames);
    assert!(frames.iter().any(|f| f.ty == DATA && f.flags & END_STREAM != 0), "{d:?}");
    let error_reset = |f: &Frame| {
        f.ty == RST_STREAM && u32::from_be_bytes(f.payload[..4].try_into().unwrap()) != 0
    };
    assert!(!frames.iter().any(error_reset), "an error RST_STREAM after an orderly close: {d:?}");
}

/// With hyper's client and tungstenite: echo one message, then `close()`, 100 times on one
/// connection. Every close is orderly; none may fail. Before stop 27 (2026-12-05) the server
/// dropped its stream before the client's END_STREAM and hyper reset it: 82 of 300 failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_close_over_h2_never_fails() {
    let addr = serve(Config::default().keepalive(None), echo_or_ok).await;
    let mut sender = h2_client(addr).await;
    let mut failed = Vec::new();
    for i in 0..100 {
        let io = h2_websocket(&mut sender, addr, "/").await;
        let ws = WebSocketStream::from_raw_socket(io, Role::Client, None).await;
        if let Err(e) = echo_then_close(ws).await {
            failed.push(format!("round {i}: {e}"));
        }
    }
    assert!(failed.is_empty(), "{} of 100 closes failed: {failed:?}", failed.len());
}

/// One 20 KB echo, then the client's `close()` (its outcome), then the rest of the stream.
async fn echo_then_close<S>(mut ws: WebSocketStream<S>) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(WsMessage::binary(vec![2u8; 20_000])).await.unwrap();
    assert!(matches!(next_msg(&mut ws).await, Some(WsMessage::Binary(_))));
    let closed = ws.close(None).await.map_err(|e| e.to_string());
    while next_msg(&mut ws).await.is_some() {}
    closed
}

/// Same, the client sends its close frame with END_STREAM on the same DATA frame (it has
/// nothing more to say).
#[tokio::test]
async fn client_close_with_end_stream_at_once_over_h2() {
    let (mut h2, mut rx) = a_recorded_websocket().await;
    h2.ws_frame(1, 0x88, &[0x03, 0xe8], END_STREAM).await;
    let frames = h2.collect(Duration::from_millis(1500)).await;
    let d = describe(&frames);
    eprintln!("{d:?}");
    let events = events_until_closed(&mut rx).await;
    assert_eq!(closed_of(&events), CloseInfo::websocket(1000, ""));
    let data: Vec<u8> =
        frames.iter().filter(|f| f.ty == DATA).flat_map(|f| f.payload.clone()).collect();
    assert!(data.starts_with(&[0x88, 0x02, 0x03, 0xe8]), "{d:?}");
    assert_orderly_end(&frames);
}

/// Server-initiated close over h2: close frame; the client answers with its close frame and
/// END_STREAM; the server's stream ends with END_STREAM; Closed is 1000.
#[tokio::test]
async fn server_close_over_h2() {
    let (addr, mut channels) = serve_channels(Config::default()).await;
    let mut h2 = H2Raw::connect(addr).await;
    let resp = h2.connect_ws(addr, 1, &[]).await;
    assert_eq!(resp.payload.first(), Some(&0x88));
    let mut ch = next_channel(&mut channels).await;
    let sender = ch.sender();
    let closing = tokio::spawn(async move { sender.close_with(4000, "done").await });
    let f = h2.next().await.unwrap();
    assert_eq!(f.ty, DATA);
    assert_eq!(&f.payload[..4], &[0x88, 0x06, 0x0f, 0xa0], "{f:?}");
    h2.ws_frame(1, 0x88, &[0x0f, 0xa0], END_STREAM).await;
    let mut frames = vec![f];
    frames.extend(h2.collect(Duration::from_millis(1500)).await);
    let d = describe(&frames);
    eprintln!("{d:?}");
    let events = all_events(&mut ch).await;
    assert_eq!(closed_of(&events), CloseInfo::websocket(4000, "done"));
    let _ = closing.await;
    assert_orderly_end(&frames);
}

/// RST_STREAM from the client in the middle of a message: the channel closes with 1006; a
/// second WebSocket on the same connection goes on.
#[tokio::test]
async fn rst_stream_mid_message_is_1006_and_the_other_stream_goes_on() {
    let (rec, mut rx) = recorder();
    let addr = serve(Config::default(), rec).await;
    let mut h2 = H2Raw::connect(addr).await;
    let r1 = h2.connect_ws(addr, 1, &[]).await;
    assert_eq!(r1.payload.first(), Some(&0x88));
    let r3 = h2.connect_ws(addr, 3, &[]).await;
    assert_eq!(r3.payload.first(), Some(&0x88));
    // Half a 1000-byte binary frame on stream 1, then a reset.
    let bytes = encode_frame(0x82, Some([1, 2, 3, 4]), &[9u8; 1000], None);
    h2.send(DATA, 0, 1, &bytes[..500]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    h2.send(RST_STREAM, 0, 1, &8u32.to_be_bytes()).await; // CANCEL
                                                          // The recorder mixes both channels' events: wait for a Closed.
    let t0 = Instant::now();
    let mut seen = Vec::new();
    loop {
        let e = next_event(&mut rx).await;
        seen.push(e.clone());
        if let Event::Closed(info) = e {
            assert_eq!(info.code, Some(1006), "{seen:?}");
            break;
        }
    }
    eprintln!("closed after {:?}: {seen:?}", t0.elapsed());
    // Stream 3 still works: a text frame; the recorder gets it.
    h2.ws_frame(3, 0x81, b"still", 0).await;
    loop {
        match next_event(&mut rx).await {
            Event::Message(webchan::Incoming::Text(t)) => {
                assert_eq!(&*t, "still");
                break;
            }
            Event::Open => {}
            other => panic!("{other:?}"),
        }
    }
}

/// A client that sends more DATA after its close frame: the server answers the close, ignores
/// the rest, reports the client's code.
#[tokio::test]
async fn data_after_the_clients_close_frame_over_h2() {
    let (rec, mut rx) = recorder();
    let addr = serve(Config::default(), rec).await;
    let mut h2 = H2Raw::connect(addr).await;
    let r = h2.connect_ws(addr, 1, &[]).await;
    assert_eq!(r.payload.first(), Some(&0x88));
    h2.ws_frame(1, 0x88, &[0x03, 0xe9], 0).await;
    h2.ws_frame(1, 0x81, b"after close", 0).await;
    h2.ws_frame(1, 0x82, &[0u8; 3000], 0).await;
    let frames = h2.collect(Duration::from_millis(1500)).await;
    let d = describe(&frames);
    eprintln!("{d:?}");
    let events = events_until_closed(&mut rx).await;
    assert_eq!(closed_of(&events), CloseInfo::websocket(1001, ""), "{events:?}");
    assert!(
        !events.iter().any(|e| matches!(e, Event::Message(_))),
        "a message after the close frame was delivered: {events:?}"
    );
    let data: Vec<u8> =
        frames.iter().filter(|f| f.ty == DATA).flat_map(|f| f.payload.clone()).collect();
    assert!(data.starts_with(&[0x88, 0x02, 0x03, 0xe9]), "{d:?}");
}

/// Large messages over h2: 12 MiB each way (under the 16 MiB frame limit; hyper's client,
/// default windows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_12_mib_message_echoed_over_h2() {
    let addr = serve(Config::default(), echo_or_ok).await;
    let mut sender = h2_client(addr).await;
    let io = h2_websocket(&mut sender, addr, "/").await;
    let ws = WebSocketStream::from_raw_socket(io, Role::Client, None).await;
    let payload: Vec<u8> = (0..12 << 20).map(|i: u32| (i % 251) as u8).collect();
    let t0 = Instant::now();
    let (mut tx, mut rx) = ws.split();
    let p2 = payload.clone();
    let send = tokio::spawn(async move {
        tx.send(WsMessage::binary(p2)).await.unwrap();
        tx
    });
    let got = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match rx.next().await {
                Some(Ok(WsMessage::Binary(b))) => return b,
                Some(Ok(_)) => continue,
                other => panic!("{other:?}"),
            }
        }
    })
    .await
    .expect("no echo of 12 MiB over h2 within 60 s");
    eprintln!("12 MiB round trip over h2 in {:?}", t0.elapsed());
    assert_eq!(got.len(), payload.len());
    assert!(got[..] == payload[..]);
    let _ = send.await;
}

/// A server with the README's HTTP/2 windows (those of `support::serve`): "/slow" channels
/// go to the test unread, others echo.
async fn slow_fast_server() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<webchan::Channel>)
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default(), move |ch: webchan::Channel| {
        let tx = tx.clone();
        async move {
            if ch.originating_request().uri.path() == "/slow" {
                let _ = tx.send(ch);
            } else {
                echo(ch).await;
            }
        }
    })
    .await;
    (addr, rx)
}

/// Fills "/slow" (whose application reads nothing) with 4 MiB, then counts the round trips
/// the "/fast" WebSocket on the same HTTP/2 connection makes in 10 s (of 10 asked).
async fn fast_round_trips_beside_a_stalled_websocket(
    addr: SocketAddr,
    slow_channels: &mut tokio::sync::mpsc::UnboundedReceiver<webchan::Channel>,
) -> u32 {
    let mut sender = h2_client(addr).await;
    let slow_io = h2_websocket(&mut sender, addr, "/slow").await;
    let _slow_ch = slow_channels.recv().await.unwrap();
    let fast_io = h2_websocket(&mut sender, addr, "/fast").await;
    let mut slow = WebSocketStream::from_raw_socket(slow_io, Role::Client, None).await;
    let mut fast = WebSocketStream::from_raw_socket(fast_io, Role::Client, None).await;
    let filler = tokio::spawn(async move {
        for _ in 0..64 {
            if slow.send(WsMessage::binary(vec![1u8; 64 * 1024])).await.is_err() {
                break;
            }
        }
        slow
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let d2 = done.clone();
    let _ = tokio::time::timeout(Duration::from_secs(10), async move {
        for i in 0..10u32 {
            fast.send(WsMessage::binary(numbered(i, 1024))).await.unwrap();
            loop {
                match fast.next().await {
                    Some(Ok(WsMessage::Binary(b))) => {
                        assert_eq!(u32::from_be_bytes(b[..4].try_into().unwrap()), i);
                        break;
                    }
                    Some(Ok(_)) => continue,
                    other => panic!("{other:?}"),
                }
            }
            d2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    })
    .await;
    filler.abort();
    done.load(std::sync::atomic::Ordering::SeqCst)
}

/// Two WebSockets on one HTTP/2 connection; the application behind the first reads nothing.
/// The client pushes 4 MiB into the first, then talks on the second, which must get through
/// with the windows the README recommends (a connection window larger than a stream's). With
/// hyper's defaults (1 MiB each) it did not: 0 of 10 round trips in 10 s (stop 27, 2026-12-05:
/// the README now says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_websocket_whose_application_reads_nothing_does_not_stall_the_others() {
    let (addr, mut slow) = slow_fast_server().await;
    let n = fast_round_trips_beside_a_stalled_websocket(addr, &mut slow).await;
    eprintln!("stream window 256 KiB, connection window 8 MiB: {n} of 10 round trips in 10 s");
    assert_eq!(n, 10);
}

/// Keepalive over h2: a silent client is pinged (in the WebSocket, inside DATA frames), and
/// dropped with 1006 "keepalive timeout" if it does not answer; its stream then ends.
#[tokio::test]
async fn keepalive_over_h2() {
    let (rec, mut rx) = recorder();
    let config =
        Config::default().keepalive(Some((Duration::from_millis(100), Duration::from_millis(300))));
    let addr = serve(config, rec).await;
    let mut sender = h2_client(addr).await;
    let io = h2_websocket(&mut sender, addr, "/").await;
    let mut raw = RawWs { tcp: io, buf: Vec::new() };
    // Answer three pings.
    for _ in 0..3 {
        let (first, p) = raw.read_frame().await.expect("a ping");
        assert_eq!(first, 0x89);
        raw.frame(0x8a, &p).await;
    }
    // Then nothing: the server drops it.
    let t0 = Instant::now();
    let mut saw_eof = false;
    while t0.elapsed() < Duration::from_secs(8) {
        match tokio::time::timeout(Duration::from_secs(8), raw.read_frame()).await {
            Ok(Some((0x89, _))) => continue,
            Ok(Some(other)) => panic!("{other:?}"),
            Ok(None) => {
                saw_eof = true;
                break;
            }
            Err(_) => break,
        }
    }
    let events = events_until_closed(&mut rx).await;
    assert_eq!(closed_of(&events), CloseInfo::websocket(1006, "keepalive timeout"));
    assert!(saw_eof, "the h2 stream did not end after the keepalive timeout");
    // The connection itself is still usable.
    let io = h2_websocket(&mut sender, addr, "/").await;
    drop(io);
}

/// The same over HTTP/1.1: 100 echo-then-close rounds; no close fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_close_over_http1_never_fails() {
    let addr = serve(Config::default().keepalive(None), echo_or_ok).await;
    let mut failed = Vec::new();
    for i in 0..100 {
        if let Err(e) = echo_then_close(ws_connect(addr, "/").await).await {
            failed.push(format!("round {i}: {e}"));
        }
    }
    assert!(failed.is_empty(), "{} of 100 closes failed: {failed:?}", failed.len());
}

// ---- writes over HTTP/2 wait for the client (stop 28's review, 2026-12-05) ----

/// A client that gives the stream no window beyond the first 64 KiB and takes nothing: no
/// 8 MiB send may complete. hyper's upgraded HTTP/2 stream takes any write whole, whatever
/// the stream's window; before stop 28 (2026-12-05) each 8 MiB frame went to it in one write
/// and completed at once: 3 sends (24 MiB held by hyper) for a client that had 64 KiB.
#[tokio::test]
async fn no_large_send_completes_to_a_client_that_gives_no_window() {
    let (addr, mut channels) =
        serve_channels(Config::default().keepalive(None).queue_limit(64 * 1024)).await;
    let mut h2 = H2Raw::connect(addr).await;
    let resp = h2.connect_ws(addr, 1, &[]).await;
    assert_eq!(resp.payload.first(), Some(&0x88), "200: {resp:?}");
    let ch = next_channel(&mut channels).await;
    let sender = ch.sender();
    let sending = tokio::spawn(async move {
        let mut done = 0;
        for _ in 0..3 {
            let send = sender.send(webchan::Message::Binary(vec![1u8; 8 << 20].into()));
            match tokio::time::timeout(Duration::from_secs(1), send).await {
                Ok(result) => {
                    result.unwrap();
                    done += 1;
                }
                Err(_) => break,
            }
        }
        done
    });
    // The client reads what comes (never a WINDOW_UPDATE: the window stays spent).
    let frames = h2.collect(Duration::from_millis(1500)).await;
    let got: usize = frames.iter().filter(|f| f.ty == DATA).map(|f| f.payload.len()).sum();
    let done = sending.await.unwrap();
    assert_eq!(done, 0, "{done} sends of 8 MiB completed; the client got {got} bytes");
    assert!(got <= 65_535, "{got} bytes past a 64 KiB window");
}

/// A client that reads one large message steadily (16 KiB every 10 ms, its stream window 64
/// KiB as a slow client's would be) and answers pings is neither dead to keepalive nor idle:
/// the writes that wait for its window and then go on show it takes the bytes, as on TCP.
/// Before stop 28 (2026-12-05) the 4 MiB went to hyper in one write: keepalive (200 ms /
/// 800 ms) dropped the client with 1006 and a 800 ms idle timeout closed it, each while it was
/// still reading.
#[tokio::test]
async fn a_client_reading_a_large_message_slowly_over_h2_is_alive_and_not_idle() {
    const SIZE: usize = 4 << 20;
    for idle in [false, true] {
        let config = if idle {
            Config::default().keepalive(None).timeout(Duration::from_millis(800))
        } else {
            Config::default()
                .keepalive(Some((Duration::from_millis(200), Duration::from_millis(800))))
        };
        let (addr, mut channels) = serve_channels(config).await;
        let mut client = h2_client_windowed(addr, 64 * 1024, None).await;
        let mut io = h2_websocket(&mut client, addr, "/").await;
        let mut ch = next_channel(&mut channels).await;
        assert!(matches!(next_of(&mut ch).await, Some(Event::Open)));
        let sender = ch.sender();
        let sending = tokio::spawn(async move {
            sender.send(webchan::Message::Binary(vec![9u8; SIZE].into())).await
        });
        let seen = slow_read(&mut io, SIZE).await;
        assert_eq!(seen.data, SIZE, "idle {idle}: cut off: {seen:?}");
        assert!(sending.await.unwrap().is_ok());
        let early = tokio::time::timeout(Duration::from_millis(100), ch.next()).await;
        assert!(!matches!(early, Ok(Some(Event::Closed(_)))), "idle {idle}: {early:?}");
    }
}

/// What [`slow_read`] saw.
#[derive(Debug, Default)]
struct SlowRead {
    data: usize,
    pings: usize,
    close: Option<u16>,
    elapsed: Duration,
}

/// Reads 16 KiB every 10 ms (~1.6 MB/s) of a WebSocket's server frames, answering pings, until
/// `want` bytes of data frames, a close frame, the end, or 20 s.
async fn slow_read<S>(io: &mut S, want: usize) -> SlowRead
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut out = SlowRead::default();
    let started = Instant::now();
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    // Payload bytes of the data frame under way still to come.
    let mut rest = 0;
    while out.data < want && out.close.is_none() && started.elapsed() < Duration::from_secs(20) {
        let n = match tokio::time::timeout(Duration::from_secs(10), io.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => break,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            if rest > 0 {
                let take = rest.min(buf.len());
                out.data += take;
                rest -= take;
                buf.drain(..take);
                if rest > 0 {
                    break;
                }
            }
            if buf.len() < 2 {
                break;
            }
            let (len, start) = match buf[1] & 0x7F {
                126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
                127 if buf.len() >= 10 => (
                    usize::try_from(u64::from_be_bytes(buf[2..10].try_into().unwrap())).unwrap(),
                    10,
                ),
                n if n < 126 => (usize::from(n), 2),
                _ => break,
            };
            let opcode = buf[0] & 0x0F;
            if opcode <= 0x2 {
                // Data: counted as it comes.
                buf.drain(..start);
                rest = len;
                continue;
            }
            if buf.len() < start + len {
                break;
            }
            let payload: Vec<u8> = buf.drain(..start + len).skip(start).collect();
            match opcode {
                0x9 => {
                    out.pings += 1;
                    let pong = encode_frame(0x8A, Some([1, 2, 3, 4]), &payload, None);
                    let _ = io.write_all(&pong).await;
                }
                0x8 => {
                    out.close = Some(if payload.len() >= 2 {
                        u16::from_be_bytes([payload[0], payload[1]])
                    } else {
                        1005
                    });
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    out.elapsed = started.elapsed();
    out
}
