//! The callback API of `immutant.web.async` (`webchan::compat`): one test per sentence of the
//! spec, named after it, over real sockets on 127.0.0.1 with real clients, for both channel
//! kinds where the sentence applies; then panics, failing callbacks, threads and limits.
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::SinkExt;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming as HyperIncoming;
use hyper_util::rt::TokioIo;
use support::callbacks::{ev, evs, expect_cb, expect_close, note, quiet, recording, tracked, Ev};
use support::{
    get, http1_get, next_msg, raw_http, send_text, ws_connect, ws_until_close, WsClient, WsMessage,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use webchan::compat::{self, Handle, Options, ResponseFuture, SendOptions};
use webchan::{CloseInfo, Config, Error, Incoming, Kind, Message};

// ---- harness: tests/support/callbacks.rs ----

/// Panics (a callback that returns `()` and fails).
fn fail(message: &str) {
    panic!("{message}")
}

/// A server on 127.0.0.1:0 (HTTP/1.1 and HTTP/2, with upgrades) whose handler is
/// `compat::as_channel(request, options)`.
async fn serve(options: Options) -> SocketAddr {
    support::serve_compat(options).await
}

/// [`serve`], letting `prepare` change the response before it is awaited.
async fn serve_with<P>(options: Options, prepare: P) -> SocketAddr
where
    P: Fn(&mut ResponseFuture) + Send + Sync + 'static,
{
    support::serve_compat_with(options, prepare).await
}

fn text(s: &str) -> WsMessage {
    WsMessage::text(s)
}

fn binary(b: &[u8]) -> WsMessage {
    WsMessage::binary(b.to_vec())
}

/// Reads the server's close frame (the next message); returns its code and reason, after the
/// client's answer went out and the server closed the connection.
async fn ws_close_frame(ws: &mut WsClient) -> (u16, String) {
    let (data, close) = ws_until_close(ws).await;
    assert!(data.is_empty(), "expected a close frame, got {data:?}");
    close
}

/// A request for `/` over raw TCP (see [`support::raw_chunks`]).
async fn raw_get(addr: SocketAddr, method: &str, extra: &str) -> (String, Vec<Vec<u8>>) {
    support::raw_chunks(addr, method, "/", extra).await
}

/// A WebSocket handshake over raw TCP, for frames a client library never sends.
async fn raw_ws(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(tcp.read(&mut byte).await.unwrap(), 1, "server closed during handshake");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    tcp
}

/// Writes one masked client frame.
async fn raw_frame(tcp: &mut TcpStream, first: u8, payload: &[u8]) {
    assert!(payload.len() < 126);
    let mask = [1u8, 2, 3, 4];
    let mut out = vec![first, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    let _ = tcp.write_all(&out).await;
}

/// An HTTP/1.1 request with hyper's client; gives the head and the body to read as it comes.
async fn http_stream(addr: SocketAddr, path: &str) -> Response<HyperIncoming> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let request = Request::get(format!("http://{addr}{path}"))
        .header("host", addr.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .expect("no response head within 10 s")
        .unwrap()
}

/// The next data frame of a body; `None` at its end.
async fn next_data(body: &mut HyperIncoming) -> Option<Vec<u8>> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("no body frame within 10 s")?
            .expect("body error");
        if let Ok(data) = frame.into_data() {
            return Some(data.to_vec());
        }
    }
}

fn temp_file(name: &str, content: &[u8]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("webchan-compat-{}-{name}", std::process::id()));
    std::fs::write(&path, content).unwrap();
    path
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// The Message of a sequence whose items the test feeds, and the feed.
fn fed_stream() -> (Message, futures::channel::mpsc::UnboundedSender<Message>) {
    let (feed, items) = futures::channel::mpsc::unbounded();
    (Message::stream(items), feed)
}

// ---- as-channel ----

/// "Converts the current ring request in to an asynchronous channel."
#[tokio::test]
async fn as_channel_converts_the_request_into_an_asynchronous_channel() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let _ = t.send(Ev::Open(h.kind()));
        note(&t, h.originating_request().uri.path());
        assert!(h.send("from the channel", SendOptions::new().close(true)).unwrap());
    });
    let addr = serve(options).await;

    let mut ws = ws_connect(addr, "/ws-path").await;
    expect_cb!(&mut rx, Ev::Open(Kind::WebSocket));
    expect_cb!(&mut rx, Ev::Note(p) if p == "/ws-path");
    assert_eq!(next_msg(&mut ws).await, Some(text("from the channel")));
    assert_eq!(ws_close_frame(&mut ws).await.0, 1000);
    expect_close(&mut rx).await;

    let response = http1_get(addr, get(addr, "/http-path")).await;
    expect_cb!(&mut rx, Ev::Open(Kind::HttpStream));
    expect_cb!(&mut rx, Ev::Note(p) if p == "/http-path");
    assert_eq!(&response.body()[..], b"from the channel");
    expect_close(&mut rx).await;
}

/// "The type of channel created depends on the request - if the request is a Websocket upgrade
/// request (the :websocket? key is true), a Websocket channel will be created. Otherwise, an
/// HTTP stream channel is created."
#[tokio::test]
async fn websocket_upgrade_request_creates_websocket_channel_otherwise_http_stream() {
    let (tx, mut rx) = evs();
    let options = recording(&tx).on_open({
        let tx = tx.clone();
        move |h| {
            let _ = tx.send(Ev::Open(h.kind()));
            if h.kind() == Kind::HttpStream {
                let _ = h.send("stream", SendOptions::new().close(true));
            }
        }
    });
    let addr = serve(options).await;

    let mut ws = ws_connect(addr, "/").await;
    expect_cb!(&mut rx, Ev::Open(Kind::WebSocket));
    ws.close(None).await.unwrap();
    expect_close(&mut rx).await;

    assert_eq!(&http1_get(addr, get(addr, "/")).await.body()[..], b"stream");
    expect_cb!(&mut rx, Ev::Open(Kind::HttpStream));
    expect_close(&mut rx).await;

    // An upgrade to something else is not a WebSocket upgrade.
    let (head, body) = raw_get(addr, "GET", "Upgrade: h2c\r\n").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body.concat(), b"stream");
    expect_cb!(&mut rx, Ev::Open(Kind::HttpStream));
    expect_close(&mut rx).await;
}

/// A request that tries to upgrade but gets the handshake wrong makes no channel: a 4xx.
#[tokio::test]
async fn malformed_websocket_upgrade_gets_a_4xx_and_no_channel() {
    let (tx, mut rx) = evs();
    let addr = serve(recording(&tx)).await;
    let extra = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n";
    let (head, _) = raw_get(addr, "GET", extra).await;
    assert!(head.starts_with("http/1.1 426"), "{head}");
    assert!(head.contains("sec-websocket-version: 13"), "{head}");
    let extra = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n";
    let (head, _) = raw_get(addr, "GET", extra).await;
    assert!(head.starts_with("http/1.1 400"), "{head}");
    quiet(&mut rx, 200).await;
}

/// "You interact with both channel types using the other functions in this namespace, and
/// through callbacks in options."
#[tokio::test]
async fn both_channel_types_use_the_same_functions_and_callbacks() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    // One set of callbacks, no branch on the kind.
    let options = recording(&tx).on_open(move |h| {
        let _ = t.send(Ev::Open(h.kind()));
        assert!(h.is_open());
        assert!(h.send("one,", SendOptions::new()).unwrap());
        assert!(h.send("two", tracked(&t, "two")).unwrap());
        assert!(h.close());
    });
    let addr = serve(options).await;

    let mut ws = ws_connect(addr, "/").await;
    expect_cb!(&mut rx, Ev::Open(Kind::WebSocket));
    assert_eq!(next_msg(&mut ws).await, Some(text("one,")));
    assert_eq!(next_msg(&mut ws).await, Some(text("two")));
    assert_eq!(ws_close_frame(&mut ws).await.0, 1000);
    expect_cb!(&mut rx, Ev::Ok(t) if t == "two");
    expect_close(&mut rx).await;

    assert_eq!(&http1_get(addr, get(addr, "/")).await.body()[..], b"one,two");
    expect_cb!(&mut rx, Ev::Open(Kind::HttpStream));
    expect_cb!(&mut rx, Ev::Ok(t) if t == "two");
    expect_close(&mut rx).await;
}

// ---- :on-open ----

/// ":on-open - (fn [ch] ...) - called when the channel is available for sending. Will only be
/// invoked once."
#[tokio::test]
async fn on_open_called_once_when_the_channel_is_available_for_sending() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let _ = t.send(Ev::Open(h.kind()));
        if h.kind() == Kind::WebSocket {
            assert!(h.send("welcome", SendOptions::new()).unwrap());
        } else {
            // Before any byte is written: a response head still sets the status.
            let head = Message::response(StatusCode::ACCEPTED, HeaderMap::new(), "opened");
            assert!(h.send(head, SendOptions::new().close(true)).unwrap());
        }
    });
    let addr = serve(options).await;

    let mut ws = ws_connect(addr, "/").await;
    send_text(&mut ws, "right away").await;
    // No message before on_open.
    expect_cb!(&mut rx, Ev::Open(Kind::WebSocket));
    expect_cb!(&mut rx, Ev::Msg(Incoming::Text(t)) if t == "right away");
    assert_eq!(next_msg(&mut ws).await, Some(text("welcome")));
    send_text(&mut ws, "again").await;
    expect_cb!(&mut rx, Ev::Msg(Incoming::Text(t)) if t == "again");
    ws.close(None).await.unwrap();
    expect_close(&mut rx).await;

    let response = http1_get(addr, get(addr, "/")).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(&response.body()[..], b"opened");
    expect_cb!(&mut rx, Ev::Open(Kind::HttpStream));
    expect_close(&mut rx).await;
    // Once per channel: nothing more.
    quiet(&mut rx, 200).await;
}

