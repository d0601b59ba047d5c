//! The futures contracts of the public API over real sockets (from stop 29's review,
//! 2026-12-05): the latest waker woken, several waiters all woken, Stream and Sink contracts,
//! `Completion` and `Reply`, cancellation in `select!`, split halves on two tasks, and reading
//! resumed after the read pause on a multi-thread runtime.
// Futures kept across tasks on purpose (a waker that died with its first task).
#![allow(clippy::async_yields_async)]
mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::FusedStream as _;
use futures::{Sink, SinkExt, Stream, StreamExt};
use support::*;
use webchan::{Channel, Config, Error, Event, Incoming, Message};

// ---- helpers ----

#[derive(Default)]
struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A counting waker.
fn counter() -> (Arc<Count>, Waker) {
    let c = Arc::new(Count::default());
    let w = Waker::from(Arc::clone(&c));
    (c, w)
}

fn n(c: &Count) -> usize {
    c.0.load(Ordering::SeqCst)
}

/// Waits (real time) until `c` was woken, at most `within`.
async fn woken(c: &Count, within: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if n(c) > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    n(c) > 0
}

fn poll_fut<F: Future + Unpin>(f: &mut F, w: &Waker) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(w))
}

fn poll_stream<S: Stream + Unpin>(s: &mut S, w: &Waker) -> Poll<Option<S::Item>> {
    Pin::new(s).poll_next(&mut Context::from_waker(w))
}

fn ready<S: Sink<Message> + Unpin>(s: &mut S, w: &Waker) -> Poll<Result<(), S::Error>> {
    Pin::new(s).poll_ready(&mut Context::from_waker(w))
}

fn flush<S: Sink<Message> + Unpin>(s: &mut S, w: &Waker) -> Poll<Result<(), S::Error>> {
    Pin::new(s).poll_flush(&mut Context::from_waker(w))
}

fn close<S: Sink<Message> + Unpin>(s: &mut S, w: &Waker) -> Poll<Result<(), S::Error>> {
    Pin::new(s).poll_close(&mut Context::from_waker(w))
}

fn noop() -> Waker {
    futures::task::noop_waker()
}

/// A WebSocket (HTTP/1.1, tokio-tungstenite client) and its server channel, after `Open`.
async fn ws_pair(config: Config) -> (Channel, WsClient) {
    let (addr, mut rx) = serve_channels(config).await;
    let ws = ws_connect(addr, "/").await;
    let mut ch = next_channel(&mut rx).await;
    assert!(matches!(next_of(&mut ch).await, Some(Event::Open)));
    (ch, ws)
}

fn quiet() -> Config {
    Config::default().keepalive(None)
}

fn bin(size: usize, number: u32) -> Message {
    Message::Binary(Bytes::from(numbered(number, size)))
}

/// Feeds 256 KiB messages through `sink` (polling `poll_ready` with a no-op waker, never
/// flushing) until `poll_ready` stays pending: the client reads nothing, so the socket's
/// buffers fill and then the queue. Returns how many were accepted.
fn fill<S: Sink<Message, Error = Error> + Unpin>(sink: &mut S) -> u32 {
    let mut sent = 0;
    loop {
        match ready(sink, &noop()) {
            Poll::Ready(Ok(())) => {
                Pin::new(&mut *sink).start_send(bin(256 * 1024, sent)).unwrap();
                sent += 1;
            }
            Poll::Ready(Err(e)) => panic!("poll_ready failed: {e}"),
            Poll::Pending => return sent,
        }
        assert!(sent < 400, "100 MiB went into a socket nobody reads");
    }
}

/// Reads `count` data messages on its own task, checking their numbers from 0.
fn read_numbered(mut ws: WsClient, count: u32) -> tokio::task::JoinHandle<WsClient> {
    tokio::spawn(async move {
        for i in 0..count {
            match next_msg(&mut ws).await {
                Some(WsMessage::Binary(b)) => {
                    assert_eq!(u32::from_be_bytes(b[..4].try_into().unwrap()), i)
                }
                other => panic!("message {i}: {other:?}"),
            }
        }
        ws
    })
}

// ---- 1. the latest waker is the one woken ----

#[tokio::test]
async fn receiver_wakes_the_latest_waker_ws_small_messages() {
    let (mut ch, mut ws) = ws_pair(quiet()).await;
    let (a, wa) = counter();
    let (b, wb) = counter();
    assert!(poll_stream(&mut ch, &wa).is_pending());
    assert!(poll_stream(&mut ch, &wb).is_pending());
    send_text(&mut ws, "x").await;
    assert!(woken(&b, Duration::from_secs(3)).await, "B not woken (A woken {} times)", n(&a));
    match poll_stream(&mut ch, &wb) {
        Poll::Ready(Some(Event::Message(Incoming::Text(t)))) => assert_eq!(t.as_str(), "x"),
        other => panic!("{other:?}"),
    }
}

