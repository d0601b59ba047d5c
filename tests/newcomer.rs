//! A newcomer's first hour: the README's code and prose, the examples and the demo as their
//! docs say, and the mistakes a newcomer makes (from a review in stop 30, 2026-12-06).
//! Everything over real sockets on 127.0.0.1.
//!
//! The example tests run the binaries `cargo test` builds with the tests (they look for them
//! next to this test's executable, in `target/debug/examples/`).
// The README's code blocks are kept verbatim in modules of their own (`pub` as written there).
#![allow(unreachable_pub, clippy::type_complexity)]

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use http::{Request, Response};
use hyper::body::Incoming as HyperIncoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use webchan::{Body, Config, Event, Message};

use support::{next_msg, ws_connect, WsMessage};

const T: Duration = Duration::from_secs(10);

// ---- helpers -------------------------------------------------------------------------------

/// Serves `handle` (a whole hyper handler, as a newcomer writes it) on 127.0.0.1:0, as the
/// README's `main` does (hyper-util's auto builder with upgrades).
async fn serve_fn<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(Request<HyperIncoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let handle = handle.clone();
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), service_fn(handle))
                    .await;
            });
        }
    });
    addr
}

/// Reads an HTTP/1.1 response head from `tcp` (with what came after it).
async fn read_head(tcp: &mut tokio::net::TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(T, tcp.read(&mut chunk))
            .await
            .expect("no response head within 10 s")
            .unwrap();
        assert!(n > 0, "closed before a response head: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).to_string();
            return (head, buf[pos + 4..].to_vec());
        }
    }
}

/// Decodes a chunked body (the whole of it).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").expect("chunk size line");
        let size_str = std::str::from_utf8(&raw[..line_end]).unwrap();
        let size = usize::from_str_radix(size_str.split(';').next().unwrap().trim(), 16).unwrap();
        raw = &raw[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// A free port on 127.0.0.1 (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An example binary, running; killed (by its own pid) when dropped.
struct Example {
    child: std::process::Child,
    port: u16,
    stdout: Arc<Mutex<String>>,
}

impl Example {
    fn path(name: &str) -> std::path::PathBuf {
        // target/debug/deps/zz_review_L-… → target/debug/examples/NAME
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().parent().unwrap().join("examples").join(name);
        assert!(dir.exists(), "{} missing: run `cargo build --examples` first", dir.display());
        dir
    }

    /// Starts `name` with `PORT` set to a free port (or the given args), and waits until it
    /// listens on that port; with another port if the example could not bind the first.
    async fn start(name: &str, args: &[&str], env_port: bool) -> Self {
        for _attempt in 0..5 {
            let port = free_port();
            let mut cmd = std::process::Command::new(Self::path(name));
            cmd.args(args);
            if env_port {
                cmd.env("PORT", port.to_string());
            }
            cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
            let mut child = cmd.spawn().unwrap();
            let stdout = Arc::new(Mutex::new(String::new()));
            let mut out = child.stdout.take().unwrap();
            let log = Arc::clone(&stdout);
            std::thread::spawn(move || {
                use std::io::Read;
                let mut buf = [0u8; 4096];
                while let Ok(n) = out.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    log.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
            let mut example = Self { child, port, stdout };
            if !env_port || example.wait_port(port).await {
                return example;
            }
        }
        panic!("{name} could not listen on a free port in 5 attempts");
    }

    /// Waits until the example has said it listens on `port` (each prints its address once
    /// its bind succeeded) and the port accepts; false if it exited first. A connection alone
    /// proves nothing: the port was free a moment ago, and if another test's server took it
    /// meanwhile, the example's bind fails while the connect reaches that server.
    async fn wait_port(&mut self, port: u16) -> bool {
        let start = Instant::now();
        let said = format!("127.0.0.1:{port}");
        loop {
            if self.stdout().contains(&said)
                && tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
            {
                return true;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                eprintln!("the example exited ({status}) before it listened on {port}");
                return false;
            }
            assert!(
                start.elapsed() < T,
                "example did not listen on {port} within 10 s: {:?}",
                self.stdout()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `curl` with a time limit; gives (stdout bytes, exit status).
async fn curl(args: &[&str]) -> (Vec<u8>, i32) {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("curl").arg("--max-time").arg("20").args(args).output(),
    )
    .await
    .expect("curl ran over 30 s")
    .unwrap();
    (out.stdout, out.status.code().unwrap_or(-1))
}

// ---- the README's code blocks, as written (README.md is not doc-tested) ---------------------

/// README "A WebSocket", verbatim.
mod readme_ws {
    use futures::StreamExt;
    use webchan::{Config, Event, Incoming};

    pub async fn handle(
        request: http::Request<hyper::body::Incoming>,
    ) -> Result<http::Response<webchan::Body>, std::convert::Infallible> {
        let (reply, mut channel) = match webchan::as_channel(request, Config::default()) {
            Ok(pair) => pair,
            Err(rejection) => return Ok(rejection.into_response()), // 400/405/426 + the reason
        };
        tokio::spawn(async move {
            while let Some(event) = channel.next().await {
                let answer = match event {
                    Event::Open => "welcome".into(),
                    Event::Message(Incoming::Text(text)) => text.to_uppercase().into(),
                    Event::Message(other) => other.into(), // binary: echoed as it is
                    Event::Closed(info) => {
                        println!("closed: {:?} {:?}", info.code, info.reason);
                        break;
                    }
                    _ => continue,
                };
                if channel.send(answer).await.is_err() {
                    break; // closed meanwhile: `Event::Closed` would come next
                }
            }
        });
        Ok(reply.await) // the 101; the channel opens once hyper has sent it
    }
}

/// README "An HTTP stream", verbatim.
mod readme_stream {
    use http::{header, HeaderMap, HeaderValue, StatusCode};
    use std::time::Duration;
    use webchan::{Config, Message};

    pub async fn handle(
        request: http::Request<hyper::body::Incoming>,
    ) -> Result<http::Response<webchan::Body>, std::convert::Infallible> {
        let (reply, mut channel) = match webchan::as_channel(request, Config::default()) {
            Ok(pair) => pair,
            Err(rejection) => return Ok(rejection.into_response()),
        };
        tokio::spawn(async move {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            // The first send makes the response head: status, headers, first chunk.
            let head = Message::response(StatusCode::OK, headers, "counting down\n");
            if channel.send(head).await.is_err() {
                return; // the client went away
            }
            for n in (0..5).rev() {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if channel.send(format!("{n}\n").into()).await.is_err() {
                    return;
                }
            }
            channel.close().await; // the end of the body
        });
        Ok(reply.await) // resolves at the first send: 200, chunked
    }
}

/// README "Both are plain hyper services; serve them with upgrades enabled", verbatim (only
/// compiled: it binds port 3000).
#[allow(dead_code)]
mod readme_main {
    use super::readme_ws::handle;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    pub async fn main() -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
        loop {
            let (tcp, _) = listener.accept().await?;
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(
                        TokioIo::new(tcp),
                        hyper::service::service_fn(handle),
                    )
                    .await;
            });
        }
    }
}

/// README "The same echo in both": the Stream/Sink one, in a function of its own.
async fn readme_echo_stream_sink(channel: webchan::Channel) -> Result<(), webchan::Error> {
    // Stream/Sink: every incoming message, back out through the Sink half.
    let (sender, receiver) = channel.split();
    receiver
        .filter_map(|event| {
            std::future::ready(match event {
                Event::Message(message) => Some(Ok(message.into())),
                _ => None,
            })
        })
        .forward(sender)
        .await?;
    Ok(())
}

/// README "The same echo in both": the compat one, in a handler.
async fn readme_echo_compat(request: Request<HyperIncoming>) -> Result<Response<Body>, Infallible> {
    use webchan::compat::{Options, SendOptions};
    // compat: callbacks on the channel's own task.
    let options = Options::new()
        .on_message(|ch, message| {
            let _ = ch.send(message, SendOptions::new());
        })
        .on_close(|_ch, info| println!("closed: {:?}", info.code));
    let response = webchan::compat::as_channel(request, options).await;
    Ok(response)
}

#[tokio::test]
async fn readme_websocket_block_greets_uppercases_and_echoes_binary() {
    let addr = serve_fn(readme_ws::handle).await;
    let mut ws = ws_connect(addr, "/").await;
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("welcome")));
    ws.send(WsMessage::text("héllo")).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("HÉLLO")));
    ws.send(WsMessage::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::binary(vec![1u8, 2, 3])));
    ws.close(None).await.unwrap();
    match next_msg(&mut ws).await {
        Some(WsMessage::Close(_)) | None => {}
        other => panic!("expected the close, got {other:?}"),
    }
}

