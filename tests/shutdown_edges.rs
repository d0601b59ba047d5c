//! Graceful shutdown at its edges (forced channels, concurrent calls, the report's counts,
//! compat during a shutdown) and the life cycle of channels: file descriptors and tasks given
//! back after every kind of end. From stop 29's review (2026-12-05).
mod support;

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use support::*;
use webchan::{Config, Event, Message, Shutdown};

/// The resource test counts file descriptors and tasks of this process: it runs alone (write
/// lock), the other tests of this file share (read lock).
static SERIAL: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn no_keepalive(shutdown: &Shutdown) -> Config {
    Config::default().shutdown(shutdown).keepalive(None)
}

/// Polls `f` every 10 ms until true or `within`; gives the time it took.
async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if f() {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// A raw WebSocket over HTTP/2 (RFC 8441), frames by hand.
async fn raw_h2_ws(addr: std::net::SocketAddr) -> RawWs<TokioIo<hyper::upgrade::Upgraded>> {
    let mut sender = h2_client(addr).await;
    let upgraded = h2_websocket(&mut sender, addr, "/").await;
    // The connection lives on its task while the upgraded stream is open.
    drop(sender);
    RawWs { tcp: upgraded, buf: Vec::new() }
}

// ---- 1. forced channels at the deadline: gone when `shutdown` returns? ----

/// A WebSocket client that neither reads nor answers (keepalive off, so that the sweeper does
/// not wake the connection): forced at the deadline. Once `shutdown` has returned its report
/// (forced: 1), the channel it forced should be closed: `live()` 0, `Closed` delivered, the
/// client's connection dropped — not some time later.
#[tokio::test]
async fn a_forced_idle_websocket_is_gone_once_shutdown_returns_h1() {
    forced_idle_websocket(false).await;
}

#[tokio::test]
async fn a_forced_idle_websocket_is_gone_once_shutdown_returns_h2() {
    forced_idle_websocket(true).await;
}

async fn forced_idle_websocket(h2: bool) {
    let _g = SERIAL.read().await;
    {
        let shutdown = Shutdown::new();
        let (addr, mut channels) = serve_channels(no_keepalive(&shutdown)).await;
        let mut raw_h1;
        let mut raw_h2;
        if h2 {
            raw_h2 = Some(raw_h2_ws(addr).await);
            raw_h1 = None;
        } else {
            raw_h1 = Some(RawWs::connect(addr).await);
            raw_h2 = None;
        }
        let mut ch = next_channel(&mut channels).await;
        assert!(matches!(next_of(&mut ch).await, Some(Event::Open)));
        let report = shutdown.shutdown(Duration::from_millis(300)).await;
        assert_eq!((report.clean, report.forced), (0, 1), "h2 {h2}");
        let live_at_return = shutdown.live();
        let gone = eventually(Duration::from_secs(5), || shutdown.live() == 0).await;
        let events = all_events(&mut ch).await;
        assert!(gone.is_some(), "h2 {h2}: the forced WebSocket still live 5 s after the report");
        assert!(matches!(events.last(), Some(Event::Closed(_))), "h2 {h2}: {events:?}");
        // The client: the 1001, then the end of the connection (h1) or of the stream (h2).
        if let Some(raw) = raw_h1.as_mut() {
            assert_eq!(raw.read_close().await, Some((1001, "going away".into())), "h2 {h2}");
            assert!(raw.eof().await);
        }
        if let Some(raw) = raw_h2.as_mut() {
            assert_eq!(raw.read_close().await, Some((1001, "going away".into())), "h2 {h2}");
            assert!(raw.eof().await);
        }
        assert_eq!(live_at_return, 0, "h2 {h2}: live() still counted the forced channel");
    }
}

/// A WebSocket in the middle of a large send to a client that reads nothing (keepalive off):
/// at the deadline the connection is dropped, the send fails with `Closed` and `Closed` comes.
#[tokio::test]
async fn a_forced_websocket_stuck_mid_send_fails_its_send_and_closes_h1() {
    forced_mid_send(false).await;
}

#[tokio::test]
async fn a_forced_websocket_stuck_mid_send_fails_its_send_and_closes_h2() {
    forced_mid_send(true).await;
}

async fn forced_mid_send(h2: bool) {
    let _g = SERIAL.read().await;
    {
        let shutdown = Shutdown::new();
        let (addr, mut channels) = serve_channels(no_keepalive(&shutdown)).await;
        let (_raw_h1, _raw_h2) = if h2 {
            (None, Some(raw_h2_ws(addr).await))
        } else {
            (Some(RawWs::connect(addr).await), None)
        };
        let mut ch = next_channel(&mut channels).await;
        assert!(matches!(next_of(&mut ch).await, Some(Event::Open)));
        let sender = ch.sender();
        let big = Message::Binary(vec![7u8; 16 << 20].into());
        let sending = tokio::spawn(async move { sender.send(big).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!sending.is_finished(), "h2 {h2}: 16 MiB went to a client that reads nothing");
        let t0 = Instant::now();
        let report = shutdown.shutdown(Duration::from_millis(300)).await;
        assert_eq!((report.clean, report.forced), (0, 1), "h2 {h2}");
        let sent = tokio::time::timeout(Duration::from_secs(5), sending)
            .await
            .unwrap_or_else(|_| panic!("h2 {h2}: the send still pending 5 s after the deadline"))
            .unwrap();
        assert!(matches!(sent, Err(webchan::Error::Closed)), "h2 {h2}: {sent:?}");
        let events = all_events(&mut ch).await;
        assert!(matches!(events.last(), Some(Event::Closed(_))), "h2 {h2}: {events:?}");
        assert!(t0.elapsed() < Duration::from_secs(2), "h2 {h2}: {:?}", t0.elapsed());
        assert!(
            eventually(Duration::from_secs(2), || shutdown.live() == 0).await.is_some(),
            "h2 {h2}"
        );
    }
}

// ---- HTTP/2 streams at shutdown ----

/// Over HTTP/2, a plain stream and an SSE stream under way end cleanly at shutdown: what was
/// sent, then (SSE) a `retry:` of 2-5 s, then END_STREAM (the body completes without error).
#[tokio::test]
async fn http2_streams_end_cleanly_with_what_was_sent_at_shutdown() {
    let _g = SERIAL.read().await;
    let shutdown = Shutdown::new();
    let (addr, mut channels) = serve_channels(Config::default().shutdown(&shutdown)).await;
    let sender = h2_client(addr).await;
    let mut bodies = Vec::new();
    let mut chans = Vec::new();
    for sse in [false, true] {
        let mut req = get(addr, "/s");
        if sse {
            req.headers_mut().insert("accept", "text/event-stream".parse().unwrap());
        }
        let mut s = sender.clone();
        bodies.push(tokio::spawn(async move {
            let response = s.send_request(req).await.unwrap();
            response.into_body().collect().await.map(|b| b.to_bytes())
        }));
        let ch = next_channel(&mut channels).await;
        ch.sender().send("before".into()).await.unwrap();
        chans.push(ch);
    }
    let report = shutdown.shutdown(Duration::from_secs(5)).await;
    assert_eq!((report.clean, report.forced), (2, 0));
    let plain = tokio::time::timeout(Duration::from_secs(5), bodies.remove(0))
        .await
        .unwrap()
        .unwrap()
        .expect("the plain HTTP/2 stream did not end cleanly");
    assert_eq!(&plain[..], b"before");
    let sse = tokio::time::timeout(Duration::from_secs(5), bodies.remove(0))
        .await
        .unwrap()
        .unwrap()
        .expect("the SSE HTTP/2 stream did not end cleanly");
    let sse = String::from_utf8(sse.to_vec()).unwrap();
    let rest = sse.strip_prefix("data: before\n\n").unwrap_or_else(|| panic!("{sse:?}"));
    let retry: u64 = rest
        .strip_prefix("retry: ")
        .and_then(|r| r.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("{sse:?}"))
        .parse()
        .unwrap();
    assert!((2000..5000).contains(&retry), "{retry}");
    for mut ch in chans {
        let events = all_events(&mut ch).await;
        assert!(!events.iter().any(|e| matches!(e, Event::Error(_))), "{events:?}");
    }
}

// ---- 2. channels asked for after the shutdown began ----

/// During a shutdown (a channel holds it up to its deadline) and after it: 503 over HTTP/1.1
/// and HTTP/2, for a stream and for a WebSocket (extended CONNECT too), at once, and nothing
/// registered.
#[tokio::test]
async fn requests_during_and_after_a_shutdown_get_503_at_once_over_h1_and_h2() {
    let _g = SERIAL.read().await;
    let shutdown = Shutdown::new();
    let (addr, mut channels) = serve_channels(no_keepalive(&shutdown)).await;
    // A client that ignores the close holds the shutdown up for its deadline.
    let _raw = RawWs::connect(addr).await;
    let _ch = next_channel(&mut channels).await;
    let s = shutdown.clone();
    let shutting = tokio::spawn(async move { s.shutdown(Duration::from_secs(2)).await });
    assert!(eventually(Duration::from_secs(2), || shutdown.is_shutting_down()).await.is_some());
    let t0 = Instant::now();
    check_503(addr, "during").await;
    assert!(t0.elapsed() < Duration::from_secs(1), "during: {:?}", t0.elapsed());
    assert!(!shutting.is_finished(), "the shutdown should still wait for its deadline");
    assert_eq!(shutdown.live(), 1, "during: a refused request was registered");
    assert!(channels.try_recv().is_err(), "during: a channel was made");
    let report = tokio::time::timeout(Duration::from_secs(5), shutting).await.unwrap().unwrap();
    assert_eq!((report.clean, report.forced), (0, 1));
    assert!(eventually(Duration::from_secs(2), || shutdown.live() == 0).await.is_some());
    check_503(addr, "after").await;
    assert_eq!(shutdown.live(), 0);
    assert!(channels.try_recv().is_err(), "after: a channel was made");

    async fn check_503(addr: std::net::SocketAddr, phase: &str) {
        // HTTP/1.1 stream and WebSocket upgrade.
        let r = http1_get(addr, get(addr, "/late")).await;
        assert_eq!(r.status(), 503, "{phase}: h1 stream");
        let ws = tokio_tungstenite::connect_async(format!("ws://{addr}/late")).await;
        assert!(ws.as_ref().is_err_and(|e| e.to_string().contains("503")), "{phase}: h1 ws");
        // HTTP/2 stream and extended CONNECT.
        let mut sender = h2_client(addr).await;
        let r = sender.send_request(get(addr, "/late")).await.unwrap();
        assert_eq!(r.status(), 503, "{phase}: h2 stream");
        let mut request = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(format!("http://{addr}/late"))
            .header("sec-websocket-version", "13")
            .body(http_body_util::Empty::new())
            .unwrap();
        request.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
        let r = sender.send_request(request).await.unwrap();
        assert_eq!(r.status(), 503, "{phase}: h2 extended CONNECT");
    }
}

// ---- the deadline and the report's counts ----

/// A mix: a client that answers the close at once, one that answers 400 ms late, one that
/// never answers, a channel the handler closes itself as the shutdown begins, an HTTP stream
/// whose client reads. With a 1.5 s deadline: 4 clean (each counted once), 1 forced; the
/// shutdown returns at the deadline, not before, and not much later.
#[tokio::test]
async fn the_report_counts_each_channel_once_in_a_mixed_shutdown() {
    let _g = SERIAL.read().await;
    let shutdown = Shutdown::new();
    let (addr, mut channels) =
        serve_channels(no_keepalive(&shutdown).close_timeout(Duration::from_secs(30))).await;
    let mut prompt = ws_connect(addr, "/prompt").await;
    let _c1 = next_channel(&mut channels).await;
    let mut late = RawWs::connect(addr).await;
    let _c2 = next_channel(&mut channels).await;
    let mut never = RawWs::connect(addr).await;
    let _c3 = next_channel(&mut channels).await;
    let mut self_closing = ws_connect(addr, "/self").await;
    let c4 = next_channel(&mut channels).await;
    let body = tokio::spawn(async move {
        let r = http1_get(addr, get(addr, "/stream")).await;
        r.into_body()
    });
    let c5 = next_channel(&mut channels).await;
    c5.sender().send("x".into()).await.unwrap();
    assert_eq!(shutdown.live(), 5);

    c4.sender().start_close(1000, "mine");
    let t0 = Instant::now();
    let s = shutdown.clone();
    let shutting = tokio::spawn(async move { s.shutdown(Duration::from_millis(1500)).await });
    // The prompt client answers (tokio-tungstenite answers when read).
    let m = next_msg(&mut prompt).await;
    assert!(matches!(&m, Some(WsMessage::Close(Some(f))) if u16::from(f.code) == 1001), "{m:?}");
    assert!(next_msg(&mut prompt).await.is_none());
    let m = next_msg(&mut self_closing).await;
    assert!(matches!(&m, Some(WsMessage::Close(Some(f))) if u16::from(f.code) == 1000), "{m:?}");
    assert!(next_msg(&mut self_closing).await.is_none());
    // The late client.
    let late_task = tokio::spawn(async move {
        assert_eq!(late.read_close().await, Some((1001, "going away".into())));
        tokio::time::sleep(Duration::from_millis(400)).await;
        late.frame(0x88, &1001u16.to_be_bytes()).await;
        late.eof().await
    });
    let never_task = tokio::spawn(async move {
        assert_eq!(never.read_close().await, Some((1001, "going away".into())));
        never.eof().await
    });
    assert_eq!(&body.await.unwrap()[..], b"x");
    assert!(late_task.await.unwrap(), "the late client's connection was not ended");
    let report = tokio::time::timeout(Duration::from_secs(5), shutting).await.unwrap().unwrap();
    let took = t0.elapsed();
    assert!(never_task.await.unwrap(), "the forced connection was not dropped");
    assert_eq!((report.clean, report.forced), (4, 1), "{report:?}");
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_millis(2500), "{took:?}");
}

/// Every channel closes before the deadline: the shutdown returns as soon as the last one
/// has, not at the deadline (here a 30 s deadline; a client that answers 300 ms late).
#[tokio::test]
async fn the_shutdown_returns_when_the_last_channel_closed_not_at_the_deadline() {
    let _g = SERIAL.read().await;
    let shutdown = Shutdown::new();
    let (addr, mut channels) = serve_channels(no_keepalive(&shutdown)).await;
    let mut late = RawWs::connect(addr).await;
    let _c = next_channel(&mut channels).await;
    let t0 = Instant::now();
    let answering = tokio::spawn(async move {
        assert_eq!(late.read_close().await, Some((1001, "going away".into())));
        tokio::time::sleep(Duration::from_millis(300)).await;
        late.frame(0x88, &1001u16.to_be_bytes()).await;
        late.eof().await
    });
    let report =
        tokio::time::timeout(Duration::from_secs(5), shutdown.shutdown(Duration::from_secs(30)))
            .await
            .expect("waited for the deadline though every channel closed");
    assert_eq!((report.clean, report.forced), (1, 0));
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert!(answering.await.unwrap());
}

/// A client that answers the close with a reset (RST) instead of a close frame, and one whose
/// close handshake times out (`close_timeout` shorter than the deadline, never answered):
/// both ended before the deadline, so the report counts them there ("however they ended", as
/// the docs say since stop 29); their `Closed` events say how.
#[tokio::test]
async fn channels_that_end_uncleanly_before_the_deadline_are_reported_clean() {
    let _g = SERIAL.read().await;
    let shutdown = Shutdown::new();
    let config = no_keepalive(&shutdown).close_timeout(Duration::from_millis(200));
    let (addr, mut channels) = serve_channels(config).await;
    let mut rst = RawWs::connect(addr).await;
    let mut c1 = next_channel(&mut channels).await;
    let mut silent = RawWs::connect(addr).await;
    let mut c2 = next_channel(&mut channels).await;
    let resetting = tokio::spawn(async move {
        assert_eq!(rst.read_close().await, Some((1001, "going away".into())));
        #[allow(deprecated)]
        rst.tcp.set_linger(Some(Duration::ZERO)).unwrap();
        drop(rst);
    });
    let report = shutdown.shutdown(Duration::from_secs(3)).await;
    resetting.await.unwrap();
    assert_eq!(silent.read_close().await, Some((1001, "going away".into())));
    let e1 = all_events(&mut c1).await;
    let e2 = all_events(&mut c2).await;
    assert_eq!((report.clean, report.forced), (2, 0));
    assert_eq!(closed_of(&e1).code, Some(1006), "{e1:?}");
    assert_eq!(closed_of(&e2).code, Some(1001), "{e2:?}");
}

/// `Duration::ZERO`: every channel asked to close and forced at once; the call returns at
/// once; a first call that waits meanwhile counts the same channels forced, and a call after
/// both counts nothing.
#[tokio::test]
async fn zero_deadlines_and_concurrent_calls_return_and_agree() {
    let _g = SERIAL.read().await;
    let shutdown = Shutdown::new();
    let (addr, mut channels) = serve_channels(no_keepalive(&shutdown)).await;
    let _a = RawWs::connect(addr).await;
    let _ca = next_channel(&mut channels).await;
    let _b = RawWs::connect(addr).await;
    let _cb = next_channel(&mut channels).await;
    let s = shutdown.clone();
    let first = tokio::spawn(async move { s.shutdown(Duration::from_secs(3)).await });
    assert!(eventually(Duration::from_secs(1), || shutdown.is_shutting_down()).await.is_some());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t0 = Instant::now();
    let second = shutdown.shutdown(Duration::ZERO).await;
    assert!(t0.elapsed() < Duration::from_millis(500), "{:?}", t0.elapsed());
    let first = tokio::time::timeout(Duration::from_secs(5), first).await.unwrap().unwrap();
    assert_eq!((second.clean, second.forced), (0, 2));
    // The first call saw the same two channels forced (by the second): not "clean". Before
    // stop 29 it reported `clean: 2`, the two reports counting 2 channels as 2 clean and 2
    // forced.
    assert_eq!((first.clean, first.forced), (0, 2));
    assert!(eventually(Duration::from_secs(2), || shutdown.live() == 0).await.is_some());
    let third = shutdown.shutdown(Duration::MAX).await;
    assert_eq!((third.clean, third.forced), (0, 0));
}

// ---- sends during the shutdown ----

/// A large send under way to a client that reads: it completes, then the 1001 comes; from the
/// moment the shutdown asked, `is_open` is false and new sends are refused with `Closed`; the
/// client reads the whole message, then the close.
#[tokio::test]
async fn a_large_send_under_way_completes_before_the_1001_and_later_sends_are_refused() {
    let _g = SERIAL.read().await;
    for h2 in [false, true] {
        let shutdown = Shutdown::new();
        let (addr, mut channels) = serve_channels(no_keepalive(&shutdown)).await;
        let mut raw_h1 = None;
        let mut raw_h2 = None;
        if h2 {
            raw_h2 = Some(raw_h2_ws(addr).await);
        } else {
            raw_h1 = Some(RawWs::connect(addr).await);
        }
        let mut ch = next_channel(&mut channels).await;
        assert!(matches!(next_of(&mut ch).await, Some(Event::Open)));
        let payload: Vec<u8> = (0..(8usize << 20)).map(|i| (i % 251) as u8).collect();
        let sender = ch.sender();
        let big = Message::Binary(payload.clone().into());
        let sending = tokio::spawn(async move { sender.send(big).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = shutdown.clone();
        let shutting = tokio::spawn(async move { s.shutdown(Duration::from_secs(8)).await });
        assert!(eventually(Duration::from_secs(1), || !ch.is_open()).await.is_some(), "h2 {h2}");
        let refused = ch.sender().try_send("after".into());
        assert!(matches!(refused, Err((webchan::Error::Closed, _))), "h2 {h2}");
        // The client reads slowly at first, then all.
        let (first, got, close) = if let Some(raw) = raw_h1.as_mut() {
            let (f, p) = raw.read_frame().await.unwrap();
            (f, p, raw.read_close().await)
        } else {
            let raw = raw_h2.as_mut().unwrap();
            let (f, p) = raw.read_frame().await.unwrap();
            (f, p, raw.read_close().await)
        };
        assert_eq!(first, 0x82, "h2 {h2}");
        assert!(
            got == payload,
            "h2 {h2}: the message arrived cut or changed ({} bytes)",
            got.len()
        );
        assert_eq!(close, Some((1001, "going away".into())), "h2 {h2}");
        let sent = tokio::time::timeout(Duration::from_secs(5), sending).await.unwrap().unwrap();
        assert!(sent.is_ok(), "h2 {h2}: {sent:?}");
        // Answer the close.
        if let Some(raw) = raw_h1.as_mut() {
            raw.frame(0x88, &1001u16.to_be_bytes()).await;
        } else {
            raw_h2.as_mut().unwrap().frame(0x88, &1001u16.to_be_bytes()).await;
        }
        let report =
            tokio::time::timeout(Duration::from_secs(10), shutting).await.unwrap().unwrap();
        assert_eq!((report.clean, report.forced), (1, 0), "h2 {h2}");
        let events = all_events(&mut ch).await;
        assert_eq!(closed_of(&events).code, Some(1001), "h2 {h2}: {events:?}");
    }
}

/// compat during a shutdown: `is_open` false from the start, `send` answers `Ok(false)`, a send
/// accepted before the shutdown and never written (a client that reads nothing) gets its
/// `on_error` once, and `on_close` comes exactly once, last.
#[tokio::test]
async fn compat_handles_during_a_shutdown() {
    use std::sync::{Arc, Mutex};
    use webchan::compat::{Options, SendOptions};
    let _g = SERIAL.read().await;
    let shutdown = Shutdown::new();
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let handles = Arc::new(Mutex::new(Vec::new()));
    let (l1, l2, h1) = (Arc::clone(&log), Arc::clone(&log), Arc::clone(&handles));
    let options = Options::new()
        .config(no_keepalive(&shutdown))
        .on_open(move |ch| {
            let l = Arc::clone(&l1);
            let le = Arc::clone(&l1);
            // 16 MiB to a client that reads nothing: never written whole.
            let sent = ch.send(
                Message::Binary(vec![1u8; 16 << 20].into()),
                SendOptions::new()
                    .on_success(move || l.lock().unwrap().push("success".into()))
                    .on_error(move |e| le.lock().unwrap().push(format!("error {e}"))),
            );
            l1.lock().unwrap().push(format!("open sent {sent:?}"));
            h1.lock().unwrap().push(ch.clone());
        })
        .on_close(move |ch, info| {
            l2.lock().unwrap().push(format!("close {:?} open {}", info.code, ch.is_open()));
        });
    let addr = serve_compat(options).await;
    let _raw = RawWs::connect(addr).await;
    assert!(eventually(Duration::from_secs(5), || !handles.lock().unwrap().is_empty())
        .await
        .is_some());
    let handle = handles.lock().unwrap()[0].clone();
    let s = shutdown.clone();
    let shutting = tokio::spawn(async move { s.shutdown(Duration::from_millis(500)).await });
    assert!(eventually(Duration::from_secs(1), || !handle.is_open()).await.is_some());
    assert_eq!(handle.send("late", SendOptions::new()).ok(), Some(false));
    let report = tokio::time::timeout(Duration::from_secs(5), shutting).await.unwrap().unwrap();
    assert_eq!((report.clean, report.forced), (0, 1));
    let closed = eventually(Duration::from_secs(5), || {
        log.lock().unwrap().iter().any(|l| l.starts_with("close"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = log.lock().unwrap().clone();
    println!("{log:?}");
    assert!(closed.is_some(), "no on_close 5 s after the deadline: {log:?}");
    assert_eq!(log.iter().filter(|l| l.starts_with("close")).count(), 1, "{log:?}");
    assert_eq!(log.iter().filter(|l| l.starts_with("error")).count(), 1, "{log:?}");
    assert!(log.last().unwrap().starts_with("close"), "{log:?}");
}

// ---- forced HTTP streams: cut short, not a clean end ----

/// An HTTP stream forced at the deadline (its feed has nothing ready) is "aborted, so its
/// client sees it cut short": over HTTP/1.1 no last chunk, over HTTP/2 a reset, never a
/// complete response.
#[tokio::test]
async fn a_forced_http_stream_is_cut_short_not_ended_cleanly() {
    let _g = SERIAL.read().await;
    for h2 in [false, true] {
        let shutdown = Shutdown::new();
        let (addr, mut channels) = serve_channels(Config::default().shutdown(&shutdown)).await;
        let request = get(addr, "/");
        let client = tokio::spawn(async move {
            let response = if h2 {
                h2_client(addr).await.send_request(request).await.unwrap()
            } else {
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
                tokio::spawn(conn);
                sender.send_request(request).await.unwrap()
            };
            response.into_body().collect().await.map(|b| b.to_bytes())
        });
        let ch = next_channel(&mut channels).await;
        let s = ch.sender();
        s.send("start".into()).await.unwrap();
        let feed = s.try_send(Message::stream(futures::stream::pending::<Message>())).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let report = shutdown.shutdown(Duration::from_millis(200)).await;
        assert_eq!((report.clean, report.forced), (0, 1), "h2 {h2}");
        assert!(tokio::time::timeout(Duration::from_secs(5), feed).await.unwrap().is_err());
        let body = tokio::time::timeout(Duration::from_secs(5), client).await.unwrap().unwrap();
        assert!(body.is_err(), "h2 {h2}: the forced stream ended as a complete response: {body:?}");
    }
}

// ---- 5. resources after every kind of end ----

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap()
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

/// The keepalive thread's voluntary context switches (it wakes for each sweep).
fn sweeper_switches() -> Option<u64> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if name.trim() == "webchan-keepali" || name.trim().starts_with("webchan-keep") {
            let status = std::fs::read_to_string(dir.join("status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("voluntary_ctxt_switches"))?;
            return line.split_whitespace().nth(1)?.parse().ok();
        }
    }
    None
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    Normal,
    Rst,
    Timeout,
    Shutdown,
    HandlerDrop,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Via {
    WsH1,
    WsH2,
    HttpH1,
    HttpH2,
}

/// The server side of the resource test: "/ok" echoes (WebSocket) or answers "ok" (stream),
/// "/drop" drops the channel at once, anything else sends "start" on a stream and holds the
/// channel until it ends.
async fn resource_handler(mut ch: webchan::Channel) {
    use futures::StreamExt;
    let path = ch.originating_request().uri.path().to_owned();
    match path.as_str() {
        "/drop" => drop(ch),
        "/ok" => echo_or_ok(ch).await,
        _ => {
            if ch.kind() == webchan::Kind::HttpStream {
                let _ = ch.send("start".into()).await;
            }
            while ch.next().await.is_some() {}
        }
    }
}

/// A TCP connection that resets (RST) when dropped.
#[allow(deprecated)]
async fn tcp_to(addr: std::net::SocketAddr, rst: bool) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if rst {
        socket.set_linger(Some(Duration::ZERO)).unwrap();
    }
    socket.connect(addr).await.unwrap()
}

/// One client connection that ends the way `end` says.
async fn one_client(addr: std::net::SocketAddr, via: Via, end: End) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::Role;
    let path = match end {
        End::Normal => "/ok",
        End::HandlerDrop => "/drop",
        _ => "/hold",
    };
    match via {
        Via::WsH1 | Via::WsH2 => {
            let (mut ws, conn) = if via == Via::WsH1 {
                let tcp = tcp_to(addr, end == End::Rst).await;
                let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}{path}"), tcp)
                    .await
                    .unwrap();
                let ws: Box<dyn WsLike> = Box::new(ws);
                (ws, None)
            } else {
                let tcp = tcp_to(addr, end == End::Rst).await;
                let (mut sender, conn) =
                    hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .handshake(TokioIo::new(tcp))
                        .await
                        .unwrap();
                let conn = tokio::spawn(conn);
                let upgraded = h2_websocket(&mut sender, addr, path).await;
                let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    upgraded,
                    Role::Client,
                    None,
                )
                .await;
                let ws: Box<dyn WsLike> = Box::new(ws);
                (ws, Some((sender, conn)))
            };
            match end {
                End::Normal => {
                    ws.send(WsMessage::text("hi")).await.unwrap();
                    assert_eq!(ws.next().await.unwrap().unwrap(), WsMessage::text("hi"));
                    SinkExt::close(&mut ws).await.unwrap();
                    while let Some(Ok(_)) = ws.next().await {}
                }
                End::Rst => {
                    // Let the server see the connection, then reset it.
                    ws.send(WsMessage::Ping(vec![1].into())).await.unwrap();
                    let _ = ws.next().await;
                    drop(ws);
                    if let Some((_sender, conn)) = conn {
                        conn.abort();
                        let _ = conn.await;
                    }
                    return;
                }
                End::Timeout | End::Shutdown | End::HandlerDrop => {
                    // Read until the server's close, which tungstenite answers, then the end.
                    while let Some(Ok(_)) = ws.next().await {}
                }
            }
            drop(ws);
            drop(conn);
        }
        Via::HttpH1 | Via::HttpH2 => {
            let tcp = tcp_to(addr, end == End::Rst).await;
            let request = get(addr, path);
            let mut h1_conn = None;
            let mut h2_conn = None;
            let response = if via == Via::HttpH1 {
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
                h1_conn = Some(tokio::spawn(conn));
                sender.send_request(request).await.unwrap()
            } else {
                let (mut sender, conn) =
                    hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .handshake(TokioIo::new(tcp))
                        .await
                        .unwrap();
                h2_conn = Some(tokio::spawn(conn));
                sender.send_request(request).await.unwrap()
            };
            assert_eq!(response.status(), 200, "{via:?} {end:?}");
            if end == End::Rst {
                let mut body = response.into_body();
                let _ = body.frame().await; // "start"
                drop(body);
                for c in [h1_conn.take(), h2_conn.take()].into_iter().flatten() {
                    c.abort();
                    let _ = c.await;
                }
                return;
            }
            let body = response.into_body().collect().await;
            assert!(body.is_ok(), "{via:?} {end:?}: {body:?}");
            // The client's connection: closed by the server (h1 stream without length ends
            // it), or ours to close.
            for c in [h1_conn.take(), h2_conn.take()].into_iter().flatten() {
                c.abort();
                let _ = c.await;
            }
        }
    }
}

/// A WebSocket client over any transport.
trait WsLike:
    futures::Stream<Item = Result<WsMessage, tokio_tungstenite::tungstenite::Error>>
    + futures::Sink<WsMessage, Error = tokio_tungstenite::tungstenite::Error>
    + Unpin
    + Send
{
}
impl<T> WsLike for T where
    T: futures::Stream<Item = Result<WsMessage, tokio_tungstenite::tungstenite::Error>>
        + futures::Sink<WsMessage, Error = tokio_tungstenite::tungstenite::Error>
        + Unpin
        + Send
{
}

/// 50 connections of each transport ended each way (normal close, client reset, the
/// timeout, a shutdown, the handler dropping its channel): file descriptors and tokio tasks
/// come back to where they were within a couple of seconds; the keepalive thread then sleeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_end_gives_back_fds_and_tasks() {
    let _g = SERIAL.write().await;
    const N: usize = 50;
    let plain = serve(Config::default(), resource_handler).await;
    let timed = serve(
        Config::default().timeout(Duration::from_millis(300)).close_timeout(Duration::from_secs(1)),
        resource_handler,
    )
    .await;
    let shutdown = Shutdown::new();
    let shut = serve(Config::default().shutdown(&shutdown), resource_handler).await;
    let vias = [Via::WsH1, Via::WsH2, Via::HttpH1, Via::HttpH2];
    // Warm up: each transport once.
    for via in vias {
        one_client(plain, via, End::Normal).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (fds0, tasks0) = (open_fds(), alive_tasks());
    println!("baseline: {fds0} fds, {tasks0} tasks");
    let mut failures = Vec::new();
    for end in [End::Normal, End::Rst, End::Timeout, End::HandlerDrop, End::Shutdown] {
        for via in vias {
            if end == End::Shutdown {
                break;
            }
            let addr = if end == End::Timeout { timed } else { plain };
            let clients = (0..N).map(|_| tokio::spawn(one_client(addr, via, end)));
            let joined =
                tokio::time::timeout(Duration::from_secs(20), futures::future::join_all(clients))
                    .await
                    .unwrap_or_else(|_| panic!("{via:?} {end:?}: clients did not finish"));
            for j in joined {
                j.unwrap();
            }
            let back = eventually(Duration::from_secs(3), || {
                open_fds() <= fds0 && alive_tasks() <= tasks0
            })
            .await;
            let (fds, tasks) = (open_fds(), alive_tasks());
            println!("{via:?} {end:?}: {fds} fds, {tasks} tasks, back after {back:?}");
            if back.is_none() {
                failures.push(format!("{via:?} {end:?}: {fds} fds, {tasks} tasks"));
            }
        }
        if end == End::Shutdown {
            let mut clients = Vec::new();
            for via in vias {
                clients.extend((0..N).map(|_| tokio::spawn(one_client(shut, via, end))));
            }
            assert!(
                eventually(Duration::from_secs(10), || shutdown.live() == 4 * N).await.is_some(),
                "{} live",
                shutdown.live()
            );
            let report = shutdown.shutdown(Duration::from_secs(5)).await;
            assert_eq!((report.clean, report.forced), (4 * N, 0));
            for j in futures::future::join_all(clients).await {
                j.unwrap();
            }
            let back = eventually(Duration::from_secs(3), || {
                open_fds() <= fds0 && alive_tasks() <= tasks0
            })
            .await;
            let (fds, tasks) = (open_fds(), alive_tasks());
            println!("all {end:?}: {fds} fds, {tasks} tasks, back after {back:?}");
            if back.is_none() {
                failures.push(format!("{end:?}: {fds} fds, {tasks} tasks"));
            }
        }
    }
    // Forced: WebSocket clients (h1 and h2) that ignore the close and read nothing, idle.
    {
        let shutdown = Shutdown::new();
        let forced = serve(Config::default().shutdown(&shutdown), resource_handler).await;
        let (fds1, tasks1) = (open_fds(), alive_tasks());
        let mut h1 = Vec::new();
        let mut h2 = Vec::new();
        for _ in 0..N / 2 {
            h1.push(RawWs::connect_path(forced, "/hold").await);
            h2.push(raw_h2_ws(forced).await);
        }
        assert!(eventually(Duration::from_secs(10), || shutdown.live() == N).await.is_some());
        let report = shutdown.shutdown(Duration::from_millis(300)).await;
        assert_eq!((report.clean, report.forced), (0, N));
        for raw in h1.iter_mut() {
            assert!(raw.eof().await);
        }
        for raw in h2.iter_mut() {
            assert!(raw.eof().await);
        }
        drop(h1);
        drop(h2);
        let back =
            eventually(Duration::from_secs(3), || open_fds() <= fds1 && alive_tasks() <= tasks1)
                .await;
        let (fds, tasks) = (open_fds(), alive_tasks());
        println!("forced: {fds} fds, {tasks} tasks (from {fds1}, {tasks1}), back after {back:?}");
        if back.is_none() {
            failures.push(format!("forced: {fds} fds, {tasks} tasks"));
        }
    }
    // The keepalive thread: no WebSocket left, so after a sweep or two it sleeps for good.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let s0 = sweeper_switches();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s1 = sweeper_switches();
    println!("sweeper switches {s0:?} -> {s1:?}");
    assert!(s0.is_some(), "no keepalive thread found");
    assert_eq!(s0, s1, "the keepalive thread kept waking with no connection to watch");
    assert!(failures.is_empty(), "{failures:#?}");
}
