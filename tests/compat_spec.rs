//! `compat` against the Immutant API doc and ../shared/spec/immutant-notes.md, sentence by
//! sentence, for the points tests/compat.rs leaves open (from stop 29's review, 2026-12-05).
//! Real sockets on 127.0.0.1 only.
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use support::callbacks::{ev, evs, expect_cb, expect_close, note, quiet, recording, tracked, Ev};
use support::{
    get, h2_client, http1_get, next_msg, ws_connect, ws_until_close, WsClient, WsMessage,
};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use webchan::compat::{Handle, Options, SendOptions};
use webchan::{CloseInfo, Error, Incoming, Kind, Message};

// ---- harness: tests/support/callbacks.rs, and helpers of this file's own ----

/// A request for `path` over raw TCP (see [`support::raw_chunks`]).
async fn raw_get(addr: SocketAddr, method: &str, path: &str) -> (String, Vec<Vec<u8>>) {
    support::raw_chunks(addr, method, path, "").await
}

fn temp_file(name: &str, content: &[u8]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("webchan-review-c-{}-{name}", std::process::id()));
    std::fs::write(&path, content).unwrap();
    path
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

async fn h2_get(
    sender: &mut support::H2Sender,
    request: Request<http_body_util::Empty<bytes::Bytes>>,
) -> (http::response::Parts, Result<bytes::Bytes, hyper::Error>) {
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .expect("no h2 head within 10 s")
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("h2 body not complete within 10 s")
        .map(|c| c.to_bytes());
    (parts, body)
}

// ---- notes: "close with no send still applies the handler's status and headers" ----

#[tokio::test]
async fn close_with_no_send_applies_the_handlers_status_and_headers_h1_and_h2() {
    let (tx, mut rx) = evs();
    let options = recording(&tx).on_open(|h| {
        assert!(h.close());
    });
    let addr = support::serve_compat_with(options, |r| {
        *r.status_mut() = StatusCode::ACCEPTED;
        r.headers_mut().insert("x-handler", HeaderValue::from_static("kept"));
    })
    .await;

    let response = http1_get(addr, get(addr, "/")).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.headers()["x-handler"], "kept");
    assert!(response.body().is_empty());
    assert_eq!(expect_close(&mut rx).await, CloseInfo::http());

    let mut sender = h2_client(addr).await;
    let (parts, body) = h2_get(&mut sender, get(addr, "/")).await;
    assert_eq!(parts.version, http::Version::HTTP_2);
    assert_eq!(parts.status, StatusCode::ACCEPTED);
    assert_eq!(parts.headers["x-handler"], "kept");
    assert!(body.unwrap().is_empty());
    assert_eq!(expect_close(&mut rx).await, CloseInfo::http());
}

// ---- notes: "A file, reader or sequence sent with close goes out chunked, then closes." ----

#[tokio::test]
async fn a_file_reader_or_sequence_sent_first_with_close_goes_out_chunked_then_closes() {
    let data = pattern(40_000);
    let path = temp_file("first-close", &data);
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let d = data.clone();
    let options = recording(&tx).on_open(move |h| {
        let _ = t.send(Ev::Open(h.kind()));
        let message = match h.originating_request().uri.path() {
            "/file" => Message::file(&path),
            "/reader" => Message::reader(std::io::Cursor::new(d.clone())),
            _ => Message::seq(vec![Message::from("a"), Message::from(vec![b'b'])]),
        };
        assert!(h.send(message, tracked(&t, "first").close(true)).unwrap());
        assert!(!h.is_open());
    });
    let addr = support::serve_compat(options).await;
    for (path, expected) in
        [("/file", data.clone()), ("/reader", data.clone()), ("/seq", b"ab".to_vec())]
    {
        let (head, chunks) = raw_get(addr, "GET", path).await;
        assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
        assert!(head.contains("transfer-encoding: chunked"), "{path}: {head}");
        assert!(!head.contains("content-length"), "{path}: {head}");
        assert_eq!(chunks.concat(), expected, "{path}");
        expect_cb!(&mut rx, Ev::Open(Kind::HttpStream));
        expect_cb!(&mut rx, Ev::Ok(t) if t == "first");
        expect_close(&mut rx).await;
    }
}

// ---- spec: ":close? ... on the first send ... not chunk the response", with a map ----

