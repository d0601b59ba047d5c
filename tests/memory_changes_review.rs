//! A review of the changes that cut an idle channel's memory (2026-12-06, fead229 and
//! f9398e6): several tasks waiting at once (`Wakers`: the first in place), the tracking of
//! awaited sends (its box freed once empty), the request's URI kept as text, the stream's
//! timers, the boxed `Reply`, the shared `Config::default()`. Real sockets on 127.0.0.1, real
//! clients. One defect found (older than those changes): `OPTIONS *` over HTTP/2 came back from
//! `originating_request()` as a request for `/` on the host `host*` (see
//! `every_http2_request_hyper_takes_comes_back_as_hyper_gave_it`).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming as HyperIncoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use webchan::{Body, Channel, Completion, Config, Error, Event, Kind, Message};

const LIMIT: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------------------- helpers

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// An HTTP/2 client whose connection task can be aborted (the client vanishes).
async fn h2_client_abortable(addr: SocketAddr) -> (H2Sender, tokio::task::JoinHandle<()>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (sender, task)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Via {
    WsH1,
    WsH2,
    StreamH1,
    StreamH2,
}

const ALL: [Via; 4] = [Via::WsH1, Via::WsH2, Via::StreamH1, Via::StreamH2];

/// What a client got: its messages (a stream's body is split on '\n').
type Got = tokio::task::JoinHandle<Vec<String>>;

/// Starts a client of kind `via` on `addr` that waits `delay` before it reads, then reads
/// everything until the end; returns the channel the server made.
async fn client_reading_after(
    via: Via,
    addr: SocketAddr,
    channels: &mut tokio::sync::mpsc::UnboundedReceiver<Channel>,
    delay: Duration,
) -> (Channel, Got) {
    let got: Got = match via {
        Via::WsH1 => {
            let mut ws = ws_connect(addr, "/ws").await;
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let (data, _) = ws_until_close(&mut ws).await;
                data.into_iter().map(|m| m.into_text().unwrap().to_string()).collect()
            })
        }
        Via::WsH2 => {
            let mut sender = h2_client(addr).await;
            let mut ws = h2_ws(&mut sender, addr, "/ws").await;
            tokio::spawn(async move {
                let _keep = sender;
                tokio::time::sleep(delay).await;
                let (data, _) = ws_until_close(&mut ws).await;
                data.into_iter().map(|m| m.into_text().unwrap().to_string()).collect()
            })
        }
        Via::StreamH1 | Via::StreamH2 => {
            let response = if via == Via::StreamH1 {
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
                tokio::spawn(conn);
                tokio::spawn(async move { sender.send_request(get(addr, "/s")).await.unwrap() })
            } else {
                let mut sender = h2_client(addr).await;
                let request = Request::get(format!("http://{addr}/s"))
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap();
                tokio::spawn(async move { sender.send_request(request).await.unwrap() })
            };
            tokio::spawn(async move {
                let response = tokio::time::timeout(LIMIT, response).await.unwrap().unwrap();
                tokio::time::sleep(delay).await;
                let body = tokio::time::timeout(LIMIT, response.into_body().collect())
                    .await
                    .expect("body not complete within 10 s")
                    .expect("body failed")
                    .to_bytes();
                let text = String::from_utf8(body.to_vec()).unwrap();
                text.split_terminator('\n').map(str::to_owned).collect()
            })
        }
    };
    (next_channel(channels).await, got)
}

/// A message of about `size` bytes naming its task and number, ending in '\n'.
fn tagged(task: usize, i: usize, size: usize) -> String {
    let mut s = format!("{task:03}:{i:04}:");
    while s.len() + 1 < size {
        s.push('.');
    }
    s.push('\n');
    s
}

/// Checks that the client got every task's messages whole, each task's in its order.
fn check_all_arrived(via: Via, got: &[String], tasks: usize, per_task: usize, size: usize) {
    let mut next = vec![0usize; tasks];
    for m in got {
        let m = m.trim_end_matches('\n');
        let task: usize = m[..3].parse().unwrap();
        let i: usize = m[4..8].parse().unwrap();
        assert_eq!(i, next[task], "{via:?}: task {task}'s messages out of order");
        assert_eq!(m.len() + 1, size, "{via:?}: a message not whole");
        next[task] += 1;
    }
    assert!(next.iter().all(|n| *n == per_task), "{via:?}: {next:?} of {per_task} each arrived");
}

/// A client that reads nothing and then goes away: a raw connection (HTTP/1.1), or an HTTP/2
/// connection (hyper's client, which reads within its windows) whose task is aborted.
enum Vanishing {
    Tcp(tokio::net::TcpStream),
    H2(tokio::task::JoinHandle<()>, Box<dyn std::any::Any + Send>),
}