/// The README's HTTP stream block is a countdown `for n in (0..5).rev()`: its text says it
/// counts down, 200 chunked. It sends "counting down", then 4, 3, 2, 1, and never the 0 it
/// computes last (the loop assigns `next` after its last send).
#[tokio::test]
async fn readme_http_stream_block_counts_down_to_zero() {
    let addr = serve_fn(readme_stream::handle).await;
    let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let (head, mut rest) = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    // Read to the end of the chunked body (the last chunk).
    let start = Instant::now();
    while !rest.ends_with(b"0\r\n\r\n") {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(15), tcp.read(&mut chunk))
            .await
            .expect("body not complete within 15 s")
            .unwrap();
        assert!(n > 0, "closed mid-body");
        rest.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8(dechunk(&rest)).unwrap();
    eprintln!("body after {:?}: {body:?}", start.elapsed());
    assert!(body.starts_with("counting down\n4\n3\n2\n1\n"), "{body:?}");
    assert_eq!(body, "counting down\n4\n3\n2\n1\n0\n", "a countdown of (0..5).rev() ends at 0");
}

#[tokio::test]
async fn readme_side_by_side_echo_stream_sink_and_compat() {
    let addr = serve_fn(|request: Request<HyperIncoming>| async move {
        let (reply, channel) = match webchan::as_channel(request, Config::default()) {
            Ok(pair) => pair,
            Err(rejection) => return Ok(rejection.into_response()),
        };
        tokio::spawn(async move {
            let _ = readme_echo_stream_sink(channel).await;
        });
        Ok::<_, Infallible>(reply.await)
    })
    .await;
    let compat_addr = serve_fn(readme_echo_compat).await;
    for addr in [addr, compat_addr] {
        let mut ws = ws_connect(addr, "/").await;
        ws.send(WsMessage::text("one")).await.unwrap();
        ws.send(WsMessage::binary(vec![9u8; 70_000])).await.unwrap();
        assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("one")));
        assert_eq!(next_msg(&mut ws).await, Some(WsMessage::binary(vec![9u8; 70_000])));
        ws.close(None).await.unwrap();
    }
}