#[tokio::test]
async fn a_map_sent_first_with_close_is_a_standard_response_h1_and_h2() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let _ = t.send(Ev::Open(h.kind()));
        let mut headers = HeaderMap::new();
        headers.insert("x-map", HeaderValue::from_static("yes"));
        let head = Message::response(StatusCode::CREATED, headers, "twelve bytes");
        assert!(h.send(head, tracked(&t, "map").close(true)).unwrap());
    });
    let addr = support::serve_compat(options).await;

    let (head, body) = raw_get(addr, "GET", "/").await;
    assert!(head.starts_with("http/1.1 201"), "{head}");
    assert!(head.contains("content-length: 12\r\n"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(head.contains("x-map: yes"), "{head}");
    assert_eq!(body.concat(), b"twelve bytes");
    expect_cb!(&mut rx, Ev::Open(_));
    expect_cb!(&mut rx, Ev::Ok(t) if t == "map");
    expect_close(&mut rx).await;

    let mut sender = h2_client(addr).await;
    let (parts, body) = h2_get(&mut sender, get(addr, "/")).await;
    assert_eq!(parts.status, StatusCode::CREATED);
    assert_eq!(parts.headers["x-map"], "yes");
    assert_eq!(parts.headers.get("content-length").map(|v| v.to_str().unwrap()), Some("12"));
    assert_eq!(&body.unwrap()[..], b"twelve bytes");
    expect_cb!(&mut rx, Ev::Open(_));
    expect_cb!(&mut rx, Ev::Ok(t) if t == "map");
    expect_close(&mut rx).await;
}

// ---- spec: "If it is a String, it will be encoded to the character set of the response for
// HTTP streams" — the response's charset when a first-send map sets the Content-Type ----

#[tokio::test]
async fn strings_are_encoded_in_the_charset_a_first_send_map_sets() {
    let (tx, mut rx) = evs();
    let options = recording(&tx).on_open(|h| {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain; charset=ISO-8859-1"));
        let closes = h.originating_request().uri.path() == "/whole";
        let head = Message::response(StatusCode::OK, headers, "é");
        assert!(h.send(head, SendOptions::new().close(closes)).unwrap());
        if !closes {
            assert!(h.send(Message::seq(vec!["é".into()]), SendOptions::new()).unwrap());
            assert!(h.send("€", SendOptions::new().close(true)).unwrap());
        }
    });
    let addr = support::serve_compat(options).await;

    let (head, body) = raw_get(addr, "GET", "/whole").await;
    assert!(head.contains("content-length: 1\r\n"), "{head}");
    assert_eq!(body.concat(), [0xE9]);
    expect_close(&mut rx).await;

    let (head, chunks) = raw_get(addr, "GET", "/stream").await;
    assert!(head.contains("charset=iso-8859-1"), "{head}");
    assert_eq!(chunks.concat(), [0xE9, 0xE9, b'?']);
    expect_close(&mut rx).await;
}

// ---- notes: charset pitfalls of encoding_rs, through compat ----

#[tokio::test]
async fn utf16_us_ascii_and_unmappable_characters_are_written_as_labelled() {
    let cases: [(&str, &str, &[u8]); 4] = [
        ("utf-16", "a€", &[0x00, 0x61, 0x20, 0xAC]),
        ("us-ascii", "aé€", b"a??"),
        ("iso-8859-1", "\u{80}é", &[0x80, 0xE9]),
        ("windows-1252", "a日", b"a?"),
    ];
    let (tx, mut rx) = evs();
    let options = recording(&tx).on_open(move |h| {
        let label = h.originating_request().uri.path().trim_start_matches('/').to_owned();
        let (_, text, _) = cases.iter().find(|(l, ..)| *l == label).unwrap();
        assert!(h.send(*text, SendOptions::new().close(true)).unwrap());
    });
    let addr = support::serve_compat_with(options, |r| {
        let label = r.handle().unwrap().originating_request().uri.path()[1..].to_owned();
        let ct = format!("text/plain; charset={label}");
        r.headers_mut().insert("content-type", HeaderValue::from_str(&ct).unwrap());
    })
    .await;
    for (label, _, bytes) in cases {
        let (_, body) = raw_get(addr, "GET", &format!("/{label}")).await;
        assert_eq!(body.concat(), bytes, "{label}");
        expect_close(&mut rx).await;
    }
}

// ---- notes: a map first in a sequence sent first; a map elsewhere in a sequence ----

#[tokio::test]
async fn a_map_first_in_a_sequence_sent_first_is_the_head_elsewhere_it_fails_the_send() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let _ = t.send(Ev::Open(h.kind()));
        let head = || Message::response(StatusCode::CREATED, HeaderMap::new(), "h,");
        let seq = match h.originating_request().uri.path() {
            "/first" => Message::seq(vec![head(), "b".into()]),
            _ => Message::seq(vec!["a,".into(), head(), "c".into()]),
        };
        assert!(h.send(seq, tracked(&t, "seq")).unwrap());
        assert!(h.send(",after", tracked(&t, "after").close(true)).unwrap());
    });
    let addr = support::serve_compat(options).await;

    let (head, chunks) = raw_get(addr, "GET", "/first").await;
    assert!(head.starts_with("http/1.1 201"), "{head}");
    assert_eq!(chunks.concat(), b"h,b,after");
    expect_cb!(&mut rx, Ev::Open(_));
    expect_cb!(&mut rx, Ev::Ok(t) if t == "seq");
    expect_cb!(&mut rx, Ev::Ok(t) if t == "after");
    expect_close(&mut rx).await;

    let (head, chunks) = raw_get(addr, "GET", "/later").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(chunks.concat(), b"a,,after");
    expect_cb!(&mut rx, Ev::Open(_));
    expect_cb!(&mut rx, Ev::SendErr(t, Error::InvalidMessage(_)) if t == "seq");
    expect_cb!(&mut rx, Ev::Ok(t) if t == "after");
    expect_close(&mut rx).await;

    // On a WebSocket: the send fails, the channel stays usable.
    let mut ws = ws_connect(addr, "/later").await;
    let (data, close) = ws_until_close(&mut ws).await;
    assert_eq!(data, [WsMessage::text("a,"), WsMessage::text(",after")]);
    assert_eq!(close.0, 1000);
    expect_cb!(&mut rx, Ev::Open(_));
    expect_cb!(&mut rx, Ev::SendErr(t, Error::InvalidMessage(_)) if t == "seq");
    expect_cb!(&mut rx, Ev::Ok(t) if t == "after");
    expect_close(&mut rx).await;
}