impl Vanishing {
    async fn connect(via: Via, addr: SocketAddr) -> Self {
        match via {
            Via::WsH1 => Self::Tcp(RawWs::connect_path(addr, "/ws").await.tcp),
            Via::StreamH1 => {
                let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                tcp.write_all(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
                Self::Tcp(tcp)
            }
            Via::WsH2 => {
                let (mut sender, task) = h2_client_abortable(addr).await;
                let io = h2_websocket(&mut sender, addr, "/ws").await;
                Self::H2(task, Box::new((sender, io)))
            }
            Via::StreamH2 => {
                let (mut sender, task) = h2_client_abortable(addr).await;
                let request = Request::get(format!("http://{addr}/s"))
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap();
                let pending = tokio::spawn(async move {
                    let r = sender.send_request(request).await;
                    (sender, r.map(|r| r.into_body()))
                });
                Self::H2(task, Box::new(pending))
            }
        }
    }

    async fn vanish(self) {
        match self {
            Self::Tcp(tcp) => drop(tcp),
            Self::H2(task, keep) => {
                task.abort();
                let _ = task.await;
                drop(keep);
            }
        }
    }
}

/// Awaits every kept send (each on its task): a run of `Ok`, then only `Err(Closed)`. The
/// number of `Ok`s.
async fn ok_then_closed(kept: Vec<Completion>, label: &str) -> usize {
    let kept: Vec<_> = kept.into_iter().map(tokio::spawn).collect();
    let mut outcomes = Vec::new();
    for k in kept {
        outcomes.push(tokio::time::timeout(LIMIT, k).await.expect("a kept send hung").unwrap());
    }
    let ok = outcomes.iter().take_while(|o| o.is_ok()).count();
    assert!(
        outcomes[ok..].iter().all(|o| matches!(o, Err(Error::Closed))),
        "{label}: {outcomes:?}"
    );
    ok
}

// ------------------------------------------------- several tasks waiting at once (Wakers)

/// `tasks` clones of one `Sender`, each on its task, send `each` messages of `size` bytes past
/// a queue limit of `limit` while the client reads nothing for `quiet`: every one waits for
/// room at once, all wake, and every send completes; the client gets everything in each task's
/// order. With `sinks`, the odd tasks go through the `Sink` (`poll_ready` of many clones at
/// once), the even ones through `Sender::send`.
async fn blocked_senders_all_complete(
    (tasks, each, size): (usize, usize, usize),
    limit: usize,
    quiet: Duration,
    sinks: bool,
) {
    for via in ALL {
        let (addr, mut channels) = serve_channels(Config::default().queue_limit(limit)).await;
        let (ch, got) = client_reading_after(via, addr, &mut channels, quiet).await;
        let mut handles = Vec::new();
        for t in 0..tasks {
            let mut s = ch.sender();
            handles.push(tokio::spawn(async move {
                for i in 0..each {
                    let m: Message = tagged(t, i, size).into();
                    if sinks && t % 2 == 1 {
                        SinkExt::send(&mut s, m).await?;
                    } else {
                        s.send(m).await?;
                    }
                }
                Ok::<(), Error>(())
            }));
        }
        for (t, task) in handles.into_iter().enumerate() {
            let r = tokio::time::timeout(LIMIT, task)
                .await
                .unwrap_or_else(|_| panic!("{via:?}: task {t}'s sends hung"))
                .unwrap();
            assert!(r.is_ok(), "{via:?}: task {t}: {r:?}");
        }
        tokio::time::timeout(LIMIT, ch.sender().close()).await.expect("close hung");
        let got = tokio::time::timeout(LIMIT, got).await.unwrap().unwrap();
        check_all_arrived(via, &got, tasks, each, size);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sender_clones_blocked_on_a_full_queue_all_complete() {
    blocked_senders_all_complete((16, 12, 1000), 3000, Duration::from_millis(800), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_and_sends_blocked_on_a_full_queue_together_all_complete() {
    blocked_senders_all_complete((12, 10, 700), 2000, Duration::from_millis(600), true).await;
}

/// `Completion`s from `try_send` each awaited on a task of its own, `closed()` awaited from
/// several tasks (registered first, so they hold the first waker place), and an awaited send:
/// every completion resolves `Ok`, and every `closed()` returns once the channel closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_and_closed_waiters_on_many_tasks_all_resolve() {
    const N: usize = 40;
    for via in ALL {
        let (addr, mut channels) = serve_channels(Config::default()).await;
        let (ch, got) =
            client_reading_after(via, addr, &mut channels, Duration::from_millis(300)).await;
        let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
        for w in 0..6 {
            let s = ch.sender();
            let tx = closed_tx.clone();
            tokio::spawn(async move {
                s.closed().await;
                let _ = tx.send(w);
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let sender = ch.sender();
        let mut waits = Vec::new();
        for i in 0..N {
            let c = sender.try_send(tagged(0, i, 64).into()).unwrap();
            waits.push(tokio::spawn(c));
        }
        let last = tokio::time::timeout(LIMIT, sender.send(tagged(0, N, 64).into())).await;
        assert!(matches!(last, Ok(Ok(()))), "{via:?}: {last:?}");
        for (i, w) in waits.into_iter().enumerate() {
            let r = tokio::time::timeout(LIMIT, w)
                .await
                .unwrap_or_else(|_| panic!("{via:?}: completion {i} hung"))
                .unwrap();
            assert!(r.is_ok(), "{via:?}: completion {i}: {r:?}");
        }
        // Nobody's `closed()` returned while the channel was open.
        assert!(closed_rx.try_recv().is_err(), "{via:?}: closed() returned on an open channel");
        tokio::time::timeout(LIMIT, sender.close()).await.expect("close hung");
        let mut woke = Vec::new();
        for _ in 0..6 {
            woke.push(
                tokio::time::timeout(LIMIT, closed_rx.recv())
                    .await
                    .unwrap_or_else(|_| panic!("{via:?}: a closed() waiter hung: {woke:?}"))
                    .unwrap(),
            );
        }
        let got = tokio::time::timeout(LIMIT, got).await.unwrap().unwrap();
        check_all_arrived(via, &got, 1, N + 1, 64);
    }
}

/// Awaited sends that cannot go out (the client reads nothing, then goes away) on one task
/// and on many at once, with `closed()` awaited meanwhile: each send gets its outcome (`Ok`
/// for a prefix, then `Err(Closed)`), no task hangs, `closed()` returns, then `Closed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awaited_sends_fail_when_the_client_goes_away_one_or_many_at_once() {
    // A large queue: the tasks wait for their sends' outcome; a small one: most wait for room.
    for (tasks, limit) in [(1usize, 64 << 20), (16, 64 << 20), (16, 256 << 10)] {
        for via in ALL {
            let (addr, mut channels) = serve_channels(Config::default().queue_limit(limit)).await;
            let client = Vanishing::connect(via, addr).await;
            let mut ch = next_channel(&mut channels).await;
            let closed_waiter = {
                let s = ch.sender();
                tokio::spawn(async move { s.closed().await })
            };
            let mut handles = Vec::new();
            for t in 0..tasks {
                let s = ch.sender();
                handles.push(tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    // Until one fails: the client reads nothing, then goes away.
                    for i in 0..100_000usize {
                        let r =
                            s.send(Message::Binary(vec![(t + i) as u8; 64 * 1024].into())).await;
                        let failed = r.is_err();
                        outcomes.push(r);
                        if failed {
                            break;
                        }
                    }
                    outcomes
                }));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            client.vanish().await;
            let mut failed = 0;
            for (t, h) in handles.into_iter().enumerate() {
                let outcomes = tokio::time::timeout(LIMIT, h)
                    .await
                    .unwrap_or_else(|_| {
                        panic!("{via:?} x{tasks} limit {limit}: task {t}'s send hung")
                    })
                    .unwrap();
                let last = outcomes.last().unwrap();
                assert!(
                    matches!(last, Err(Error::Closed)),
                    "{via:?} x{tasks} limit {limit}: task {t} ended with {last:?} after {} sends",
                    outcomes.len()
                );
                assert!(outcomes[..outcomes.len() - 1].iter().all(Result::is_ok));
                failed += 1;
            }
            assert_eq!(failed, tasks);
            tokio::time::timeout(LIMIT, closed_waiter).await.expect("closed() hung").unwrap();
            let events = all_events(&mut ch).await;
            assert!(matches!(events.last(), Some(Event::Closed(_))), "{events:?}");
            // Nobody was left waiting: a new send fails at once.
            let late = tokio::time::timeout(LIMIT, ch.sender().send("late".into())).await;
            assert!(matches!(late, Ok(Err(Error::Closed))), "{via:?}: {late:?}");
        }
    }
}

// ------------------------------------------------- the tracking box: made, freed, made again

/// One channel through every state of the tracking: many awaited sends at once (the box
/// made, then freed), completions dropped before they resolve that then complete (orphans
/// forgotten, the box freed again), then sends kept and dropped in turn to a client that
/// reads nothing and goes away. The kept ones give `Ok` for a prefix then `Err(Closed)`; each
/// dropped one after that prefix is reported as one `Error(Closed)` before `Closed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracking_box_made_freed_and_made_again_reports_every_outcome() {
    const PAIRS: usize = 100;
    for kind in ALL {
        let (addr, mut channels) = serve_channels(Config::default().queue_limit(64 << 20)).await;
        let client = Vanishing::connect(kind, addr).await;
        let mut ch = next_channel(&mut channels).await;
        let sender = ch.sender();
        for round in 0..3 {
            // Small sends that the socket's buffers take although the client reads nothing.
            let mut tasks = Vec::new();
            for i in 0..8 {
                let s = ch.sender();
                tasks.push(tokio::spawn(
                    async move { s.send(format!("r{round}-{i}").into()).await },
                ));
            }
            for t in tasks {
                let r = tokio::time::timeout(LIMIT, t).await.expect("small send hung").unwrap();
                assert!(r.is_ok(), "{kind:?}: round {round}: {r:?}");
            }
            // Dropped completions that then complete (orphans, forgotten once done).
            for i in 0..8 {
                drop(sender.try_send(format!("d{round}-{i}").into()).unwrap());
            }
            let r = tokio::time::timeout(LIMIT, sender.send("mark".into())).await;
            assert!(matches!(r, Ok(Ok(()))), "{kind:?}: {r:?}");
        }
        // Kept and dropped in turn: more than the socket's buffers take.
        let mut kept: Vec<Completion> = Vec::new();
        for i in 0..PAIRS {
            kept.push(sender.try_send(Message::Binary(vec![i as u8; 64 * 1024].into())).unwrap());
            drop(sender.try_send(Message::Binary(vec![i as u8; 64 * 1024].into())).unwrap());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        client.vanish().await;
        let ok = ok_then_closed(kept, &format!("{kind:?}")).await;
        assert!(ok < PAIRS, "{kind:?}: 12.5 MiB went to a client that read nothing");
        eprintln!("{kind:?}: {ok} of {PAIRS} kept sends went out");
        let events = all_events(&mut ch).await;
        let closed_errors =
            events.iter().filter(|e| matches!(e, Event::Error(Error::Closed))).count();
        // Dropped sends 0..ok-1 went out before kept send `ok` failed... precisely: the dropped
        // one of pair j follows kept j. Kept `ok` failed, so dropped `ok..` failed (PAIRS - ok);
        // dropped `ok - 1` sits between a success and a failure: either.
        let must = PAIRS - ok;
        assert!(
            closed_errors == must || closed_errors == must + 1,
            "{kind:?}: {ok} kept sends went out, {must} dropped ones must have failed, \
             {closed_errors} reported: {events:?}"
        );
    }
}

/// Completions dropped while a send is awaited (the awaited one in `tracked_one`, the
/// dropped ones after it) then the channel closed by the server: the close goes after all of
/// them, so none is an orphan at the end, and no error is reported.
#[tokio::test]
async fn dropped_completions_that_go_out_before_the_close_report_nothing() {
    for via in ALL {
        let (addr, mut channels) = serve_channels(Config::default()).await;
        let (mut ch, got) =
            client_reading_after(via, addr, &mut channels, Duration::from_millis(200)).await;
        let sender = ch.sender();
        let awaited = {
            let s = ch.sender();
            tokio::spawn(async move { s.send(tagged(0, 0, 100).into()).await })
        };
        tokio::task::yield_now().await;
        for i in 1..50 {
            drop(sender.try_send(tagged(0, i, 100).into()).unwrap());
        }
        let kept = sender.try_send(tagged(0, 50, 100).into()).unwrap();
        assert!(tokio::time::timeout(LIMIT, awaited).await.unwrap().unwrap().is_ok());
        assert!(tokio::time::timeout(LIMIT, kept).await.unwrap().is_ok());
        let closer = tokio::spawn(async move { sender.close().await });
        let events = all_events(&mut ch).await;
        assert!(
            !events.iter().any(|e| matches!(e, Event::Error(_))),
            "{via:?}: errors for sends that went out: {events:?}"
        );
        tokio::time::timeout(LIMIT, closer).await.unwrap().unwrap();
        let got = tokio::time::timeout(LIMIT, got).await.unwrap().unwrap();
        check_all_arrived(via, &got, 1, 51, 100);
    }
}

// ------------------------------------------------------------ originating_request() URIs

/// An extension the handler adds to the request before `as_channel`.
#[derive(Clone, Debug, PartialEq)]
struct Mark(u32);

/// A server that adds `Mark(7)` to each request, makes it a channel (or a compat channel for
/// paths under `/compat`), and sends the test what `originating_request()` gives.
async fn recording_server(
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<(Kind, http::request::Parts)>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve_handler(listener().await, move |mut req: Request<HyperIncoming>| {
        let tx = tx.clone();
        req.extensions_mut().insert(Mark(7));
        async move {
            if req.uri().path().starts_with("/compat") {
                let tx2 = tx.clone();
                let options = webchan::compat::Options::new().on_open(move |h| {
                    let r = h.originating_request();
                    let (mut parts, ()) = Request::new(()).into_parts();
                    parts.method = r.method.clone();
                    parts.uri = r.uri.clone();
                    parts.version = r.version;
                    parts.headers = r.headers.clone();
                    parts.extensions = r.extensions.clone();
                    let _ = tx2.send((h.kind(), parts));
                    h.close();
                });
                return webchan::compat::as_channel(req, options).await;
            }
            match webchan::as_channel(req, Config::default()) {
                Ok((reply, ch)) => {
                    let r = ch.originating_request();
                    let (mut parts, ()) = Request::new(()).into_parts();
                    parts.method = r.method.clone();
                    parts.uri = r.uri.clone();
                    parts.version = r.version;
                    parts.headers = r.headers.clone();
                    parts.extensions = r.extensions.clone();
                    let _ = tx.send((ch.kind(), parts));
                    tokio::spawn(async move {
                        let _ = ch.sender().send_and_close("ok".into()).await;
                    });
                    reply.await
                }
                Err(rejection) => rejection.into_response(),
            }
        }
    });
    (addr, rx)
}

async fn recorded(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(Kind, http::request::Parts)>,
) -> (Kind, http::request::Parts) {
    tokio::time::timeout(LIMIT, rx.recv()).await.expect("no channel within 10 s").unwrap()
}

/// Writes a raw HTTP/1.1 request and reads the answer's head (the connection is kept).
async fn raw_head(addr: SocketAddr, request: &[u8]) -> (String, tokio::net::TcpStream) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(LIMIT, tcp.read(&mut byte)).await.unwrap().unwrap();
        assert_eq!(n, 1, "closed before the head's end: {:?}", String::from_utf8_lossy(&buf));
        buf.push(byte[0]);
    }
    (String::from_utf8_lossy(&buf).into_owned(), tcp)
}

#[tokio::test]
async fn http1_uris_come_back_as_they_came_with_headers_and_extensions_whole() {
    let (addr, mut rx) = recording_server().await;
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    let upgrade = format!("Upgrade: websocket\r\nConnection: Upgrade\r\n{key}");
    let cases: Vec<(String, &str, Kind)> = vec![
        // Origin-form with a query and percent-escapes (and bytes RFC 3986 lets through).
        (
            "/a%20b/c%2Fd/%E6%97%A5;p=1?x=%41&y=a%2Bb&&z=&q=a/b?c".into(),
            "/a%20b/c%2Fd/%E6%97%A5;p=1?x=%41&y=a%2Bb&&z=&q=a/b?c",
            Kind::HttpStream,
        ),
        ("/ws/x?token=a%3Db%26c".into(), "/ws/x?token=a%3Db%26c", Kind::WebSocket),
        // Absolute-form (a proxy-style request line), stream and WebSocket.
        (
            "http://example.com:8080/p/q?r=s%20t".into(),
            "http://example.com:8080/p/q?r=s%20t",
            Kind::HttpStream,
        ),
        ("http://example.com/ws?x=1".into(), "http://example.com/ws?x=1", Kind::WebSocket),
        ("http://example.com".into(), "http://example.com/", Kind::HttpStream),
        ("http://example.com?x=1".into(), "http://example.com/?x=1", Kind::HttpStream),
        // Asterisk-form.
        ("*".into(), "*", Kind::HttpStream),
    ];
    for (target, want, kind) in cases {
        let method = if target == "*" { "OPTIONS" } else { "GET" };
        let extra = if kind == Kind::WebSocket { upgrade.as_str() } else { "" };
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: example.com\r\nX-Multi: one\r\nX-Multi: two\r\n\
             Authorization: secret\r\nX-Empty:\r\n{extra}\r\n"
        );
        let (head, _tcp) = raw_head(addr, request.as_bytes()).await;
        let (got_kind, parts) = recorded(&mut rx).await;
        assert_eq!(got_kind, kind, "{target}: {head}");
        assert_eq!(parts.uri.to_string(), want, "{target}");
        assert_eq!(parts.uri, want.parse::<http::Uri>().unwrap(), "{target}");
        assert_eq!(parts.method.as_str(), method);
        assert_eq!(parts.version, http::Version::HTTP_11);
        let multi: Vec<_> = parts.headers.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["one", "two"], "{target}");
        assert_eq!(parts.headers["authorization"], "secret");
        assert_eq!(parts.headers["x-empty"], "");
        assert_eq!(parts.headers["host"], "example.com");
        assert_eq!(parts.extensions.get::<Mark>(), Some(&Mark(7)), "{target}");
    }
}

#[tokio::test]
async fn compat_uris_come_back_as_they_came() {
    let (addr, mut rx) = recording_server().await;
    for (target, want) in [
        ("/compat/a%20b?c=%2F&d", "/compat/a%20b?c=%2F&d"),
        ("http://h.example:81/compat?x=%41", "http://h.example:81/compat?x=%41"),
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n");
        let (_head, _tcp) = raw_head(addr, request.as_bytes()).await;
        let (kind, parts) = recorded(&mut rx).await;
        assert_eq!(kind, Kind::HttpStream);
        assert_eq!(parts.uri.to_string(), want);
        assert_eq!(parts.headers["x-a"], "1");
        assert_eq!(parts.extensions.get::<Mark>(), Some(&Mark(7)));
    }
    // A compat WebSocket over HTTP/2 (extended CONNECT).
    let mut sender = h2_client(addr).await;
    let _ws = h2_websocket(&mut sender, addr, "/compat/ws?room=%E6%97%A5").await;
    let (kind, parts) = recorded(&mut rx).await;
    assert_eq!(kind, Kind::WebSocket);
    assert_eq!(parts.method, http::Method::CONNECT);
    assert_eq!(parts.uri.to_string(), format!("http://{addr}/compat/ws?room=%E6%97%A5"));
    assert_eq!(parts.extensions.get::<Mark>(), Some(&Mark(7)));
}

#[tokio::test]
async fn http2_uris_and_extended_connect_come_back_whole() {
    let (addr, mut rx) = recording_server().await;
    let mut sender = h2_client(addr).await;
    // An ordinary HTTP/2 request.
    let request = Request::get(format!("http://{addr}/p%C3%A9/q?x=1&y=%20"))
        .header("x-multi", "one")
        .header("x-multi", "two")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let (kind, parts) = recorded(&mut rx).await;
    assert_eq!(kind, Kind::HttpStream);
    assert_eq!(parts.version, http::Version::HTTP_2);
    assert_eq!(parts.uri.to_string(), format!("http://{addr}/p%C3%A9/q?x=1&y=%20"));
    assert_eq!(parts.uri.scheme_str(), Some("http"));
    assert_eq!(parts.uri.authority().unwrap().as_str(), addr.to_string());
    assert_eq!(parts.uri.path(), "/p%C3%A9/q");
    assert_eq!(parts.uri.query(), Some("x=1&y=%20"));
    let multi: Vec<_> = parts.headers.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["one", "two"]);
    assert_eq!(parts.extensions.get::<Mark>(), Some(&Mark(7)));
    // A WebSocket over HTTP/2: its `:protocol` stays in the extensions.
    let _ws = h2_websocket(&mut sender, addr, "/chat?room=1").await;
    let (kind, parts) = recorded(&mut rx).await;
    assert_eq!(kind, Kind::WebSocket);
    assert_eq!(parts.method, http::Method::CONNECT);
    assert_eq!(parts.uri.to_string(), format!("http://{addr}/chat?room=1"));
    assert_eq!(parts.headers["sec-websocket-version"], "13");
    assert_eq!(
        parts.extensions.get::<hyper::ext::Protocol>().map(|p| p.as_str().to_owned()),
        Some("websocket".to_owned())
    );
    assert_eq!(parts.extensions.get::<Mark>(), Some(&Mark(7)));
}