/// The same while the receiver reads large messages on its own task (`read_inline`), with
/// keepalive on (the readiness wakes the parked receiver) and off.
async fn receiver_latest_waker_large(config: Config) {
    let (mut ch, mut ws) = ws_pair(config).await;
    // Large messages turn the receiver's own reads on.
    for i in 0..20u32 {
        ws.send(WsMessage::binary(numbered(i, 200_000))).await.unwrap();
        match next_of(&mut ch).await {
            Some(Event::Message(Incoming::Binary(b))) => assert_eq!(b.len(), 200_000),
            other => panic!("{other:?}"),
        }
    }
    let (a, wa) = counter();
    let (b, wb) = counter();
    assert!(poll_stream(&mut ch, &wa).is_pending());
    assert!(poll_stream(&mut ch, &wb).is_pending());
    let a0 = n(&a);
    ws.send(WsMessage::binary(numbered(99, 200_000))).await.unwrap();
    assert!(woken(&b, Duration::from_secs(3)).await, "B not woken (A woken {})", n(&a) - a0);
    let t0 = Instant::now();
    loop {
        match poll_stream(&mut ch, &wb) {
            Poll::Ready(Some(Event::Message(Incoming::Binary(m)))) => {
                assert_eq!(&m[..4], &99u32.to_be_bytes());
                break;
            }
            Poll::Pending if t0.elapsed() < Duration::from_secs(3) => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn receiver_wakes_the_latest_waker_ws_large_messages_keepalive_on() {
    receiver_latest_waker_large(Config::default()).await;
}

#[tokio::test]
async fn receiver_wakes_the_latest_waker_ws_large_messages_keepalive_off() {
    receiver_latest_waker_large(quiet()).await;
}

#[tokio::test]
async fn receiver_wakes_the_latest_waker_http_stream_closed() {
    let (addr, mut rx) = serve_channels(Config::default()).await;
    let client = tokio::spawn(async move { http1_get(addr, get(addr, "/")).await });
    let mut ch = next_channel(&mut rx).await;
    assert!(matches!(next_of(&mut ch).await, Some(Event::Open)));
    let (_a, wa) = counter();
    let (b, wb) = counter();
    assert!(poll_stream(&mut ch, &wa).is_pending());
    assert!(poll_stream(&mut ch, &wb).is_pending());
    let sender = ch.sender();
    drop(sender.try_send("bye".into()).unwrap());
    assert!(sender.start_close(1000, ""));
    assert!(woken(&b, Duration::from_secs(3)).await, "B not woken by Closed");
    assert!(matches!(poll_stream(&mut ch, &wb), Poll::Ready(Some(Event::Closed(_)))));
    let response = client.await.unwrap();
    assert_eq!(&response.body()[..], b"bye");
}

#[tokio::test]
async fn poll_ready_wakes_the_latest_waker_and_every_waiting_clone() {
    let (ch, ws) = ws_pair(quiet().queue_limit(64 * 1024)).await;
    let mut s1 = ch.sender();
    let mut s2 = ch.sender();
    let sent = fill(&mut s1);
    let (_a, wa) = counter();
    let (b, wb) = counter();
    let (c, wc) = counter();
    assert!(ready(&mut s1, &wa).is_pending());
    assert!(ready(&mut s1, &wb).is_pending());
    assert!(ready(&mut s2, &wc).is_pending(), "the other clone sees the same queue");
    let reader = read_numbered(ws, sent);
    assert!(woken(&b, Duration::from_secs(5)).await, "s1's latest waker not woken");
    assert!(woken(&c, Duration::from_secs(5)).await, "s2's waker not woken");
    assert!(matches!(ready(&mut s1, &wb), Poll::Ready(Ok(()))));
    assert!(matches!(ready(&mut s2, &wc), Poll::Ready(Ok(()))));
    // Flush what s1 fed, then the client has them all.
    tokio::time::timeout(Duration::from_secs(5), s1.flush()).await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(10), reader).await.unwrap().unwrap();
    drop(ch);
}

#[tokio::test]
async fn poll_flush_wakes_the_latest_waker() {
    let (ch, ws) = ws_pair(quiet().queue_limit(64 * 1024)).await;
    let mut s = ch.sender();
    let sent = fill(&mut s);
    // One more, whatever the queue (start_send without poll_ready: see f_start_send_*).
    let (_a, wa) = counter();
    let (b, wb) = counter();
    assert!(flush(&mut s, &wa).is_pending());
    assert!(flush(&mut s, &wb).is_pending());
    let reader = read_numbered(ws, sent);
    assert!(woken(&b, Duration::from_secs(5)).await, "the flush's latest waker not woken");
    let t0 = Instant::now();
    loop {
        match flush(&mut s, &wb) {
            Poll::Ready(r) => break r.unwrap(),
            Poll::Pending if t0.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Poll::Pending => panic!("flush never ready"),
        }
    }
    tokio::time::timeout(Duration::from_secs(10), reader).await.unwrap().unwrap();
    drop(ch);
}

#[tokio::test]
async fn poll_close_wakes_the_latest_waker_and_the_close_frame_goes_out_last() {
    let (ch, ws) = ws_pair(quiet().queue_limit(64 * 1024)).await;
    let mut s = ch.sender();
    let sent = fill(&mut s);
    let (_a, wa) = counter();
    let (b, wb) = counter();
    assert!(close(&mut s, &wa).is_pending());
    assert!(close(&mut s, &wb).is_pending());
    let reader = tokio::spawn(async move {
        let mut ws = ws;
        let mut got = 0u32;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap() {
                Some(Ok(WsMessage::Binary(m))) => {
                    assert_eq!(u32::from_be_bytes(m[..4].try_into().unwrap()), got);
                    got += 1;
                }
                Some(Ok(WsMessage::Close(f))) => {
                    // tungstenite answers it on the next poll.
                    let _ = ws.next().await;
                    return (got, f.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => {}
                other => panic!("{other:?}"),
            }
        }
    });
    assert!(woken(&b, Duration::from_secs(5)).await, "poll_close's latest waker not woken");
    let t0 = Instant::now();
    loop {
        match close(&mut s, &wb) {
            Poll::Ready(r) => break r.unwrap(),
            Poll::Pending if t0.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Poll::Pending => panic!("close never ready"),
        }
    }
    let (got, code) = tokio::time::timeout(Duration::from_secs(10), reader).await.unwrap().unwrap();
    assert_eq!(got, sent, "every message before the close frame");
    assert_eq!(code, Some(1000));
    assert!(!ch.is_open());
}

#[tokio::test]
async fn completion_wakes_the_latest_waker_and_two_completions_both_wake() {
    let (ch, ws) = ws_pair(quiet().queue_limit(64 << 20)).await;
    let s = ch.sender();
    // 32 MiB in 1 MiB messages to a client that reads nothing.
    let mut completions: Vec<_> = (0..32).map(|i| s.try_send(bin(1 << 20, i)).unwrap()).collect();
    let mut last = completions.pop().unwrap();
    let mut before = completions.pop().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_a, wa) = counter();
    let (b, wb) = counter();
    let (c, wc) = counter();
    assert!(poll_fut(&mut last, &wa).is_pending(), "32 MiB cannot be in the socket yet");
    assert!(poll_fut(&mut last, &wb).is_pending());
    assert!(poll_fut(&mut before, &wc).is_pending());
    drop(completions);
    let reader = read_numbered(ws, 32);
    assert!(woken(&c, Duration::from_secs(8)).await, "the other completion not woken");
    assert!(woken(&b, Duration::from_secs(8)).await, "the completion's latest waker not woken");
    tokio::time::timeout(Duration::from_secs(10), reader).await.unwrap().unwrap();
    let t0 = Instant::now();
    loop {
        match poll_fut(&mut last, &wb) {
            Poll::Ready(r) => break r.unwrap(),
            Poll::Pending if t0.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Poll::Pending => panic!("completion never ready"),
        }
    }
    drop(ch);
}

#[tokio::test]
async fn closed_wakes_the_latest_waker_and_two_closed_futures_both_wake() {
    let (ch, mut ws) = ws_pair(quiet()).await;
    let s = ch.sender();
    let mut c1 = Box::pin(s.closed());
    let mut c2 = Box::pin(s.closed());
    let (_a, wa) = counter();
    let (b, wb) = counter();
    let (c, wc) = counter();
    assert!(c1.as_mut().poll(&mut Context::from_waker(&wa)).is_pending());
    assert!(c1.as_mut().poll(&mut Context::from_waker(&wb)).is_pending());
    assert!(c2.as_mut().poll(&mut Context::from_waker(&wc)).is_pending());
    ws.close(None).await.unwrap();
    assert!(woken(&b, Duration::from_secs(3)).await, "closed()'s latest waker not woken");
    assert!(woken(&c, Duration::from_secs(3)).await, "the second closed() not woken");
    assert!(c1.as_mut().poll(&mut Context::from_waker(&wb)).is_ready());
    assert!(c2.as_mut().poll(&mut Context::from_waker(&wc)).is_ready());
    drop(ch);
}

/// A `Completion` polled on one task inside `select!` with a timer (which wins), then moved to
/// another task and awaited there: it must complete there.
#[tokio::test]
async fn completion_moved_between_tasks_completes() {
    let (ch, ws) = ws_pair(quiet().queue_limit(64 << 20)).await;
    let s = ch.sender();
    let completions: Vec<_> = (0..31).map(|i| s.try_send(bin(1 << 20, i)).unwrap()).collect();
    let last = s.try_send(bin(1 << 20, 31)).unwrap();
    let last = tokio::spawn(async move {
        let mut last = last;
        tokio::select! {
            r = &mut last => panic!("32 MiB cannot be written yet: {r:?}"),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        last
    })
    .await
    .unwrap();
    // Its first task has finished (its waker is dead); a closed() future likewise.
    let closed = tokio::spawn({
        let s = s.clone();
        async move {
            let mut closed = Box::pin(async move { s.closed().await });
            tokio::select! {
                _ = &mut closed => panic!("not closed yet"),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            closed
        }
    })
    .await
    .unwrap();
    drop(completions);
    let waiter = tokio::spawn(last);
    let closed_waiter = tokio::spawn(closed);
    let reader = read_numbered(ws, 32);
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("moved completion hung")
        .unwrap()
        .unwrap();
    let mut ws = tokio::time::timeout(Duration::from_secs(10), reader).await.unwrap().unwrap();
    ws.close(None).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), closed_waiter)
        .await
        .expect("moved closed() hung")
        .unwrap();
    drop(ch);
}

// ---- Reply ----

type ReplyHandoff =
    (webchan::Reply, Channel, tokio::sync::oneshot::Sender<http::Response<webchan::Body>>);

/// A server whose handler gives the `Reply` and the channel to the test, and answers with the
/// response the test sends back.
async fn serve_replies(
) -> (std::net::SocketAddr, tokio::sync::mpsc::UnboundedReceiver<ReplyHandoff>) {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<ReplyHandoff>();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let (reply, channel) = webchan::as_channel(req, quiet()).unwrap();
                        let (rtx, rrx) = tokio::sync::oneshot::channel();
                        tx.send((reply, channel, rtx)).ok().unwrap();
                        Ok::<_, std::convert::Infallible>(rrx.await.unwrap())
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn reply_of_an_http_stream_wakes_the_latest_waker() {
    let (addr, mut rx) = serve_replies().await;
    let client = tokio::spawn(async move { http1_get(addr, get(addr, "/")).await });
    let (mut reply, ch, answer) =
        tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    let (_a, wa) = counter();
    let (b, wb) = counter();
    assert!(poll_fut(&mut reply, &wa).is_pending(), "no head is due before the first send");
    assert!(poll_fut(&mut reply, &wb).is_pending());
    let s = ch.sender();
    let done = s.try_send_and_close("hello".into()).unwrap();
    assert!(woken(&b, Duration::from_secs(3)).await, "the reply's latest waker not woken");
    let Poll::Ready(response) = poll_fut(&mut reply, &wb) else { panic!("reply not ready") };
    answer.send(response).ok().unwrap();
    let response = client.await.unwrap();
    assert_eq!(&response.body()[..], b"hello");
    tokio::time::timeout(Duration::from_secs(5), done).await.unwrap().unwrap();
    drop(ch);
}

/// A Reply polled again after it gave its response panics, as its docs say.
#[tokio::test]
async fn reply_polled_after_ready() {
    let (addr, mut rx) = serve_replies().await;
    let _client = tokio::spawn(async move {
        let _ = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    });
    let (mut reply, ch, answer) =
        tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    let Poll::Ready(response) = poll_fut(&mut reply, &noop()) else { panic!("ws reply at once") };
    assert_eq!(response.status(), 101);
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        poll_fut(&mut reply, &noop()).is_ready()
    }));
    assert!(again.is_err(), "a second poll panics");
    answer.send(response).ok().unwrap();
    drop(reply);
    let mut ch = ch;
    assert!(
        matches!(next_of(&mut ch).await, Some(Event::Open)),
        "dropping a finished reply keeps the channel"
    );
}

