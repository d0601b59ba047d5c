//! The public API's shape, against the Rust API Guidelines: the traits and bounds users take
//! for granted (Send, Sync, Clone, conversions, errors with one cause each along the chain),
//! and what misuse gives (from a review in stop 30, 2026-12-06; the compile-time probes fail
//! to build when a bound or an impl goes missing).

mod support;

use std::fmt::Debug;
use webchan::*;

fn send_sync_unpin<T: Send + Sync + Unpin + Debug + 'static>() {}
fn send_unpin<T: Send + Unpin + Debug + 'static>() {}
fn is_send<T: Send>(_: &T) {}
fn is_send_static<T: Send + 'static>(_: &T) {}

#[test]
fn probe_traits() {
    send_sync_unpin::<Channel>();
    send_sync_unpin::<Sender>();
    send_sync_unpin::<Receiver>();
    send_sync_unpin::<Completion>();
    send_sync_unpin::<Body>();
    send_sync_unpin::<BytesBody>();
    send_sync_unpin::<BodyData>();
    send_unpin::<Message>();
    send_sync_unpin::<Event>();
    send_sync_unpin::<Incoming>();
    send_sync_unpin::<Text>();
    send_sync_unpin::<CloseInfo>();
    send_sync_unpin::<Error>();
    send_sync_unpin::<Rejection>();
    send_sync_unpin::<Shutdown>();
    send_sync_unpin::<ShutdownReport>();
    send_sync_unpin::<Config>();
    send_sync_unpin::<Kind>();
    send_sync_unpin::<sse::Event>();
    send_sync_unpin::<sse::Mode>();
    send_sync_unpin::<compat::Options>();
    send_unpin::<compat::SendOptions>();
    send_sync_unpin::<compat::Handle>();
    send_unpin::<compat::ResponseFuture>();
}

fn error_bounds<E: std::error::Error + Send + Sync + 'static>() {}
#[test]
fn probe_errors() {
    error_bounds::<Error>();
    error_bounds::<Rejection>();
    let _: Box<dyn std::error::Error + Send + Sync> = Error::Closed.into();
    let _: std::io::Error = std::io::Error::other(Error::Closed);
}

fn clone<T: Clone>() {}
#[test]
fn probe_clone() {
    clone::<Event>();
    clone::<Incoming>();
    clone::<Text>();
    clone::<CloseInfo>();
    clone::<Error>();
    clone::<Rejection>();
    clone::<Shutdown>();
    clone::<Config>();
    clone::<Sender>();
    clone::<compat::Handle>();
    clone::<compat::Options>();
    clone::<sse::Event>();
    clone::<ShutdownReport>();
    clone::<Kind>();
}

#[test]
fn probe_futures() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _g = rt.enter();
    let req = http::Request::get("/").body(()).unwrap();
    let (reply, mut channel) = as_channel(req, Config::default()).unwrap();
    let sender = channel.sender();
    is_send(&sender.send("x".into()));
    is_send(&sender.send_and_close("x".into()));
    is_send(&sender.close());
    is_send(&sender.close_with(1000, "x"));
    is_send(&sender.closed());
    is_send(&channel.close());
    is_send(&channel.send("x".into()));
    is_send(&channel.recv());
    let sh = Shutdown::new();
    is_send(&sh.shutdown(std::time::Duration::ZERO));
    is_send_static(&reply);
    let (s, mut r) = channel.split();
    is_send(&r.recv());
    drop(s);
}

#[test]
fn probe_conversions() {
    let _ = Message::from("a");
    let _ = Message::from(String::from("a"));
    let _ = Message::from(vec![1u8]);
    let _ = Message::from(bytes::Bytes::new());
    let _ = Message::from(&b"abc"[..]);
    let _ = Message::from(b"abc");
    let _ = Message::from(Box::<str>::from("a"));
    let _ = Message::from(std::borrow::Cow::Borrowed("a"));
    let _ = Message::from(&String::from("a"));
    let t = Text::from("a");
    fn as_ref_str<T: AsRef<str>>(_: T) {}
    fn as_ref_bytes<T: AsRef<[u8]>>(_: T) {}
    fn borrow_str<T: std::borrow::Borrow<str>>(_: T) {}
    fn ord<T: Ord>(_: T) {}
    as_ref_str(t.clone());
    as_ref_bytes(t.clone());
    borrow_str(t.clone());
    ord(t.clone());
    assert!(t == *"a" && t == "a");
    assert_eq!(t, String::from("a"));
    let b = Text::from("b");
    assert!(t < b);
    let _: bytes::Bytes = t.clone().into();
    let i = Incoming::Text(t);
    assert!(i.is_text() && i.len() == 1);
    let _ = Body::from("x");
    let _ = Body::from(String::from("x"));
    let _ = Body::from(bytes::Bytes::new());
}