// ---- spec: "A map is only a valid message on the first send" — after an empty first send;
// "its :body entry must be one of the other valid message types" — a map as a map's body ----

#[tokio::test]
async fn a_map_after_an_empty_first_send_is_refused_at_once() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        assert!(h.send("", SendOptions::new()).unwrap());
        let head = Message::response(StatusCode::CREATED, HeaderMap::new(), "map");
        let r = h.send(head, tracked(&t, "map"));
        note(&t, format!("{}", matches!(r, Err(Error::InvalidMessage(_)))));
        assert!(h.send("x", SendOptions::new().close(true)).unwrap());
    });
    let addr = support::serve_compat(options).await;
    let (head, chunks) = raw_get(addr, "GET", "/").await;
    expect_cb!(&mut rx, Ev::Note(n) if n == "true");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(chunks.concat(), b"x");
    expect_close(&mut rx).await;
}

#[tokio::test]
async fn a_map_whose_body_is_a_map_is_not_sent_as_a_body() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let inner = Message::response(StatusCode::ACCEPTED, HeaderMap::new(), "inner");
        let outer = Message::response(StatusCode::CREATED, HeaderMap::new(), inner);
        let r = h.send(outer, tracked(&t, "outer"));
        note(&t, format!("{r:?}"));
        let _ = h.send("after", tracked(&t, "after").close(true));
    });
    let addr = support::serve_compat(options).await;
    let (head, chunks) = raw_get(addr, "GET", "/").await;
    let r = expect_cb!(&mut rx, Ev::Note(n) => n);
    let mut seen = Vec::new();
    loop {
        let e = ev(&mut rx).await;
        let done = matches!(e, Ev::Close { .. });
        seen.push(format!("{e:?}"));
        if done {
            break;
        }
    }
    // Either refused at once, or the send fails; the inner map must never become body bytes
    // or a second head.
    let refused = r.starts_with("Err(InvalidMessage");
    let failed = seen.iter().any(|e| e.starts_with("SendErr(\"outer\", InvalidMessage"));
    assert!(
        refused || failed,
        "send: {r}; head: {head:?}; body: {:?}; callbacks: {seen:?}",
        String::from_utf8_lossy(&chunks.concat())
    );
    assert!(!String::from_utf8_lossy(&chunks.concat()).contains("inner"));
}

// ---- notes: "WebSocket timeout is an idle timeout that outgoing sends reset too" ----

#[tokio::test]
async fn outgoing_sends_keep_an_idle_websocket_open() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).timeout(Duration::from_millis(400)).on_open(move |h| {
        let _ = t.send(Ev::Open(h.kind()));
        let h = h.clone();
        tokio::spawn(async move {
            for i in 0..10 {
                assert!(h.send(format!("tick {i}"), SendOptions::new()).unwrap(), "tick {i}");
                tokio::time::sleep(Duration::from_millis(120)).await;
            }
        });
    });
    let addr = support::serve_compat(options).await;
    let mut ws = ws_connect(addr, "/").await;
    let start = Instant::now();
    let (data, (code, reason)) = ws_until_close(&mut ws).await;
    assert_eq!(data.len(), 10, "{data:?} after {:?}", start.elapsed());
    assert_eq!((code, reason.as_str()), (1000, "idle timeout"));
    assert!(start.elapsed() >= Duration::from_millis(1400), "{:?}", start.elapsed());
    expect_cb!(&mut rx, Ev::Open(_));
    let info = expect_close(&mut rx).await;
    assert_eq!((info.code, info.reason.as_deref()), (Some(1000), Some("idle timeout")));
}

// ---- notes: dropped TCP → 1006 with an empty reason; a close frame with no code → 1005 ----

#[tokio::test]
async fn a_dropped_connection_is_1006_and_a_codeless_close_1005_both_with_an_empty_reason() {
    let (tx, mut rx) = evs();
    let addr = support::serve_compat(recording(&tx)).await;

    let ws = ws_connect(addr, "/").await;
    expect_cb!(&mut rx, Ev::Open(_));
    drop(ws);
    let info = expect_close(&mut rx).await;
    assert_eq!((info.code, info.reason.as_deref()), (Some(1006), Some("")));

    let mut raw = support::RawWs::connect(addr).await;
    expect_cb!(&mut rx, Ev::Open(_));
    raw.frame(0x88, &[]).await;
    assert_eq!(raw.read_close().await, Some((1005, String::new())));
    let info = expect_close(&mut rx).await;
    assert_eq!((info.code, info.reason.as_deref()), (Some(1005), Some("")));
}