// ---- 3. the Stream contract ----

async fn stream_ends_and_stays_ended(mut ch: Channel) {
    let mut closed = false;
    while let Some(e) = tokio::time::timeout(Duration::from_secs(10), ch.next()).await.unwrap() {
        assert!(!closed, "an event after Closed: {e:?}");
        if matches!(e, Event::Closed(_)) {
            closed = true;
            assert!(ch.is_terminated(), "Closed was given: the stream has ended");
        } else {
            assert!(!ch.is_terminated());
        }
    }
    assert!(closed);
    for _ in 0..5 {
        assert!(matches!(poll_stream(&mut ch, &noop()), Poll::Ready(None)));
        assert!(ch.is_terminated());
    }
    let (lo, hi) = ch.size_hint();
    assert!(hi.map_or(true, |h| h >= lo), "size_hint ({lo}, {hi:?})");
    // A stream adapter that relies on FusedStream (select_next_some) sees it as ended.
    let (sender, mut receiver) = ch.split();
    assert!(receiver.is_terminated());
    assert!(receiver.next().await.is_none());
    assert!(sender.send("late".into()).await.is_err());
}

#[tokio::test]
async fn stream_after_closed_yields_none_forever_ws() {
    let (ch, mut ws) = ws_pair(quiet()).await;
    send_text(&mut ws, "a").await;
    ws.close(None).await.unwrap();
    stream_ends_and_stays_ended(ch).await;
}