/// URIs near the limits: 60,000 bytes over HTTP/1.1 (under `http::Uri`'s 65,534), and over
/// HTTP/2 a path longer than a `Uri` parsed from text may be (if hyper takes it).
#[tokio::test]
async fn long_uris_come_back_whole() {
    let (addr, mut rx) = recording_server().await;
    for len in [8_000usize, 60_000, 65_000] {
        let path = format!("/{}?q={}", "a".repeat(len / 2), "b%20".repeat(len / 8));
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let out = raw_http(addr, request.as_bytes()).await;
        let text = String::from_utf8_lossy(&out[..out.len().min(200)]).into_owned();
        if text.starts_with("HTTP/1.1 200") {
            let (_, parts) = recorded(&mut rx).await;
            assert_eq!(parts.uri.to_string(), path, "h1 {len}");
            eprintln!("h1 {len}: came back whole");
        } else {
            eprintln!("h1 {len}: hyper refused: {text:?}");
        }
    }
    let mut sender = h2_client(addr).await;
    for len in [60_000usize, 65_500, 65_528, 70_000] {
        let path = format!("/{}?q={}", "c".repeat(len), "d");
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        parts.authority = Some(addr.to_string().parse().unwrap());
        let Ok(pq) = http::uri::PathAndQuery::from_maybe_shared(bytes::Bytes::from(path.clone()))
        else {
            eprintln!("h2 {len}: no PathAndQuery");
            continue;
        };
        parts.path_and_query = Some(pq);
        let uri = match http::Uri::from_parts(parts) {
            Ok(uri) => uri,
            Err(e) => {
                eprintln!("h2 {len}: no Uri: {e}");
                continue;
            }
        };
        let request = Request::get(uri).body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
        match tokio::time::timeout(LIMIT, sender.send_request(request)).await.unwrap() {
            Ok(response) if response.status() == 200 => {
                let (_, parts) = recorded(&mut rx).await;
                assert_eq!(parts.uri.path().len(), len + 1, "h2 {len}");
                assert_eq!(parts.uri.path_and_query().unwrap().as_str(), path, "h2 {len}");
                eprintln!("h2 {len}: came back whole");
            }
            other => {
                eprintln!("h2 {len}: {:?}", other.map(|r| r.status()));
                sender = h2_client(addr).await;
            }
        }
    }
}