// ---- close_with: what the wire carries is what on_close reports ----

#[tokio::test]
async fn close_with_a_code_not_allowed_on_the_wire_reports_what_was_sent() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let _ = t.send(Ev::Handle(h.clone()));
    });
    let addr = support::serve_compat(options).await;

    let mut raw = support::RawWs::connect(addr).await;
    let h = expect_cb!(&mut rx, Ev::Handle(h) => h);
    assert!(h.close_with(1006, "abnormal?"));
    let wire = raw.read_close().await.unwrap();
    raw.frame(0x88, &1000u16.to_be_bytes()).await;
    let info = expect_close(&mut rx).await;
    assert_eq!(wire.0, 1000, "1006 must not go on the wire");
    assert_eq!(info.code, Some(wire.0), "on_close {info:?}, wire {wire:?}");

    let long = "é".repeat(100); // 200 bytes
    let mut raw = support::RawWs::connect(addr).await;
    let h = expect_cb!(&mut rx, Ev::Handle(h) => h);
    assert!(h.close_with(4001, &long));
    let wire = raw.read_close().await.unwrap();
    raw.frame(0x88, &4001u16.to_be_bytes()).await;
    let info = expect_close(&mut rx).await;
    assert_eq!(wire.1, "é".repeat(61), "cut to 123 bytes on a char boundary");
    assert_eq!((info.code, info.reason.as_deref()), (Some(4001), Some(wire.1.as_str())));
}

// ---- notes: "Headers from the handler's response are copied onto the 101 (cookies,
// subprotocol)." ----

#[tokio::test]
async fn a_subprotocol_set_by_the_handler_goes_onto_the_101() {
    let (tx, mut rx) = evs();
    let addr = support::serve_compat_with(recording(&tx), |r| {
        r.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("chat.v2"));
    })
    .await;
    let mut request = format!("ws://{addr}/").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("chat.v1, chat.v2"));
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat.v2");
    expect_cb!(&mut rx, Ev::Open(Kind::WebSocket));
    ws.close(None).await.unwrap();
    expect_close(&mut rx).await;
}

// ---- module docs: "All callbacks of one channel run on one task, one at a time" ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_of_one_channel_never_overlap_under_sends_from_threads_and_messages() {
    let busy = Arc::new(AtomicBool::new(false));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let enter = {
        let (busy, overlaps, calls) = (busy.clone(), overlaps.clone(), calls.clone());
        move || {
            if busy.swap(true, Ordering::SeqCst) {
                overlaps.fetch_add(1, Ordering::SeqCst);
            }
            calls.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_micros(300));
            busy.store(false, Ordering::SeqCst);
        }
    };
    let (htx, mut hrx) = mpsc::unbounded_channel::<Handle>();
    let (ctx, mut crx) = mpsc::unbounded_channel::<()>();
    let (e1, e2, e3) = (enter.clone(), enter.clone(), enter.clone());
    let options = Options::new()
        .on_open(move |h| {
            e1();
            let _ = htx.send(h.clone());
        })
        .on_message(move |_, _| e2())
        .on_close(move |_, _| {
            e3();
            let _ = ctx.send(());
        });
    let addr = support::serve_compat(options).await;
    let mut ws = ws_connect(addr, "/").await;
    let h = tokio::time::timeout(Duration::from_secs(10), hrx.recv()).await.unwrap().unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let h = h.clone();
            let enter = enter.clone();
            std::thread::spawn(move || {
                for _ in 0..100 {
                    let e = enter.clone();
                    assert!(h.send("x", SendOptions::new().on_success(e)).unwrap());
                }
            })
        })
        .collect();
    for i in 0..100 {
        ws.send(WsMessage::text(format!("m{i}"))).await.unwrap();
    }
    for t in threads {
        t.join().unwrap();
    }
    let mut got = 0;
    while got < 400 {
        match next_msg(&mut ws).await {
            Some(WsMessage::Text(_)) => got += 1,
            other => panic!("{other:?}"),
        }
    }
    ws.close(None).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), crx.recv()).await.unwrap().unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1 + 100 + 400 + 1);
    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "callbacks ran at the same time");
}

// ---- sending and closing from within callbacks ----