#[tokio::test]
async fn stream_after_closed_yields_none_forever_http() {
    let (addr, mut rx) = serve_channels(quiet()).await;
    let client = tokio::spawn(async move { http1_get(addr, get(addr, "/")).await });
    let mut ch = next_channel(&mut rx).await;
    assert!(matches!(next_of(&mut ch).await, Some(Event::Open)));
    ch.sender().send_and_close("x".into()).await.unwrap();
    stream_ends_and_stays_ended(ch).await;
    assert_eq!(&client.await.unwrap().body()[..], b"x");
}

/// A late error (a dropped completion of a send that failed with the channel) given out
/// after `Closed` was taken would break "Closed is last": check the stream never gives an
/// event after Closed when completions are dropped around the end.
#[tokio::test]
async fn no_event_after_closed_with_completions_dropped_late() {
    for _ in 0..20 {
        let (ch, ws) = ws_pair(quiet().queue_limit(64 << 20)).await;
        let (sender, mut receiver) = ch.split();
        let pending: Vec<_> = (0..8).map(|i| sender.try_send(bin(1 << 20, i)).unwrap()).collect();
        drop(ws); // the client vanishes with megabytes unread
        let mut events = Vec::new();
        let mut pending = Some(pending);
        while let Some(e) =
            tokio::time::timeout(Duration::from_secs(10), receiver.next()).await.unwrap()
        {
            let closed = matches!(e, Event::Closed(_));
            events.push(e);
            if closed {
                // Drop the completions right after Closed was taken.
                drop(pending.take());
            }
        }
        let closed_at = events.iter().position(|e| matches!(e, Event::Closed(_))).unwrap();
        assert_eq!(closed_at, events.len() - 1, "{events:?}");
        drop(pending);
        assert!(receiver.next().await.is_none());
    }
}