/// What the review of stop 30 found missing, now there (each line failed to build before).
#[test]
fn probe_what_stop_30_added() {
    use http_body_util::BodyExt;
    // Sync bodies: hyper's usual boxed body takes them.
    let boxed: http_body_util::combinators::BoxBody<bytes::Bytes, Error> =
        Body::from("x").into_bytes_body().boxed();
    drop(boxed);
    // A `Text` key is found by a `&str`, and `str` compares with `Text`.
    let mut rooms = std::collections::HashMap::new();
    rooms.insert(Text::from("room"), 1);
    assert_eq!(rooms.get("room"), Some(&1));
    let room = Text::from("room");
    let owned = String::from("room");
    assert!("room" == room && *"room" == room && owned == room);
    let mut sorted = vec![Text::from("b"), Text::from("a")];
    sorted.sort();
    assert_eq!(sorted, [Text::from("a"), Text::from("b")]);
    // `?` on `try_send`.
    fn try_send_q(sender: &Sender) -> Result<Completion, Error> {
        Ok(sender.try_send("x".into())?)
    }
    let _ = try_send_q;
    // `Incoming`'s accessors.
    let incoming = Incoming::Text(Text::from("hé"));
    assert!(incoming.is_text() && incoming.len() == 3 && !incoming.is_empty());
    assert_eq!(incoming.as_text(), Some("hé"));
    assert_eq!(incoming.into_bytes(), bytes::Bytes::from("hé"));
    // The `http` and `bytes` crates of the API, re-exported.
    let _: webchan::http::StatusCode = webchan::http::StatusCode::OK;
    let _: webchan::bytes::Bytes = webchan::bytes::Bytes::new();
}

// ---------------------------------------------------------------------------------------------
// Runtime tests over 127.0.0.1.

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;

/// A server whose service is `handle` (no webchan wrapping: the test's handler does it all).
async fn serve_fn<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = http::Response<Body>> + Send + 'static,
{
    support::serve_handler(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), handle)
}

/// The whole chain of an error: its `Display`, then each `source()`'s.
fn chain(error: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = vec![error.to_string()];
    let mut next = error.source();
    while let Some(e) = next {
        out.push(e.to_string());
        next = e.source();
    }
    out
}

/// A WebSocket channel, open, and its client.
async fn open_websocket() -> (Channel, support::WsClient) {
    let (addr, mut channels) = support::serve_channels(Config::default()).await;
    let ws = support::ws_connect(addr, "/").await;
    let mut ch = support::next_channel(&mut channels).await;
    assert!(matches!(support::next_of(&mut ch).await, Some(Event::Open)));
    (ch, ws)
}

/// `Message::file` opens its file lazily, when its turn comes, so the caller has long lost
/// track of which path failed (a sequence of files, say): the error names the path. (Before
/// stop 30 it said only "i/o error: No such file or directory (os error 2)".)
#[tokio::test]
async fn a_file_that_cannot_be_opened_names_its_path_in_the_error() {
    let (mut ch, _ws) = open_websocket().await;
    let path = "/nonexistent-webchan-review-k/quarterly-report.csv";
    let error = tokio::time::timeout(Duration::from_secs(10), ch.send(Message::file(path)))
        .await
        .expect("send did not end")
        .expect_err("a missing file cannot be sent");
    assert!(
        matches!(&error, Error::Io(e) if e.kind() == std::io::ErrorKind::NotFound),
        "{error:?}"
    );
    let chain = chain(&error);
    assert!(
        chain.iter().any(|text| text.contains("quarterly-report.csv")),
        "the error of a file that cannot be opened does not name the file: {chain:?}"
    );
}

/// An error that returns its cause from `source()` must not print it in its own `Display`
/// too (the Rust API guidelines' C-GOOD-ERR, the error-handling working group's rule, what
/// hyper's and reqwest's errors do): a reporter that prints the chain (anyhow's `{:#}`,
/// `tracing`'s error chain, eyre) prints the cause twice.
#[tokio::test]
async fn an_io_error_does_not_print_its_source_twice() {
    let (mut ch, _ws) = open_websocket().await;
    let error = tokio::time::timeout(
        Duration::from_secs(10),
        ch.send(Message::reader(support::FailingReader)),
    )
    .await
    .expect("send did not end")
    .expect_err("the reader fails");
    assert!(matches!(error, Error::Io(_)), "{error:?}");
    let chain = chain(&error);
    let times = chain.iter().filter(|text| text.contains("disk on fire")).count();
    assert_eq!(times, 1, "the cause is printed {times} times along the chain: {chain:?}");
}