#[tokio::test]
async fn sends_and_closes_from_within_every_callback() {
    let (tx, mut rx) = evs();
    let (t1, t2) = (tx.clone(), tx.clone());
    let options = recording(&tx)
        .on_open(move |h| {
            let _ = t1.send(Ev::Open(h.kind()));
            // A send whose on_error sends, and whose on_success would.
            let h2 = h.clone();
            let t = t1.clone();
            let recover = SendOptions::new().on_error(move |_| {
                note(&t, format!("in on_error: {:?}", h2.send("recovered", SendOptions::new())));
            });
            assert!(h.send(Message::file("/no/such/file"), recover).unwrap());
            let h3 = h.clone();
            let t = t1.clone();
            let chain = SendOptions::new().on_success(move || {
                note(&t, format!("in on_success: {:?}", h3.send("chained", SendOptions::new())));
            });
            assert!(h.send("first", chain).unwrap());
        })
        .on_message(move |h, m| {
            let _ = t2.send(Ev::Msg(m));
            // Reply and close from on_message.
            assert!(h.send("bye", tracked(&t2, "bye").close(true)).unwrap());
        });
    let addr = support::serve_compat(options).await;
    let mut ws = ws_connect(addr, "/").await;
    expect_cb!(&mut rx, Ev::Open(_));
    expect_cb!(&mut rx, Ev::Note(n) if n == "in on_error: Ok(true)");
    expect_cb!(&mut rx, Ev::Note(n) if n == "in on_success: Ok(true)");
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("first")));
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("recovered")));
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("chained")));
    ws.send(WsMessage::text("hi")).await.unwrap();
    let (data, close) = ws_until_close(&mut ws).await;
    assert_eq!(data, [WsMessage::text("bye")]);
    assert_eq!(close.0, 1000);
    expect_cb!(&mut rx, Ev::Msg(Incoming::Text(t)) if t == "hi");
    expect_cb!(&mut rx, Ev::Ok(t) if t == "bye");
    expect_close(&mut rx).await;
    quiet(&mut rx, 200).await;
}

// ---- spec: on-message "Called for each message from the client": a fragmented message is
// one message ----

#[tokio::test]
async fn a_fragmented_client_message_is_one_on_message() {
    let (tx, mut rx) = evs();
    let addr = support::serve_compat(recording(&tx)).await;
    let mut raw = support::RawWs::connect(addr).await;
    expect_cb!(&mut rx, Ev::Open(_));
    raw.frame(0x01, b"ab").await; // text, not FIN
    raw.frame(0x89, b"p").await; // a ping between fragments
    raw.frame(0x80, "cé".as_bytes()).await; // continuation, FIN
    raw.frame(0x02, &[1]).await; // binary, not FIN
    raw.frame(0x80, &[2]).await;
    expect_cb!(&mut rx, Ev::Msg(Incoming::Text(t)) if t == "abcé");
    expect_cb!(&mut rx, Ev::Msg(Incoming::Binary(b)) if b[..] == [1, 2]);
    raw.frame(0x88, &1000u16.to_be_bytes()).await;
    expect_close(&mut rx).await;
}

// ---- HTTP/2: HTTP streams through compat ----

#[tokio::test]
async fn h2_http_stream_chunks_timeout_ends_complete_and_head_map_sets_status() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).timeout(Duration::from_millis(600)).on_open(move |h| {
        let _ = t.send(Ev::Open(h.kind()));
        match h.originating_request().uri.path() {
            "/head" => {
                let head = Message::response(
                    StatusCode::NON_AUTHORITATIVE_INFORMATION,
                    HeaderMap::new(),
                    "body",
                );
                assert!(h.send(head, tracked(&t, "head")).unwrap());
            }
            _ => {
                let h = h.clone();
                tokio::spawn(async move {
                    while h.send("tick;", SendOptions::new()).unwrap() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                });
            }
        }
    });
    let addr = support::serve_compat(options).await;
    let mut sender = h2_client(addr).await;

    let start = Instant::now();
    let (parts, body) = h2_get(&mut sender, get(addr, "/ticks")).await;
    assert_eq!(parts.status, StatusCode::OK);
    let body = body.expect("the timeout ends an h2 stream normally (END_STREAM, no reset)");
    assert!(start.elapsed() >= Duration::from_millis(550), "{:?}", start.elapsed());
    assert!(String::from_utf8_lossy(&body).matches("tick;").count() >= 3, "{body:?}");
    expect_cb!(&mut rx, Ev::Open(Kind::HttpStream));
    assert_eq!(expect_close(&mut rx).await, CloseInfo::http());

    let request = Request::head(format!("http://{addr}/head"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let (parts, body) = h2_get(&mut sender, request).await;
    assert_eq!(parts.status, StatusCode::NON_AUTHORITATIVE_INFORMATION);
    assert!(body.unwrap().is_empty());
    expect_cb!(&mut rx, Ev::Open(Kind::HttpStream));
    expect_cb!(&mut rx, Ev::Ok(t) if t == "head");
    expect_close(&mut rx).await;
}

// ---- HTTP/2: WebSockets (RFC 8441) through compat ----

#[tokio::test]
async fn h2_websocket_callbacks_codes_and_originating_request() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx)
        .on_open(move |h| {
            let _ = t.send(Ev::Open(h.kind()));
            let r = h.originating_request();
            note(&t, format!("{} {} {:?}", r.method, r.uri.path(), r.version));
            assert!(h.send("welcome", SendOptions::new()).unwrap());
        })
        .on_message(|h, m| {
            let _ = h.send(m, SendOptions::new());
        });
    let addr = support::serve_compat_with(options, |r| {
        r.headers_mut().insert("x-handler", HeaderValue::from_static("h2"));
    })
    .await;
    let mut sender = h2_client(addr).await;
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{addr}/room"))
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::new())
        .unwrap();
    request.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-handler"], "h2");
    let io = TokioIo::new(hyper::upgrade::on(response).await.unwrap());
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Client, None).await;
    expect_cb!(&mut rx, Ev::Open(Kind::WebSocket));
    expect_cb!(&mut rx, Ev::Note(n) if n == "CONNECT /room HTTP/2.0");
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("welcome")));
    ws.send(WsMessage::binary(vec![9u8, 8])).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::binary(vec![9u8, 8])));
    ws.close(Some(CloseFrame { code: 4000u16.into(), reason: "done".into() })).await.unwrap();
    let info = expect_close(&mut rx).await;
    assert_eq!((info.code, info.reason.as_deref()), (Some(4000), Some("done")));

    // Dropped: the HTTP/2 stream is reset → 1006.
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{addr}/room"))
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::new())
        .unwrap();
    request.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
    let response = sender.send_request(request).await.unwrap();
    let io = TokioIo::new(hyper::upgrade::on(response).await.unwrap());
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Client, None).await;
    expect_cb!(&mut rx, Ev::Open(Kind::WebSocket));
    expect_cb!(&mut rx, Ev::Note(_));
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("welcome")));
    drop(ws);
    drop(sender);
    let info = expect_close(&mut rx).await;
    assert_eq!((info.code, info.reason.as_deref()), (Some(1006), Some("")));
}