/// A send made on the handle before the channel opened ([`ResponseFuture::handle`]) has its
/// `on_success` after `on_open` ("`on_open` first, once"). Before 2026-12-05 the runner looked
/// at the sends' outcomes before the events: on a WebSocket the frame went out in the poll that
/// opened it, on an HTTP stream as soon as hyper wrote the response, and `on_success` came
/// first (every time on one thread; 12 of 20 WebSockets and 20 of 20 streams on two).
async fn early_send_round(rounds: usize) {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let addr = serve_with(recording(&tx), move |response| {
        let h = response.handle().expect("a channel");
        let options = tracked(&t, "early").close(h.kind() == Kind::HttpStream);
        assert!(h.send("early", options).unwrap());
    })
    .await;
    for _ in 0..rounds {
        let mut ws = ws_connect(addr, "/").await;
        assert_eq!(next_msg(&mut ws).await, Some(text("early")));
        expect_cb!(&mut rx, Ev::Open(Kind::WebSocket));
        expect_cb!(&mut rx, Ev::Ok(tag) if tag == "early");
        ws.close(None).await.unwrap();
        expect_close(&mut rx).await;

        let response = http1_get(addr, get(addr, "/")).await;
        assert_eq!(&response.body()[..], b"early");
        expect_cb!(&mut rx, Ev::Open(Kind::HttpStream));
        expect_cb!(&mut rx, Ev::Ok(tag) if tag == "early");
        expect_close(&mut rx).await;
    }
}

#[tokio::test]
async fn on_open_comes_before_the_outcome_of_a_send_made_before_it() {
    early_send_round(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_open_comes_before_the_outcome_of_a_send_made_before_it_on_two_threads() {
    early_send_round(20).await;
}

// ---- :on-error ----

/// ":on-error - (fn [ch throwable] ...) - Called for any error that occurs in relation to the
/// channel."
#[tokio::test]
async fn on_error_called_for_any_error_in_relation_to_the_channel() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let _ = t.send(Ev::Open(h.kind()));
        if h.kind() == Kind::HttpStream {
            // A send error with no on_error of its own.
            assert!(h.send(Message::file("/no/such/file"), SendOptions::new()).unwrap());
            assert!(h.send("still usable", SendOptions::new().close(true)).unwrap());
        }
    });
    let addr = serve(options).await;

    // WebSocket: the peer breaks the protocol (RSV1 set, no extension).
    let mut tcp = raw_ws(addr).await;
    expect_cb!(&mut rx, Ev::Open(Kind::WebSocket));
    raw_frame(&mut tcp, 0x80 | 0x40 | 0x1, b"x").await;
    expect_cb!(&mut rx, Ev::Err(Error::Protocol(_)));
    assert_eq!(expect_close(&mut rx).await.code, Some(1002));

    // HTTP stream: a send that fails.
    let response = http1_get(addr, get(addr, "/")).await;
    assert_eq!(&response.body()[..], b"still usable");
    expect_cb!(&mut rx, Ev::Open(Kind::HttpStream));
    expect_cb!(&mut rx, Ev::Err(Error::Io(_)));
    expect_close(&mut rx).await;
}

/// The upgrade of a WebSocket that does not complete is an error of the channel too.
#[tokio::test]
async fn on_error_called_when_the_upgrade_is_refused() {
    let (tx, mut rx) = evs();
    let addr = serve_with(recording(&tx), |response| {
        *response.status_mut() = StatusCode::FORBIDDEN;
    })
    .await;
    let err = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await.unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    expect_cb!(&mut rx, Ev::Err(Error::Upgrade(_)));
    assert_eq!(expect_close(&mut rx).await.code, Some(1006));
    quiet(&mut rx, 100).await;
}

/// "If the error requires the channel to be closed, :on-close will also be invoked."
#[tokio::test]
async fn on_close_also_invoked_when_the_error_requires_the_channel_to_be_closed() {
    let (tx, mut rx) = evs();
    let options = recording(&tx).config(Config::default().max_message_size(100));
    let addr = serve(options).await;

    let mut ws = ws_connect(addr, "/").await;
    expect_cb!(&mut rx, Ev::Open(_));
    send_text(&mut ws, &"x".repeat(1000)).await;
    expect_cb!(&mut rx, Ev::Err(Error::TooLarge(_)));
    assert_eq!(expect_close(&mut rx).await.code, Some(1009));
    assert_eq!(ws_close_frame(&mut ws).await.0, 1009);

    // An error that does not require a close does not close.
    let mut tcp = raw_ws(addr).await;
    expect_cb!(&mut rx, Ev::Open(_));
    raw_frame(&mut tcp, 0x80 | 0x1, &[0xff, 0xfe]).await; // invalid UTF-8: closes (1007)
    expect_cb!(&mut rx, Ev::Err(Error::InvalidUtf8));
    assert_eq!(expect_close(&mut rx).await.code, Some(1007));
}

/// "To handle send! errors separately, provide it a completion callback."
#[tokio::test]
async fn send_errors_handled_separately_with_a_completion_callback() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let _ = t.send(Ev::Open(h.kind()));
        assert!(h.send(Message::file("/no/such/file"), tracked(&t, "file")).unwrap());
        assert!(h.send("after", SendOptions::new().close(true)).unwrap());
    });
    let addr = serve(options).await;

    let mut ws = ws_connect(addr, "/").await;
    expect_cb!(&mut rx, Ev::Open(_));
    expect_cb!(&mut rx, Ev::SendErr(t, Error::Io(_)) if t == "file");
    assert_eq!(ws_until_close(&mut ws).await, (vec![text("after")], (1000, String::new())));
    // Not also the channel's on_error.
    expect_close(&mut rx).await;

    assert_eq!(&http1_get(addr, get(addr, "/")).await.body()[..], b"after");
    expect_cb!(&mut rx, Ev::Open(_));
    expect_cb!(&mut rx, Ev::SendErr(t, Error::Io(_)) if t == "file");
    expect_close(&mut rx).await;
}

// ---- :on-close ----

/// ":on-close - (fn [ch {:keys [code reason]}] ...) - called for any close, including a call to
/// close, but will only be invoked once."
#[tokio::test]
async fn on_close_called_for_any_close_but_only_once() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let _ = t.send(Ev::Handle(h.clone()));
    });
    let addr = serve(options).await;

    // A call to close (three times, and a closing send after).
    let mut ws = ws_connect(addr, "/").await;
    let h = expect_cb!(&mut rx, Ev::Handle(h) => h);
    assert!(h.close());
    assert!(!h.close());
    assert!(!h.close_with(4000, "again"));
    assert!(matches!(h.send("x", SendOptions::new().close(true)), Ok(false)));
    assert_eq!(ws_close_frame(&mut ws).await.0, 1000);
    assert_eq!(expect_close(&mut rx).await.code, Some(1000));

    // The peer closes.
    let mut ws = ws_connect(addr, "/").await;
    let _h = expect_cb!(&mut rx, Ev::Handle(h) => h);
    ws.close(None).await.unwrap();
    assert_eq!(expect_close(&mut rx).await.code, Some(1005));

    // The connection drops.
    let ws = ws_connect(addr, "/").await;
    let h = expect_cb!(&mut rx, Ev::Handle(h) => h);
    drop(ws);
    assert_eq!(expect_close(&mut rx).await.code, Some(1006));
    assert!(!h.close(), "closing a closed channel");

    // HTTP stream: close (the head waits for it).
    let response = tokio::spawn(http1_get(addr, get(addr, "/")));
    let h = expect_cb!(&mut rx, Ev::Handle(h) => h);
    assert!(h.close());
    assert!(!h.close());
    assert!(expect_close(&mut rx).await.code.is_none());
    assert!(response.await.unwrap().body().is_empty());

    // HTTP stream: the client goes away mid-stream.
    let pending = tokio::spawn(http_stream(addr, "/"));
    let h = expect_cb!(&mut rx, Ev::Handle(h) => h);
    assert!(h.send("first", SendOptions::new()).unwrap());
    let mut response = pending.await.unwrap();
    assert_eq!(next_data(response.body_mut()).await.unwrap(), b"first");
    drop(response);
    assert!(expect_close(&mut rx).await.code.is_none());
    assert!(!h.is_open());
    assert!(matches!(h.send("gone", SendOptions::new()), Ok(false)));

    quiet(&mut rx, 300).await;
}

/// "ch will already be closed by the time this is invoked."
#[tokio::test]
async fn channel_already_closed_when_on_close_is_invoked() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let _ = t.send(Ev::Handle(h.clone()));
        let _ = h.send("bye", SendOptions::new().close(true));
    });
    let addr = serve(options).await;

    let mut ws = ws_connect(addr, "/").await;
    let h = expect_cb!(&mut rx, Ev::Handle(h) => h);
    assert_eq!(ws_until_close(&mut ws).await.0, [text("bye")]);
    // `expect_close` checks is_open() and a send inside on_close.
    expect_close(&mut rx).await;
    assert!(!h.is_open());

    let _ = http1_get(addr, get(addr, "/")).await;
    let h = expect_cb!(&mut rx, Ev::Handle(h) => h);
    expect_close(&mut rx).await;
    assert!(!h.is_open());
}