/// The same for `Error::Callback` (compat: a send's `on_success` that returns an error).
#[tokio::test]
async fn a_callback_error_does_not_print_its_source_twice() {
    use webchan::compat::{Options, SendOptions};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Error>();
    let options = Options::new()
        .on_open(|ch| {
            let _ = ch.send(
                "hi",
                SendOptions::new().on_success(|| -> Result<(), std::io::Error> {
                    Err(std::io::Error::other("bookkeeping failed"))
                }),
            );
        })
        .on_error(move |_, error| {
            let _ = tx.send(error);
        });
    let addr = support::serve_compat(options).await;
    let _ws = support::ws_connect(addr, "/").await;
    let error = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    assert!(matches!(error, Error::Callback { .. }), "{error:?}");
    let chain = chain(&error);
    let times = chain.iter().filter(|text| text.contains("bookkeeping failed")).count();
    assert_eq!(times, 1, "the cause is printed {times} times along the chain: {chain:?}");
}

/// `From<Rejection> for Error`: the 503 that `as_channel` gives a plain GET (no upgrade asked)
/// once a shutdown began is `Error::ShuttingDown`, not a "websocket handshake" error. (Before
/// stop 30 every rejection became `Error::Handshake`, "the request tried to become a WebSocket
/// but the handshake was malformed": a handler using `?` logged "websocket handshake rejected:
/// the server is shutting down" for an ordinary request.)
#[tokio::test]
async fn a_plain_request_refused_by_a_shutdown_is_not_a_websocket_handshake_error() {
    let shutdown = Shutdown::new();
    let config = Config::default().shutdown(&shutdown);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(http::StatusCode, Error)>();
    let addr = serve_fn(move |request| {
        let config = config.clone();
        let tx = tx.clone();
        async move {
            match webchan::as_channel(request, config) {
                Ok((reply, _channel)) => reply.await,
                Err(rejection) => {
                    let _ = tx.send((rejection.status(), Error::from(rejection.clone())));
                    rejection.into_response()
                }
            }
        }
    })
    .await;
    let report = shutdown.shutdown(Duration::from_millis(10)).await;
    assert_eq!(report.forced, 0);
    let response = support::http1_get(addr, support::get(addr, "/plain")).await;
    assert_eq!(response.status(), 503);
    let (status, error) = rx.recv().await.unwrap();
    assert_eq!(status, 503);
    assert!(
        !matches!(error, Error::Handshake(_)) && !error.to_string().contains("websocket"),
        "a plain GET refused during a shutdown converts to {error:?} (\"{error}\")"
    );
}

/// `compat::ResponseFuture::status_mut` and `headers_mut` say "# Panics: If called after the
/// future completed". Before stop 30 they panicked only for a rejected request; for a
/// channel's response they silently handed out a status and headers that went nowhere.
#[tokio::test]
async fn compat_status_mut_after_the_response_completed_panics_as_documented() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(bool, bool)>();
    let addr = serve_fn(move |request| {
        let tx = tx.clone();
        async move {
            let mut response =
                webchan::compat::as_channel(request, webchan::compat::Options::new());
            let out = (&mut response).await;
            let status = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                *response.status_mut() = http::StatusCode::IM_A_TEAPOT;
            }))
            .is_err();
            let headers = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                response.headers_mut().insert("x-late", http::HeaderValue::from_static("1"));
            }))
            .is_err();
            let _ = tx.send((status, headers));
            out
        }
    })
    .await;
    let _ws = support::ws_connect(addr, "/").await;
    let (status_panicked, headers_panicked) =
        tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    assert!(
        status_panicked && headers_panicked,
        "after completion: status_mut panicked: {status_panicked}, headers_mut panicked: {headers_panicked}"
    );
}

// ---------------------------------------------------------------------------------------------
// API misuse: checked, found right (kept as guards).