/// README: "A first send with `send_and_close` makes an ordinary response with
/// `Content-Length` instead of a chunked one".
#[tokio::test]
async fn readme_send_and_close_gives_content_length() {
    let addr = serve_fn(|request: Request<HyperIncoming>| async move {
        let (reply, channel) = webchan::as_channel(request, Config::default()).unwrap();
        tokio::spawn(async move { channel.sender().send_and_close("done\n".into()).await });
        Ok::<_, Infallible>(reply.await)
    })
    .await;
    let raw = support::raw_http(
        addr,
        format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    let raw = String::from_utf8(raw).unwrap();
    assert!(raw.contains("content-length: 5\r\n"), "{raw}");
    assert!(raw.ends_with("\r\n\r\ndone\n"), "{raw}");
}

// ---- newcomer mistakes ---------------------------------------------------------------------

/// Mistake: making the channel, then returning a response of one's own (the reply dropped),
/// with a task still sending on the channel. Every send must end with an error, at once.
#[tokio::test]
async fn mistake_reply_dropped_sends_fail_promptly() {
    let results = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&results);
    let addr = serve_fn(move |request: Request<HyperIncoming>| {
        let seen = Arc::clone(&seen);
        async move {
            let (reply, mut channel) = webchan::as_channel(request, Config::default()).unwrap();
            let kind = channel.kind();
            tokio::spawn(async move {
                let start = Instant::now();
                let sent =
                    tokio::time::timeout(Duration::from_secs(5), channel.send("x".into())).await;
                let mut events = Vec::new();
                while let Ok(Some(e)) =
                    tokio::time::timeout(Duration::from_secs(5), channel.next()).await
                {
                    events.push(format!("{e:?}"));
                }
                seen.lock().unwrap().push((
                    kind,
                    sent.map(|r| r.map_err(|e| e.to_string())),
                    events,
                    start.elapsed(),
                ));
            });
            drop(reply);
            let mut own = Response::new(Body::full("mine\n".into()));
            *own.status_mut() = http::StatusCode::FORBIDDEN;
            Ok::<_, Infallible>(own)
        }
    })
    .await;
    // A WebSocket request and a plain one.
    let ws = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await;
    assert!(ws.is_err(), "the handler answered 403, not 101");
    let raw = support::raw_http(
        addr,
        format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 403"));
    let start = Instant::now();
    while results.lock().unwrap().len() < 2 && start.elapsed() < Duration::from_secs(12) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let results = results.lock().unwrap();
    eprintln!("{results:#?}");
    assert_eq!(results.len(), 2);
    for (kind, sent, events, _) in results.iter() {
        assert!(matches!(sent, Ok(Err(_))), "{kind:?}: the send should fail at once, got {sent:?}");
        assert!(events.last().is_some_and(|e| e.starts_with("Closed")), "{kind:?}: {events:?}");
    }
}

/// Mistake: dropping the `Channel` at once ("I only wanted the response"). The README/rustdoc:
/// "When every handle is dropped, the channel closes (1000)". The client must get an answer.
#[tokio::test]
async fn mistake_channel_dropped_at_once_gives_an_answer() {
    let addr = serve_fn(|request: Request<HyperIncoming>| async move {
        let (reply, channel) = webchan::as_channel(request, Config::default()).unwrap();
        drop(channel);
        Ok::<_, Infallible>(reply.await)
    })
    .await;
    // HTTP stream: a complete (empty) response.
    let raw = support::raw_http(
        addr,
        format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    let raw = String::from_utf8_lossy(&raw).to_string();
    eprintln!("{raw:?}");
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    // WebSocket: the 101, then a close frame 1000.
    let mut ws = ws_connect(addr, "/").await;
    match next_msg(&mut ws).await {
        Some(WsMessage::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1000),
        other => panic!("expected close 1000, got {other:?}"),
    }
}

/// Mistake: a WebSocket handler that keeps the channel but never reads its events (it only
/// sends). Pings are answered, a close is answered, and what the client floods is bounded.
#[tokio::test]
async fn mistake_events_never_read_ws_pings_close_and_memory() {
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&held);
    let addr = serve_fn(move |request: Request<HyperIncoming>| {
        let keep = Arc::clone(&keep);
        async move {
            let config = Config::default().queue_limit(256 << 10);
            let (reply, channel) = webchan::as_channel(request, config).unwrap();
            keep.lock().unwrap().push(channel); // held, never polled
            Ok::<_, Infallible>(reply.await)
        }
    })
    .await;
    // Ping answered.
    let mut ws = ws_connect(addr, "/").await;
    ws.send(WsMessage::Ping(b"p1".to_vec().into())).await.unwrap();
    let pong = tokio::time::timeout(T, ws.next()).await.expect("no pong within 10 s");
    assert!(matches!(pong, Some(Ok(WsMessage::Pong(ref p))) if &p[..] == b"p1"), "{pong:?}");
    // Close answered.
    ws.close(None).await.unwrap();
    let close = tokio::time::timeout(T, ws.next()).await.expect("no close answer within 10 s");
    assert!(matches!(close, Some(Ok(WsMessage::Close(_)))), "{close:?}");

    // A flood of 64 KiB messages: the server stops reading once the application holds its
    // queue_limit (256 KiB); the client's writes stall well before 64 MiB.
    let mut raw = support::RawWs::connect(addr).await;
    let payload = vec![7u8; 64 << 10];
    let frame = support::encode_frame(0x82, Some([1, 2, 3, 4]), &payload, None);
    let mut written = 0usize;
    loop {
        match tokio::time::timeout(Duration::from_secs(1), raw.tcp.write_all(&frame)).await {
            Ok(Ok(())) => written += frame.len(),
            Ok(Err(e)) => panic!("write failed after {written} bytes: {e}"),
            Err(_) => break, // stalled: TCP backpressure
        }
        assert!(written < 64 << 20, "the server kept reading past 64 MiB for a channel never read");
    }
    eprintln!("stalled after {} KiB", written >> 10);
    // A ping still answered while stalled? (The ping sits behind the unread data: not
    // expected.) But the connection is alive: the server did not drop it.
}

/// Mistake: sending before `Event::Open` (before the reply was even returned), with
/// `try_send` and with the Sink's `feed` + spawned flush. README: "Messages sent before `Open`
/// are queued and go out after it."
#[tokio::test]
async fn mistake_send_before_open_ws_is_queued() {
    let addr = serve_fn(|request: Request<HyperIncoming>| async move {
        let (reply, mut channel) = webchan::as_channel(request, Config::default()).unwrap();
        let completion = channel.sender().try_send("early".into()).unwrap();
        tokio::spawn(async move {
            assert!(completion.await.is_ok());
            let _ = channel.send("later".into()).await;
            while channel.next().await.is_some() {}
        });
        Ok::<_, Infallible>(reply.await)
    })
    .await;
    let mut ws = ws_connect(addr, "/").await;
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("early")));
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("later")));
}