// ------------------------------------------------------------------ HTTP stream timeouts

/// Gets `path` over HTTP/1.1 or HTTP/2 (`accept`: an `Accept` header) and collects the body;
/// fails the test if the body is not complete within 10 s.
async fn fetch(
    addr: SocketAddr,
    path: &str,
    h2: bool,
    accept: Option<&str>,
) -> Response<bytes::Bytes> {
    let mut request = Request::get(format!("http://{addr}{path}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    if let Some(a) = accept {
        request.headers_mut().insert("accept", a.parse().unwrap());
    }
    if !h2 {
        request.headers_mut().insert("host", addr.to_string().parse().unwrap());
        return http1_get(addr, request).await;
    }
    let mut sender = h2_client(addr).await;
    let response =
        tokio::time::timeout(LIMIT, sender.send_request(request)).await.unwrap().unwrap();
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(LIMIT, body.collect())
        .await
        .expect("body not complete within 10 s")
        .expect("body failed (cut short)")
        .to_bytes();
    Response::from_parts(parts, body)
}

/// A stream that sends for ever ends at its deadline, with a complete body, whether its first
/// message came at once, after a while (before the deadline), or as a sequence whose first
/// item is slow (the head waits on it, its timer running); over HTTP/1.1 and HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_sending_for_ever_ends_at_its_deadline_however_its_head_came() {
    let config = Config::default().timeout(Duration::from_millis(1500));
    let addr = serve(config, |ch: Channel| async move {
        let s = ch.sender();
        let path = ch.originating_request().uri.path().to_owned();
        match path.as_str() {
            "/late" => tokio::time::sleep(Duration::from_millis(700)).await,
            "/slowseq" => {
                // The first item comes after 700 ms, then one every 30 ms, for ever.
                let items = futures::stream::unfold(0u32, |n| async move {
                    tokio::time::sleep(Duration::from_millis(if n == 0 { 700 } else { 30 })).await;
                    Some((Message::from(format!("s{n}\n")), n + 1))
                });
                let _ = s.send(Message::stream(items)).await;
                tokio::time::sleep(Duration::from_secs(20)).await;
                return;
            }
            _ => {}
        }
        let mut n = 0;
        while s.send(format!("m{n}\n").into()).await.is_ok() {
            n += 1;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        tokio::time::sleep(Duration::from_secs(20)).await;
    })
    .await;
    for h2 in [false, true] {
        for path in ["/now", "/late", "/slowseq"] {
            let started = Instant::now();
            let response = fetch(addr, path, h2, None).await;
            let took = started.elapsed();
            let body = String::from_utf8(response.body().to_vec()).unwrap();
            assert_eq!(response.status(), 200, "{path} h2={h2}");
            assert!(took < Duration::from_secs(8), "{path} h2={h2}: ended after {took:?}");
            assert!(took >= Duration::from_millis(1000), "{path} h2={h2}: ended early {took:?}");
            let first = if path == "/slowseq" { "s0\n" } else { "m0\n" };
            assert!(body.starts_with(first), "{path} h2={h2}: {body:?}");
            assert!(body.lines().count() >= 3, "{path} h2={h2}: {body:?}");
        }
    }
}

/// An SSE stream with a timeout ends at its deadline, whether events flow or it is quiet
/// (keepalive comments only), over HTTP/1.1 and HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_stream_with_a_timeout_ends_at_its_deadline() {
    let config = Config::default()
        .timeout(Duration::from_millis(1500))
        .sse_keepalive(Some(Duration::from_millis(300)));
    let addr = serve(config, |ch: Channel| async move {
        let s = ch.sender();
        if ch.originating_request().uri.path() == "/flow" {
            let mut n = 0;
            while s.send(format!("e{n}").into()).await.is_ok() {
                n += 1;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(20)).await;
    })
    .await;
    for h2 in [false, true] {
        for path in ["/flow", "/quiet"] {
            let started = Instant::now();
            let response = fetch(addr, path, h2, Some("text/event-stream")).await;
            let took = started.elapsed();
            let body = String::from_utf8(response.body().to_vec()).unwrap();
            assert_eq!(response.headers()["content-type"], "text/event-stream");
            assert!(took < Duration::from_secs(8), "{path} h2={h2}: ended after {took:?}");
            if path == "/flow" {
                assert!(body.starts_with("data: e0\n\n"), "h2={h2}: {body:?}");
            } else {
                assert!(body.matches(":\n\n").count() >= 2, "h2={h2}: {body:?}");
                assert_eq!(body.replace(":\n\n", ""), "", "h2={h2}: {body:?}");
            }
        }
    }
}

/// SSE keepalive comments come after each quiet period and not while events flow: events
/// every 40 ms for a while (no comment between them), quiet for 3.5 s (comments, the period
/// being 1 s), events again (none), quiet again (comments again), over HTTP/1.1 and HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_keepalive_comments_come_in_each_quiet_period_and_never_between_flowing_events() {
    let config = Config::default().sse_keepalive(Some(Duration::from_secs(1)));
    let addr = serve(config, |ch: Channel| async move {
        let s = ch.sender();
        let mut n = 0;
        for _phase in 0..2 {
            for _ in 0..25 {
                s.send(format!("e{n}").into()).await.unwrap();
                n += 1;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            tokio::time::sleep(Duration::from_millis(3500)).await;
        }
        s.send(format!("e{n}").into()).await.unwrap();
        s.close().await;
    })
    .await;
    let runs = [false, true].map(|h2| async move {
        let body = {
            let response = fetch_long(addr, h2).await;
            String::from_utf8(response.to_vec()).unwrap()
        };
        (h2, body)
    });
    for (h2, body) in futures::future::join_all(runs).await {
        // The body, as a list of "e<n>" events and ":" comments.
        let items: Vec<&str> = body
            .split("\n\n")
            .filter(|s| !s.is_empty())
            .map(|s| s.strip_prefix("data: ").unwrap_or(s))
            .collect();
        let comments_between = |a: usize, b: usize| {
            let from = items.iter().position(|i| *i == format!("e{a}")).unwrap();
            let to = items.iter().position(|i| *i == format!("e{b}")).unwrap();
            items[from..to].iter().filter(|i| **i == ":").count()
        };
        assert_eq!(comments_between(0, 24), 0, "h2={h2}: comments while events flowed: {items:?}");
        assert!(comments_between(24, 25) >= 2, "h2={h2}: quiet 3.5 s, 1 s period: {items:?}");
        assert_eq!(comments_between(25, 49), 0, "h2={h2}: comments while events flowed: {items:?}");
        assert!(comments_between(49, 50) >= 2, "h2={h2}: second quiet period: {items:?}");
    }
}

/// An SSE GET whose body may take up to 20 s.
async fn fetch_long(addr: SocketAddr, h2: bool) -> bytes::Bytes {
    let mut request = Request::get(format!("http://{addr}/"))
        .header("accept", "text/event-stream")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = if h2 {
        let mut sender = h2_client(addr).await;
        sender.send_request(request).await.unwrap()
    } else {
        request.headers_mut().insert("host", addr.to_string().parse().unwrap());
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        sender.send_request(request).await.unwrap()
    };
    tokio::time::timeout(Duration::from_secs(25), response.into_body().collect())
        .await
        .expect("body not complete within 25 s")
        .unwrap()
        .to_bytes()
}

// ------------------------------------------------------------------------- ISO-2022-JP

/// An ISO-2022-JP stream ends back in ASCII (`ESC ( B`) over HTTP/2 too, whether the
/// application closes it, its timeout ends it, or the channel is dropped; and over
/// HTTP/1.1 when the channel is dropped.
#[tokio::test]
async fn iso_2022_jp_streams_end_in_ascii_over_http2_and_when_dropped() {
    let config = Config::default().timeout(Duration::from_millis(1200));
    let addr = serve_with(config, support::iso_2022_jp, |ch: Channel| async move {
        let s = ch.sender();
        for m in ["a日", "本", "語"] {
            s.send(m.into()).await.unwrap();
        }
        match ch.originating_request().uri.path() {
            "/close" => s.close().await,
            "/drop" => {
                drop(s);
                drop(ch);
            }
            _ => tokio::time::sleep(Duration::from_secs(5)).await,
        }
    })
    .await;
    for h2 in [true, false] {
        for path in ["/close", "/timeout", "/drop"] {
            if !h2 && path != "/drop" {
                continue; // http_stream::iso_2022_jp_messages_meet_... has these
            }
            let response = fetch(addr, path, h2, None).await;
            let body = response.body();
            let (text, had_errors) = encoding_rs::ISO_2022_JP.decode_without_bom_handling(body);
            assert!(!had_errors, "{path} h2={h2}: {text:?} from {body:?}");
            assert_eq!(text, "a日本語", "{path} h2={h2}");
            assert!(body.ends_with(b"\x1b(B"), "{path} h2={h2}: not back in ASCII: {body:?}");
        }
    }
}

// ------------------------------------------------------------------------------- Reply

/// A server whose handler hands the `Reply` to another task, which sets its status and
/// headers there (after a pause) and awaits it; the handler returns what that task sends
/// back. `/refuse` answers a WebSocket with 403 that way; `/drop` drops the reply on that
/// task and the handler returns a 401 of its own.
async fn reply_moving_server(
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<(String, Vec<Event>, Vec<Result<(), Error>>)>)
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve_handler(listener().await, move |req: Request<HyperIncoming>| {
        let tx = tx.clone();
        async move {
            let path = req.uri().path().to_owned();
            let (mut reply, mut ch) = match webchan::as_channel(req, Config::default()) {
                Ok(pair) => pair,
                Err(rejection) => return rejection.into_response(),
            };
            reply.headers_mut().insert("x-before", "1".parse().unwrap());
            let (back_tx, back_rx) = tokio::sync::oneshot::channel();
            let p = path.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                match p.as_str() {
                    "/refuse" => *reply.status_mut() = StatusCode::FORBIDDEN,
                    "/drop" => {
                        drop(reply);
                        let _ = back_tx.send(None);
                        return;
                    }
                    "/created" => *reply.status_mut() = StatusCode::CREATED,
                    _ => {}
                }
                let reply =
                    reply.header(http::HeaderName::from_static("x-moved"), "2".parse().unwrap());
                assert_eq!(reply.headers()["x-before"], "1");
                let response = reply.await;
                let _ = back_tx.send(Some(response));
            });
            let p = path.clone();
            tokio::spawn(async move {
                let s = ch.sender();
                let mut sends = Vec::new();
                match p.as_str() {
                    "/created" => {
                        sends.push(s.send("one ".into()).await);
                        sends.push(s.send("two".into()).await);
                        s.close().await;
                    }
                    "/head" => {
                        let mut h = http::HeaderMap::new();
                        h.insert("x-moved", "from-message".parse().unwrap());
                        h.insert("x-msg", "3".parse().unwrap());
                        sends
                            .push(s.send(Message::response(StatusCode::ACCEPTED, h, "body")).await);
                        s.close().await;
                    }
                    _ => {}
                }
                let mut events = Vec::new();
                while let Ok(Some(e)) = tokio::time::timeout(LIMIT, ch.next()).await {
                    events.push(e);
                }
                let late = s.send("late".into()).await;
                sends.push(late);
                let _ = tx.send((p, events, sends));
            });
            match back_rx.await {
                Ok(Some(response)) => response,
                _ => {
                    let mut r = Response::new(Body::empty());
                    *r.status_mut() = StatusCode::UNAUTHORIZED;
                    r
                }
            }
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn a_reply_moved_to_another_task_keeps_its_status_and_headers() {
    let (addr, mut rx) = reply_moving_server().await;
    for h2 in [false, true] {
        let response = fetch(addr, "/created", h2, None).await;
        assert_eq!(response.status(), 201, "h2={h2}");
        assert_eq!(response.headers()["x-before"], "1");
        assert_eq!(response.headers()["x-moved"], "2");
        assert_eq!(&response.body()[..], b"one two");
        let (_, events, sends) = tokio::time::timeout(LIMIT, rx.recv()).await.unwrap().unwrap();
        assert!(matches!(events.last(), Some(Event::Closed(_))), "{events:?}");
        assert!(sends[0].is_ok() && sends[1].is_ok(), "{sends:?}");
        assert!(matches!(sends[2], Err(Error::Closed)));

        let response = fetch(addr, "/head", h2, None).await;
        assert_eq!(response.status(), 202, "h2={h2}");
        assert_eq!(response.headers()["x-before"], "1");
        assert_eq!(response.headers()["x-moved"], "from-message");
        assert_eq!(response.headers()["x-msg"], "3");
        assert_eq!(&response.body()[..], b"body");
        let (_, _, sends) = tokio::time::timeout(LIMIT, rx.recv()).await.unwrap().unwrap();
        assert!(sends[0].is_ok(), "{sends:?}");

        // A stream's reply dropped on the other task: the channel closes, sends fail.
        let response = fetch(addr, "/drop", h2, None).await;
        assert_eq!(response.status(), 401);
        let (_, events, sends) = tokio::time::timeout(LIMIT, rx.recv()).await.unwrap().unwrap();
        assert!(matches!(events.last(), Some(Event::Closed(_))), "{events:?}");
        assert!(matches!(sends.last(), Some(Err(Error::Closed))), "{sends:?}");
    }
}

#[tokio::test]
async fn a_websocket_reply_moved_to_another_task_refused_or_dropped_there_never_opens() {
    let (addr, mut rx) = reply_moving_server().await;
    for path in ["/refuse", "/drop"] {
        // HTTP/1.1
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        let (head, _tcp) = raw_head(addr, request.as_bytes()).await;
        let want = if path == "/refuse" { "HTTP/1.1 403" } else { "HTTP/1.1 401" };
        assert!(head.starts_with(want), "{path}: {head}");
        assert!(!head.to_lowercase().contains("sec-websocket-accept"), "{head}");
        let (_, events, sends) = tokio::time::timeout(LIMIT, rx.recv()).await.unwrap().unwrap();
        assert!(!events.iter().any(|e| matches!(e, Event::Open)), "{path}: {events:?}");
        assert!(matches!(events.first(), Some(Event::Error(Error::Upgrade(_)))), "{events:?}");
        assert!(
            matches!(events.last(), Some(Event::Closed(i)) if i.code == Some(1006)),
            "{path}: {events:?}"
        );
        assert!(matches!(sends.last(), Some(Err(Error::Closed))));
        // HTTP/2
        let mut sender = h2_client(addr).await;
        let request = h2_websocket_request(addr, path);
        let response =
            tokio::time::timeout(LIMIT, sender.send_request(request)).await.unwrap().unwrap();
        let want = if path == "/refuse" { 403 } else { 401 };
        assert_eq!(response.status(), want, "h2 {path}");
        let (_, events, _) = tokio::time::timeout(LIMIT, rx.recv()).await.unwrap().unwrap();
        assert!(!events.iter().any(|e| matches!(e, Event::Open)), "h2 {path}: {events:?}");
        assert!(matches!(events.last(), Some(Event::Closed(_))), "h2 {path}: {events:?}");
    }
}

// ------------------------------------------------------------------------------ Config

/// Handlers that each change their own `Config::default()` (a timeout, a queue limit, SSE
/// always), many at once, next to handlers that keep it: none sees another's setting, and
/// the default is the same at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_changed_in_one_handler_changes_no_other_handlers_default() {
    let addr = serve_handler(listener().await, |req: Request<HyperIncoming>| async move {
        let path = req.uri().path().to_owned();
        let config = match path.as_str() {
            "/timeout" => Config::default().timeout(Duration::from_millis(800)),
            "/queue" => Config::default().queue_limit(1),
            "/sse" => Config::default().sse(webchan::sse::Mode::Always),
            "/compat" => {
                let options = webchan::compat::Options::new()
                    .timeout(Duration::from_millis(800))
                    .on_open(|h| {
                        let _ = h.send("compat", webchan::compat::SendOptions::new());
                    });
                return webchan::compat::as_channel(req, options).await;
            }
            _ => Config::default(),
        };
        let (reply, ch) = match webchan::as_channel(req, config) {
            Ok(pair) => pair,
            Err(rejection) => return rejection.into_response(),
        };
        // Two sends queued before the head: a queue limit of 1 refuses the second.
        let s = ch.sender();
        let first = s.try_send("a".repeat(10).into());
        let second = s.try_send("b".repeat(10).into());
        assert!(first.is_ok());
        let second_ok = match second {
            Ok(c) => {
                drop(c);
                true
            }
            Err((Error::QueueFull { .. }, _)) => false,
            Err((e, _)) => panic!("{e}"),
        };
        tokio::spawn(async move {
            if path != "/timeout" {
                // Longer than the other handlers' timeouts.
                tokio::time::sleep(Duration::from_millis(1600)).await;
                let _ = s.send(format!("|queue-took-both={second_ok}|late").into()).await;
                s.close().await;
            } else {
                let _ = s.send(format!("|queue-took-both={second_ok}").into()).await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            drop(ch);
        });
        reply.await
    });
    let mut runs = Vec::new();
    for i in 0..40 {
        let path = ["/timeout", "/default", "/queue", "/sse", "/compat"][i % 5];
        runs.push(async move {
            let started = Instant::now();
            let response = fetch(addr, path, i % 2 == 0, None).await;
            (path, response, started.elapsed())
        });
    }
    for (path, response, took) in futures::future::join_all(runs).await {
        let body = String::from_utf8(response.body().to_vec()).unwrap();
        let sse = response.headers().get("content-type").is_some_and(|v| v == "text/event-stream");
        match path {
            "/timeout" => {
                assert_eq!(body, "aaaaaaaaaabbbbbbbbbb|queue-took-both=true", "{path}");
                assert!(took < Duration::from_secs(4), "{path}: {took:?}");
                assert!(!sse);
            }
            "/default" => {
                assert_eq!(
                    body, "aaaaaaaaaabbbbbbbbbb|queue-took-both=true|late",
                    "{path}: {took:?}"
                );
                assert!(!sse);
            }
            "/queue" => {
                assert_eq!(body, "aaaaaaaaaa|queue-took-both=false|late", "{path}");
                assert!(!sse);
            }
            "/sse" => {
                assert!(sse, "{path}: {:?}", response.headers());
                assert_eq!(
                    body,
                    "data: aaaaaaaaaa\n\ndata: bbbbbbbbbb\n\ndata: |queue-took-both=true|late\n\n"
                );
            }
            "/compat" => {
                assert_eq!(body, "compat", "{path}");
                assert!(took < Duration::from_secs(4), "{path}: {took:?}");
                assert!(!sse);
            }
            _ => unreachable!(),
        }
    }
    assert_eq!(Config::default().queue_limit_bytes(), 1024 * 1024);
    assert_eq!(Config::default().timeout_duration(), Duration::ZERO);
}

// ------------------------------------------- the URI hyper gave == originating_request()'s

/// A server that sends the test, for each request, the URI hyper handed over and the one
/// `originating_request()` gives back (and the same for the method and version).
async fn uri_oracle_server(
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<(String, http::Uri, http::Uri)>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve_handler(listener().await, move |req: Request<HyperIncoming>| {
        let tx = tx.clone();
        async move {
            let original = req.uri().clone();
            let method = req.method().clone();
            match webchan::as_channel(req, Config::default()) {
                Ok((reply, ch)) => {
                    let back = ch.originating_request().uri.clone();
                    assert_eq!(ch.originating_request().method, method);
                    let _ = tx.send((method.to_string(), original, back));
                    tokio::spawn(async move {
                        if ch.kind() == Kind::HttpStream {
                            let _ = ch.sender().send_and_close("ok".into()).await;
                        } else {
                            ch.close().await;
                        }
                    });
                    reply.await
                }
                Err(rejection) => {
                    let _ = tx.send((format!("rejected {method}"), original.clone(), original));
                    rejection.into_response()
                }
            }
        }
    });
    (addr, rx)
}

fn same_uri(label: &str, original: &http::Uri, back: &http::Uri) {
    assert_eq!(back, original, "{label}: {original:?} came back as {back:?}");
    assert_eq!(back.to_string(), original.to_string(), "{label}");
    assert_eq!(back.scheme_str(), original.scheme_str(), "{label}");
    assert_eq!(back.authority(), original.authority(), "{label}");
    assert_eq!(back.path(), original.path(), "{label}");
    assert_eq!(back.query(), original.query(), "{label}");
}

#[tokio::test]
async fn every_http1_request_target_hyper_takes_comes_back_as_hyper_gave_it() {
    let (addr, mut rx) = uri_oracle_server().await;
    let targets: Vec<&[u8]> = vec![
        b"//double//slash",
        b"/path;params/x;y=1",
        b"/a?b#frag",
        b"/\xc3\xa9t\xc3\xa9?q=\xe6\x97\xa5",
        b"/%zz/%/%4",
        b"/{}|^`\"<>",
        b"/?a=b?c&d=/e",
        b"/?",
        b"http://user:pw@host.example:1/p?q",
        b"http://[::1]:8080/p",
        b"HTTP://EXAMPLE.COM/P",
        b"https://example.com",
        b"ws://example.com/chat",
        b"example.com:80",
        b"*",
    ];
    let mut taken = 0;
    for target in targets {
        let label = String::from_utf8_lossy(target).into_owned();
        for upgrade in [false, true] {
            let mut request = b"GET ".to_vec();
            if target == b"*" {
                request = b"OPTIONS ".to_vec();
            }
            request.extend_from_slice(target);
            request.extend_from_slice(b" HTTP/1.1\r\nHost: host.example\r\n");
            if upgrade {
                request.extend_from_slice(
                    b"Upgrade: websocket\r\nConnection: Upgrade\r\n\
                      Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
                );
            }
            request.extend_from_slice(b"\r\n");
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.write_all(&request).await.unwrap();
            let mut head = [0u8; 12];
            let answered = tokio::time::timeout(LIMIT, tcp.read_exact(&mut head)).await.unwrap();
            let status = String::from_utf8_lossy(&head).into_owned();
            if answered.is_err() || status.ends_with("400") && rx.is_empty() {
                eprintln!("{label} (upgrade {upgrade}): hyper refused it: {status:?}");
                continue;
            }
            let (method, original, back) =
                tokio::time::timeout(LIMIT, rx.recv()).await.unwrap().unwrap();
            eprintln!("{label} (upgrade {upgrade}): {method} {original} -> {back} ({status})");
            same_uri(&label, &original, &back);
            taken += 1;
        }
    }
    assert!(taken > 10);
}

/// `:path *` with an authority (RFC 9113 §8.3.1) printed as `http://host*`, whose text parsed
/// back as the host `host*` and the path `/` (before 2026-12-06, and since the URI was first
/// kept as text): the request is kept whole when its text does not parse back to it.
#[tokio::test]
async fn every_http2_request_hyper_takes_comes_back_as_hyper_gave_it() {
    use support::h2raw::*;
    let (addr, mut rx) = uri_oracle_server().await;
    let authority = addr.to_string();
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![
            (":method", "OPTIONS"),
            (":scheme", "http"),
            (":path", "*"),
            (":authority", &authority),
        ],
        vec![
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/x?y"),
            (":authority", &authority),
        ],
        vec![
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "//x//y"),
            (":authority", &authority),
        ],
        vec![(":method", "GET"), (":scheme", "foo"), (":path", "/x"), (":authority", &authority)],
        vec![(":method", "GET"), (":scheme", "http"), (":path", "/x")],
        vec![
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/%zz?%"),
            (":authority", "u:p@h.example:9"),
        ],
        vec![
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/x#f"),
            (":authority", &authority),
        ],
        vec![(":method", "GET"), (":scheme", "http"), (":path", "/x"), (":authority", "[::1]:80")],
        vec![(":method", "GET"), (":scheme", "http"), (":path", "*"), (":authority", &authority)],
        vec![(":method", "GET"), (":scheme", "http"), (":path", "x?y"), (":authority", &authority)],
        vec![(":method", "GET"), (":scheme", "http"), (":path", "?q"), (":authority", &authority)],
        vec![(":method", "OPTIONS"), (":scheme", "http"), (":path", "*")],
        vec![
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "https"),
            (":path", "/chat?room=%20a"),
            (":authority", &authority),
            ("sec-websocket-version", "13"),
        ],
    ];
    let mut taken = 0;
    let mut wrong = Vec::new();
    for (i, headers) in cases.iter().enumerate() {
        let mut h2 = H2Raw::connect(addr).await;
        let mut block = Vec::new();
        for (n, v) in headers {
            hpack_literal(&mut block, n, v);
        }
        let connect = headers[0].1 == "CONNECT";
        let flags = if connect { END_HEADERS } else { END_HEADERS | END_STREAM };
        h2.send(HEADERS, flags, 1, &block).await;
        let f = tokio::time::timeout(LIMIT, h2.next()).await.unwrap();
        let label = format!("{headers:?}");
        match f {
            Some(f) if f.ty == HEADERS => {
                let (method, original, back) =
                    tokio::time::timeout(LIMIT, rx.recv()).await.unwrap().unwrap();
                eprintln!("case {i}: {method} {original} -> {back}");
                let check = std::panic::catch_unwind(|| same_uri(&label, &original, &back));
                if check.is_err() {
                    wrong.push(format!(
                        "{method} {original:?} (authority {:?}, path {:?}) came back as {back:?} \
                         (authority {:?}, path {:?})",
                        original.authority().map(|a| a.as_str()),
                        original.path(),
                        back.authority().map(|a| a.as_str()),
                        back.path()
                    ));
                }
                taken += 1;
            }
            other => eprintln!("case {i}: refused: {other:?}"),
        }
    }
    assert!(taken > 4);
    assert!(wrong.is_empty(), "URIs not given back as hyper gave them: {wrong:#?}");
}