// ---- notes: "on-close 'exactly once' must hold under races (many channels closing at once,
// close racing a peer close)" ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_close_once_when_close_races_a_peer_close_on_many_channels() {
    const N: usize = 40;
    let closes = Arc::new(Mutex::new(Vec::<(usize, Option<u16>)>::new()));
    let (htx, mut hrx) = mpsc::unbounded_channel::<Handle>();
    let c = closes.clone();
    let options = Options::new()
        .on_open(move |h| {
            let _ = htx.send(h.clone());
        })
        .on_close(move |h, info| {
            let id: usize = h.originating_request().uri.path()[1..].parse().unwrap();
            c.lock().unwrap().push((id, info.code));
        });
    let addr = support::serve_compat(options).await;
    let mut clients: Vec<WsClient> = Vec::new();
    let mut handles = Vec::new();
    for i in 0..N {
        clients.push(ws_connect(addr, &format!("/{i}")).await);
        handles.push(
            tokio::time::timeout(Duration::from_secs(10), hrx.recv()).await.unwrap().unwrap(),
        );
    }
    let barrier = Arc::new(std::sync::Barrier::new(N + 1));
    let threads: Vec<_> = handles
        .into_iter()
        .map(|h| {
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                h.close_with(4002, "server");
            })
        })
        .collect();
    let peer_closes = clients
        .iter_mut()
        .map(|ws| ws.close(Some(CloseFrame { code: 4003u16.into(), reason: "client".into() })));
    barrier.wait();
    let _ = futures::future::join_all(peer_closes).await;
    for t in threads {
        t.join().unwrap();
    }
    let drain = clients.iter_mut().map(|ws| async move {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    });
    futures::future::join_all(drain).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let closes = closes.lock().unwrap().clone();
    let mut per = vec![0; N];
    for (id, code) in &closes {
        per[*id] += 1;
        assert!(matches!(code, Some(4002 | 4003)), "{closes:?}");
    }
    assert!(per.iter().all(|&n| n == 1), "on_close calls per channel: {per:?}");
}

// ---- spec: HTTP stream :timeout "once opened ... closed after :timeout elapses": with no send
// at all, the handler's status and headers still go out ----

#[tokio::test]
async fn an_http_stream_timing_out_before_any_send_answers_with_the_handlers_head() {
    let (tx, mut rx) = evs();
    let options = recording(&tx).timeout(Duration::from_millis(300));
    let addr = support::serve_compat_with(options, |r| {
        *r.status_mut() = StatusCode::ACCEPTED;
        r.headers_mut().insert("x-handler", HeaderValue::from_static("kept"));
    })
    .await;
    let start = Instant::now();
    let response = http1_get(addr, get(addr, "/")).await;
    assert!(start.elapsed() >= Duration::from_millis(250), "{:?}", start.elapsed());
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.headers()["x-handler"], "kept");
    assert!(response.body().is_empty());
    expect_cb!(&mut rx, Ev::Open(Kind::HttpStream));
    assert_eq!(expect_close(&mut rx).await, CloseInfo::http());
    quiet(&mut rx, 200).await;
}

// ---- spec: the :timeout of an HTTP stream counts from open, not from the first send ----

#[tokio::test]
async fn an_http_stream_timeout_counts_from_open_not_from_the_first_send() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).timeout(Duration::from_millis(800)).on_open(move |h| {
        let _ = t.send(Ev::Open(h.kind()));
        let h = h.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let head = Message::response(StatusCode::CREATED, HeaderMap::new(), "late head;");
            assert!(h.send(head, SendOptions::new()).unwrap());
            while h.send("tick;", SendOptions::new()).unwrap() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    });
    let addr = support::serve_compat(options).await;
    let start = Instant::now();
    let response = http1_get(addr, get(addr, "/")).await;
    let elapsed = start.elapsed();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(response.body().starts_with(b"late head;"));
    assert!(
        elapsed >= Duration::from_millis(750) && elapsed < Duration::from_millis(1100),
        "{elapsed:?}"
    );
    expect_cb!(&mut rx, Ev::Open(_));
    expect_close(&mut rx).await;
}

