//! What happens when user code misbehaves or lets go, over real sockets on 127.0.0.1 (from
//! stop 29's review, 2026-12-05): message sources that panic (at first poll, midway, when
//! dropped) or never wake; handler tasks that panic holding handles; halves dropped; send
//! futures cancelled.

mod support;

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use support::{all_events, closed_of, h2_client, next_channel, serve, serve_channels, RawWs};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use webchan::{Channel, Config, Error, Event, Message};

const LIMIT: Duration = Duration::from_secs(10);

// ---- user sources that misbehave ----

/// A reader that gives `first` (if any), then at its next poll panics (`poll_panics`), fails
/// (`fails`) or ends; and whose drop panics (`drop_panics`; never while already unwinding,
/// which would abort the test binary).
struct Bad {
    first: Option<&'static [u8]>,
    poll_panics: bool,
    fails: bool,
    drop_panics: bool,
}

impl AsyncRead for Bad {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(first) = self.first.take() {
            buf.put_slice(first);
            return Poll::Ready(Ok(()));
        }
        if self.poll_panics {
            panic!("poll boom");
        }
        if self.fails {
            return Poll::Ready(Err(std::io::Error::other("read failed")));
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for Bad {
    fn drop(&mut self) {
        if self.drop_panics && !std::thread::panicking() {
            panic!("drop boom");
        }
    }
}

fn bad(first: Option<&'static [u8]>, poll_panics: bool, fails: bool, drop_panics: bool) -> Message {
    Message::reader(Bad { first, poll_panics, fails, drop_panics })
}

// ---- clients of the four transports ----

#[derive(Clone, Copy, Debug, PartialEq)]
enum Transport {
    WsH1,
    WsH2,
    HttpH1,
    HttpH2,
}

#[allow(dead_code)] // the HTTP/2 senders are kept for their connection
enum Client {
    Ws(support::WsClient),
    WsH2(WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>, support::H2Sender),
    H1(TcpStream),
    H2(hyper::body::Incoming, support::H2Sender),
    /// The response head is only sent at the first send: awaited on the first read.
    H2Head(
        tokio::task::JoinHandle<http::Response<hyper::body::Incoming>>,
        Option<support::H2Sender>,
    ),
}

/// What a client received: the messages (WebSocket: each as `text|`, binary lossily as text)
/// or the raw bytes (HTTP/1.1, chunk framing included) or the DATA (HTTP/2); and how it
/// ended, if it did.
#[derive(Debug, Default)]
struct Got {
    text: String,
    ended: Option<String>,
}

impl Client {
    async fn connect(t: Transport, addr: std::net::SocketAddr, path: &str) -> Self {
        match t {
            Transport::WsH1 => Self::Ws(support::ws_connect(addr, path).await),
            Transport::WsH2 => {
                let mut sender = h2_client(addr).await;
                let io = support::h2_websocket(&mut sender, addr, path).await;
                Self::WsH2(WebSocketStream::from_raw_socket(io, Role::Client, None).await, sender)
            }
            Transport::HttpH1 => {
                let mut tcp = TcpStream::connect(addr).await.unwrap();
                tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
                Self::H1(tcp)
            }
            Transport::HttpH2 => {
                let mut sender = h2_client(addr).await;
                let request = sender.send_request(support::get(addr, path));
                let head = tokio::spawn(async move { request.await.unwrap() });
                Self::H2Head(head, Some(sender))
            }
        }
    }

    /// Reads until `got.text` contains `needle`, the stream ends, or 10 s pass.
    async fn read_until(&mut self, got: &mut Got, needle: &str) {
        let deadline = tokio::time::Instant::now() + LIMIT;
        while !got.text.contains(needle) && got.ended.is_none() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let step = tokio::time::timeout(left, self.read_once(got)).await;
            if step.is_err() {
                got.ended = Some("nothing more within 10 s".into());
            }
        }
    }

    async fn read_once(&mut self, got: &mut Got) {
        async fn ws_once<S>(ws: &mut WebSocketStream<S>, got: &mut Got)
        where
            S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        {
            match ws.next().await {
                Some(Ok(WsMessage::Text(t))) => {
                    got.text.push_str(&t);
                    got.text.push('|');
                }
                Some(Ok(WsMessage::Binary(b))) => {
                    got.text.push_str(&String::from_utf8_lossy(&b));
                    got.text.push('|');
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    got.ended = Some(format!("close frame {:?}", frame.map(|f| u16::from(f.code))))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => got.ended = Some(format!("error: {e}")),
                None => got.ended = Some("end without a close frame".into()),
            }
        }
        match self {
            Self::Ws(ws) => ws_once(ws, got).await,
            Self::WsH2(ws, _) => ws_once(ws, got).await,
            Self::H1(tcp) => {
                let mut buf = [0u8; 65536];
                match tcp.read(&mut buf).await {
                    Ok(0) => got.ended = Some("eof".into()),
                    Ok(n) => got.text.push_str(&String::from_utf8_lossy(&buf[..n])),
                    Err(e) => got.ended = Some(format!("error: {e}")),
                }
            }
            Self::H2Head(head, sender) => {
                let response = head.await.unwrap();
                *self = Self::H2(response.into_body(), sender.take().unwrap());
            }
            Self::H2(body, _) => match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        got.text.push_str(&String::from_utf8_lossy(&data));
                    }
                }
                Some(Err(e)) => got.ended = Some(format!("error: {e}")),
                None => got.ended = Some("end of stream".into()),
            },
        }
    }
}