/// "code and reason will be the numeric closure code and text reason, respectively, if the
/// channel is a WebSocket (see http://tools.ietf.org/html/rfc6455#section-7.4)."
#[tokio::test]
async fn on_close_gets_the_websocket_code_and_reason() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let _ = t.send(Ev::Handle(h.clone()));
    });
    let addr = serve(options).await;

    let mut ws = ws_connect(addr, "/").await;
    let _h = expect_cb!(&mut rx, Ev::Handle(h) => h);
    ws.close(Some(CloseFrame { code: 4000u16.into(), reason: "bye now".into() })).await.unwrap();
    let info = expect_close(&mut rx).await;
    assert_eq!((info.code, info.reason.as_deref()), (Some(4000), Some("bye now")));

    let mut ws = ws_connect(addr, "/").await;
    let h = expect_cb!(&mut rx, Ev::Handle(h) => h);
    assert!(h.close_with(4001, "kicked"));
    assert_eq!(ws_close_frame(&mut ws).await, (4001, "kicked".to_owned()));
    let info = expect_close(&mut rx).await;
    assert_eq!((info.code, info.reason.as_deref()), (Some(4001), Some("kicked")));
}

/// "Both will be nil for HTTP streams."
#[tokio::test]
async fn on_close_code_and_reason_are_none_for_http_streams() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let _ = t.send(Ev::Open(h.kind()));
        let _ = h.send("x", SendOptions::new().close(true));
    });
    let addr = serve(options).await;
    let _ = http1_get(addr, get(addr, "/")).await;
    expect_cb!(&mut rx, Ev::Open(Kind::HttpStream));
    let info = expect_close(&mut rx).await;
    assert_eq!(info, CloseInfo::http());
    assert!(info.code.is_none() && info.reason.is_none());
}

// ---- :on-message ----

/// "If the channel is a Websocket, the following callback is also used: :on-message - (fn [ch
/// message] ...) - Called for each message from the client. message will be a String or
/// byte[]"
#[tokio::test]
async fn on_message_called_for_each_websocket_message_as_string_or_bytes() {
    let (tx, mut rx) = evs();
    let addr = serve(recording(&tx)).await;
    let mut ws = ws_connect(addr, "/").await;
    expect_cb!(&mut rx, Ev::Open(_));
    ws.send(text("héllo")).await.unwrap();
    ws.send(binary(&[0, 1, 2, 255])).await.unwrap();
    ws.send(text("")).await.unwrap();
    expect_cb!(&mut rx, Ev::Msg(Incoming::Text(t)) if t == "héllo");
    expect_cb!(&mut rx, Ev::Msg(Incoming::Binary(b)) if b[..] == [0, 1, 2, 255]);
    expect_cb!(&mut rx, Ev::Msg(Incoming::Text(t)) if t.is_empty());
    ws.close(None).await.unwrap();
    expect_close(&mut rx).await;
}

/// on-message is a WebSocket callback: an HTTP stream's request body is no message.
#[tokio::test]
async fn on_message_not_used_for_http_streams() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let _ = t.send(Ev::Open(h.kind()));
        let _ = h.send("ok", SendOptions::new().close(true));
    });
    let addr = serve(options).await;
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    );
    let out = raw_http(addr, request.as_bytes()).await;
    assert!(out.ends_with(b"\r\n\r\nok"), "{}", String::from_utf8_lossy(&out));
    expect_cb!(&mut rx, Ev::Open(Kind::HttpStream));
    expect_close(&mut rx).await;
}

// ---- :timeout ----

/// "You can also specify a :timeout option, that will cause a Websocket to be closed if idle
/// more than the timeout"
#[tokio::test]
async fn timeout_closes_a_websocket_idle_more_than_the_timeout() {
    let (tx, mut rx) = evs();
    let addr = serve(recording(&tx).timeout(Duration::from_millis(400))).await;
    let mut ws = ws_connect(addr, "/").await;
    expect_cb!(&mut rx, Ev::Open(_));
    // Activity keeps it open past the timeout.
    for i in 0..8 {
        send_text(&mut ws, &i.to_string()).await;
        expect_cb!(&mut rx, Ev::Msg(_));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let idle_since = Instant::now();
    let (code, reason) = ws_close_frame(&mut ws).await;
    assert!(idle_since.elapsed() >= Duration::from_millis(250), "{:?}", idle_since.elapsed());
    assert_eq!((code, reason.as_str()), (1000, "idle timeout"));
    let info = expect_close(&mut rx).await;
    assert_eq!((info.code, info.reason.as_deref()), (Some(1000), Some("idle timeout")));
}

/// "or an HTTP stream to be closed if open more than the timeout. This means that once opened,
/// an HTTP stream will be closed after :timeout elapses, regardless of activity."
#[tokio::test]
async fn timeout_closes_an_http_stream_open_more_than_the_timeout_regardless_of_activity() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).timeout(Duration::from_millis(500)).on_open(move |h| {
        let _ = t.send(Ev::Open(h.kind()));
        let h = h.clone();
        tokio::spawn(async move {
            while h.send("tick\n", SendOptions::new()).unwrap() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    });
    let addr = serve(options).await;
    let start = Instant::now();
    let response = http1_get(addr, get(addr, "/")).await;
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    // A complete response (collected without error), with the ticks sent until then.
    let body = String::from_utf8(response.body().to_vec()).unwrap();
    assert!(body.matches("tick\n").count() >= 3, "{body:?}");
    expect_cb!(&mut rx, Ev::Open(_));
    expect_close(&mut rx).await;
}

/// The same "regardless of activity" when the client stops reading: on_close comes a close
/// timeout after the timeout, with on_error(TimedOut) and the unwritten send's on_error(Closed)
/// before it. Before 2026-12-05 the stream, its connection and what was queued stayed for good.
#[tokio::test]
async fn timeout_closes_an_http_stream_even_when_the_client_stops_reading() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let config = Config::default().close_timeout(Duration::from_millis(500));
    let options =
        recording(&tx).config(config).timeout(Duration::from_millis(500)).on_open(move |h| {
            let _ = t.send(Ev::Open(h.kind()));
            // 8 MiB: more than hyper's buffer and the sockets' buffers hold.
            let _ = h.send(vec![b'x'; 8 << 20], tracked(&t, "8 MiB"));
        });
    let addr = serve(options).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut tcp = socket.connect(addr).await.unwrap();
    tcp.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
    // Read a little (the head is out: the stream is open), then stop reading.
    let mut first = [0u8; 1024];
    let _ = tcp.read(&mut first).await.unwrap();
    expect_cb!(&mut rx, Ev::Open(Kind::HttpStream));
    let mut seen = Vec::new();
    let collect = async {
        loop {
            let e = ev(&mut rx).await;
            let closed = matches!(e, Ev::Close { .. });
            seen.push(e);
            if closed {
                break;
            }
        }
    };
    let closed = tokio::time::timeout(Duration::from_secs(6), collect).await;
    assert!(closed.is_ok(), "timeout 500 ms, the client not reading: no on_close 6 s later");
    assert!(
        matches!(seen.last(), Some(Ev::Close { open: false, send: Some(false), .. })),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|e| matches!(
            e,
            Ev::Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut
        )),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|e| matches!(e, Ev::SendErr(tag, Error::Closed) if tag == "8 MiB")),
        "{seen:?}"
    );
    drop(tcp);
}

/// "It defaults to 0 (no timeout), and is in milliseconds." (Here: a `Duration`.)
#[tokio::test]
async fn timeout_defaults_to_zero_meaning_no_timeout() {
    assert_eq!(Options::new().timeout_duration(), Duration::ZERO);
    assert_eq!(
        Options::new().timeout(Duration::from_millis(1500)).timeout_duration(),
        Duration::from_millis(1500)
    );
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_message(move |h, m| {
        let _ = h.send(m, tracked(&t, "echo"));
    });
    let addr = serve(options).await;
    let mut ws = ws_connect(addr, "/").await;
    expect_cb!(&mut rx, Ev::Open(_));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    quiet(&mut rx, 0).await;
    send_text(&mut ws, "still here").await;
    assert_eq!(next_msg(&mut ws).await, Some(text("still here")));
    expect_cb!(&mut rx, Ev::Ok(_));
}

/// "When the ring handler is called during a WebSocket upgrade request, any changes to the
/// session in the response map are applied, and any headers from the response map are
/// included in the upgrade response." (No sessions here: a `Set-Cookie` header.)
#[tokio::test]
async fn headers_from_the_handler_are_included_in_the_upgrade_response() {
    let (tx, mut rx) = evs();
    let addr = serve_with(recording(&tx), |response| {
        let headers = response.headers_mut();
        headers.insert("set-cookie", HeaderValue::from_static("session=abc; HttpOnly"));
        headers.insert("x-handler", HeaderValue::from_static("yes"));
    })
    .await;
    let (mut ws, response) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()["set-cookie"], "session=abc; HttpOnly");
    assert_eq!(response.headers()["x-handler"], "yes");
    expect_cb!(&mut rx, Ev::Open(Kind::WebSocket));
    ws.close(None).await.unwrap();
    expect_close(&mut rx).await;
}

