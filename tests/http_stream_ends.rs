//! How an HTTP stream ends, every way, over HTTP/1.1 and HTTP/2: what the application sees
//! (events, the handles while the end is under way, compat's callbacks), what the client gets,
//! and how soon. Written in stop 28's review (2026-12-05), which found the handles saying
//! "open" while an end the transport began was under way, a timeout that dropped clients
//! that were reading, and a whole response reported `Closed` before hyper had written it.

mod support;

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webchan::{Channel, Config, Event, Message};

const BIG: usize = 200 * 1024;

/// A server (HTTP/1.1 and HTTP/2) on a listener with a 16 KiB send buffer, handing every
/// channel to the test.
fn small_buffer_server(
    config: Config,
) -> (std::net::SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Channel>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(16 * 1024).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let run = move |ch: Channel| {
        let _ = tx.send(ch);
        async {}
    };
    (serve_on(socket.listen(16).unwrap(), config, |r| r, run), rx)
}

/// A raw HTTP/1.1 client with a 16 KiB receive buffer that sends `request` and reads nothing.
async fn quiet_client(addr: std::net::SocketAddr, request: &[u8]) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut tcp = socket.connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    tcp
}

/// An HTTP/1.1 stream with a 500 ms timeout (close timeout 4 s) to a client that reads
/// nothing yet, small socket buffers on both sides, and a 200 KiB send queued: the timeout
/// ends the body while hyper still holds most of it.
async fn big_send_under_a_timeout() -> (tokio::net::TcpStream, Channel, webchan::Completion) {
    let config =
        Config::default().timeout(Duration::from_millis(500)).close_timeout(Duration::from_secs(4));
    let (addr, mut channels) = small_buffer_server(config);
    let tcp = quiet_client(addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    let ch = next_channel(&mut channels).await;
    let big = ch.sender().try_send(Message::from(vec![b'a'; BIG])).unwrap();
    (tcp, ch, big)
}

/// Reads 4 KiB every 50 ms until the server closes (no read waits over 10 s); gives what came
/// and the longest gap between two reads.
async fn read_steadily(mut tcp: tokio::net::TcpStream) -> (Vec<u8>, Duration) {
    let (mut out, mut buf) = (Vec::new(), [0u8; 4096]);
    let (mut longest, mut last) = (Duration::ZERO, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .expect("no bytes within 10 s")
            .unwrap();
        longest = longest.max(last.elapsed());
        last = Instant::now();
        if n == 0 {
            return (out, longest);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Reads the whole response (until the server closes, 10 s at most).
async fn read_all(tcp: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out))
        .await
        .expect("the server did not close within 10 s")
        .unwrap();
    out
}

/// What the handles answer now, as text (all asked, so that one run shows them all).
fn probe(ch: &Channel) -> (String, Option<webchan::Completion>) {
    let sender = ch.sender();
    let open = ch.is_open();
    let tried = sender.try_send(Message::from("late"));
    let (tried_text, completion) = match tried {
        Ok(c) => ("Ok(Completion)".to_owned(), Some(c)),
        Err((e, _)) => (format!("Err({e:?})"), None),
    };
    let started = sender.start_close(1000, "");
    (format!("is_open()={open}, try_send={tried_text}, start_close={started}"), completion)
}

const EXPECTED: &str = "is_open()=false, try_send=Err(Closed), start_close=false";

/// Checks that `probe` said "closing" (`during`) while the end was under way; else fails
/// with what became of the message it tried (`late`), of the big send and the events.
async fn assert_said_closing(
    during: &str,
    late: Option<webchan::Completion>,
    big: webchan::Completion,
    ch: &mut Channel,
    what: &str,
) {
    let big = tokio::time::timeout(Duration::from_secs(10), big).await.expect("hung");
    let late = match late {
        Some(c) => {
            format!("{:?}", tokio::time::timeout(Duration::from_secs(10), c).await.expect("hung"))
        }
        None => "not accepted".to_owned(),
    };
    let events = all_events(ch).await;
    assert!(
        during == EXPECTED,
        "after {what} (before Closed): {during}; the message accepted then: {late}; the \
         200 KiB send: {big:?}; events {events:?}"
    );
}

#[tokio::test]
async fn h1_after_the_timeout_ended_the_body_the_handles_say_closing_while_hyper_writes() {
    // The timeout (500 ms) ends the body while hyper still holds most of a 200 KiB message
    // (the client reads nothing yet): the stream is ending, `Closed` waits for hyper's last
    // bytes. Meanwhile the handles should say "closing".
    let (mut tcp, mut ch, big) = big_send_under_a_timeout().await;
    // Past the timeout, well before the watchdog (timeout + close timeout = 4.5 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (during, late) = probe(&ch);
    // The client now reads: the response is complete (the timeout ended it) and has only the
    // 200 KiB message, nothing after it.
    let response = read_all(&mut tcp).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.ends_with("\r\n0\r\n\r\n"), "the timeout's response is not complete");
    assert!(!text.contains("late"));
    assert_said_closing(&during, late, big, &mut ch, "the timeout ended the body").await;
}

#[tokio::test]
async fn h1_after_the_declared_length_went_out_the_handles_say_closing() {
    // A head declaring 200 KiB and a 200 KiB message: hyper takes it, the body is complete
    // (hyper drops it), but most of it waits in hyper's buffer (the client reads nothing yet).
    // The docs: "later sends fail with `Error::Closed`".
    let (addr, mut channels) = small_buffer_server(Config::default());
    let mut tcp =
        quiet_client(addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    let mut ch = next_channel(&mut channels).await;
    let mut headers = http::HeaderMap::new();
    headers.insert("content-length", BIG.to_string().parse().unwrap());
    let head = Message::response(http::StatusCode::OK, headers, vec![b'a'; BIG]);
    let big = ch.sender().try_send(head).unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (during, late) = probe(&ch);
    let response = read_all(&mut tcp).await;
    let at = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(response.len() - at, BIG, "not the declared length");
    assert_said_closing(&during, late, big, &mut ch, "the declared length went out").await;
}

#[tokio::test]
async fn h2_after_the_timeout_ended_the_body_the_handles_say_closing_while_h2_holds_data() {
    // Over HTTP/2: a client whose stream window (16 KiB) it does not open again (it reads
    // nothing of the body yet); 200 KiB queued; the timeout ends the body while h2 holds the
    // rest of the message.
    let config =
        Config::default().timeout(Duration::from_millis(500)).close_timeout(Duration::from_secs(4));
    let (addr, mut channels) = serve_channels(config).await;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut client, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(16 * 1024)
            .adaptive_window(false)
            .handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let responding = tokio::spawn(async move { client.send_request(get(addr, "/")).await });
    let mut ch = next_channel(&mut channels).await;
    let big = ch.sender().try_send(Message::from(vec![b'a'; BIG])).unwrap();
    let response =
        tokio::time::timeout(Duration::from_secs(10), responding).await.unwrap().unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (during, late) = probe(&ch);
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .expect("body hung")
        .expect("the timeout's response is not complete")
        .to_bytes();
    assert_eq!(body.len(), BIG);
    assert_said_closing(&during, late, big, &mut ch, "the timeout ended the body").await;
}

#[tokio::test]
async fn compat_after_the_timeout_ended_the_body_send_returns_false_and_calls_nothing() {
    // The same through the callback API: `Handle::send` should return `Ok(false)` (no
    // callback) once the stream is ending; `Handle::is_open` false; `Handle::close` false.
    use std::sync::{Arc, Mutex};
    use webchan::compat::{Options, SendOptions};
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let log2 = Arc::clone(&log);
    let log3 = Arc::clone(&log);
    let options = Options::new()
        .timeout(Duration::from_millis(500))
        .config(Config::default().close_timeout(Duration::from_secs(4)))
        .on_open(move |ch| {
            let ch = ch.clone();
            let log = Arc::clone(&log2);
            let l = Arc::clone(&log);
            let _ = ch.send(
                vec![b'a'; BIG],
                SendOptions::new()
                    .on_success(move || l.lock().unwrap().push("big on_success".into())),
            );
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                let open = ch.is_open();
                let (ls, le) = (Arc::clone(&log), Arc::clone(&log));
                let sent = ch.send(
                    "late",
                    SendOptions::new()
                        .on_success(move || ls.lock().unwrap().push("late on_success".into()))
                        .on_error(move |e| {
                            le.lock().unwrap().push(format!("late on_error({e:?})"))
                        }),
                );
                let closed = ch.close();
                log.lock()
                    .unwrap()
                    .push(format!("during: is_open={open} send={sent:?} close={closed}"));
            });
        })
        .on_error(move |_ch, e| log3.lock().unwrap().push(format!("on_error({e:?})")));
    let log4 = Arc::clone(&log);
    let options =
        options.on_close(move |_ch, info| log4.lock().unwrap().push(format!("on_close({info:?})")));
    let socket_addr = {
        // a server with a small send buffer for compat
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_send_buffer_size(16 * 1024).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(16).unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let options = options.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let response = webchan::compat::as_channel(request, options.clone());
                        async move { Ok::<_, std::convert::Infallible>(response.await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
                });
            }
        });
        addr
    };
    let mut tcp =
        quiet_client(socket_addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let response = read_all(&mut tcp).await;
    assert!(String::from_utf8_lossy(&response).ends_with("\r\n0\r\n\r\n"));
    // Wait for on_close.
    for _ in 0..100 {
        if log.lock().unwrap().iter().any(|l| l.starts_with("on_close")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = log.lock().unwrap().clone();
    let during = log.iter().find(|l| l.starts_with("during")).cloned().unwrap_or_default();
    assert!(during == "during: is_open=false send=Ok(false) close=false", "callbacks: {log:?}");
    assert!(!log.iter().any(|l| l.starts_with("late on_")), "callbacks: {log:?}");
}

#[tokio::test]
async fn h1_the_events_of_a_timeout_end_with_a_slow_client_open_then_closed_only() {
    // Control: after the probe-less end of the first test, the events are Open then Closed.
    let (mut tcp, mut ch, big) = big_send_under_a_timeout().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = read_all(&mut tcp).await;
    let big = tokio::time::timeout(Duration::from_secs(10), big).await.expect("hung");
    let events = all_events(&mut ch).await;
    assert!(big.is_ok(), "{big:?}");
    assert!(matches!(events[..], [Event::Open, Event::Closed(_)]), "{events:?}");
}

fn assert_closed_clean(events: &[Event]) {
    assert!(matches!(events.first(), Some(Event::Open)), "{events:?}");
    assert!(
        matches!(events.last(), Some(Event::Closed(i)) if i.code.is_none() && i.reason.is_none()),
        "{events:?}"
    );
}

/// After `Closed`: every handle says closed.
fn assert_after(ch: &Channel) {
    assert!(!ch.is_open());
    assert!(matches!(ch.sender().try_send("x".into()), Err((webchan::Error::Closed, _))));
    assert!(!ch.sender().start_close(1000, ""));
}

#[tokio::test]
async fn h1_client_that_half_closes_before_the_head_ends_the_channel_promptly() {
    let (addr, mut channels) = serve_channels(Config::default()).await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut ch = next_channel(&mut channels).await;
    tcp.shutdown().await.unwrap(); // FIN
    let started = Instant::now();
    let events = all_events(&mut ch).await;
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_closed_clean(&events);
    assert!(!events.iter().any(|e| matches!(e, Event::Error(_))), "{events:?}");
    assert_after(&ch);
}

#[tokio::test]
async fn h1_client_gone_mid_body_while_the_handler_is_quiet() {
    // The docs: `Closed` "at the latest at the next send". Measured here: how soon without one.
    let (addr, mut channels) = serve_channels(Config::default()).await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut ch = next_channel(&mut channels).await;
    ch.send("first".into()).await.unwrap();
    let mut buf = [0u8; 1024];
    let _ = tcp.read(&mut buf).await.unwrap();
    drop(tcp);
    let started = Instant::now();
    let events = all_events(&mut ch).await;
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_closed_clean(&events);
    assert_after(&ch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_reset_before_the_head_ends_the_channel_promptly() {
    let (addr, mut channels) = serve_channels(Config::default()).await;
    let mut client = h2_client(addr).await;
    let request = tokio::spawn(async move {
        let _ = client.send_request(get(addr, "/")).await;
    });
    let mut ch = next_channel(&mut channels).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    request.abort(); // the request's future dropped: RST_STREAM(CANCEL)
    let started = Instant::now();
    let events = all_events(&mut ch).await;
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_closed_clean(&events);
    assert_after(&ch);
}

#[tokio::test]
async fn a_dropped_reply_fails_the_queued_sends_and_closes_once() {
    // The handler queues sends, then answers with a response of its own (a 403 after an auth
    // check): the Reply is dropped. Every send fails `Closed`; `Closed` once; the client gets
    // the 403 and the connection stays usable.
    let (tx, mut channels) = tokio::sync::mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let tx = tx.clone();
                    async move {
                        let (reply, channel) = webchan::as_channel(req, Config::default()).unwrap();
                        let sender = channel.sender();
                        let a = sender.try_send("a".into()).unwrap();
                        let b = sender.try_send("b".into()).unwrap();
                        let _ = tx.send((channel, a, b));
                        drop(reply);
                        let mut r = http::Response::new(webchan::Body::full("no".into()));
                        *r.status_mut() = http::StatusCode::FORBIDDEN;
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let r = sender.send_request(get(addr, "/")).await.unwrap();
    assert_eq!(r.status(), 403);
    let _ = r.into_body().collect().await.unwrap();
    let (mut ch, a, b) = channels.recv().await.unwrap();
    let a = tokio::time::timeout(Duration::from_secs(5), a).await.expect("hung");
    let b = tokio::time::timeout(Duration::from_secs(5), b).await.expect("hung");
    assert!(a.as_ref().is_err_and(|e| e.is_closed()), "{a:?}");
    assert!(b.as_ref().is_err_and(|e| e.is_closed()), "{b:?}");
    let events = all_events(&mut ch).await;
    assert_closed_clean(&events);
    assert_after(&ch);
    // The connection goes on.
    sender.ready().await.unwrap();
    let r = sender.send_request(get(addr, "/")).await.unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn keep_alive_after_each_graceful_end() {
    // One HTTP/1.1 connection; the handler ends each request another way: close(),
    // send_and_close, the timeout, a declared length reached, dropping every handle,
    // start_close. Each response is complete and the next request is served on the same
    // connection.
    let (addr, mut channels) =
        serve_channels(Config::default().timeout(Duration::from_millis(300))).await;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut client, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    let conn = tokio::spawn(conn);
    for way in 0..6 {
        client.ready().await.unwrap();
        let responding = client.send_request(get(addr, "/"));
        let run = async {
            let mut ch = next_channel(&mut channels).await;
            let s = ch.sender();
            match way {
                0 => {
                    s.send("zero".into()).await.unwrap();
                    s.close().await;
                }
                1 => s.send_and_close("one".into()).await.unwrap(),
                2 => s.send("two".into()).await.unwrap(), // the timeout ends it
                3 => {
                    let mut h = http::HeaderMap::new();
                    h.insert("content-length", "5".parse().unwrap());
                    s.send(Message::response(http::StatusCode::OK, h, "three")).await.unwrap();
                }
                4 => {
                    s.send("four".into()).await.unwrap();
                    drop(s);
                    let events = all_events(&mut ch).await;
                    drop(ch);
                    return events;
                }
                _ => {
                    s.send("five".into()).await.unwrap();
                    assert!(s.start_close(1000, ""));
                }
            }
            all_events(&mut ch).await
        };
        let (response, events) = tokio::join!(responding, run);
        let response = response.unwrap();
        let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
            .await
            .expect("body hung")
            .unwrap()
            .to_bytes();
        let want = ["zero", "one", "two", "three", "four", "five"][way];
        assert_eq!(&body[..], want.as_bytes(), "way {way}");
        assert_closed_clean(&events);
        assert!(!events.iter().any(|e| matches!(e, Event::Error(_))), "way {way}: {events:?}");
    }
    assert!(!conn.is_finished(), "the connection was not kept alive");
}

/// Sends numbered messages with `try_send` as fast as it can until refused, while `end`
/// happens; gives each accepted one's outcome.
async fn race(sender: webchan::Sender) -> Vec<(u32, Result<(), webchan::Error>)> {
    let mut completions = Vec::new();
    let mut n = 0u32;
    loop {
        match sender.try_send(Message::Binary(numbered(n, 512).into())) {
            Ok(c) => completions.push((n, c)),
            Err((webchan::Error::QueueFull { .. }, _)) => {
                tokio::task::yield_now().await;
                continue;
            }
            Err((e, _)) => {
                assert!(e.is_closed(), "{e:?}");
                break;
            }
        }
        n += 1;
        if n % 16 == 0 {
            tokio::task::yield_now().await;
        }
        assert!(n < 5_000_000);
    }
    let mut out = Vec::new();
    for (n, c) in completions {
        let r = tokio::time::timeout(Duration::from_secs(10), c).await.expect("a send hung");
        out.push((n, r));
    }
    out
}

fn check_race(outcomes: &[(u32, Result<(), webchan::Error>)], body: &[u8], label: &str) {
    assert_eq!(body.len() % 512, 0, "{label}: a message cut in the body");
    let got: Vec<u32> =
        body.chunks(512).map(|m| u32::from_be_bytes(m[..4].try_into().unwrap())).collect();
    for (i, n) in got.iter().enumerate() {
        assert_eq!(*n, i as u32, "{label}: out of order");
    }
    let oks = outcomes.iter().filter(|(_, r)| r.is_ok()).count();
    for (n, r) in outcomes {
        if r.is_ok() {
            assert!((*n as usize) < got.len(), "{label}: {n} reported Ok, never sent");
        } else {
            assert!(r.as_ref().unwrap_err().is_closed(), "{label}: {r:?}");
        }
    }
    println!("{label}: {} accepted, {oks} Ok, {} in the body", outcomes.len(), got.len());
}

/// GET / over HTTP/1.1 or HTTP/2 with hyper's client; the whole body, or hyper's error.
async fn get_body(addr: std::net::SocketAddr, h2: bool) -> Result<bytes::Bytes, hyper::Error> {
    let response = if h2 {
        h2_client(addr).await.send_request(get(addr, "/")).await.unwrap()
    } else {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut c, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        c.send_request(get(addr, "/")).await.unwrap()
    };
    response.into_body().collect().await.map(|b| b.to_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_racing_the_timeout_h1_and_h2() {
    for h2 in [false, true] {
        let (addr, mut channels) =
            serve_channels(Config::default().timeout(Duration::from_millis(300))).await;
        let getting = tokio::spawn(get_body(addr, h2));
        let mut ch = next_channel(&mut channels).await;
        let outcomes = race(ch.sender()).await;
        let body = tokio::time::timeout(Duration::from_secs(10), getting)
            .await
            .expect("body hung")
            .unwrap()
            .expect("the timeout's response is not complete");
        check_race(&outcomes, &body, if h2 { "h2" } else { "h1" });
        let events = all_events(&mut ch).await;
        assert_closed_clean(&events);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_racing_a_close_from_another_task_h1_and_h2() {
    for h2 in [false, true] {
        let (addr, mut channels) = serve_channels(Config::default()).await;
        let getting = tokio::spawn(get_body(addr, h2));
        let mut ch = next_channel(&mut channels).await;
        let closer = ch.sender();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            closer.close().await;
        });
        let outcomes = race(ch.sender()).await;
        let body = tokio::time::timeout(Duration::from_secs(10), getting)
            .await
            .expect("body hung")
            .unwrap()
            .expect("the closed response is not complete");
        check_race(&outcomes, &body, if h2 { "h2" } else { "h1" });
        // A graceful close: every message accepted before it goes out.
        assert!(outcomes.iter().all(|(_, r)| r.is_ok()), "a send accepted before close failed");
        let events = all_events(&mut ch).await;
        assert_closed_clean(&events);
    }
}

#[tokio::test]
async fn a_shutdown_stops_accepting_sends_at_once_and_the_stream_ends_complete() {
    let shutdown = webchan::Shutdown::new();
    let (addr, mut channels) = serve_channels(Config::default().shutdown(&shutdown)).await;
    let getting = tokio::spawn(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut c, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        let r = c.send_request(get(addr, "/")).await.unwrap();
        r.into_body().collect().await.map(|b| b.to_bytes())
    });
    let mut ch = next_channel(&mut channels).await;
    ch.send("before".into()).await.unwrap();
    let s = shutdown.clone();
    let report = tokio::spawn(async move { s.shutdown(Duration::from_secs(5)).await });
    // Give the shutdown a moment to ask.
    for _ in 0..100 {
        if !ch.is_open() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!ch.is_open());
    assert!(matches!(ch.sender().try_send("x".into()), Err((webchan::Error::Closed, _))));
    let body = tokio::time::timeout(Duration::from_secs(10), getting)
        .await
        .unwrap()
        .unwrap()
        .expect("not complete");
    assert_eq!(&body[..], b"before");
    let events = all_events(&mut ch).await;
    assert_closed_clean(&events);
    let report = tokio::time::timeout(Duration::from_secs(10), report).await.unwrap().unwrap();
    println!("{report:?}");
}

#[tokio::test]
async fn compat_a_stream_ended_by_its_timeout_calls_on_close_once_with_nil_code() {
    use std::sync::{Arc, Mutex};
    use webchan::compat::{Options, SendOptions};
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let (l1, l2, l3) = (Arc::clone(&log), Arc::clone(&log), Arc::clone(&log));
    let options = Options::new()
        .timeout(Duration::from_millis(300))
        .on_open(move |ch| {
            let ch = ch.clone();
            let log = Arc::clone(&l1);
            tokio::spawn(async move {
                let mut n = 0;
                loop {
                    let (ls, le) = (Arc::clone(&log), Arc::clone(&log));
                    let sent = ch.send(
                        format!("{n};"),
                        SendOptions::new()
                            .on_success(move || ls.lock().unwrap().push(format!("ok {n}")))
                            .on_error(move |e| le.lock().unwrap().push(format!("err {n} {e:?}"))),
                    );
                    match sent {
                        Ok(true) => n += 1,
                        Ok(false) => {
                            log.lock().unwrap().push(format!("refused {n}"));
                            break;
                        }
                        Err(e) => panic!("{e:?}"),
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        })
        .on_error(move |_ch, e| l2.lock().unwrap().push(format!("on_error {e:?}")))
        .on_close(move |ch, info| {
            l3.lock().unwrap().push(format!("on_close {info:?} open={}", ch.is_open()))
        });
    let addr = serve_compat(options).await;
    let response = http1_get(addr, get(addr, "/")).await;
    let body = String::from_utf8(response.body().to_vec()).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = log.lock().unwrap().clone();
    let closes: Vec<_> = log.iter().filter(|l| l.starts_with("on_close")).collect();
    assert_eq!(closes.len(), 1, "{log:?}");
    assert_eq!(closes[0], "on_close CloseInfo { code: None, reason: None } open=false");
    let last_close = log.iter().position(|l| l.starts_with("on_close")).unwrap();
    let after: Vec<_> =
        log[last_close + 1..].iter().filter(|l| !l.starts_with("refused")).collect();
    assert!(after.is_empty(), "callbacks after on_close: {after:?}");
    // Each accepted send gets exactly one callback; Ok only for what the body has.
    let sent: Vec<u32> =
        body.split(';').filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect();
    let refused: u32 = log
        .iter()
        .find_map(|l| l.strip_prefix("refused ").map(|n| n.parse().unwrap()))
        .expect("no send returned Ok(false)");
    for n in 0..refused {
        let oks = log.iter().filter(|l| **l == format!("ok {n}")).count();
        let errs = log.iter().filter(|l| l.starts_with(&format!("err {n} "))).count();
        assert_eq!(oks + errs, 1, "send {n}: {log:?}");
        if oks == 1 {
            assert!(sent.contains(&n), "send {n} on_success but not in the body");
        }
    }
}

/// A handler that waits for its first `send_and_close` together with its reply (`join!`)
/// before it returns the response gets it out: a response sent whole completes, and its
/// channel closes, when it is decided. (Stop 28 made both wait for hyper's write, which cannot
/// come before the handler returns: its own review found the deadlock, and it was undone
/// before it landed.) GET (small, 2 MiB, empty) and HEAD, over HTTP/1.1 and HTTP/2: the body
/// and Content-Length right, the send `Ok`, the channel `Closed`, and the HTTP/1.1 connection
/// still usable for a second request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_responses_joined_with_the_reply_over_h1_h2_and_head() {
    let (tx, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: http::Request<_>| {
                    let tx = tx.clone();
                    async move {
                        let size: usize = request.uri().path()[1..].parse().unwrap_or(5);
                        let (reply, mut channel) =
                            webchan::as_channel(request, Config::default()).unwrap();
                        let sender = channel.sender();
                        let body = Message::from(vec![b'q'; size]);
                        let (response, sent) = tokio::join!(reply, sender.send_and_close(body));
                        let after = sender.send(Message::from("late")).await;
                        let events = tokio::spawn(async move { all_events(&mut channel).await });
                        let _ = tx.send((sent, after, events));
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
            });
        }
    });
    for size in [5usize, 0, 2 << 20] {
        // HTTP/1.1: GET then HEAD then GET on one connection.
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut h1, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        let mut h2 = h2_client(addr).await;
        for (proto, method) in
            [("h1", "GET"), ("h1", "HEAD"), ("h1", "GET"), ("h2", "GET"), ("h2", "HEAD")]
        {
            let what = format!("{proto} {method} size {size}");
            let request = http::Request::builder()
                .method(method)
                .uri(format!("http://{addr}/{size}"))
                .header("host", addr.to_string())
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            let response = if proto == "h1" {
                tokio::time::timeout(Duration::from_secs(10), h1.ready())
                    .await
                    .unwrap_or_else(|_| panic!("{what}: connection not ready"))
                    .unwrap_or_else(|e| panic!("{what}: connection gone: {e}"));
                tokio::time::timeout(Duration::from_secs(10), h1.send_request(request)).await
            } else {
                tokio::time::timeout(Duration::from_secs(10), h2.send_request(request)).await
            }
            .unwrap_or_else(|_| panic!("{what}: no response head"))
            .unwrap();
            let length = response.headers().get("content-length").cloned();
            let body =
                tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
                    .await
                    .unwrap_or_else(|_| panic!("{what}: no body"))
                    .unwrap()
                    .to_bytes();
            assert_eq!(
                length.as_ref().and_then(|l| l.to_str().ok()),
                Some(size.to_string().as_str()),
                "{what}"
            );
            let want = if method == "HEAD" { 0 } else { size };
            assert_eq!(body.len(), want, "{what}");
            let (sent, after, events) =
                tokio::time::timeout(Duration::from_secs(10), outcomes.recv())
                    .await
                    .unwrap()
                    .unwrap();
            assert!(sent.is_ok(), "{what}: {sent:?}");
            assert!(after.is_err(), "{what}: a send after the close: {after:?}");
            let events = events.await.unwrap();
            assert!(matches!(events.last(), Some(Event::Closed(_))), "{what}: {events:?}");
            assert!(!events.iter().any(|e| matches!(e, Event::Error(_))), "{what}: {events:?}");
        }
    }
}

/// After an HTTP stream's timeout, a client that takes nothing for the close timeout is
/// dropped; one that reads steadily (4 KiB every 50 ms), though it needs longer than the close
/// timeout to take the end of a 300 KiB message, is not: its response completes, no error, the
/// send `Ok`. Also when the application closed the stream before the timeout. Before stop 28
/// (2026-12-05) both got `TimedOut` and the send `Closed`, the response whole all the same.
#[tokio::test]
async fn a_client_that_reads_steadily_is_not_dropped_after_the_timeout() {
    const BIG: usize = 300 * 1024;
    for close_first in [false, true] {
        let config = Config::default()
            .timeout(Duration::from_millis(300))
            .close_timeout(Duration::from_secs(1));
        let (addr, mut channels) = small_buffer_server(config);
        let request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let tcp = quiet_client(addr, request).await;
        let mut ch = next_channel(&mut channels).await;
        let big = ch.sender().try_send(Message::from(vec![b'a'; BIG])).unwrap();
        let closing = ch.sender();
        let close = tokio::spawn(async move {
            if close_first {
                closing.close().await;
            }
        });
        let reading = tokio::spawn(read_steadily(tcp));
        let events = all_events(&mut ch).await;
        let big = tokio::time::timeout(Duration::from_secs(10), big).await.expect("hung");
        tokio::time::timeout(Duration::from_secs(10), close).await.expect("close hung").unwrap();
        let (response, longest_gap) =
            tokio::time::timeout(Duration::from_secs(30), reading).await.unwrap().unwrap();
        let complete = String::from_utf8_lossy(&response).ends_with("\r\n0\r\n\r\n");
        assert!(
            complete && !events.iter().any(|e| matches!(e, Event::Error(_))) && big.is_ok(),
            "closed first {close_first}: a client that read steadily (longest gap between reads \
             {longest_gap:?}) got the complete response: {complete}; the channel said: events \
             {events:?}, the 300 KiB send {big:?}"
        );
    }
}