/// Kept and dropped completions in turn on an HTTP stream whose client reads nothing (and
/// stays): the timeout ends the stream, and a close timeout later the channel is dropped.
/// Each kept send after the written prefix fails `Closed`, and each dropped one after it is
/// reported as one `Error(Closed)` before `Closed` (the orphans of `finish`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_of_a_stream_ended_by_its_timeout_are_each_reported_before_closed() {
    const PAIRS: usize = 100;
    for via in [Via::StreamH1, Via::StreamH2] {
        let config = Config::default()
            .queue_limit(64 << 20)
            .timeout(Duration::from_millis(1000))
            .close_timeout(Duration::from_millis(500));
        let (addr, mut channels) = serve_channels(config).await;
        let client = Vanishing::connect(via, addr).await;
        let mut ch = next_channel(&mut channels).await;
        let sender = ch.sender();
        let mut kept: Vec<Completion> = Vec::new();
        for i in 0..PAIRS {
            kept.push(sender.try_send(Message::Binary(vec![i as u8; 64 * 1024].into())).unwrap());
            drop(sender.try_send(Message::Binary(vec![i as u8; 64 * 1024].into())).unwrap());
        }
        let ok = ok_then_closed(kept, &format!("{via:?}")).await;
        assert!(ok < PAIRS, "{via:?}");
        let events = all_events(&mut ch).await;
        let closed_errors =
            events.iter().filter(|e| matches!(e, Event::Error(Error::Closed))).count();
        let must = PAIRS - ok;
        eprintln!("{via:?}: {ok} kept went out; {closed_errors} orphans reported; {events:?}");
        assert!(
            closed_errors == must || closed_errors == must + 1,
            "{via:?}: {ok} kept sends went out, {must} dropped ones must have failed, \
             {closed_errors} reported"
        );
        client.vanish().await;
    }
}