/// "Returns a ring response map, at least the :body of which must be returned in the response
/// map from the calling ring handler."
#[tokio::test]
async fn as_channel_returns_the_response_the_handler_must_return() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let _ = t.send(Ev::Open(h.kind()));
        if h.kind() == Kind::HttpStream {
            let _ = h.send("stream", SendOptions::new());
            let _ = h.send("ed", SendOptions::new());
            h.close();
        }
    });
    let t = tx.clone();
    let addr = serve_with(options, move |response| {
        assert!(!response.is_rejected());
        let handle = response.handle().expect("a channel was made");
        note(&t, format!("handle {:?}", handle.kind()));
    })
    .await;

    let (mut ws, response) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    expect_cb!(&mut rx, Ev::Note(n) if n == "handle WebSocket");
    expect_cb!(&mut rx, Ev::Open(Kind::WebSocket));
    ws.close(None).await.unwrap();
    expect_close(&mut rx).await;

    let (head, chunks) = raw_get(addr, "GET", "").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert_eq!(chunks.concat(), b"streamed");
    expect_cb!(&mut rx, Ev::Note(n) if n == "handle HttpStream");
    expect_cb!(&mut rx, Ev::Open(Kind::HttpStream));
    expect_close(&mut rx).await;
}

// ---- close ----

/// "Gracefully close the channel."
#[tokio::test]
async fn close_gracefully_closes_the_channel() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let _ = t.send(Ev::Open(h.kind()));
        let _ = h.send("a", SendOptions::new());
        let _ = h.send(Message::seq(vec!["b".into(), "c".into()]), SendOptions::new());
        assert!(h.close());
    });
    let addr = serve(options).await;

    // Everything sent before goes out, then the close frame.
    let mut ws = ws_connect(addr, "/").await;
    for s in ["a", "b", "c"] {
        assert_eq!(next_msg(&mut ws).await, Some(text(s)));
    }
    assert_eq!(ws_close_frame(&mut ws).await, (1000, String::new()));
    expect_cb!(&mut rx, Ev::Open(_));
    expect_close(&mut rx).await;

    // Everything sent before goes out, then the end of the body (`raw_get` checks it).
    let (head, chunks) = raw_get(addr, "GET", "").await;
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert_eq!(chunks.concat(), b"abc");
    expect_cb!(&mut rx, Ev::Open(_));
    expect_close(&mut rx).await;
}

/// "This will trigger the :on-close callback if one is registered. with as-channel."
#[tokio::test]
async fn close_triggers_the_on_close_callback() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let _ = t.send(Ev::Handle(h.clone()));
    });
    let addr = serve(options).await;

    let mut ws = ws_connect(addr, "/").await;
    let h = expect_cb!(&mut rx, Ev::Handle(h) => h);
    quiet(&mut rx, 100).await;
    h.close();
    assert_eq!(ws_close_frame(&mut ws).await.0, 1000);
    assert_eq!(expect_close(&mut rx).await.code, Some(1000));

    let response = tokio::spawn(http1_get(addr, get(addr, "/")));
    let h = expect_cb!(&mut rx, Ev::Handle(h) => h);
    quiet(&mut rx, 100).await;
    h.close();
    let response = response.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.body().is_empty());
    assert!(expect_close(&mut rx).await.code.is_none());

    // Without an on_close the close still works.
    let addr = serve(Options::new().on_open(|h| {
        h.close();
    }))
    .await;
    let mut ws = ws_connect(addr, "/").await;
    assert_eq!(ws_close_frame(&mut ws).await.0, 1000);
}

// ---- open? ----

/// "Is the channel open?"
#[tokio::test]
async fn is_open_tells_whether_the_channel_is_open() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        note(&t, format!("open before close: {}", h.is_open()));
        h.close();
        note(&t, format!("open after close: {}", h.is_open()));
    });
    let t = tx.clone();
    let addr = serve_with(options, move |response| {
        // A WebSocket is not open before its upgrade completed.
        let h = response.handle().unwrap();
        if h.kind() == Kind::WebSocket {
            note(&t, format!("open before upgrade: {}", h.is_open()));
        }
    })
    .await;

    let mut ws = ws_connect(addr, "/").await;
    expect_cb!(&mut rx, Ev::Note(n) if n == "open before upgrade: false");
    expect_cb!(&mut rx, Ev::Note(n) if n == "open before close: true");
    expect_cb!(&mut rx, Ev::Note(n) if n == "open after close: false");
    assert_eq!(ws_close_frame(&mut ws).await.0, 1000);
    expect_close(&mut rx).await; // checks is_open() is false in on_close

    let _ = http1_get(addr, get(addr, "/")).await;
    expect_cb!(&mut rx, Ev::Note(n) if n == "open before close: true");
    expect_cb!(&mut rx, Ev::Note(n) if n == "open after close: false");
    expect_close(&mut rx).await;
}

// ---- originating-request ----

/// "Returns the request map for the request that initiated the channel."
#[tokio::test]
async fn originating_request_returns_the_request_that_initiated_the_channel() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let r = h.originating_request();
        let user = r.headers.get("x-user").map(|v| v.to_str().unwrap().to_owned());
        note(&t, format!("{} {} {}", r.method, r.uri, user.unwrap_or_default()));
        h.close();
    });
    let addr = serve(options).await;

    let mut request = format!("ws://{addr}/chat?room=7").into_client_request().unwrap();
    request.headers_mut().insert("x-user", HeaderValue::from_static("ann"));
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    expect_cb!(&mut rx, Ev::Note(n) if n == "GET /chat?room=7 ann");
    assert_eq!(ws_close_frame(&mut ws).await.0, 1000);
    expect_close(&mut rx).await;

    let request = format!(
        "DELETE /items/3?soft=1 HTTP/1.1\r\nHost: {addr}\r\nX-User: bob\r\nConnection: close\r\n\r\n"
    );
    let _ = raw_http(addr, request.as_bytes()).await;
    expect_cb!(&mut rx, Ev::Note(n) if n == "DELETE /items/3?soft=1 bob");
    expect_close(&mut rx).await;
}

// ---- send! ----

/// "Send a message to the channel, asynchronously."
#[tokio::test]
async fn send_sends_a_message_asynchronously() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let feeds = Arc::new(std::sync::Mutex::new(Vec::new()));
    let f = Arc::clone(&feeds);
    let options = recording(&tx).on_open(move |h| {
        let (message, feed) = fed_stream();
        f.lock().unwrap().push(feed);
        let start = Instant::now();
        // Returns at once, though the message is not there yet.
        assert!(h.send(message, tracked(&t, "later")).unwrap());
        assert!(h.send("after", tracked(&t, "after")).unwrap());
        note(&t, format!("returned in {} ms", start.elapsed().as_millis()));
        assert!(start.elapsed() < Duration::from_millis(100));
    });
    let addr = serve(options).await;

    let mut ws = ws_connect(addr, "/").await;
    expect_cb!(&mut rx, Ev::Note(n) if n.starts_with("returned in"));
    quiet(&mut rx, 200).await;
    let feed = feeds.lock().unwrap().pop().unwrap();
    feed.unbounded_send("fed".into()).unwrap();
    assert_eq!(next_msg(&mut ws).await, Some(text("fed")));
    quiet(&mut rx, 100).await; // the send is not complete until its stream ends
    drop(feed);
    assert_eq!(next_msg(&mut ws).await, Some(text("after")));
    expect_cb!(&mut rx, Ev::Ok(t) if t == "later");
    expect_cb!(&mut rx, Ev::Ok(t) if t == "after");
    ws.close(None).await.unwrap();
    expect_close(&mut rx).await;

    let mut response = tokio::spawn(http_stream(addr, "/"));
    expect_cb!(&mut rx, Ev::Note(n) if n.starts_with("returned in"));
    let feed = loop {
        if let Some(feed) = feeds.lock().unwrap().pop() {
            break feed;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    quiet(&mut rx, 200).await;
    feed.unbounded_send("fed".into()).unwrap();
    let mut response = (&mut response).await.unwrap();
    assert_eq!(next_data(response.body_mut()).await.unwrap(), b"fed");
    drop(feed);
    assert_eq!(next_data(response.body_mut()).await.unwrap(), b"after");
    expect_cb!(&mut rx, Ev::Ok(t) if t == "later");
    expect_cb!(&mut rx, Ev::Ok(t) if t == "after");
}

/// "message can either be a String, File, InputStream, ISeq, byte[], or map."
#[tokio::test]
async fn send_accepts_string_file_input_stream_seq_bytes_or_map() {
    let path = temp_file("kinds", b"FILE");
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let _ = t.send(Ev::Open(h.kind()));
        if h.kind() == Kind::HttpStream {
            let head = Message::response(StatusCode::OK, HeaderMap::new(), "map,");
            assert!(h.send(head, tracked(&t, "map")).unwrap());
        }
        let file = tokio::fs::File::from_std(std::fs::File::open(&path).unwrap());
        let sends: Vec<(&str, Message)> = vec![
            ("str", "str,".into()),
            ("string", String::from("string,").into()),
            ("bytes", vec![b'b', b','].into()),
            ("path", Message::file(&path)),
            ("file", file.into()),
            ("reader", Message::reader(&b"reader,"[..])),
            ("seq", Message::seq(vec!["s1,".into(), b"s2".to_vec().into()])),
        ];
        for (tag, message) in sends {
            assert!(h.send(message, tracked(&t, tag)).unwrap(), "{tag}");
        }
        h.close();
    });
    let addr = serve(options).await;

    let mut ws = ws_connect(addr, "/").await;
    let expected = [
        text("str,"),
        text("string,"),
        binary(b"b,"),
        binary(b"FILE"),
        binary(b"FILE"),
        binary(b"reader,"),
        text("s1,"),
        binary(b"s2"),
    ];
    for m in expected {
        assert_eq!(next_msg(&mut ws).await, Some(m));
    }
    assert_eq!(ws_close_frame(&mut ws).await.0, 1000);
    expect_cb!(&mut rx, Ev::Open(_));
    for tag in ["str", "string", "bytes", "path", "file", "reader", "seq"] {
        expect_cb!(&mut rx, Ev::Ok(t) if t == tag);
    }
    expect_close(&mut rx).await;

    let response = http1_get(addr, get(addr, "/")).await;
    assert_eq!(&response.body()[..], b"map,str,string,b,FILEFILEreader,s1,s2");
    expect_cb!(&mut rx, Ev::Open(_));
    for tag in ["map", "str", "string", "bytes", "path", "file", "reader", "seq"] {
        expect_cb!(&mut rx, Ev::Ok(t) if t == tag);
    }
    expect_close(&mut rx).await;
}