/// Mistake: `Message::response` on a WebSocket. README: `InvalidMessage`, "the channel stays
/// usable".
#[tokio::test]
async fn mistake_message_response_on_websocket() {
    let results = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&results);
    let addr = serve_fn(move |request: Request<HyperIncoming>| {
        let seen = Arc::clone(&seen);
        async move {
            let (reply, mut channel) = webchan::as_channel(request, Config::default()).unwrap();
            tokio::spawn(async move {
                let head = Message::response(http::StatusCode::OK, http::HeaderMap::new(), "hi");
                let first = channel.send(head).await;
                let second = channel.send("after".into()).await;
                seen.lock().unwrap().push((first.map_err(|e| e.to_string()), second.is_ok()));
                while channel.next().await.is_some() {}
            });
            Ok::<_, Infallible>(reply.await)
        }
    })
    .await;
    let mut ws = ws_connect(addr, "/").await;
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("after")));
    let results = results.lock().unwrap();
    eprintln!("{results:?}");
    assert!(matches!(results[0], (Err(_), true)), "{results:?}");
}

/// Panics on this test's thread (where a current-thread runtime runs the spawned tasks),
/// recorded by a process-wide hook that keeps the default one for the rest.
fn record_panics() -> Arc<Mutex<Vec<String>>> {
    static HOOKED: std::sync::Once = std::sync::Once::new();
    static RECORDS: Mutex<Vec<(String, Arc<Mutex<Vec<String>>>)>> = Mutex::new(Vec::new());
    HOOKED.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let me = std::thread::current().name().unwrap_or("").to_owned();
            if let Ok(records) = RECORDS.lock() {
                for (name, sink) in records.iter() {
                    if *name == me {
                        sink.lock().unwrap().push(format!("{info}"));
                    }
                }
            }
            default(info);
        }));
    });
    let sink = Arc::new(Mutex::new(Vec::new()));
    let me = std::thread::current().name().unwrap_or("").to_owned();
    RECORDS.lock().unwrap().push((me, Arc::clone(&sink)));
    sink
}

/// `as_channel` twice for one request: its parts cloned (`http::request::Parts` and hyper's
/// `OnUpgrade` are `Clone`, so the second channel holds the same upgrade), one reply returned,
/// the other dropped. `returned_first`: the reply returned is the first channel's.
async fn as_channel_twice(returned_first: bool) -> (bool, Vec<String>, Vec<String>) {
    let panics = record_panics();
    let dropped_events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&dropped_events);
    let addr = serve_fn(move |request: Request<HyperIncoming>| {
        let seen = Arc::clone(&seen);
        async move {
            let (parts, body) = request.into_parts();
            let copy = Request::from_parts(parts.clone(), ());
            let one =
                webchan::as_channel(Request::from_parts(parts, body), Config::default()).unwrap();
            let two = webchan::as_channel(copy, Config::default()).unwrap();
            let ((reply, channel), (reply2, mut channel2)) =
                if returned_first { (one, two) } else { (two, one) };
            tokio::spawn(async move {
                // An echo that says what its channel did.
                let mut channel = channel;
                let mut events = Vec::new();
                while let Ok(Some(e)) =
                    tokio::time::timeout(Duration::from_secs(3), channel.next()).await
                {
                    events.push(format!("{e:?}"));
                    if let Event::Message(m) = e {
                        let _ = channel.send(m.into()).await;
                    }
                }
                eprintln!("returned channel's events (3 s without one ends the list): {events:?}");
            });
            tokio::spawn(async move {
                while let Ok(Some(e)) = tokio::time::timeout(T, channel2.next()).await {
                    seen.lock().unwrap().push(format!("{e:?}"));
                }
            });
            drop(reply2);
            Ok::<_, Infallible>(reply.await)
        }
    })
    .await;
    let mut ws = ws_connect(addr, "/").await;
    ws.send(WsMessage::text("a")).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(3), ws.next()).await;
    eprintln!("client after 3 s: {echoed:?}");
    let echoed = matches!(echoed, Ok(Some(Ok(WsMessage::Text(ref t)))) if t.as_str() == "a");
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let events = dropped_events.lock().unwrap().clone();
    let panics = panics.lock().unwrap().clone();
    (echoed, events, panics)
}

/// Mistake: `as_channel` twice for one request (parts cloned), either reply returned.
/// Correct: the returned channel works, the other ends (Error, Closed), and nothing panics.
/// Before stop 30 (2026-12-06) a task panicked in both orders ("called after complete"), and
/// with the second reply returned the returned channel never opened nor closed.
#[tokio::test]
async fn mistake_as_channel_twice() {
    for first_returned in [true, false] {
        let (echoed, events, panics) = as_channel_twice(first_returned).await;
        let order = if first_returned { "first" } else { "second" };
        assert!(echoed, "{order} returned: the returned channel did not echo");
        assert!(events.last().is_some_and(|e| e.starts_with("Closed")), "{order}: {events:?}");
        assert!(panics.is_empty(), "{order}: a task panicked: {panics:?}");
    }
}