/// `reunite` with the halves of two channels gives both back, and both still work;
/// a `Sender` outlives its `Channel` (it is a handle: the channel stays open); a send after
/// `close` fails at once with `Closed`.
#[tokio::test]
async fn misuse_reunite_two_channels_sender_after_drop_send_after_close() {
    let (addr, mut channels) = support::serve_channels(Config::default()).await;
    let mut ws_a = support::ws_connect(addr, "/a").await;
    let mut ws_b = support::ws_connect(addr, "/b").await;
    let mut a = support::next_channel(&mut channels).await;
    let mut b = support::next_channel(&mut channels).await;
    assert!(matches!(support::next_of(&mut a).await, Some(Event::Open)));
    assert!(matches!(support::next_of(&mut b).await, Some(Event::Open)));
    let path_a = a.originating_request().uri.path().to_owned();
    let (sa, ra) = a.split();
    let (sb, rb) = b.split();
    let Err((sa, rb)) = Channel::reunite(sa, rb) else { panic!("halves of two channels reunited") };
    // Each half still belongs to its own channel.
    sa.send("to a".into()).await.unwrap();
    let got = support::next_msg(if path_a == "/a" { &mut ws_a } else { &mut ws_b }).await;
    assert_eq!(got.unwrap().into_text().unwrap().as_str(), "to a");
    let a = Channel::reunite(sa, ra).expect("a's halves");
    let b = Channel::reunite(sb, rb).expect("b's halves");
    // A Sender outlives its Channel.
    let sender = a.sender();
    drop(a);
    assert!(sender.is_open());
    sender.send("after drop".into()).await.unwrap();
    // A send after close fails with Closed, at once.
    let mut b = b;
    tokio::time::timeout(Duration::from_secs(10), b.close()).await.unwrap();
    let error = tokio::time::timeout(Duration::from_secs(1), b.send("late".into()))
        .await
        .expect("a send after close hangs")
        .expect_err("a send after close succeeded");
    assert!(error.is_closed(), "{error:?}");
    let (error, message) = b.sender().try_send("late".into()).expect_err("try_send after close");
    assert!(error.is_closed());
    assert!(matches!(message, Message::Text(t) if t == "late"));
}

/// A send queued before the handler drops its `Reply` (and answers with a response of its
/// own): the channel closes, and the send must resolve (`Closed`), for both kinds.
#[tokio::test]
async fn misuse_a_send_queued_before_the_reply_is_dropped_resolves() {
    let (tx, mut rx) =
        tokio::sync::mpsc::unbounded_channel::<(Kind, Result<(), Error>, Vec<Event>)>();
    let addr = serve_fn(move |request| {
        let tx = tx.clone();
        async move {
            let (reply, mut channel) = webchan::as_channel(request, Config::default()).unwrap();
            let done = channel.sender().try_send("early".into()).unwrap();
            drop(reply);
            tokio::spawn(async move {
                let result = tokio::time::timeout(Duration::from_secs(10), done)
                    .await
                    .expect("a send queued before the reply was dropped never resolved");
                let mut events = Vec::new();
                while let Some(e) = tokio::time::timeout(Duration::from_secs(10), channel.next())
                    .await
                    .expect("no Closed")
                {
                    events.push(e);
                }
                let _ = tx.send((channel.kind(), result, events));
            });
            let mut response = http::Response::new(Body::full("no".into()));
            *response.status_mut() = http::StatusCode::FORBIDDEN;
            response
        }
    })
    .await;
    let response = support::http1_get(addr, support::get(addr, "/")).await;
    assert_eq!(response.status(), 403);
    let ws = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await;
    assert!(ws.is_err());
    for _ in 0..2 {
        let (kind, result, events) =
            tokio::time::timeout(Duration::from_secs(15), rx.recv()).await.unwrap().unwrap();
        assert!(matches!(&result, Err(e) if e.is_closed()), "{kind:?}: {result:?}");
        assert!(matches!(events.last(), Some(Event::Closed(_))), "{kind:?}: {events:?}");
    }
}