// ---- 4. the Sink contract ----

/// Reads a WebSocket until its close frame: the data messages and the close code.
async fn ws_read_all(ws: &mut WsClient) -> (Vec<Vec<u8>>, Option<u16>) {
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no close within 10 s")
        {
            Some(Ok(WsMessage::Binary(m))) => got.push(m.to_vec()),
            Some(Ok(WsMessage::Text(t))) => got.push(t.as_bytes().to_vec()),
            Some(Ok(WsMessage::Close(f))) => {
                let _ = ws.next().await;
                return (got, f.map(|f| u16::from(f.code)));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("{e}"),
            None => return (got, None),
        }
    }
}

#[tokio::test]
async fn sink_close_flushes_what_was_fed_then_closes_ws() {
    let (mut ch, mut ws) = ws_pair(quiet()).await;
    for i in 0..100u32 {
        ch.feed(bin(100, i)).await.unwrap();
    }
    let closing = tokio::spawn(async move {
        let r = SinkExt::close(&mut ch).await;
        (ch, r)
    });
    let (got, code) = ws_read_all(&mut ws).await;
    assert_eq!(got.len(), 100);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(&m[..4], &(i as u32).to_be_bytes());
    }
    assert_eq!(code, Some(1000));
    let (mut ch, r) = tokio::time::timeout(Duration::from_secs(5), closing).await.unwrap().unwrap();
    r.unwrap();
    assert!(!ch.is_open());
    // start_send after poll_close: an error, not a panic.
    let e = Pin::new(&mut ch).start_send("late".into()).unwrap_err();
    assert!(matches!(e, Error::Closed), "{e:?}");
    assert!(matches!(ready(&mut ch, &noop()), Poll::Ready(Err(Error::Closed))));
    // poll_flush / poll_close again: no panic, no hang.
    assert!(flush(&mut ch, &noop()).is_ready());
    assert!(close(&mut ch, &noop()).is_ready());
}

#[tokio::test]
async fn sink_close_flushes_what_was_fed_then_ends_the_body_http() {
    let (addr, mut rx) = serve_channels(quiet()).await;
    let client = tokio::spawn(async move { http1_get(addr, get(addr, "/")).await });
    let mut ch = next_channel(&mut rx).await;
    assert!(matches!(next_of(&mut ch).await, Some(Event::Open)));
    let mut expected = Vec::new();
    for i in 0..100u32 {
        let line = format!("line {i}\n");
        expected.extend_from_slice(line.as_bytes());
        ch.feed(line.into()).await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(5), SinkExt::close(&mut ch)).await.unwrap().unwrap();
    assert!(!ch.is_open());
    let response = tokio::time::timeout(Duration::from_secs(5), client).await.unwrap().unwrap();
    assert_eq!(&response.body()[..], &expected[..]);
    assert!(matches!(Pin::new(&mut ch).start_send("late".into()), Err(Error::Closed)));
    let events = all_events(&mut ch).await;
    assert!(!events.iter().any(|e| matches!(e, Event::Error(_))), "{events:?}");
}

/// `start_send` without `poll_ready` first, the queue at its limit: accepted, over the limit
/// (as `Sender`'s docs say), and sent.
#[tokio::test]
async fn start_send_without_poll_ready_at_the_limit() {
    let (ch, ws) = ws_pair(quiet().queue_limit(64 * 1024)).await;
    let mut s = ch.sender();
    let sent = fill(&mut s);
    let r = Pin::new(&mut s).start_send(bin(256 * 1024, sent));
    r.unwrap();
    let reader = read_numbered(ws, sent + 1);
    tokio::time::timeout(Duration::from_secs(10), s.flush()).await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(10), reader).await.unwrap().unwrap();
    drop(ch);
}

/// `poll_flush` of a 16 MiB message to a client that reads nothing: not ready while the bytes
/// cannot have left; ready once the client reads; the client then has it all.
#[tokio::test]
async fn flush_waits_for_the_write_ws() {
    let (ch, ws) = ws_pair(quiet().queue_limit(64 << 20)).await;
    let mut s = ch.sender();
    s.feed(bin(16 << 20, 7)).await.unwrap();
    let t0 = Instant::now();
    let early = tokio::time::timeout(Duration::from_millis(500), s.flush()).await;
    assert!(early.is_err(), "flush ready after {:?} with 16 MiB unread", t0.elapsed());
    let reader = tokio::spawn(async move {
        let mut ws = ws;
        match next_msg(&mut ws).await {
            Some(WsMessage::Binary(b)) => assert_eq!(b.len(), 16 << 20),
            other => panic!("{other:?}"),
        }
    });
    tokio::time::timeout(Duration::from_secs(10), s.flush()).await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(10), reader).await.unwrap().unwrap();
    drop(ch);
}