/// "If it is a String, it will be encoded to the character set of the response for HTTP
/// streams, and as UTF-8 for WebSockets."
#[tokio::test]
async fn string_encoded_in_the_response_charset_for_http_and_as_utf8_for_websockets() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let _ = t.send(Ev::Open(h.kind()));
        let _ = h.send("é€", SendOptions::new().close(true));
    });
    let addr = serve_with(options, |response| {
        if response.handle().unwrap().originating_request().uri.path() == "/latin1" {
            response
                .headers_mut()
                .insert("content-type", HeaderValue::from_static("text/plain; charset=ISO-8859-1"));
        }
    })
    .await;

    let (_, body) = raw_get(addr, "GET", "").await;
    assert_eq!(body.concat(), "é€".as_bytes(), "UTF-8 without a charset");
    expect_cb!(&mut rx, Ev::Open(_));
    expect_close(&mut rx).await;

    let request = format!("GET /latin1 HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let out = raw_http(addr, request.as_bytes()).await;
    // é is 0xE9 in ISO-8859-1; € is not in it.
    assert!(out.ends_with(&[0xE9, b'?']), "{out:?}");
    expect_cb!(&mut rx, Ev::Open(_));
    expect_close(&mut rx).await;

    let mut ws = ws_connect(addr, "/latin1").await;
    assert_eq!(ws_until_close(&mut ws).await.0, [text("é€")]);
    expect_cb!(&mut rx, Ev::Open(_));
    expect_close(&mut rx).await;
}

/// "Files and InputStreams will be sent as up to 16k chunks (each chunk being a byte[] message
/// for WebSockets)."
#[tokio::test]
async fn files_and_input_streams_sent_as_up_to_16k_chunks() {
    let file_data = pattern(40_000);
    let reader_data = pattern(20_000);
    let path = temp_file("chunks", &file_data);
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let r = reader_data.clone();
    let options = recording(&tx).on_open(move |h| {
        let _ = t.send(Ev::Open(h.kind()));
        let _ = h.send(Message::file(&path), SendOptions::new());
        let _ = h.send(Message::reader(std::io::Cursor::new(r.clone())), SendOptions::new());
        h.close();
    });
    let addr = serve(options).await;

    let mut ws = ws_connect(addr, "/").await;
    let mut sizes = Vec::new();
    let mut all = Vec::new();
    for message in ws_until_close(&mut ws).await.0 {
        match message {
            WsMessage::Binary(b) => {
                sizes.push(b.len());
                all.extend_from_slice(&b);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(sizes, [16384, 16384, 7232, 16384, 3616]);
    assert_eq!(all, [file_data.clone(), reader_data.clone()].concat());
    expect_cb!(&mut rx, Ev::Open(_));
    expect_close(&mut rx).await;

    let (_, chunks) = raw_get(addr, "GET", "").await;
    assert!(chunks.iter().all(|c| c.len() <= 16384), "{:?}", chunks.iter().map(Vec::len));
    assert!(chunks.len() >= 5);
    assert_eq!(chunks.concat(), [file_data, reader_data].concat());
    expect_cb!(&mut rx, Ev::Open(_));
    expect_close(&mut rx).await;
}

/// "Each item in an ISeq will pass through send!, and can be any of the valid message types."
#[tokio::test]
async fn each_seq_item_passes_through_send_and_can_be_any_valid_type() {
    let path = temp_file("seq", b"F");
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let _ = t.send(Ev::Open(h.kind()));
        let items = vec![
            Message::from("t"),
            Message::from(vec![b'b']),
            Message::reader(std::io::Cursor::new(pattern(20_000))),
            Message::seq(vec![Message::from("n1"), Message::seq(vec![Message::from("n2")])]),
            Message::file(&path),
        ];
        assert!(h.send(Message::seq(items), tracked(&t, "seq")).unwrap());
        assert!(h.send("after", tracked(&t, "after")).unwrap());
        h.close();
    });
    let addr = serve(options).await;

    let mut ws = ws_connect(addr, "/").await;
    let big = pattern(20_000);
    let expected = [
        text("t"),
        binary(b"b"),
        binary(&big[..16384]),
        binary(&big[16384..]),
        text("n1"),
        text("n2"),
        binary(b"F"),
        text("after"),
    ];
    for m in expected {
        assert_eq!(next_msg(&mut ws).await, Some(m));
    }
    expect_cb!(&mut rx, Ev::Open(_));
    expect_cb!(&mut rx, Ev::Ok(t) if t == "seq");
    expect_cb!(&mut rx, Ev::Ok(t) if t == "after");
    expect_close(&mut rx).await;

    let response = http1_get(addr, get(addr, "/")).await;
    let expected = [&b"tb"[..], &big, b"n1n2Fafter"].concat();
    assert_eq!(&response.body()[..], &expected[..]);
    expect_cb!(&mut rx, Ev::Open(_));
    expect_cb!(&mut rx, Ev::Ok(t) if t == "seq");
    expect_cb!(&mut rx, Ev::Ok(t) if t == "after");
    expect_close(&mut rx).await;
}

/// "If message is a map, its :body entry must be one of the other valid message types, and its
/// :status and :headers entries will be used to override the status or headers returned from
/// the handler that called as-channel for HTTP streams."
#[tokio::test]
async fn map_message_overrides_the_handlers_status_and_headers_for_http_streams() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let _ = t.send(Ev::Open(h.kind()));
        let mut headers = HeaderMap::new();
        headers.insert("x-a", HeaderValue::from_static("from the map"));
        let body = Message::reader(&b"body from a reader,"[..]);
        let head = Message::response(StatusCode::CREATED, headers, body);
        assert!(h.send(head, tracked(&t, "map")).unwrap());
        assert!(h.send("more", SendOptions::new().close(true)).unwrap());
    });
    let addr = serve_with(options, |response| {
        *response.status_mut() = StatusCode::ACCEPTED;
        response.headers_mut().insert("x-a", HeaderValue::from_static("from the handler"));
        response.headers_mut().insert("x-b", HeaderValue::from_static("kept"));
    })
    .await;
    let response = http1_get(addr, get(addr, "/")).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["x-a"], "from the map");
    assert_eq!(response.headers().get_all("x-a").iter().count(), 1);
    assert_eq!(response.headers()["x-b"], "kept");
    assert_eq!(&response.body()[..], b"body from a reader,more");
    expect_cb!(&mut rx, Ev::Open(_));
    expect_cb!(&mut rx, Ev::Ok(t) if t == "map");
    expect_close(&mut rx).await;
}

/// "A map is only a valid message on the first send to an HTTP stream channel - an exception
/// is thrown if it is passed on a subsequent send"
#[tokio::test]
async fn map_message_on_a_subsequent_send_is_an_error() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        assert!(h.send("first,", SendOptions::new()).unwrap());
        let head = Message::response(StatusCode::CREATED, HeaderMap::new(), "map");
        match h.send(head, tracked(&t, "map")) {
            Err(e @ Error::InvalidMessage(_)) => note(&t, format!("error: {e}")),
            other => panic!("{other:?}"),
        }
        assert!(h.is_open());
        assert!(h.send("still usable", SendOptions::new().close(true)).unwrap());
    });
    let addr = serve(options).await;
    let response = http1_get(addr, get(addr, "/")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(&response.body()[..], b"first,still usable");
    expect_cb!(&mut rx, Ev::Note(n) if n.starts_with("error: invalid message"));
    // No callback for the refused send.
    expect_close(&mut rx).await;
}

/// "or passed to a WebSocket channel."
#[tokio::test]
async fn map_message_on_a_websocket_is_an_error() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let head = Message::response(StatusCode::OK, HeaderMap::new(), "map");
        match h.send(head, tracked(&t, "map")) {
            Err(Error::InvalidMessage(_)) => note(&t, "refused"),
            other => panic!("{other:?}"),
        }
        assert!(h.send("still usable", SendOptions::new()).unwrap());
    });
    let addr = serve(options).await;
    let mut ws = ws_connect(addr, "/").await;
    expect_cb!(&mut rx, Ev::Note(n) if n == "refused");
    assert_eq!(next_msg(&mut ws).await, Some(text("still usable")));
    ws.close(None).await.unwrap();
    expect_close(&mut rx).await;
}

// ---- send! options ----