/// A `Completion` first polled on one task (its waker registered, the first in place) and
/// then moved to another task that awaits it, while completions on other tasks wait too and
/// an awaited send is cancelled by a timeout (a waker left behind): every one resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_moved_between_tasks_after_a_poll_still_resolves() {
    const SIZE: usize = 256 * 1024;
    for via in ALL {
        let (addr, mut channels) = serve_channels(Config::default().queue_limit(64 << 20)).await;
        let (ch, got) =
            client_reading_after(via, addr, &mut channels, Duration::from_millis(700)).await;
        let sender = ch.sender();
        // More than the socket's buffers take from a client that reads nothing yet.
        let mut all = Vec::new();
        for i in 0..40 {
            all.push(sender.try_send(tagged(0, i, SIZE).into()).unwrap());
        }
        // An awaited send cancelled while it waits (its waker left behind); it still goes out.
        let cancelled = tokio::time::timeout(
            Duration::from_millis(100),
            sender.send(tagged(0, 40, SIZE).into()),
        )
        .await;
        assert!(cancelled.is_err(), "{via:?}: 10 MiB went to a client that reads nothing yet");
        let mut moved = all.pop().unwrap();
        // Polled once on this task, then handed on.
        assert!(futures::poll!(&mut moved).is_pending(), "{via:?}: done before the client read");
        let (tx, rx) = tokio::sync::oneshot::channel::<Completion>();
        let receiver = tokio::spawn(async move { rx.await.unwrap().await });
        tx.send(moved).unwrap();
        let others: Vec<_> = all.into_iter().map(tokio::spawn).collect();
        assert!(tokio::time::timeout(LIMIT, receiver)
            .await
            .expect("moved one hung")
            .unwrap()
            .is_ok());
        for o in others {
            assert!(tokio::time::timeout(LIMIT, o).await.expect("hung").unwrap().is_ok());
        }
        tokio::time::timeout(LIMIT, sender.close()).await.expect("close hung");
        let got = tokio::time::timeout(LIMIT, got).await.unwrap().unwrap();
        check_all_arrived(via, &got, 1, 41, SIZE);
    }
}

/// A sequence sent first whose first item comes after the deadline: the head times out while
/// it waits on it (its timer), the response is complete and empty, and the send fails.
#[tokio::test]
async fn a_first_sequence_whose_first_item_comes_after_the_deadline_gets_an_empty_response() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default().timeout(Duration::from_millis(800)), move |ch: Channel| {
        let tx = tx.clone();
        async move {
            let items = futures::stream::once(async {
                tokio::time::sleep(Duration::from_millis(2500)).await;
                Message::from("too late")
            });
            let r = ch.sender().send(Message::stream(items)).await;
            let _ = tx.send(r);
        }
    })
    .await;
    for h2 in [false, true] {
        let started = Instant::now();
        let response = fetch(addr, "/", h2, None).await;
        assert_eq!(response.status(), 200);
        assert!(response.body().is_empty(), "h2={h2}: {:?}", response.body());
        assert!(started.elapsed() < Duration::from_secs(6));
        let r = tokio::time::timeout(LIMIT, rx.recv()).await.unwrap().unwrap();
        assert!(matches!(r, Err(Error::Closed)), "h2={h2}: {r:?}");
    }
}