/// Awaits a completion on a task of its own, so that a panic that escapes into the task
/// awaiting the send shows as such instead of taking the test down.
async fn outcome(completion: webchan::Completion) -> Result<Result<(), Error>, String> {
    match tokio::time::timeout(LIMIT, tokio::spawn(completion)).await {
        Err(_) => Err("no outcome within 10 s".into()),
        Ok(Err(join)) => Err(format!("the task awaiting the send died: {join}")),
        Ok(Ok(result)) => Ok(result),
    }
}

/// Sends through each misbehaving source in turn; after each, a plain send must work and the
/// client must get it; the connection is never lost.
async fn misbehaving_sources(t: Transport) {
    #[derive(Debug, Clone, Copy)]
    enum Outcome {
        Panicked(&'static str),
        Io,
        Sent,
    }
    let (addr, mut channels) = serve_channels(Config::default()).await;
    let mut client = Client::connect(t, addr, "/sources").await;
    let mut ch = next_channel(&mut channels).await;
    let sender = ch.sender();
    if matches!(t, Transport::HttpH1 | Transport::HttpH2) {
        sender.send("head;".into()).await.unwrap();
    }
    let mut got = Got::default();
    // (what, source, what the client gets of it, what the send must report)
    let cases: Vec<(&str, Message, &str, Outcome)> = vec![
        (
            "panics at its first poll",
            bad(None, true, false, false),
            "",
            Outcome::Panicked("poll boom"),
        ),
        ("fails (io) at its first poll", bad(None, false, true, false), "", Outcome::Io),
        (
            "panics midway",
            bad(Some(b"mid;"), true, false, false),
            "mid;",
            Outcome::Panicked("poll boom"),
        ),
        (
            "a stream that panics at its first poll",
            Message::stream(futures::stream::poll_fn(|_| -> Poll<Option<Message>> {
                panic!("stream boom")
            })),
            "",
            Outcome::Panicked("stream boom"),
        ),
        // Sent whole: the panic of its drop is caught and logged, the send is not failed.
        (
            "ends, then panics when dropped",
            bad(Some(b"whole;"), false, false, true),
            "whole;",
            Outcome::Sent,
        ),
        (
            "panics midway, then panics again when dropped",
            bad(Some(b"twice;"), true, false, true),
            "twice;",
            Outcome::Panicked("poll boom"),
        ),
    ];
    for (i, (what, source, shows, expected)) in cases.into_iter().enumerate() {
        let completion = sender.try_send(source).unwrap();
        let result = outcome(completion).await;
        match (expected, &result) {
            (Outcome::Panicked(p), Ok(Err(Error::Panicked(s)))) if s.contains(p) => {}
            (Outcome::Io, Ok(Err(Error::Io(_)))) | (Outcome::Sent, Ok(Ok(()))) => {}
            _ => panic!("{t:?}: a source that {what}: the send gave {result:?}"),
        }
        let after = format!("after{i};");
        let sent = tokio::time::timeout(LIMIT, sender.send(after.clone().into())).await;
        assert!(
            matches!(sent, Ok(Ok(()))),
            "{t:?}: after a source that {what}, the next send gave {sent:?}"
        );
        client.read_until(&mut got, &after).await;
        assert!(got.text.contains(shows), "{t:?}: {what}: {got:?}");
        assert!(
            got.text.contains(&after) && got.ended.is_none(),
            "{t:?}: after a source that {what}, the client got {got:?}"
        );
        assert!(ch.is_open(), "{t:?}: after a source that {what}, the channel is not open");
    }
    ch.close().await;
    let events = all_events(&mut ch).await;
    assert!(
        !events.iter().any(|e| matches!(e, Event::Error(_))),
        "{t:?}: errors went to the event stream though each send's caller had them: {events:?}"
    );
}

#[tokio::test]
async fn misbehaving_sources_over_websocket_h1() {
    misbehaving_sources(Transport::WsH1).await;
}

#[tokio::test]
async fn misbehaving_sources_over_websocket_h2() {
    misbehaving_sources(Transport::WsH2).await;
}

#[tokio::test]
async fn misbehaving_sources_over_http_stream_h1() {
    misbehaving_sources(Transport::HttpH1).await;
}

#[tokio::test]
async fn misbehaving_sources_over_http_stream_h2() {
    misbehaving_sources(Transport::HttpH2).await;
}

/// The same source (panics midway, and again when dropped), its `Completion` dropped: nobody
/// polls the send but the connection's own task (or hyper's).
async fn twice_panicking_source_fire_and_forget(t: Transport) {
    let (addr, mut channels) = serve_channels(Config::default()).await;
    let mut client = Client::connect(t, addr, "/fire").await;
    let mut ch = next_channel(&mut channels).await;
    let sender = ch.sender();
    drop(sender.try_send(bad(Some(b"twice;"), true, false, true)).unwrap());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = tokio::time::timeout(LIMIT, sender.send("after;".into())).await;
    let mut got = Got::default();
    client.read_until(&mut got, "after;").await;
    assert!(
        matches!(sent, Ok(Ok(()))) && got.text.contains("after;") && got.ended.is_none(),
        "{t:?}: after a source that panicked midway and on drop (its completion dropped), the \
         next send gave {sent:?} and the client got {got:?}"
    );
    let first = tokio::time::timeout(LIMIT, ch.next()).await.unwrap();
    assert!(matches!(first, Some(Event::Open)), "{first:?}");
    let error = tokio::time::timeout(LIMIT, ch.next()).await.unwrap();
    assert!(matches!(&error, Some(Event::Error(Error::Panicked(_)))), "{t:?}: {error:?}");
}

/// The same source sent with `Sender::send` from a task of the application's: the send must
/// fail with `Panicked`, not take the application's task down.
#[tokio::test]
async fn twice_panicking_source_sent_with_send_over_websocket_h1() {
    let (addr, mut channels) = serve_channels(Config::default()).await;
    let mut client = Client::connect(Transport::WsH1, addr, "/send").await;
    let ch = next_channel(&mut channels).await;
    let sender = ch.sender();
    let s = sender.clone();
    let task = tokio::spawn(async move { s.send(bad(Some(b"twice;"), true, false, true)).await });
    let result = tokio::time::timeout(LIMIT, task).await.expect("no outcome within 10 s");
    let sent = tokio::time::timeout(LIMIT, sender.send("after;".into())).await;
    let mut got = Got::default();
    client.read_until(&mut got, "after;").await;
    assert!(
        matches!(&result, Ok(Err(Error::Panicked(_))))
            && matches!(sent, Ok(Ok(())))
            && got.text.contains("after;"),
        "the send gave {result:?} (Err: the application's task died), the next one {sent:?}; \
         the client got {got:?}"
    );
}

#[tokio::test]
async fn twice_panicking_source_fire_and_forget_over_websocket_h1() {
    twice_panicking_source_fire_and_forget(Transport::WsH1).await;
}

#[tokio::test]
async fn twice_panicking_source_fire_and_forget_over_http_stream_h1() {
    twice_panicking_source_fire_and_forget(Transport::HttpH1).await;
}

#[tokio::test]
async fn twice_panicking_source_fire_and_forget_over_http_stream_h2() {
    twice_panicking_source_fire_and_forget(Transport::HttpH2).await;
}

// ---- a queued source whose drop panics when the channel ends ----

/// A source that never yields and never wakes is being sent; a reader whose drop panics waits
/// behind it. The client closes (WebSocket) / the stream's timeout passes (HTTP): the channel
/// must still report `Closed`, once, and both sends must resolve.
#[tokio::test]
async fn a_queued_source_that_panics_when_dropped_at_the_close_still_gives_closed_websocket() {
    let (addr, mut channels) = serve_channels(Config::default()).await;
    let mut ws = support::ws_connect(addr, "/q").await;
    let mut ch = next_channel(&mut channels).await;
    let sender = ch.sender();
    let stuck = sender.try_send(Message::stream(futures::stream::pending())).unwrap();
    // The stuck send is the one being sent (taken from the queue) before the next is queued.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let behind = sender.try_send(bad(Some(b"never"), false, false, true)).unwrap();
    // Both sends awaited from now on, as an application would.
    let (stuck, behind) = (tokio::spawn(outcome(stuck)), tokio::spawn(outcome(behind)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    ws.close(None).await.unwrap();
    let events = tokio::time::timeout(LIMIT, async {
        let mut events = Vec::new();
        while let Some(e) = ch.next().await {
            events.push(e);
        }
        events
    })
    .await;
    let stuck = stuck.await.unwrap();
    let behind = behind.await.unwrap();
    assert!(
        matches!(&events, Ok(e) if matches!(e.last(), Some(Event::Closed(_)))),
        "no Closed within 10 s of the client's close (events: {events:?}); sends: {stuck:?}, \
         {behind:?}"
    );
    assert!(matches!(stuck, Ok(Err(Error::Closed))), "{stuck:?}");
    assert!(matches!(behind, Ok(Err(_))), "{behind:?}");
}

#[tokio::test]
async fn a_queued_source_that_panics_when_dropped_at_the_timeout_still_gives_closed_http() {
    let config = Config::default().timeout(Duration::from_millis(500));
    let (addr, mut channels) = serve_channels(config).await;
    let mut client = Client::connect(Transport::HttpH1, addr, "/q").await;
    let mut ch = next_channel(&mut channels).await;
    let sender = ch.sender();
    sender.send("head;".into()).await.unwrap();
    let stuck = sender.try_send(Message::stream(futures::stream::pending())).unwrap();
    // The stuck send is the one being sent (taken from the queue) before the next is queued.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let behind = sender.try_send(bad(Some(b"never"), false, false, true)).unwrap();
    // Both sends awaited from now on, as an application would.
    let (stuck, behind) = (tokio::spawn(outcome(stuck)), tokio::spawn(outcome(behind)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut got = Got::default();
    client.read_until(&mut got, "0\r\n\r\n").await;
    let events = tokio::time::timeout(LIMIT, async {
        let mut events = Vec::new();
        while let Some(e) = ch.next().await {
            events.push(e);
        }
        events
    })
    .await;
    let stuck = stuck.await.unwrap();
    let behind = behind.await.unwrap();
    assert!(
        matches!(&events, Ok(e) if matches!(e.last(), Some(Event::Closed(_)))),
        "no Closed within 10 s of the stream's timeout (events: {events:?}); sends: {stuck:?}, \
         {behind:?}; client: {got:?}"
    );
    assert!(got.text.ends_with("0\r\n\r\n"), "{got:?}");
}

// ---- handler tasks that panic holding handles ----

/// Handlers that queue messages (fed to the Sink and never flushed; `try_send` with the
/// completion dropped) and then panic: the messages go out, then a proper end.
async fn handler_panics_after_queueing(t: Transport) {
    let addr = serve(Config::default(), |ch: Channel| async move {
        let (mut tx, _rx) = ch.split();
        tx.feed("fed1;".into()).await.unwrap();
        tx.feed("fed2;".into()).await.unwrap();
        drop(tx.try_send(Message::Binary(Bytes::from(vec![b'x'; 300_000]))).unwrap());
        drop(tx.try_send("tail;".into()).unwrap());
        panic!("handler bug with messages queued");
    })
    .await;
    let mut client = Client::connect(t, addr, "/p").await;
    let mut got = Got::default();
    client.read_until(&mut got, "tail;").await;
    // Then the end: a close frame 1000, the chunked terminator, END_STREAM.
    client.read_until(&mut got, "\u{0}never\u{0}").await;
    let xs = "x".repeat(300_000);
    match t {
        Transport::WsH1 | Transport::WsH2 => {
            assert_eq!(got.text, format!("fed1;|fed2;|{xs}|tail;|"), "{t:?}");
            assert_eq!(got.ended.as_deref(), Some("close frame Some(1000)"), "{t:?}");
        }
        Transport::HttpH1 => {
            assert!(got.text.starts_with("HTTP/1.1 200"), "{}", &got.text[..200]);
            assert!(got.text.ends_with("tail;\r\n0\r\n\r\n"), "{:?}", got.ended);
            assert!(got.text.contains("fed1;") && got.text.contains("fed2;"));
        }
        Transport::HttpH2 => {
            assert_eq!(got.text, format!("fed1;fed2;{xs}tail;"), "{t:?}");
            assert_eq!(got.ended.as_deref(), Some("end of stream"), "{t:?}");
        }
    }
}

#[tokio::test]
async fn a_handler_that_panics_after_queueing_ends_the_websocket_h1_properly() {
    handler_panics_after_queueing(Transport::WsH1).await;
}

#[tokio::test]
async fn a_handler_that_panics_after_queueing_ends_the_websocket_h2_properly() {
    handler_panics_after_queueing(Transport::WsH2).await;
}

#[tokio::test]
async fn a_handler_that_panics_after_queueing_ends_the_http_stream_h1_properly() {
    handler_panics_after_queueing(Transport::HttpH1).await;
}

#[tokio::test]
async fn a_handler_that_panics_after_queueing_ends_the_http_stream_h2_properly() {
    handler_panics_after_queueing(Transport::HttpH2).await;
}

// ---- halves dropped ----

/// The Receiver dropped, the Sender kept: what the client sends is discarded (not held, not
/// paused on: 16 MiB go through a 64 KiB queue limit), pings are answered, the Sender still
/// sends, and the client's close is answered and ends the channel.
#[tokio::test]
async fn a_dropped_receiver_discards_input_and_the_connection_still_answers() {
    let (addr, mut channels) = serve_channels(Config::default().queue_limit(64 * 1024)).await;
    let mut raw = RawWs::connect_path(addr, "/r").await;
    let ch = next_channel(&mut channels).await;
    let (sender, receiver) = ch.split();
    drop(receiver);
    let chunk = vec![7u8; 256 * 1024];
    let frame = support::encode_frame(0x82, Some([0, 0, 0, 0]), &chunk, None);
    let pushed = tokio::time::timeout(LIMIT, async {
        for _ in 0..64 {
            raw.tcp.write_all(&frame).await.unwrap();
        }
    })
    .await;
    assert!(pushed.is_ok(), "16 MiB to a channel without a receiver stalled: held or paused on");
    raw.frame(0x89, b"are you there").await;
    let pong = raw.read_frame().await;
    assert_eq!(pong, Some((0x8a, b"are you there".to_vec())));
    tokio::time::timeout(LIMIT, sender.send("still sending".into())).await.unwrap().unwrap();
    assert_eq!(raw.read_frame().await, Some((0x81, b"still sending".to_vec())));
    raw.frame(0x88, &[0x0f, 0xa0]).await; // 4000
    assert_eq!(raw.read_close().await, Some((4000, String::new())));
    tokio::time::timeout(LIMIT, sender.closed()).await.expect("the sender never saw the close");
    assert!(!sender.is_open());
}

/// Every Sender dropped, the Receiver kept: the channel stays open for receiving; dropping
/// the Receiver then closes it (1000).
#[tokio::test]
async fn dropping_every_sender_keeps_the_receiver_then_dropping_it_closes() {
    let (addr, mut channels) = serve_channels(Config::default()).await;
    let mut ws = support::ws_connect(addr, "/s").await;
    let ch = next_channel(&mut channels).await;
    let (sender, mut receiver) = ch.split();
    let clone = sender.clone();
    drop(sender);
    drop(clone);
    ws.send(WsMessage::text("hello")).await.unwrap();
    let open = tokio::time::timeout(LIMIT, receiver.next()).await.unwrap();
    assert!(matches!(open, Some(Event::Open)), "{open:?}");
    let m = tokio::time::timeout(LIMIT, receiver.next()).await.unwrap();
    assert!(
        matches!(&m, Some(Event::Message(webchan::Incoming::Text(t))) if t == "hello"),
        "{m:?}"
    );
    drop(receiver);
    match support::next_msg(&mut ws).await {
        Some(WsMessage::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1000),
        other => panic!("{other:?}"),
    }
}

// ---- cancelled sends ----

fn patterned(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add((i / 997) as u8)).collect()
}

/// Over a WebSocket whose client reads nothing yet: a 15 MiB `send` cancelled after it was
/// accepted still goes out whole; sends cancelled while they waited for room (`SinkExt::send`,
/// `send_all`, `Sender::send`) send nothing; a later send goes out after the large one.
async fn cancelled_sends_websocket(h2: bool) {
    const BIG: usize = 15 << 20; // under tungstenite's 16 MiB frame limit
    let (addr, mut channels) = serve_channels(Config::default()).await;
    let mut client =
        Client::connect(if h2 { Transport::WsH2 } else { Transport::WsH1 }, addr, "/c").await;
    let mut ch = next_channel(&mut channels).await;
    let mut sender = ch.sender();
    let big = patterned(BIG, 0x41);
    let a = tokio::time::timeout(Duration::from_millis(200), sender.send(big.clone().into())).await;
    assert!(a.is_err(), "15 MiB completed to a client that reads nothing");
    let b = tokio::time::timeout(Duration::from_millis(100), sender.send("B".into())).await;
    assert!(b.is_err(), "B was not left waiting for room");
    let c =
        tokio::time::timeout(Duration::from_millis(100), SinkExt::send(&mut sender, "C".into()))
            .await;
    assert!(c.is_err());
    let mut items = futures::stream::iter([Ok(Message::from("D")), Ok(Message::from("E"))]);
    let d = tokio::time::timeout(Duration::from_millis(100), sender.send_all(&mut items)).await;
    assert!(d.is_err());
    let s2 = sender.clone();
    let f = tokio::spawn(async move { s2.send("F".into()).await });
    let mut got = Vec::new();
    loop {
        let next = match &mut client {
            Client::Ws(ws) => tokio::time::timeout(LIMIT, ws.next()).await,
            Client::WsH2(ws, _) => tokio::time::timeout(LIMIT, ws.next()).await,
            _ => unreachable!(),
        };
        match next {
            Ok(Some(Ok(WsMessage::Binary(b)))) => got.push(b.to_vec()),
            Ok(Some(Ok(WsMessage::Text(t)))) => {
                let done = t.as_str() == "F";
                got.push(t.as_bytes().to_vec());
                if done {
                    break;
                }
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("h2 {h2}: {other:?} after {} messages", got.len()),
        }
    }
    tokio::time::timeout(LIMIT, f).await.unwrap().unwrap().unwrap();
    assert_eq!(got.len(), 2, "h2 {h2}: {:?}", got.iter().map(Vec::len).collect::<Vec<_>>());
    assert!(
        got[0] == big,
        "h2 {h2}: the cancelled 15 MiB send arrived changed ({} bytes)",
        got[0].len()
    );
    assert_eq!(got[1], b"F");
    ch.close().await;
    let events = all_events(&mut ch).await;
    assert_eq!(closed_of(&events).code, Some(1000));
}

#[tokio::test]
async fn cancelled_sends_over_websocket_h1() {
    cancelled_sends_websocket(false).await;
}

#[tokio::test]
async fn cancelled_sends_over_websocket_h2() {
    cancelled_sends_websocket(true).await;
}

// ---- a source that never wakes ----

/// A `Message::stream` that is always pending and never wakes is being sent when the client
/// closes: the close is answered, `Closed` comes with the client's code, the send fails.
#[tokio::test]
async fn a_never_waking_source_does_not_stop_the_clients_close() {
    let (addr, mut channels) = serve_channels(Config::default()).await;
    let mut raw = RawWs::connect_path(addr, "/n").await;
    let mut ch = next_channel(&mut channels).await;
    let sender = ch.sender();
    let polled = Arc::new(AtomicUsize::new(0));
    let p = polled.clone();
    let stuck = sender
        .try_send(Message::stream(futures::stream::poll_fn(move |_| {
            p.fetch_add(1, Ordering::SeqCst);
            Poll::<Option<Message>>::Pending
        })))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(polled.load(Ordering::SeqCst) > 0);
    raw.frame(0x89, b"p").await;
    assert_eq!(raw.read_frame().await, Some((0x8a, b"p".to_vec())));
    raw.frame(0x88, &[0x0f, 0xa1, b'b']).await; // 4001 "b"
                                                // (RFC 6455 §5.5.1: the answer usually echoes the code; the reason is the server's.)
    assert_eq!(raw.read_close().await.map(|(code, _)| code), Some(4001));
    let events = all_events(&mut ch).await;
    assert_eq!(closed_of(&events).code, Some(4001));
    assert!(matches!(outcome(stuck).await, Ok(Err(Error::Closed))));
}

/// The same on an HTTP/1.1 stream whose client goes away: the send stuck on the source must
/// not hang ("every accepted send completes or reports its error; none hangs").
#[tokio::test]
async fn a_never_waking_source_on_an_http_stream_whose_client_leaves() {
    let (addr, mut channels) = serve_channels(Config::default()).await;
    let mut client = Client::connect(Transport::HttpH1, addr, "/n").await;
    let mut ch = next_channel(&mut channels).await;
    let sender = ch.sender();
    sender.send("head;".into()).await.unwrap();
    let mut got = Got::default();
    client.read_until(&mut got, "head;").await;
    let stuck = sender.try_send(Message::stream(futures::stream::pending())).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(client);
    let result = outcome(stuck).await;
    let events = tokio::time::timeout(Duration::from_secs(5), async {
        let mut events = Vec::new();
        while let Some(e) = ch.next().await {
            events.push(e);
        }
        events
    })
    .await;
    assert!(
        matches!(result, Ok(Err(Error::Closed))) && events.is_ok(),
        "client gone: the send stuck on a quiet source gave {result:?}; events {events:?}"
    );
}

// ---- compat ----

/// compat: a send whose source panics midway and again when dropped. The module docs: "A
/// callback that panics does not kill the channel's task"; every accepted send gets exactly
/// one of its callbacks; `on_close` comes once, last.
#[tokio::test]
async fn compat_a_source_that_panics_twice_gets_its_on_error_and_on_close_still_comes() {
    use webchan::compat::{Options, SendOptions};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (t1, t2, t3) = (tx.clone(), tx.clone(), tx.clone());
    let options = Options::new()
        .on_open(move |h| {
            let t = t1.clone();
            let sent = h.send(
                bad(Some(b"twice;"), true, false, true),
                SendOptions::new()
                    .on_success({
                        let t = t.clone();
                        move || {
                            let _ = t.send("on_success".into());
                        }
                    })
                    .on_error(move |e| {
                        let _ = t.send(format!("send on_error: {e}"));
                    }),
            );
            assert!(sent.unwrap());
            let _ = h.send("after;", SendOptions::new());
        })
        .on_error(move |_, e| {
            let _ = t2.send(format!("on_error: {e}"));
        })
        .on_close(move |_, info| {
            let _ = t3.send(format!("on_close: {:?}", info.code));
        });
    let addr = support::serve_compat(options).await;
    let mut client = Client::connect(Transport::WsH1, addr, "/compat").await;
    let mut got = Got::default();
    client.read_until(&mut got, "after;").await;
    if let Client::Ws(ws) = &mut client {
        let _ = ws.close(None).await;
    }
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + LIMIT;
    while let Ok(Some(s)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        let last = s.starts_with("on_close");
        seen.push(s);
        if last {
            break;
        }
    }
    assert!(
        seen.len() == 2
            && seen[0].starts_with("send on_error: panicked")
            && seen[1].starts_with("on_close"),
        "callbacks: {seen:?}; the client got {got:?}"
    );
}

/// Through the Sink: the same source fed, then flushed from a task of the application's. The
/// send's error must reach the event stream ("errors nobody awaits arrive as Event::Error"),
/// never be counted as sent.
#[tokio::test]
async fn twice_panicking_source_fed_and_flushed_is_reported_not_counted_as_sent() {
    let (addr, mut channels) = serve_channels(Config::default()).await;
    let mut client = Client::connect(Transport::WsH1, addr, "/sink").await;
    let mut ch = next_channel(&mut channels).await;
    let sender = ch.sender();
    let mut sink = ch.sender();
    sink.feed(bad(Some(b"twice;"), true, false, true)).await.unwrap();
    let flush = tokio::spawn(async move { sink.flush().await });
    let flushed = tokio::time::timeout(LIMIT, flush).await.expect("no flush outcome within 10 s");
    tokio::time::timeout(LIMIT, sender.send("after;".into())).await.unwrap().unwrap();
    let mut got = Got::default();
    client.read_until(&mut got, "after;").await;
    ch.close().await;
    let events = all_events(&mut ch).await;
    let panicked = events.iter().filter(|e| matches!(e, Event::Error(Error::Panicked(_)))).count();
    assert!(
        panicked == 1 || matches!(flushed, Ok(Err(Error::Panicked(_)))),
        "the flush gave {flushed:?} (Err: the application's task died); events {events:?}: the \
         failed send was reported nowhere; the client got {got:?}"
    );
}