/// ":close? - if true, the channel will be closed when the send completes."
#[tokio::test]
async fn close_option_closes_the_channel_when_the_send_completes() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        assert!(h.send("a", SendOptions::new()).unwrap());
        assert!(h.send("b", tracked(&t, "b").close(true)).unwrap());
        assert!(!h.is_open());
        assert!(matches!(h.send("c", SendOptions::new()), Ok(false)));
    });
    let addr = serve(options).await;

    let mut ws = ws_connect(addr, "/").await;
    assert_eq!(next_msg(&mut ws).await, Some(text("a")));
    assert_eq!(next_msg(&mut ws).await, Some(text("b")));
    assert_eq!(ws_close_frame(&mut ws).await.0, 1000);
    expect_cb!(&mut rx, Ev::Ok(t) if t == "b");
    expect_close(&mut rx).await;

    let (head, chunks) = raw_get(addr, "GET", "").await;
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert_eq!(chunks.concat(), b"ab");
    expect_cb!(&mut rx, Ev::Ok(t) if t == "b");
    expect_close(&mut rx).await;
}

/// "Setting this to true on the first send to an HTTP stream channel will cause it to behave
/// like a standard HTTP response, and not chunk the response. [false]"
#[tokio::test]
async fn close_option_on_the_first_http_send_gives_a_standard_response_default_false() {
    assert!(!SendOptions::new().closes());
    let (tx, mut rx) = evs();
    let options = recording(&tx).on_open(|h| {
        let path = h.originating_request().uri.path().to_owned();
        let _ = match path.as_str() {
            "/empty" => h.send("", SendOptions::new().close(true)),
            "/default" => h.send("not closed", SendOptions::new()),
            _ => h.send("whole body", SendOptions::new().close(true)),
        };
    });
    let addr = serve(options).await;

    let (head, body) = raw_get(addr, "GET", "").await;
    assert!(head.contains("content-length: 10\r\n"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert_eq!(body.concat(), b"whole body");
    expect_close(&mut rx).await;

    let request = format!("GET /empty HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let out = String::from_utf8(raw_http(addr, request.as_bytes()).await).unwrap().to_lowercase();
    assert!(out.contains("content-length: 0\r\n"), "{out}");
    expect_close(&mut rx).await;

    // [false]: the stream stays open after a send.
    let mut response = http_stream(addr, "/default").await;
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    assert_eq!(next_data(response.body_mut()).await.unwrap(), b"not closed");
    quiet(&mut rx, 200).await;
}

/// ":on-success - (fn [] ...) - called when the send attempt has completed successfully."
#[tokio::test]
async fn on_success_called_when_the_send_completed_successfully() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let _ = t.send(Ev::Handle(h.clone()));
    });
    let addr = serve(options).await;

    let mut ws = ws_connect(addr, "/").await;
    let h = expect_cb!(&mut rx, Ev::Handle(h) => h);
    for i in 0..3 {
        assert!(h.send(format!("m{i}"), tracked(&tx, format!("m{i}"))).unwrap());
    }
    for i in 0..3 {
        assert_eq!(next_msg(&mut ws).await, Some(text(&format!("m{i}"))));
    }
    for i in 0..3 {
        expect_cb!(&mut rx, Ev::Ok(t) if t == format!("m{i}"));
    }
    // Once each.
    quiet(&mut rx, 100).await;
    h.close();
    expect_close(&mut rx).await;

    let mut response = tokio::spawn(http_stream(addr, "/"));
    let h = expect_cb!(&mut rx, Ev::Handle(h) => h);
    assert!(h.send("x".repeat(100_000), tracked(&tx, "big")).unwrap());
    let mut response = (&mut response).await.unwrap();
    let mut got = 0;
    while got < 100_000 {
        got += next_data(response.body_mut()).await.unwrap().len();
    }
    expect_cb!(&mut rx, Ev::Ok(t) if t == "big");
    h.close();
    expect_close(&mut rx).await;
}

/// ":on-success ... If this callback throws an exception, it will be reported to the
/// as-channel :on-error callback [nil]"
#[tokio::test]
async fn on_success_failure_is_reported_to_the_channels_on_error() {
    let (tx, mut rx) = evs();
    let options = recording(&tx).on_open(|h| {
        let failing = SendOptions::new().on_success(|| -> Result<(), std::io::Error> {
            Err(std::io::Error::other("bookkeeping"))
        });
        assert!(h.send("a", failing).unwrap());
        let panicking = SendOptions::new().on_success(|| fail("on_success boom"));
        assert!(h.send("b", panicking).unwrap());
        // [nil]: no on_success is fine.
        assert!(h.send("c", SendOptions::new().close(true)).unwrap());
    });
    let addr = serve(options).await;

    let mut ws = ws_connect(addr, "/").await;
    assert_eq!(ws_until_close(&mut ws).await.0, [text("a"), text("b"), text("c")]);
    expect_cb!(&mut rx, Ev::Err(Error::Callback { callback: "on_success", error }) if error.to_string().contains("bookkeeping"));
    expect_cb!(&mut rx, Ev::Err(Error::Panicked(s)) if s.contains("on_success boom"));
    expect_close(&mut rx).await;

    assert_eq!(&http1_get(addr, get(addr, "/")).await.body()[..], b"abc");
    expect_cb!(&mut rx, Ev::Err(Error::Callback { callback: "on_success", error }) if error.to_string().contains("bookkeeping"));
    expect_cb!(&mut rx, Ev::Err(Error::Panicked(s)) if s.contains("on_success boom"));
    expect_close(&mut rx).await;
}

/// ":on-error - (fn [throwable] ...) - Called when an error occurs on the send."
#[tokio::test]
async fn send_on_error_called_when_an_error_occurs_on_the_send() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let failing = std::io::Cursor::new(b"part".to_vec()).chain(support::FailingReader);
        assert!(h.send(Message::reader(failing), tracked(&t, "reader")).unwrap());
        assert!(h.send("next", tracked(&t, "next").close(true)).unwrap());
    });
    let addr = serve(options).await;

    let mut ws = ws_connect(addr, "/").await;
    assert_eq!(ws_until_close(&mut ws).await.0, [binary(b"part"), text("next")]);
    expect_cb!(&mut rx, Ev::SendErr(t, Error::Io(e)) if t == "reader" && e.to_string() == "disk on fire");
    expect_cb!(&mut rx, Ev::Ok(t) if t == "next");
    expect_close(&mut rx).await;

    assert_eq!(&http1_get(addr, get(addr, "/")).await.body()[..], b"partnext");
    expect_cb!(&mut rx, Ev::SendErr(t, Error::Io(_)) if t == "reader");
    expect_cb!(&mut rx, Ev::Ok(t) if t == "next");
    expect_close(&mut rx).await;
}

/// "If the error requires the channel to be closed, the as-channel :on-close callback will
/// also be invoked."
#[tokio::test]
async fn send_error_that_closes_the_channel_also_invokes_on_close() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let feeds = Arc::new(std::sync::Mutex::new(Vec::new()));
    let f = Arc::clone(&feeds);
    let options = recording(&tx).on_open(move |h| {
        let _ = t.send(Ev::Open(h.kind()));
        let (message, feed) = fed_stream();
        feed.unbounded_send("started".into()).unwrap();
        f.lock().unwrap().push(feed);
        // Never completes: the connection breaks during it.
        assert!(h.send(message, tracked(&t, "stream")).unwrap());
        assert!(h.send("queued behind", tracked(&t, "behind")).unwrap());
    });
    let addr = serve(options).await;

    let mut ws = ws_connect(addr, "/").await;
    assert_eq!(next_msg(&mut ws).await, Some(text("started")));
    expect_cb!(&mut rx, Ev::Open(_));
    drop(ws);
    expect_cb!(&mut rx, Ev::SendErr(t, Error::Closed) if t == "stream");
    expect_cb!(&mut rx, Ev::SendErr(t, Error::Closed) if t == "behind");
    assert_eq!(expect_close(&mut rx).await.code, Some(1006));

    let mut response = http_stream(addr, "/").await;
    assert_eq!(next_data(response.body_mut()).await.unwrap(), b"started");
    expect_cb!(&mut rx, Ev::Open(_));
    drop(response);
    expect_cb!(&mut rx, Ev::SendErr(t, Error::Closed) if t == "stream");
    expect_cb!(&mut rx, Ev::SendErr(t, Error::Closed) if t == "behind");
    assert!(expect_close(&mut rx).await.code.is_none());
    drop(feeds);
}

/// ":on-error ... If this callback throws an exception, it will be reported to the as-channel
/// :on-error callback [#(throw %)]"
#[tokio::test]
async fn send_on_error_failure_is_reported_to_the_channels_on_error() {
    let (tx, mut rx) = evs();
    let options = recording(&tx).on_open(|h| {
        let failing = SendOptions::new()
            .on_error(|e| -> Result<(), String> { Err(format!("could not handle: {e}")) });
        assert!(h.send(Message::file("/no/such/file"), failing).unwrap());
        let panicking = SendOptions::new().on_error(|_| fail("send on_error boom"));
        assert!(h.send(Message::file("/no/such/file"), panicking).unwrap());
        let _ = h.send("done", SendOptions::new().close(true));
    });
    let addr = serve(options).await;

    let mut ws = ws_connect(addr, "/").await;
    assert_eq!(ws_until_close(&mut ws).await.0, [text("done")]);
    expect_cb!(&mut rx, Ev::Err(Error::Callback { callback: "a send's on_error", error }) if error.to_string().contains("could not handle: i/o error"));
    expect_cb!(&mut rx, Ev::Err(Error::Panicked(s)) if s.contains("send on_error boom"));
    expect_close(&mut rx).await;

    assert_eq!(&http1_get(addr, get(addr, "/")).await.body()[..], b"done");
    expect_cb!(&mut rx, Ev::Err(Error::Callback { error, .. }) if error.to_string().contains("could not handle"));
    expect_cb!(&mut rx, Ev::Err(Error::Panicked(s)) if s.contains("send on_error boom"));
    expect_close(&mut rx).await;
}