#[tokio::test]
async fn flush_waits_for_the_write_http() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, mut rx) = serve_channels(quiet().queue_limit(64 << 20)).await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
    let mut ch = next_channel(&mut rx).await;
    assert!(matches!(next_of(&mut ch).await, Some(Event::Open)));
    let mut s = ch.sender();
    s.feed(bin(16 << 20, 7)).await.unwrap();
    let t0 = Instant::now();
    let early = tokio::time::timeout(Duration::from_millis(500), s.flush()).await;
    assert!(early.is_err(), "flush ready after {:?} with 16 MiB unread", t0.elapsed());
    let reader = tokio::spawn(async move {
        let mut total = 0usize;
        let mut buf = vec![0u8; 1 << 20];
        while total < (16 << 20) {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0);
            total += n;
        }
        tcp
    });
    tokio::time::timeout(Duration::from_secs(10), s.flush()).await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(10), reader).await.unwrap().unwrap();
    drop(ch);
}

#[tokio::test]
async fn send_all_forward_and_fanout() {
    let (addr, mut rx) = serve_channels(quiet().queue_limit(8 * 1024)).await;
    let mut clients = Vec::new();
    let mut chs = Vec::new();
    for _ in 0..3 {
        let ws = ws_connect(addr, "/").await;
        let mut ch = next_channel(&mut rx).await;
        assert!(matches!(next_of(&mut ch).await, Some(Event::Open)));
        clients.push(tokio::spawn(async move {
            let mut ws = ws;
            ws_read_all(&mut ws).await
        }));
        chs.push(ch);
    }
    // send_all: 1,000 messages of 1 KiB through a queue of 8 KiB.
    let mut items = futures::stream::iter((0..1000u32).map(|i| Ok(bin(1024, i))));
    let mut s1 = chs[0].sender();
    tokio::time::timeout(Duration::from_secs(10), s1.send_all(&mut items)).await.unwrap().unwrap();
    // fanout to channels 0 and 1 (text: Message is not Clone), forwarded: forward closes its
    // sink, so both channels close after these.
    let fan = chs[0]
        .sender()
        .with(|t: String| async move { Ok::<_, Error>(Message::from(t)) })
        .fanout(chs[1].sender().with(|t: String| async move { Ok::<_, Error>(Message::from(t)) }));
    tokio::time::timeout(
        Duration::from_secs(10),
        futures::stream::iter((0..500u32).map(|i| Ok(format!("{i:08}")))).forward(fan),
    )
    .await
    .unwrap()
    .unwrap();
    // forward from a stream into channel 2's sender.
    tokio::time::timeout(
        Duration::from_secs(10),
        futures::stream::iter((0..1000u32).map(|i| Ok(bin(1024, i)))).forward(chs[2].sender()),
    )
    .await
    .unwrap()
    .unwrap();
    let mut results = Vec::new();
    for c in clients {
        results.push(tokio::time::timeout(Duration::from_secs(10), c).await.unwrap().unwrap());
    }
    let (got0, code0) = &results[0];
    assert_eq!(got0.len(), 1500);
    for (i, m) in got0[..1000].iter().enumerate() {
        assert_eq!(&m[..4], &(i as u32).to_be_bytes(), "message {i}");
    }
    for (i, m) in got0[1000..].iter().enumerate() {
        assert_eq!(m, format!("{i:08}").as_bytes());
    }
    let (got1, code1) = &results[1];
    assert_eq!(got1.len(), 500);
    for (i, m) in got1.iter().enumerate() {
        assert_eq!(m, format!("{i:08}").as_bytes());
    }
    let (got2, code2) = &results[2];
    assert_eq!(got2.len(), 1000);
    for (i, m) in got2.iter().enumerate() {
        assert_eq!(&m[..4], &(i as u32).to_be_bytes(), "message {i}");
    }
    assert_eq!((*code0, *code1, *code2), (Some(1000), Some(1000), Some(1000)));
    for ch in &mut chs {
        let events = all_events(ch).await;
        assert!(!events.iter().any(|e| matches!(e, Event::Error(_))), "{events:?}");
    }
}

// ---- 5. Completion ----

#[tokio::test]
async fn completion_after_ready_dropped_early_and_failed() {
    let (ch, mut ws) = ws_pair(quiet()).await;
    let s = ch.sender();
    // Polled after Ready.
    let mut c = s.try_send("one".into()).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), &mut c).await.unwrap();
    r.unwrap();
    // Not polled again: what a second poll gives is unspecified (`Completion`'s docs).
    drop(c);
    // Dropped before ready: still goes out.
    drop(s.try_send("two".into()).unwrap());
    // A failing source.
    let failing = Message::reader(FailingReader);
    let mut c = s.try_send(failing).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), &mut c).await.unwrap();
    assert!(r.is_err(), "{r:?}");
    drop(c);
    drop(s.try_send("three".into()).unwrap());
    let mut got = Vec::new();
    while got.len() < 3 {
        match next_msg(&mut ws).await {
            Some(WsMessage::Text(t)) => got.push(t.to_string()),
            Some(WsMessage::Binary(b)) => got.push(format!("binary {}", b.len())),
            other => panic!("{other:?} after {got:?}"),
        }
    }
    assert_eq!(got[0], "one");
    assert_eq!(got[1], "two");
    ws.close(None).await.unwrap();
    let mut ch = ch;
    let events = all_events(&mut ch).await;
    // The failing send's error went to its completion, not to the stream too.
    assert!(!events.iter().any(|e| matches!(e, Event::Error(_))), "{events:?}");
}

/// An AsyncRead that fails at once.
struct FailingReader;

impl tokio::io::AsyncRead for FailingReader {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Err(std::io::Error::other("boom")))
    }
}

// ---- 7. cancellation safety of next() in select! with a 1 ms timer ----