// ---- ResponseFuture docs: an HTTP stream's response "dropping it before then closes the
// channel" (a handler answering with a response of its own): on_close once, queued sends fail ----

#[tokio::test]
async fn an_http_streams_dropped_response_future_closes_the_channel_once() {
    use hyper_util::rt::TokioExecutor;
    let (tx, mut rx) = evs();
    let options = recording(&tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let t = tx.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let options = options.clone();
            let t = t.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let response = webchan::compat::as_channel(request, options.clone());
                        let h = response.handle().unwrap().clone();
                        assert!(h.send("never", tracked(&t, "early")).unwrap());
                        drop(response);
                        let mut forbidden = http::Response::new(webchan::Body::empty());
                        *forbidden.status_mut() = StatusCode::FORBIDDEN;
                        async move { Ok::<_, std::convert::Infallible>(forbidden) }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    let response = http1_get(addr, get(addr, "/")).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let mut seen = Vec::new();
    loop {
        let e = ev(&mut rx).await;
        let done = matches!(e, Ev::Close { .. });
        seen.push(e);
        if done {
            break;
        }
    }
    quiet(&mut rx, 300).await;
    assert!(
        seen.iter().any(|e| matches!(e, Ev::SendErr(t, Error::Closed) if t == "early")),
        "{seen:?}"
    );
    assert!(
        matches!(seen.last(), Some(Ev::Close { info, open: false, send: Some(false) }) if *info == CloseInfo::http()),
        "{seen:?}"
    );
}

// ---- close_with(1005): a close frame without a code; on_close says what went out ----

#[tokio::test]
async fn close_with_1005_sends_no_code_and_on_close_reports_1005() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let _ = t.send(Ev::Handle(h.clone()));
    });
    let addr = support::serve_compat(options).await;
    let mut raw = support::RawWs::connect(addr).await;
    let h = expect_cb!(&mut rx, Ev::Handle(h) => h);
    assert!(h.close_with(1005, "dropped reason"));
    let wire = raw.read_close().await.unwrap();
    raw.frame(0x88, &[]).await;
    let info = expect_close(&mut rx).await;
    assert_eq!(wire, (1005, String::new()));
    assert_eq!((info.code, info.reason.as_deref()), (Some(1005), Some("")));
}

// ---- compat docs: "A WebSocket's resolves at once to the `101`; a status other than 101 set
// here refuses the upgrade" — over HTTP/2 (RFC 8441) the answer is 200 ----

#[tokio::test]
async fn a_websocket_over_h2_answers_200_not_101() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let addr = support::serve_compat_with(recording(&tx), move |r| {
        let version = r.handle().unwrap().originating_request().version;
        note(&t, format!("{version:?} {}", r.status_mut().as_u16()));
    })
    .await;
    let mut ws = ws_connect(addr, "/").await;
    expect_cb!(&mut rx, Ev::Note(n) if n == "HTTP/1.1 101");
    expect_cb!(&mut rx, Ev::Open(_));
    ws.close(None).await.unwrap();
    expect_close(&mut rx).await;

    let mut sender = h2_client(addr).await;
    let _io = support::h2_websocket(&mut sender, addr, "/").await; // asserts the 200
    expect_cb!(&mut rx, Ev::Note(n) if n == "HTTP/2.0 200");
    expect_cb!(&mut rx, Ev::Open(_));
}

// ---- Handle::close: "starts a graceful close after everything already sent" — a sequence
// that never ends holds the close back for good (as its docs say since stop 29) ----

#[tokio::test]
async fn close_waits_behind_an_unfinished_sequence() {
    let (tx, mut rx) = evs();
    let feeds = Arc::new(Mutex::new(Vec::new()));
    let f = feeds.clone();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let (feed, items) = futures::channel::mpsc::unbounded::<Message>();
        feed.unbounded_send("tick".into()).unwrap();
        f.lock().unwrap().push(feed);
        assert!(h.send(Message::stream(items), SendOptions::new()).unwrap());
        note(&t, format!("close {}", h.close()));
        note(&t, format!("open {}", h.is_open()));
    });
    let addr = support::serve_compat(options).await;
    let mut ws = ws_connect(addr, "/").await;
    expect_cb!(&mut rx, Ev::Note(n) if n == "close true");
    expect_cb!(&mut rx, Ev::Note(n) if n == "open false");
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("tick")));
    // No close frame and no on_close for 1 s: the feed is still open.
    let r = tokio::time::timeout(Duration::from_secs(1), next_msg(&mut ws)).await;
    assert!(r.is_err(), "{r:?}");
    quiet(&mut rx, 0).await;
    drop(feeds.lock().unwrap().pop());
    let (_, close) = ws_until_close(&mut ws).await;
    assert_eq!(close.0, 1000);
    expect_close(&mut rx).await;
}