/// A WebSocket upgrade request that carries no hyper upgrade handle (its extensions were lost:
/// a layer that rebuilt the request): as documented (`as_channel`), the reply is still a `101`
/// (a handler can be tested without a server), the connection ends after it, and the channel
/// reports `Error::Upgrade` whose text names the cause, then `Closed` (1006), never `Open`.
#[tokio::test]
async fn an_upgrade_request_without_hypers_upgrade_handle_reports_the_lost_extensions() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<Event>>();
    let addr = serve_fn(move |request| {
        let tx = tx.clone();
        async move {
            let (mut parts, body) = request.into_parts();
            parts.extensions = http::Extensions::new();
            let request = http::Request::from_parts(parts, body);
            match webchan::as_channel(request, Config::default()) {
                Ok((reply, mut channel)) => {
                    tokio::spawn(async move {
                        let mut events = Vec::new();
                        while let Ok(Some(e)) =
                            tokio::time::timeout(Duration::from_secs(5), channel.next()).await
                        {
                            events.push(e);
                        }
                        let _ = tx.send(events);
                    });
                    reply.await
                }
                Err(rejection) => rejection.into_response(),
            }
        }
    })
    .await;
    let raw = support::raw_http(
        addr,
        format!(
            "GET /chat HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    assert!(text.starts_with("HTTP/1.1 101"), "{text:?}");
    let events = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    assert!(!events.iter().any(|e| matches!(e, Event::Open)), "{events:?}");
    let error = events.iter().find_map(|e| match e {
        Event::Error(e @ Error::Upgrade(_)) => Some(e.to_string()),
        _ => None,
    });
    assert!(
        error.as_deref().is_some_and(|e| e.contains("extensions")),
        "the error does not name the lost extensions: {events:?}"
    );
    assert!(
        matches!(events.last(), Some(Event::Closed(info)) if info.code == Some(1006)),
        "{events:?}"
    );
}

/// After `split`, both halves still tell the channel's kind and the request's `Last-Event-ID`
/// (before stop 30 the `Receiver` had no `kind()`, and neither half a `last_event_id()`).
#[tokio::test]
async fn split_halves_keep_the_kind_and_the_last_event_id() {
    use tokio::io::AsyncWriteExt;
    let (addr, mut channels) = support::serve_channels(Config::default()).await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nLast-Event-ID: \xc3\xa9-7\r\n\r\n",
    )
    .await
    .unwrap();
    let channel = support::next_channel(&mut channels).await;
    let (sender, receiver) = channel.split();
    assert_eq!((sender.kind(), receiver.kind()), (Kind::HttpStream, Kind::HttpStream));
    assert_eq!(sender.last_event_id(), Some("é-7"));
    assert_eq!(receiver.last_event_id(), Some("é-7"));
}

/// A head made with `ResponseHead::new` (before 2026-12-06 code outside the crate could not
/// make one: the type is `#[non_exhaustive]`, and `Message::response` always sets a status
/// and a body): its headers replace the handler's, the handler's status stays, and the
/// messages after it are the body.
#[tokio::test]
async fn a_head_with_headers_only_keeps_the_handlers_status() {
    let addr = support::serve_with(
        Config::default(),
        |reply| {
            let mut reply = reply;
            *reply.status_mut() = http::StatusCode::ACCEPTED;
            reply.header(http::header::CACHE_CONTROL, http::HeaderValue::from_static("max-age=9"))
        },
        |channel| async move {
            let mut head = ResponseHead::new();
            head.headers
                .insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
            let sender = channel.sender();
            sender.send(head.into()).await.unwrap();
            sender.send_and_close("body".into()).await.unwrap();
        },
    )
    .await;
    let response = support::http1_get(addr, support::get(addr, "/")).await;
    assert_eq!(response.status(), http::StatusCode::ACCEPTED);
    let cache: Vec<_> = response.headers().get_all(http::header::CACHE_CONTROL).iter().collect();
    assert_eq!(cache, ["no-store"]);
    assert_eq!(response.body().as_ref(), b"body");
}

/// What a close and a kind print (`Display`, added 2026-12-06), and a channel's error as an
/// `io::Error` for code that speaks `io::Result`: a send on a closed WebSocket is `BrokenPipe`.
#[tokio::test]
async fn closes_and_kinds_print_and_errors_become_io_errors() {
    let (channel, mut ws) = open_websocket().await;
    assert_eq!(channel.kind().to_string(), "WebSocket");
    ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: 4001.into(),
        reason: "gone\naway".into(),
    }))
    .await
    .unwrap();
    let (sender, mut receiver) = channel.split();
    let mut closed = None;
    while let Some(event) = tokio::time::timeout(Duration::from_secs(10), receiver.next())
        .await
        .expect("no Closed within 10 s")
    {
        if let Event::Closed(info) = event {
            closed = Some(info);
        }
    }
    assert_eq!(closed.expect("no Closed").to_string(), r#"4001 "gone\naway""#);
    let error = sender.send("late".into()).await.unwrap_err();
    let io = std::io::Error::from(error);
    assert_eq!(io.kind(), std::io::ErrorKind::BrokenPipe);
}