async fn next_in_select_loses_nothing(config: Config, count: u32, size: usize) {
    let (mut ch, ws) = ws_pair(config).await;
    let (mut sink, mut stream) = ws.split();
    let client = tokio::spawn(async move {
        for i in 0..count {
            sink.feed(WsMessage::binary(numbered(i, size))).await.unwrap();
        }
        sink.flush().await.unwrap();
        // Keep reading so the close handshake completes.
        let closing = async {
            while let Some(m) = stream.next().await {
                if m.is_err() {
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), closing).await.unwrap();
        sink
    });
    let mut expected = 0u32;
    let mut ticks = 0u32;
    let t0 = Instant::now();
    while expected < count {
        assert!(t0.elapsed() < Duration::from_secs(8), "stuck at {expected} ({ticks} ticks)");
        tokio::select! {
            e = ch.next() => match e {
                Some(Event::Message(Incoming::Binary(b))) => {
                    assert_eq!(b.len(), size);
                    let got = u32::from_be_bytes(b[..4].try_into().unwrap());
                    assert_eq!(got, expected, "lost or duplicated");
                    expected += 1;
                }
                other => panic!("{other:?} at {expected}"),
            },
            _ = tokio::time::sleep(Duration::from_millis(1)) => ticks += 1,
        }
    }
    ch.close().await;
    let events = all_events(&mut ch).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let _ = tokio::time::timeout(Duration::from_secs(10), client).await.unwrap().unwrap();
    assert!(ticks > 0, "the timer branch never ran: the test did not race next() with it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_in_select_with_a_1ms_timer_small_messages() {
    next_in_select_loses_nothing(quiet(), 10_000, 16).await;
}

/// Large messages (the receiver reads them itself) with a limit they never reach: cancel safe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_in_select_with_a_1ms_timer_large_messages_no_pause() {
    next_in_select_loses_nothing(Config::default().queue_limit(256 << 20), 1_000, 70_000).await;
}

/// DEFECT (see the stall tests below): the same with the read pause engaged (256 KiB limit):
/// reading stops for good (keepalive off) or until the keepalive ping (25 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_in_select_with_a_1ms_timer_large_messages_keepalive_on() {
    next_in_select_loses_nothing(Config::default().queue_limit(256 * 1024), 1_000, 70_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_in_select_with_a_1ms_timer_large_messages_keepalive_off() {
    next_in_select_loses_nothing(quiet().queue_limit(256 * 1024), 1_000, 70_000).await;
}

/// The same with the receiver polled once with a fresh task's waker and then left (a
/// select! in a task that gave up), then re-created on the test's task: no message lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_moved_between_tasks_large_messages() {
    let (ch, ws) = ws_pair(Config::default()).await;
    let (_tx, mut receiver) = ch.split();
    let (mut sink, _stream) = ws.split();
    let mut expected = 0u32;
    for round in 0..50u32 {
        // Poll on another task until a 1 ms timer wins, then take the receiver back.
        receiver = tokio::spawn(async move {
            let mut receiver = receiver;
            tokio::select! {
                biased;
                _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                _ = futures::future::pending::<()>() => {}
            }
            let (_w, waker) = counter();
            if let Poll::Ready(e) = poll_stream(&mut receiver, &waker) {
                panic!("nothing sent yet in round {round}: {e:?}");
            }
            receiver
        })
        .await
        .unwrap();
        for _ in 0..4 {
            sink.feed(WsMessage::binary(numbered(expected, 100_000))).await.unwrap();
            expected += 1;
        }
        sink.flush().await.unwrap();
        for i in expected - 4..expected {
            let e = tokio::time::timeout(Duration::from_secs(3), receiver.next())
                .await
                .unwrap_or_else(|_| panic!("message {i} not received within 3 s (round {round})"));
            match e {
                Some(Event::Message(Incoming::Binary(b))) => {
                    assert_eq!(u32::from_be_bytes(b[..4].try_into().unwrap()), i)
                }
                other => panic!("{other:?}"),
            }
        }
    }
}

// ---- 8. split halves on two tasks, heavy traffic both ways ----

async fn split_both_ways(close_with_sink: bool) {
    const N: u32 = 10_000;
    let (ch, ws) = ws_pair(quiet().queue_limit(64 * 1024)).await;
    let (mut tx, mut rx) = ch.split();
    let (mut csink, mut cstream) = ws.split();
    let client_send = tokio::spawn(async move {
        for i in 0..N {
            csink.feed(WsMessage::binary(numbered(i, 64 + (i as usize % 300)))).await.unwrap();
        }
        csink.flush().await.unwrap();
        csink
    });
    let client_recv = tokio::spawn(async move {
        for i in 0..N {
            match tokio::time::timeout(Duration::from_secs(10), cstream.next()).await.unwrap() {
                Some(Ok(WsMessage::Binary(b))) => {
                    assert_eq!(u32::from_be_bytes(b[..4].try_into().unwrap()), i);
                    assert_eq!(b.len(), 64 + (i as usize % 500));
                }
                other => panic!("{i}: {other:?}"),
            }
        }
        // Then our close frame.
        loop {
            match tokio::time::timeout(Duration::from_secs(10), cstream.next()).await.unwrap() {
                Some(Ok(WsMessage::Close(f))) => break f.map(|f| u16::from(f.code)),
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                other => panic!("after the messages: {other:?}"),
            }
        }
    });
    let (all_in_tx, all_in_rx) = tokio::sync::oneshot::channel();
    let server_recv = tokio::spawn(async move {
        for i in 0..N {
            match tokio::time::timeout(Duration::from_secs(10), rx.next()).await.unwrap() {
                Some(Event::Message(Incoming::Binary(b))) => {
                    assert_eq!(u32::from_be_bytes(b[..4].try_into().unwrap()), i);
                }
                other => panic!("{i}: {other:?}"),
            }
        }
        all_in_tx.send(()).unwrap();
        // Awaiting while the sender half closes.
        let e = tokio::time::timeout(Duration::from_secs(10), rx.next()).await.expect("no Closed");
        assert!(matches!(e, Some(Event::Closed(_))), "{e:?}");
        assert!(rx.next().await.is_none());
    });
    let server_send = tokio::spawn(async move {
        for i in 0..N {
            tx.send(bin(64 + (i as usize % 500), i)).await.unwrap();
        }
        all_in_rx.await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        if close_with_sink {
            SinkExt::close(&mut tx).await.unwrap();
        } else {
            tx.close().await;
        }
        tx
    });
    let t = Duration::from_secs(20);
    let mut csink = tokio::time::timeout(t, client_send).await.unwrap().unwrap();
    let code = tokio::time::timeout(t, client_recv).await.unwrap().unwrap();
    assert_eq!(code, Some(1000));
    // tungstenite answers the close when polled: flush the reply.
    let _ = csink.close().await;
    tokio::time::timeout(t, server_recv).await.unwrap().unwrap();
    let tx = tokio::time::timeout(t, server_send).await.unwrap().unwrap();
    assert!(!tx.is_open());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_halves_on_two_tasks_then_close_from_sender() {
    split_both_ways(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_halves_on_two_tasks_then_sink_close() {
    split_both_ways(true).await;
}

// ---- DEFECT: the read pause's end can be lost (large messages, multi-threaded runtime) ----

/// Receives `count` messages of `size` from a raw client that writes as fast as it can; gives
/// how many arrived and the longest gap between two (`limit` if one never came).
async fn max_gap(config: Config, count: u32, size: usize, limit: Duration) -> (u32, Duration) {
    let (addr, mut rx) = serve_channels(config).await;
    let raw = RawWs::connect(addr).await;
    let mut ch = next_channel(&mut rx).await;
    assert!(matches!(next_of(&mut ch).await, Some(Event::Open)));
    let client = tokio::spawn(async move {
        let mut raw = raw;
        for i in 0..count {
            raw.frame(0x82, &numbered(i, size)).await;
        }
        raw
    });
    let mut gap = Duration::ZERO;
    let mut last = Instant::now();
    for i in 0..count {
        match tokio::time::timeout(limit, ch.next()).await {
            Ok(Some(Event::Message(Incoming::Binary(b)))) => {
                assert_eq!(u32::from_be_bytes(b[..4].try_into().unwrap()), i);
            }
            Ok(other) => panic!("{other:?}"),
            Err(_) => {
                client.abort();
                return (i, limit);
            }
        }
        gap = gap.max(last.elapsed());
        last = Instant::now();
    }
    client.abort();
    (count, gap)
}

/// A client uploading 70 KB messages (over the 64 KiB read chunk: the receiver reads them on
/// its own task) faster than the application takes them, with a 256 KiB queue limit (the
/// read pause engages every ~4 messages). Config::queue_limit: "a WebSocket stops reading
/// from the client while the application has more than this many bytes of messages not yet
/// taken from the stream" -- so it must read again once they are taken. Before 06a6dcf
/// reading stopped for good (nothing for 2 s while the application waited on `next()`, the
/// client with megabytes queued) in most runs of 1,000 messages: the end of the pause woke
/// nobody; any wake of the connection's task (a send) made it resume within 3 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_uploads_past_the_read_pause_never_stall_keepalive_off() {
    for run in 0..8 {
        let (got, gap) =
            max_gap(quiet().queue_limit(256 * 1024), 1000, 70_000, Duration::from_secs(2)).await;
        assert_eq!(got, 1000, "run {run}: reading stopped after {got} messages");
        assert!(gap < Duration::from_secs(1), "run {run}: a {gap:?} gap");
    }
}

/// The same with keepalive on (the default): the sweeper does not rescue it; the stall lasts
/// until the keepalive ping wakes the task (~25 s with the default interval).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_uploads_past_the_read_pause_never_stall_keepalive_on() {
    for run in 0..8 {
        let (got, gap) = max_gap(
            Config::default().queue_limit(256 * 1024),
            1000,
            70_000,
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(got, 1000, "run {run}: reading stopped after {got} messages");
        assert!(gap < Duration::from_secs(1), "run {run}: a {gap:?} gap");
    }
}

/// The control: the same uploads with a limit they never reach (no pause) do not stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_uploads_without_the_read_pause_do_not_stall() {
    for run in 0..3 {
        let (got, gap) =
            max_gap(quiet().queue_limit(256 << 20), 1000, 70_000, Duration::from_secs(2)).await;
        assert_eq!(got, 1000, "run {run}");
        assert!(gap < Duration::from_secs(1), "run {run}: a {gap:?} gap");
    }
}