// ---- several Set-Cookie headers from the handler all reach the 101 ----

#[tokio::test]
async fn every_set_cookie_from_the_handler_reaches_the_101() {
    let (tx, mut rx) = evs();
    let addr = support::serve_compat_with(recording(&tx), |r| {
        r.headers_mut().append("set-cookie", HeaderValue::from_static("a=1"));
        r.headers_mut().append("set-cookie", HeaderValue::from_static("b=2"));
    })
    .await;
    let (mut ws, response) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/")).await.unwrap();
    let cookies: Vec<_> = response.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    expect_cb!(&mut rx, Ev::Open(_));
    ws.close(None).await.unwrap();
    expect_close(&mut rx).await;
}

// ---- docs: a send made on `ResponseFuture::handle()` before on_open may be on the wire
// before on_open runs (`Handle::is_open`, `Options::on_open`; before stop 29 both said such
// sends went out after it) ----

#[tokio::test]
async fn a_send_made_before_on_open_is_on_the_wire_before_on_open_runs() {
    let (tx, mut rx) = evs();
    let client: Arc<Mutex<Option<std::net::TcpStream>>> = Arc::default();
    let c = client.clone();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        // The runtime has one thread: while this blocks, nothing else is written.
        let mut guard = c.lock().unwrap();
        let Some(tcp) = guard.as_mut() else { return };
        tcp.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut buf = [0u8; 1024];
        let n = tcp.peek(&mut buf).unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        note(&t, format!("{:?} at on_open: {}", h.kind(), text.contains("early")));
    });
    let addr = support::serve_compat_with(options, |r| {
        let h = r.handle().unwrap();
        assert!(h.is_open() || h.kind() == Kind::WebSocket);
        assert!(h.send("early", SendOptions::new()).unwrap());
    })
    .await;
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    use std::io::Write;
    tcp.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).unwrap();
    *client.lock().unwrap() = Some(tcp);
    expect_cb!(&mut rx, Ev::Note(n) if n == "HttpStream at on_open: true");
}

// ---- notes: idle timeout: "start the closing handshake with one documented code, and report
// that same code to on-close" — also when the client never answers our close frame; the same
// for a close(), CloseInfo: "the server closed: 1000" ----

#[tokio::test]
async fn a_close_the_client_never_answers_reports_the_code_that_was_sent() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx)
        .config(webchan::Config::default().close_timeout(Duration::from_millis(400)))
        .on_open(move |h| {
            let _ = t.send(Ev::Open(h.kind()));
            if h.originating_request().uri.path() == "/close" {
                h.close_with(4005, "server says bye");
            }
        });
    let options = options.timeout(Duration::from_millis(300));
    let addr = support::serve_compat(options).await;

    let mut raw = support::RawWs::connect_path(addr, "/idle").await;
    expect_cb!(&mut rx, Ev::Open(_));
    assert_eq!(raw.read_close().await, Some((1000, "idle timeout".to_owned())));
    let info = expect_close(&mut rx).await;
    assert_eq!((info.code, info.reason.as_deref()), (Some(1000), Some("idle timeout")));

    let mut raw = support::RawWs::connect_path(addr, "/close").await;
    expect_cb!(&mut rx, Ev::Open(_));
    assert_eq!(raw.read_close().await, Some((4005, "server says bye".to_owned())));
    let info = expect_close(&mut rx).await;
    assert_eq!((info.code, info.reason.as_deref()), (Some(4005), Some("server says bye")));
    drop(raw);
}

// ---- spec ":on-open - called when the channel is available for sending" (Options::on_open:
// "called once, when the channel is available for sending"; a WebSocket whose upgrade does not
// complete "never opens"): an HTTP stream whose ResponseFuture the handler dropped (answering
// 403 itself) is closed before it could send anything — on_open must not run on it (before
// stop 29 it did, its send answering `Ok(false)`) ----

#[tokio::test]
async fn on_open_is_not_called_for_an_http_stream_whose_response_was_dropped() {
    use hyper_util::rt::TokioExecutor;
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let sent = h.send("hello", SendOptions::new());
        note(&t, format!("on_open: is_open {}, send {sent:?}", h.is_open()));
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let options = options.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        // An auth check fails after the channel was made: the handler
                        // answers 403 itself.
                        drop(webchan::compat::as_channel(request, options.clone()));
                        let mut forbidden = http::Response::new(webchan::Body::empty());
                        *forbidden.status_mut() = StatusCode::FORBIDDEN;
                        async move { Ok::<_, std::convert::Infallible>(forbidden) }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    let response = http1_get(addr, get(addr, "/")).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let mut seen = Vec::new();
    loop {
        let e = ev(&mut rx).await;
        let done = matches!(e, Ev::Close { .. });
        seen.push(format!("{e:?}"));
        if done {
            break;
        }
    }
    assert!(
        !seen.iter().any(|e| e.starts_with("Note(\"on_open")),
        "on_open ran on a channel that was never available for sending: {seen:?}"
    );
}