/// Mistake: `as_channel` on a POST with a body (the body is not read). The response streams,
/// and the next request on the same keep-alive connection is read as a request, not mixed
/// with the unread body.
#[tokio::test]
async fn mistake_post_with_body_then_keepalive_request() {
    let addr = serve_fn(|request: Request<HyperIncoming>| async move {
        let path = request.uri().path().to_owned();
        let (reply, channel) = webchan::as_channel(request, Config::default()).unwrap();
        tokio::spawn(async move {
            let sender = channel.sender();
            let _ = sender.send(format!("streamed {path}\n").into()).await;
            sender.close().await;
        });
        Ok::<_, Infallible>(reply.await)
    })
    .await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n".repeat(10);
    let req = format!(
        "POST /first HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{body}GET /second HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(T, tcp.read_to_end(&mut out)).await.expect("no end in 10 s").unwrap();
    let out = String::from_utf8_lossy(&out).to_string();
    eprintln!("{out}");
    assert!(out.contains("streamed /first"), "{out}");
    assert!(!out.contains("smuggled"), "the unread body was read as requests: {out}");
    // Either the second request is answered, or the connection was closed after the first
    // response (hyper may not drain); a close must come with the first response complete.
    assert!(out.contains("0\r\n\r\n"), "first response not complete: {out}");
}

/// The same with curl and a 4 MiB body (curl sends `Expect: 100-continue` for it).
#[tokio::test]
async fn mistake_post_with_large_body_curl() {
    let addr = serve_fn(|request: Request<HyperIncoming>| async move {
        let (reply, channel) = webchan::as_channel(request, Config::default()).unwrap();
        tokio::spawn(async move {
            let sender = channel.sender();
            for i in 0..3 {
                let _ = sender.send(format!("line {i}\n").into()).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            sender.close().await;
        });
        Ok::<_, Infallible>(reply.await)
    })
    .await;
    let file = std::env::temp_dir().join(format!("zz_review_L_body_{}", std::process::id()));
    std::fs::write(&file, vec![b'x'; 4 << 20]).unwrap();
    let start = Instant::now();
    let (out, code) = curl(&[
        "-s",
        "-X",
        "POST",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("http://{addr}/upload"),
    ])
    .await;
    let _ = std::fs::remove_file(&file);
    let out = String::from_utf8_lossy(&out).to_string();
    eprintln!("curl exit {code} after {:?}: {out:?}", start.elapsed());
    assert_eq!(out, "line 0\nline 1\nline 2\n");
    assert_eq!(code, 0);
}

// ---- the examples, run as their doc comments say --------------------------------------------

async fn raw_get(addr: SocketAddr, path: &str, extra: &str) -> String {
    let raw = support::raw_http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    String::from_utf8_lossy(&raw).to_string()
}

/// A WebSocket client with its own headers (Origin).
async fn ws_connect_with(
    addr: SocketAddr,
    path: &str,
    origin: Option<&str>,
) -> Result<support::WsClient, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", origin.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request).await.map(|(ws, _)| ws)
}

/// examples/echo.rs: "`curl -i http://127.0.0.1:3000/hi`: the request line comes back, then
/// the end"; "websocat ...: every message you type comes back".
#[tokio::test]
async fn example_echo_as_documented() {
    let ex = Example::start("echo", &[], true).await;
    let (out, code) = curl(&["-si", &format!("http://{}/hi", ex.addr())]).await;
    let out = String::from_utf8_lossy(&out).to_string();
    assert_eq!(code, 0);
    assert!(out.starts_with("HTTP/1.1 200") && out.ends_with("\r\n\r\nGET /hi\n"), "{out}");
    let mut ws = ws_connect(ex.addr(), "/").await;
    ws.send(WsMessage::text("typed")).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("typed")));
    assert!(
        ex.stdout().contains(&format!("echo on http://127.0.0.1:{}", ex.port)),
        "{}",
        ex.stdout()
    );
}

/// examples/chat.rs: every WebSocket message goes to every other client; curl gets a 426.
#[tokio::test]
async fn example_chat_as_documented() {
    let ex = Example::start("chat", &[], true).await;
    let refusal = raw_get(ex.addr(), "/", "").await;
    assert!(refusal.starts_with("HTTP/1.1 426"), "{refusal}");
    assert!(refusal.to_ascii_lowercase().contains("upgrade: websocket"), "{refusal}");
    let mut a = ws_connect(ex.addr(), "/").await;
    let mut b = ws_connect(ex.addr(), "/").await;
    let mut c = ws_connect(ex.addr(), "/").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.send(WsMessage::text("hello room")).await.unwrap();
    for other in [&mut b, &mut c] {
        match next_msg(other).await {
            Some(WsMessage::Text(t)) => assert!(t.ends_with(": hello room"), "{t}"),
            m => panic!("{m:?}"),
        }
    }
    // Not back to the sender.
    let own = tokio::time::timeout(Duration::from_millis(500), a.next()).await;
    assert!(own.is_err(), "the sender got its own line back: {own:?}");
}

/// examples/files.rs: `/file` is this source, chunked; `/reader` is 20 lines of 64 bytes
/// (1280), written one every 100 ms; the WebSocket gets the same as binary messages.
#[tokio::test]
async fn example_files_as_documented() {
    let ex = Example::start("files", &[], true).await;
    let source = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/files.rs")).unwrap();
    let raw = raw_get(ex.addr(), "/file", "").await;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    assert_eq!(dechunk(body.as_bytes()), source);

    // /reader: first line early, all 1280 bytes after ~2 s.
    let mut tcp = tokio::net::TcpStream::connect(ex.addr()).await.unwrap();
    tcp.write_all(b"GET /reader HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let start = Instant::now();
    let (_, first) = read_head(&mut tcp).await;
    let mut all = first;
    let mut first_line_at = None;
    loop {
        if first_line_at.is_none() && String::from_utf8_lossy(&all).contains("line 1 of 20") {
            first_line_at = Some(start.elapsed());
        }
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(T, tcp.read(&mut buf)).await.unwrap().unwrap();
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
    }
    let body = dechunk(&all);
    assert_eq!(body.len(), 1280);
    assert!(first_line_at.unwrap() < Duration::from_millis(1000), "{first_line_at:?}");
    assert!(start.elapsed() > Duration::from_millis(1800), "{:?}", start.elapsed());

    // The WebSocket: binary messages of at most 16 KiB, the file whole, then a close.
    let mut ws = ws_connect(ex.addr(), "/file").await;
    let mut got = Vec::new();
    loop {
        match next_msg(&mut ws).await {
            Some(WsMessage::Binary(b)) => {
                assert!(b.len() <= 16 << 10);
                got.extend_from_slice(&b);
            }
            Some(WsMessage::Close(_)) | None => break,
            m => panic!("{m:?}"),
        }
    }
    assert_eq!(got, source);
    let nf = raw_get(ex.addr(), "/nope", "").await;
    assert!(nf.starts_with("HTTP/1.1 404"), "{nf}");
}

/// examples/compat.rs: `/` counts 1 to 10 every 100 ms then ends; `/once` has a
/// Content-Length; the WebSocket echoes, "bye" closes with a reason.
#[tokio::test]
async fn example_compat_as_documented() {
    let ex = Example::start("compat", &[], true).await;
    let start = Instant::now();
    let (out, code) = curl(&["-sN", &format!("http://{}/", ex.addr())]).await;
    let took = start.elapsed();
    assert_eq!(code, 0);
    let expected: String = std::iter::once("counting\n".to_owned())
        .chain((1..=10).map(|i| format!("{i}\n")))
        .collect();
    assert_eq!(String::from_utf8_lossy(&out), expected);
    assert!(took >= Duration::from_millis(900), "{took:?}");
    let once = raw_get(ex.addr(), "/once", "").await;
    assert!(once.contains("content-length: 10\r\n") && once.ends_with("just once\n"), "{once}");
    let mut ws = ws_connect(ex.addr(), "/").await;
    ws.send(WsMessage::text("hi")).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("hi")));
    ws.send(WsMessage::text("bye")).await.unwrap();
    match next_msg(&mut ws).await {
        Some(WsMessage::Close(Some(f))) => {
            assert_eq!(u16::from(f.code), 1000);
            assert_eq!(f.reason.as_str(), "bye to you too");
        }
        m => panic!("{m:?}"),
    }
}