/// "[#(throw %)]": without an on-error of its own, a send's error goes to the channel's.
#[tokio::test]
async fn send_error_goes_to_the_channels_on_error_by_default() {
    let (tx, mut rx) = evs();
    let options = recording(&tx).on_open(|h| {
        assert!(h.send(Message::file("/no/such/file"), SendOptions::new()).unwrap());
        let only_success = SendOptions::new().on_success(|| fail("not called"));
        assert!(h.send(Message::file("/no/such/file"), only_success).unwrap());
        let _ = h.send("done", SendOptions::new().close(true));
    });
    let addr = serve(options).await;

    let mut ws = ws_connect(addr, "/").await;
    assert_eq!(ws_until_close(&mut ws).await.0, [text("done")]);
    expect_cb!(&mut rx, Ev::Err(Error::Io(_)));
    expect_cb!(&mut rx, Ev::Err(Error::Io(_)));
    expect_close(&mut rx).await;

    assert_eq!(&http1_get(addr, get(addr, "/")).await.body()[..], b"done");
    expect_cb!(&mut rx, Ev::Err(Error::Io(_)));
    expect_cb!(&mut rx, Ev::Err(Error::Io(_)));
    expect_close(&mut rx).await;
}

/// "Returns nil if the channel is closed when the send is initiated, true otherwise."
#[tokio::test]
async fn send_returns_false_if_the_channel_is_closed_true_otherwise() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let first = h.send("open", SendOptions::new());
        h.close();
        // Closing counts as closed; every kind of message, at once.
        let after = [
            h.send("text", SendOptions::new()),
            h.send(Message::file("/etc/hostname"), SendOptions::new()),
            h.send(Message::seq(vec!["a".into()]), SendOptions::new()),
            h.send(Message::reader(&b"r"[..]), SendOptions::new()),
        ];
        note(&t, format!("{first:?} {after:?}"));
        let _ = t.send(Ev::Handle(h.clone()));
    });
    let addr = serve(options).await;
    let falses = "Ok(true) [Ok(false), Ok(false), Ok(false), Ok(false)]";

    let mut ws = ws_connect(addr, "/").await;
    expect_cb!(&mut rx, Ev::Note(n) if n == falses);
    let h = expect_cb!(&mut rx, Ev::Handle(h) => h);
    assert_eq!(next_msg(&mut ws).await, Some(text("open")));
    assert_eq!(ws_close_frame(&mut ws).await.0, 1000);
    expect_close(&mut rx).await;
    assert!(matches!(h.send("closed", SendOptions::new()), Ok(false)));

    assert_eq!(&http1_get(addr, get(addr, "/")).await.body()[..], b"open");
    expect_cb!(&mut rx, Ev::Note(n) if n == falses);
    let h = expect_cb!(&mut rx, Ev::Handle(h) => h);
    expect_close(&mut rx).await;
    assert!(matches!(h.send("closed", SendOptions::new()), Ok(false)));
}

/// "If the channel is already closed, :on-success won't be invoked."
#[tokio::test]
async fn on_success_not_invoked_if_the_channel_is_already_closed() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let _ = t.send(Ev::Handle(h.clone()));
    });
    let addr = serve(options).await;

    let mut ws = ws_connect(addr, "/").await;
    let h = expect_cb!(&mut rx, Ev::Handle(h) => h);
    ws.close(None).await.unwrap();
    expect_close(&mut rx).await;
    assert!(matches!(h.send("late", tracked(&tx, "late")), Ok(false)));

    let response = tokio::spawn(http1_get(addr, get(addr, "/")));
    let h = expect_cb!(&mut rx, Ev::Handle(h) => h);
    h.close();
    expect_close(&mut rx).await;
    assert!(matches!(h.send("late", tracked(&tx, "late")), Ok(false)));
    assert!(response.await.unwrap().body().is_empty());
    quiet(&mut rx, 300).await;
}

// ---- beyond the sentences ----

/// A panic in a callback is reported to on_error; the connection and the server go on.
#[tokio::test]
async fn panicking_callback_is_reported_to_on_error_and_the_channel_survives() {
    let (tx, mut rx) = evs();
    let options = recording(&tx)
        .on_open(|h| {
            let _ = h.send("opened", SendOptions::new());
            panic!("on_open boom");
        })
        .on_message(|h, m| {
            if matches!(&m, Incoming::Text(t) if t == "boom") {
                panic!("on_message boom");
            }
            let _ = h.send(m, SendOptions::new());
        });
    let addr = serve(options).await;

    let mut ws = ws_connect(addr, "/").await;
    assert_eq!(next_msg(&mut ws).await, Some(text("opened")));
    expect_cb!(&mut rx, Ev::Err(Error::Panicked(s)) if s.contains("on_open boom"));
    send_text(&mut ws, "boom").await;
    expect_cb!(&mut rx, Ev::Err(Error::Panicked(s)) if s.contains("on_message boom"));
    send_text(&mut ws, "echo").await;
    assert_eq!(next_msg(&mut ws).await, Some(text("echo")));
    ws.close(None).await.unwrap();
    expect_close(&mut rx).await;

    // The server still serves.
    let mut ws = ws_connect(addr, "/").await;
    assert_eq!(next_msg(&mut ws).await, Some(text("opened")));
    expect_cb!(&mut rx, Ev::Err(Error::Panicked(_)));

    let response = tokio::spawn(http_stream(addr, "/"));
    expect_cb!(&mut rx, Ev::Err(Error::Panicked(s)) if s.contains("on_open boom"));
    let mut response = response.await.unwrap();
    assert_eq!(next_data(response.body_mut()).await.unwrap(), b"opened");

    // A panicking on_close is reported too, after it.
    let (tx, mut rx) = evs();
    let options = recording(&tx).on_close(|_, _| panic!("on_close boom"));
    let addr = serve(options).await;
    let mut ws = ws_connect(addr, "/").await;
    expect_cb!(&mut rx, Ev::Open(_));
    ws.close(None).await.unwrap();
    expect_cb!(&mut rx, Ev::Err(Error::Panicked(s)) if s.contains("on_close boom"));
}

/// An on_error that panics is logged; the channel goes on and on_close still comes.
#[tokio::test]
async fn panicking_on_error_is_logged_and_the_channel_survives() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx)
        .on_message(|h, m| {
            if matches!(&m, Incoming::Text(t) if t == "boom") {
                panic!("on_message boom");
            }
            let _ = h.send(m, SendOptions::new());
        })
        .on_error(move |_, e| {
            let _ = t.send(Ev::Err(e));
            panic!("on_error boom");
        });
    let addr = serve(options).await;
    let mut ws = ws_connect(addr, "/").await;
    expect_cb!(&mut rx, Ev::Open(_));
    send_text(&mut ws, "boom").await;
    expect_cb!(&mut rx, Ev::Err(Error::Panicked(_)));
    send_text(&mut ws, "still echoing").await;
    assert_eq!(next_msg(&mut ws).await, Some(text("still echoing")));
    ws.close(None).await.unwrap();
    expect_close(&mut rx).await;
}