/// Starts the demo with `--port 0` ("0 picks a free port") and reads the port from its log.
async fn demo() -> Example {
    let mut ex = Example::start("demo", &["--port", "0"], false).await;
    let start = Instant::now();
    loop {
        let out = ex.stdout();
        if let Some(rest) = out.split("listening on http://127.0.0.1:").nth(1) {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            ex.port = digits.parse().unwrap();
            assert_ne!(ex.port, 0);
            return ex;
        }
        assert!(start.elapsed() < T, "no 'listening on' line: {out:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn json_field<'a>(json: &'a str, name: &str) -> Option<&'a str> {
    let rest = json.split(&format!("\"{name}\":")).nth(1)?;
    Some(rest.split([',', '}']).next().unwrap())
}

/// examples/demo.rs, `/chat`: welcome, join, messages to the other tabs, `/close` (1000),
/// over 64 KiB (1009), other sites' pages refused (403).
#[tokio::test]
async fn demo_chat_as_documented() {
    let ex = demo().await;
    let addr = ex.addr();
    let origin = format!("http://127.0.0.1:{}", ex.port);
    let mut a = ws_connect_with(addr, "/chat", Some(&origin)).await.unwrap();
    let welcome = match next_msg(&mut a).await {
        Some(WsMessage::Text(t)) => t.to_string(),
        m => panic!("{m:?}"),
    };
    assert_eq!(json_field(&welcome, "type"), Some("\"welcome\""), "{welcome}");
    let a_id = json_field(&welcome, "id").unwrap().to_owned();
    let mut b = ws_connect_with(addr, "/chat", Some(&format!("http://localhost:{}", ex.port)))
        .await
        .unwrap();
    let _welcome_b = next_msg(&mut b).await;
    // a sees b join
    // (a's own join comes to a too: the page skips it)
    let join = loop {
        match next_msg(&mut a).await {
            Some(WsMessage::Text(t)) if json_field(&t, "id") != Some(a_id.as_str()) => {
                break t.to_string()
            }
            Some(WsMessage::Text(_)) => continue,
            m => panic!("{m:?}"),
        }
    };
    assert_eq!(json_field(&join, "type"), Some("\"join\""), "{join}");
    assert_eq!(json_field(&join, "online"), Some("2"), "{join}");
    // messages go to the other tab, JSON-escaped
    a.send(WsMessage::text("say \"hi\"\n")).await.unwrap();
    let said = loop {
        match next_msg(&mut b).await {
            Some(WsMessage::Text(t)) if t.contains("\"msg\"") => break t.to_string(),
            Some(WsMessage::Text(_)) => continue,
            m => panic!("{m:?}"),
        }
    };
    assert_eq!(said, format!(r#"{{"type":"msg","from":{a_id},"text":"say \"hi\"\n"}}"#));
    // exactly 64 KiB is accepted, one byte more closes with 1009
    a.send(WsMessage::text("x".repeat(64 << 10))).await.unwrap();
    assert!(matches!(next_msg(&mut b).await, Some(WsMessage::Text(t)) if t.len() > 64 << 10));
    a.send(WsMessage::text("x".repeat((64 << 10) + 1))).await.unwrap();
    match next_msg(&mut a).await {
        Some(WsMessage::Close(Some(f))) => assert_eq!(u16::from(f.code), 1009),
        m => panic!("{m:?}"),
    }
    // b hears a leave with the code
    let leave = loop {
        match next_msg(&mut b).await {
            Some(WsMessage::Text(t)) if t.contains("\"leave\"") => break t.to_string(),
            Some(WsMessage::Text(_)) => continue,
            m => panic!("{m:?}"),
        }
    };
    assert_eq!(json_field(&leave, "code"), Some("1009"), "{leave}");
    // /close
    b.send(WsMessage::text("/close")).await.unwrap();
    match next_msg(&mut b).await {
        Some(WsMessage::Close(Some(f))) => {
            assert_eq!(u16::from(f.code), 1000);
            assert_eq!(f.reason.as_str(), "you typed /close");
        }
        m => panic!("{m:?}"),
    }
    // another site's page: 403
    match ws_connect_with(addr, "/chat", Some("http://evil.example")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("{:?}", other.map(|_| ())),
    }
    // curl: 426
    let plain = raw_get(addr, "/chat", "").await;
    assert!(plain.starts_with("HTTP/1.1 426"), "{plain}");
}

/// examples/demo.rs, `/clock` over SSE and over a WebSocket; `/events` over a WebSocket;
/// `/download` over both; the page; HEAD; unknown routes; the command line.
#[tokio::test]
async fn demo_routes_as_documented() {
    let ex = demo().await;
    let addr = ex.addr();
    // The page (GET and HEAD) and a 404.
    let page = raw_get(addr, "/", "").await;
    assert!(page.starts_with("HTTP/1.1 200") && page.contains("<title>webchan demo</title>"));
    let nf = raw_get(addr, "/nope", "").await;
    assert!(nf.starts_with("HTTP/1.1 404"), "{nf}");
    // /clock, SSE, resuming from Last-Event-ID.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /clock HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 41\r\n\r\n").await.unwrap();
    let (head, mut body) = read_head(&mut tcp).await;
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    while !String::from_utf8_lossy(&body).contains("id: 43") {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        body.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&body).to_string();
    assert!(text.contains("retry: 2000") && text.contains(r#"data: {"n":42,"#), "{text}");
    // /clock over a WebSocket: JSON text every 500 ms.
    let mut ws = ws_connect(addr, "/clock").await;
    let t0 = Instant::now();
    for n in 1..=3 {
        match next_msg(&mut ws).await {
            Some(WsMessage::Text(t)) => {
                assert!(t.starts_with(&format!(r#"{{"n":{n},"time":""#)), "{t}")
            }
            m => panic!("{m:?}"),
        }
    }
    assert!(t0.elapsed() >= Duration::from_millis(900), "{:?}", t0.elapsed());
    // /events over a WebSocket: closed with 1008.
    let mut ws = ws_connect(addr, "/events").await;
    match next_msg(&mut ws).await {
        Some(WsMessage::Close(Some(f))) => assert_eq!(u16::from(f.code), 1008),
        m => panic!("{m:?}"),
    }
    // /download over HTTP: X-Size, chunked, the size asked for.
    let raw = raw_get(addr, "/download?size=100000", "").await;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains("x-size: 100000") && head.contains("transfer-encoding: chunked"),
        "{head}"
    );
    assert_eq!(dechunk(body.as_bytes()).len(), 100000);
    // /download over a WebSocket: binary messages of 16 KiB, then a close.
    let mut ws = ws_connect(addr, "/download?size=100000").await;
    let (mut total, mut count) = (0, 0);
    loop {
        match next_msg(&mut ws).await {
            Some(WsMessage::Binary(b)) => {
                assert!(b.len() <= 16 << 10);
                total += b.len();
                count += 1;
            }
            Some(WsMessage::Close(_)) | None => break,
            m => panic!("{m:?}"),
        }
    }
    assert_eq!((total, count), (100000, 7));
    // The command line: a bad argument or port is refused with exit code 2.
    for args in [&["--bogus"][..], &["--port", "http"][..]] {
        let out = std::process::Command::new(Example::path("demo")).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

/// examples/demo.rs, `/events?n=3&stop=9&key=K`: three events a connection, ids carrying on
/// from Last-Event-ID, 204 once past `stop`; `/events/stats` counts them.
#[tokio::test]
async fn demo_events_as_documented() {
    let ex = demo().await;
    let addr = ex.addr();
    let feed = raw_get(addr, "/events?n=3&stop=9&key=zzL", "Last-Event-ID: 6\r\n").await;
    let body = dechunk(feed.split_once("\r\n\r\n").unwrap().1.as_bytes());
    let body = String::from_utf8(body).unwrap();
    for id in 7..=9 {
        assert!(body.contains(&format!("id: {id}\n")), "{body}");
    }
    assert!(body.contains("data: second line\ndata: third line\n"), "{body}");
    let stop = raw_get(addr, "/events?n=3&stop=9&key=zzL", "Last-Event-ID: 9\r\n").await;
    assert!(stop.starts_with("HTTP/1.1 204"), "{stop}");
    let stats = raw_get(addr, "/events/stats?key=zzL", "").await;
    assert!(stats.contains(r#"{"key":"zzL","total":2,"connections":[{"lastEventId":"6","status":200},{"lastEventId":"9","status":204}]}"#), "{stats}");
}

// ---- README prose, sentence by sentence -----------------------------------------------------

/// A server whose channels are handed to `run` (on a task of their own) with `config`.
async fn serve_run<F, Fut>(config: Config, run: F) -> SocketAddr
where
    F: Fn(webchan::Channel) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let run = Arc::new(run);
    serve_fn(move |request: Request<HyperIncoming>| {
        let run = Arc::clone(&run);
        let config = config.clone();
        async move {
            let (reply, channel) = match webchan::as_channel(request, config) {
                Ok(pair) => pair,
                Err(rejection) => return Ok(rejection.into_response()),
            };
            tokio::spawn(run(channel));
            Ok::<_, Infallible>(reply.await)
        }
    })
    .await
}

/// README: "A stream may also declare its length in `Message::response`'s headers: exactly that
/// many bytes go out; the send that reaches the length completes even if it held more ..., and
/// later sends fail with `Error::Closed`. (A text or binary first message sent with
/// `send_and_close` goes out whole, with its own length, whatever the headers declared; a HEAD
/// keeps the declared one.)"
#[tokio::test]
async fn readme_declared_content_length() {
    let results = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&results);
    let addr = serve_run(Config::default(), move |channel| {
        let seen = Arc::clone(&seen);
        async move {
            let sender = channel.sender();
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::CONTENT_LENGTH, "10".parse().unwrap());
            if channel.originating_request().uri.path() == "/whole" {
                let _ = sender
                    .send_and_close(Message::response(http::StatusCode::OK, headers, "abc"))
                    .await;
                return;
            }
            let a = sender.send(Message::response(http::StatusCode::OK, headers, "12345")).await;
            let b = sender.send("67890abc".into()).await;
            let c = sender.send("x".into()).await;
            seen.lock().unwrap().push((a.is_ok(), b.is_ok(), c.map_err(|e| e.is_closed())));
        }
    })
    .await;
    let raw = raw_get(addr, "/", "").await;
    assert!(
        raw.contains("content-length: 10\r\n") && raw.ends_with("\r\n\r\n1234567890"),
        "{raw:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(results.lock().unwrap()[0], (true, true, Err(true)));
    let whole = raw_get(addr, "/whole", "").await;
    assert!(whole.contains("content-length: 3\r\n") && whole.ends_with("\r\n\r\nabc"), "{whole:?}");
    let head = support::raw_http(
        addr,
        format!("HEAD /whole HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    let head = String::from_utf8_lossy(&head);
    assert!(head.contains("content-length: 10\r\n"), "{head:?}");
}

/// README, Close codes: "the code given to `close_with`, if RFC 6455 lets an endpoint send it:
/// others go out as 1000, 1005 as a close frame without a code"; "1000 with the reason "idle
/// timeout" for the timeout".
#[tokio::test]
async fn readme_close_codes() {
    let addr =
        serve_run(Config::default().timeout(Duration::from_millis(400)), |channel| async move {
            let path = channel.originating_request().uri.path().to_owned();
            let code: u16 = path.trim_start_matches('/').parse().unwrap_or(0);
            let sender = channel.sender();
            let mut channel = channel;
            if code != 0 {
                sender.close_with(code, "r").await;
            }
            while channel.next().await.is_some() {}
        })
        .await;
    let mut seen = Vec::new();
    for (path, want) in [
        ("/4000", Some(4000)),
        ("/3000", Some(3000)),
        ("/1006", Some(1000)),
        ("/999", Some(1000)),
        ("/1015", Some(1000)),
        ("/1005", None),
        ("/1001", Some(1001)),
    ] {
        let mut raw = support::RawWs::connect_path(addr, path).await;
        let frame = tokio::time::timeout(T, raw.read_frame()).await.unwrap().unwrap();
        assert_eq!(frame.0 & 0x0f, 8, "{path}: not a close frame");
        let code = (frame.1.len() >= 2).then(|| u16::from_be_bytes([frame.1[0], frame.1[1]]));
        seen.push((path, code));
        assert_eq!(code, want, "{path}");
    }
    let mut ws = ws_connect(addr, "/").await;
    match next_msg(&mut ws).await {
        Some(WsMessage::Close(Some(f))) => {
            assert_eq!(u16::from(f.code), 1000);
            assert_eq!(f.reason.as_str(), "idle timeout");
        }
        m => panic!("{m:?}"),
    }
}

/// README, SSE: "a comment line keeps proxies from dropping a quiet stream
/// (`Config::sse_keepalive`)"; "each text message becomes one event"; "`channel.last_event_id()`
/// gives a reconnecting browser's `Last-Event-ID`".
#[tokio::test]
async fn readme_sse_keepalive_and_events() {
    let addr = serve_run(
        Config::default().sse_keepalive(Some(Duration::from_millis(300))),
        |channel| async move {
            let id = channel.last_event_id().unwrap_or("none").to_owned();
            let sender = channel.sender();
            let _ = sender.send(format!("from {id}\nline two").into()).await;
            tokio::time::sleep(Duration::from_millis(1000)).await;
            sender.close().await;
        },
    )
    .await;
    let raw = raw_get(addr, "/", "Accept: text/event-stream\r\nLast-Event-ID: 7\r\n").await;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    let body = String::from_utf8(dechunk(body.as_bytes())).unwrap();
    assert!(body.starts_with("data: from 7\ndata: line two\n\n"), "{body:?}");
    assert!(
        body.matches("\n:").count() + usize::from(body.starts_with(':')) >= 2,
        "no keepalive comments: {body:?}"
    );
}

/// README: "HTTP streams work over HTTP/1.0 (close-delimited)"; "Characters the charset cannot
/// hold go out as `?`".
#[tokio::test]
async fn readme_http10_and_charset() {
    let addr = serve_run(Config::default(), |channel| async move {
        let sender = channel.sender();
        let mut headers = http::HeaderMap::new();
        headers
            .insert(http::header::CONTENT_TYPE, "text/plain; charset=iso-8859-1".parse().unwrap());
        let _ = sender.send(Message::response(http::StatusCode::OK, headers, "é€")).await;
        let _ = sender.send("!".into()).await;
        sender.close().await;
    })
    .await;
    let raw = support::raw_http(addr, b"GET / HTTP/1.0\r\n\r\n").await;
    let pos = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..pos]).to_string();
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("chunked"), "{head}");
    assert_eq!(&raw[pos + 4..], b"\xe9?!");
}

/// README table: compat's malformed upgrade: "the future resolves to the 4xx; no callback";
/// `ch.send(..)` → `Ok(true)`, never blocks; `Ok(false)` if closed.
#[tokio::test]
async fn readme_compat_table() {
    use webchan::compat::{Options, SendOptions};
    let calls = Arc::new(AtomicUsize::new(0));
    let after_close = Arc::new(Mutex::new(Vec::new()));
    let (c, r) = (Arc::clone(&calls), Arc::clone(&after_close));
    let options = Options::new()
        .on_open(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .on_message(|ch, m| {
            let _ = ch.send(m, SendOptions::new());
        })
        .on_close(move |ch, _| {
            r.lock().unwrap().push(format!("{:?}", ch.send("late", SendOptions::new())));
        });
    let addr = support::serve_compat(options).await;
    let bad = raw_get(
        addr,
        "/",
        "Upgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 13\r\n",
    )
    .await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "a callback ran for a rejected upgrade");
    let mut ws = ws_connect(addr, "/").await;
    ws.send(WsMessage::text("x")).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("x")));
    ws.close(None).await.unwrap();
    let _ = next_msg(&mut ws).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(*after_close.lock().unwrap(), vec!["Ok(false)".to_owned()]);
}