/// 100 threads send to one channel at once: each thread's messages arrive in its order, and
/// the on_success callbacks come in the order the messages went out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_threads_send_concurrently_to_one_channel_in_order() {
    const THREADS: usize = 100;
    const EACH: usize = 20;
    for kind in [Kind::WebSocket, Kind::HttpStream] {
        let (tx, mut rx) = evs();
        let t = tx.clone();
        let options = recording(&tx).on_open(move |h| {
            let _ = t.send(Ev::Handle(h.clone()));
        });
        let addr = serve(options).await;

        let mut ws = None;
        let mut response = None;
        if kind == Kind::WebSocket {
            ws = Some(ws_connect(addr, "/").await);
        } else {
            response = Some(tokio::spawn(http1_get(addr, get(addr, "/"))));
        }
        let h = expect_cb!(&mut rx, Ev::Handle(h) => h);
        let threads: Vec<_> = (0..THREADS)
            .map(|i| {
                let h = h.clone();
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for j in 0..EACH {
                        let line = format!("{i}:{j}\n");
                        assert!(h.send(line.clone(), tracked(&tx, line)).unwrap());
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        h.close();

        let wire: Vec<String> = if let Some(ws) = &mut ws {
            let mut lines = Vec::new();
            for _ in 0..THREADS * EACH {
                match next_msg(ws).await {
                    Some(WsMessage::Text(t)) => lines.push(t.as_str().to_owned()),
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(ws_close_frame(ws).await.0, 1000);
            lines
        } else {
            let body = response.take().unwrap().await.unwrap().into_body();
            let body = String::from_utf8(body.to_vec()).unwrap();
            body.split_inclusive('\n').map(str::to_owned).collect()
        };
        assert_eq!(wire.len(), THREADS * EACH);
        let mut next = vec![0; THREADS];
        for line in &wire {
            let (i, j) = line.trim_end().split_once(':').unwrap();
            let (i, j): (usize, usize) = (i.parse().unwrap(), j.parse().unwrap());
            assert_eq!(j, next[i], "thread {i} out of order ({kind:?})");
            next[i] += 1;
        }
        let mut successes = Vec::new();
        for _ in 0..THREADS * EACH {
            successes.push(expect_cb!(&mut rx, Ev::Ok(t) => t));
        }
        assert_eq!(successes, wire, "on_success order is the wire order ({kind:?})");
        expect_close(&mut rx).await;
    }
}

/// A send from another thread after the channel closed returns false and calls nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_after_close_from_another_thread_returns_false() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let _ = t.send(Ev::Handle(h.clone()));
    });
    let addr = serve(options).await;

    let mut ws = ws_connect(addr, "/").await;
    let h = expect_cb!(&mut rx, Ev::Handle(h) => h);
    let (h2, tx2) = (h.clone(), tx.clone());
    let closer = std::thread::spawn(move || h2.close());
    assert!(closer.join().unwrap());
    assert_eq!(ws_close_frame(&mut ws).await.0, 1000);
    expect_close(&mut rx).await;
    let sender = std::thread::spawn(move || h.send("late", tracked(&tx2, "late")));
    assert!(matches!(sender.join().unwrap(), Ok(false)));

    let response = tokio::spawn(http1_get(addr, get(addr, "/")));
    let h = expect_cb!(&mut rx, Ev::Handle(h) => h);
    let (h2, tx2) = (h.clone(), tx.clone());
    std::thread::spawn(move || {
        assert!(h2.send("before", tracked(&tx2, "before")).unwrap());
        assert!(h2.close());
        assert!(matches!(h2.send("after", tracked(&tx2, "after")), Ok(false)));
    })
    .join()
    .unwrap();
    assert_eq!(&response.await.unwrap().body()[..], b"before");
    expect_cb!(&mut rx, Ev::Ok(t) if t == "before");
    expect_close(&mut rx).await;
    let tx2 = tx.clone();
    let sender = std::thread::spawn(move || h.send("late", tracked(&tx2, "late")));
    assert!(matches!(sender.join().unwrap(), Ok(false)));
    quiet(&mut rx, 200).await;
}

/// A send past the queue's byte limit fails through on_error (the send's, else the
/// channel's); nothing queued before it is lost, and later sends that fit go on.
#[tokio::test]
async fn send_past_the_queue_limit_fails_through_on_error_and_loses_nothing() {
    assert_eq!(Options::new().queue_limit_bytes(), compat::DEFAULT_QUEUE_LIMIT);
    assert_eq!(compat::DEFAULT_QUEUE_LIMIT, 16 * 1024 * 1024);
    let (tx, mut rx) = evs();
    let t = tx.clone();
    // The callbacks run on this test's single thread: nothing is written while on_open runs.
    let options = recording(&tx).queue_limit(1000).on_open(move |h| {
        let _ = t.send(Ev::Open(h.kind()));
        assert!(h.send("A".repeat(800), tracked(&t, "A")).unwrap());
        assert!(h.send("B".repeat(800), tracked(&t, "B").close(true)).unwrap());
        assert!(h.send("C".repeat(100), tracked(&t, "C")).unwrap());
        assert!(h.send("D".repeat(800), SendOptions::new()).unwrap());
        assert!(h.is_open(), "a refused closing send does not close");
    });
    let addr = serve(options).await;

    let mut ws = ws_connect(addr, "/").await;
    expect_cb!(&mut rx, Ev::Open(_));
    expect_cb!(&mut rx, Ev::Ok(t) if t == "A");
    expect_cb!(&mut rx, Ev::SendErr(t, Error::QueueFull { limit: 1000 }) if t == "B");
    expect_cb!(&mut rx, Ev::Ok(t) if t == "C");
    expect_cb!(&mut rx, Ev::Err(Error::QueueFull { limit: 1000 }));
    assert_eq!(next_msg(&mut ws).await, Some(text(&"A".repeat(800))));
    assert_eq!(next_msg(&mut ws).await, Some(text(&"C".repeat(100))));
    send_text(&mut ws, "x").await;
    expect_cb!(&mut rx, Ev::Msg(_));
    ws.close(None).await.unwrap();
    expect_close(&mut rx).await;

    let mut response = http_stream(addr, "/").await;
    expect_cb!(&mut rx, Ev::Open(_));
    expect_cb!(&mut rx, Ev::Ok(t) if t == "A");
    expect_cb!(&mut rx, Ev::SendErr(t, Error::QueueFull { .. }) if t == "B");
    expect_cb!(&mut rx, Ev::Ok(t) if t == "C");
    expect_cb!(&mut rx, Ev::Err(Error::QueueFull { .. }));
    let mut body = Vec::new();
    while body.len() < 900 {
        body.extend(next_data(response.body_mut()).await.unwrap());
    }
    assert_eq!(body, ["A".repeat(800), "C".repeat(100)].concat().into_bytes());
}

/// on_close is a channel's last callback: after the on_success of a send that closes, for
/// every message type.
#[tokio::test]
async fn on_close_is_the_last_callback_when_a_send_closes_whatever_the_message() {
    let path = temp_file("last", b"file");
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let path_str = h.originating_request().uri.path().to_owned();
        let message = match path_str.as_str() {
            "/file" => Message::file(&path),
            "/seq" => Message::seq(vec!["s".into(), Message::file(&path)]),
            "/reader" => Message::reader(&b"reader"[..]),
            _ => Message::from("text"),
        };
        assert!(h.send(message, tracked(&t, "last").close(true)).unwrap());
    });
    let addr = serve(options).await;
    for path in ["/text", "/file", "/seq", "/reader"] {
        let mut ws = ws_connect(addr, path).await;
        assert!(!ws_until_close(&mut ws).await.0.is_empty());
        expect_cb!(&mut rx, Ev::Ok(t) if t == "last");
        expect_close(&mut rx).await;

        let _ = http1_get(addr, get(addr, path)).await;
        expect_cb!(&mut rx, Ev::Ok(t) if t == "last");
        expect_close(&mut rx).await;
    }
}

/// HEAD: the channel closes after its first send; a first-send map still sets the status.
#[tokio::test]
async fn head_request_closes_after_the_first_send() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let head =
            Message::response(StatusCode::NON_AUTHORITATIVE_INFORMATION, HeaderMap::new(), "b");
        assert!(h.send(head, tracked(&t, "head")).unwrap());
    });
    let addr = serve(options).await;
    let request = format!("HEAD / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let out = String::from_utf8(raw_http(addr, request.as_bytes()).await).unwrap();
    assert!(out.starts_with("HTTP/1.1 203"), "{out}");
    assert!(out.ends_with("\r\n\r\n"), "no body for HEAD: {out}");
    expect_cb!(&mut rx, Ev::Ok(t) if t == "head");
    expect_close(&mut rx).await;
}

/// Handles of one channel compare equal; those of different channels do not.
#[tokio::test]
#[allow(clippy::mutable_key_type)] // a handle hashes by identity, not by its state
async fn handles_of_the_same_channel_are_equal() {
    let (tx, mut rx) = evs();
    let t = tx.clone();
    let options = recording(&tx).on_open(move |h| {
        let _ = t.send(Ev::Handle(h.clone()));
    });
    let addr = serve(options).await;
    let _a = ws_connect(addr, "/").await;
    let _b = ws_connect(addr, "/").await;
    let a = expect_cb!(&mut rx, Ev::Handle(h) => h);
    let b = expect_cb!(&mut rx, Ev::Handle(h) => h);
    assert_eq!(a, a.clone());
    assert_ne!(a, b);
    let set: std::collections::HashSet<_> = [a.clone(), a, b].into_iter().collect();
    assert_eq!(set.len(), 2);
}

/// `Handle::send` returns `Ok(false)` (the spec's nil, "if the channel is closed when the
/// send is initiated") and calls nothing once a close started, `is_open` is false and `close`
/// refused: also when the close is the idle timeout's, whose close frame the client does not
/// answer. Before stop 28 (2026-12-05) the handle said open, the send `Ok(true)`, then its
/// `on_error` got `Closed`.
#[tokio::test]
async fn after_the_idle_timeouts_close_frame_send_returns_false_and_calls_nothing() {
    let (tx, mut rx) = mpsc::unbounded_channel::<Handle>();
    let (etx, mut erx) = mpsc::unbounded_channel::<String>();
    let options = Options::new()
        .timeout(Duration::from_millis(300))
        .config(Config::default().close_timeout(Duration::from_secs(2)))
        .on_open(move |h| {
            let _ = tx.send(h.clone());
        });
    let addr = support::serve_compat(options).await;
    let mut raw = support::RawWs::connect(addr).await;
    let h = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    assert_eq!(raw.read_close().await, Some((1000, "idle timeout".to_owned())));
    let open = h.is_open();
    let e = etx.clone();
    let s = etx.clone();
    let options = SendOptions::new()
        .on_success(move || {
            let _ = s.send("on_success".into());
        })
        .on_error(move |error| {
            let _ = e.send(format!("on_error: {error}"));
        });
    let sent = h.send(Message::from("while closing"), options);
    let closed_again = h.close();
    // The client never answers: the close timer ends the channel; a callback shows by then.
    let called = tokio::time::timeout(Duration::from_secs(5), erx.recv()).await.ok().flatten();
    assert!(
        !open && matches!(sent, Ok(false)) && !closed_again && called.is_none(),
        "while closing: is_open {open}, send {sent:?}, close {closed_again}, callback {called:?}"
    );
}
