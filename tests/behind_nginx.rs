//! webchan behind a real nginx reverse proxy, configured as nginx's own docs show (from a review
//! in stop 30, 2026-12-06).
//!
//! Every test here starts its own nginx (`daemon off; master_process off;`, a config in a
//! temporary directory, a 127.0.0.1 port) as a child process, and kills it when done. `.ci/run`
//! installs nginx (Debian's `nginx-light`), and under CI (`CI` set) a missing nginx fails the
//! test; elsewhere each test says so on stderr and returns.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use webchan::{Channel, Config, Event, Kind};

// ---------------------------------------------------------------------------------------------
// nginx harness

struct Nginx {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Nginx {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// nginx's binary; `None` (with a message) when it is not installed, which fails under CI.
fn installed_nginx() -> Option<PathBuf> {
    let bin = nginx_binary();
    if bin.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "nginx is not installed, and CI needs these tests (apt-get install -y nginx-light)"
        );
        eprintln!("SKIPPED: nginx is not installed (apt-get install -y nginx-light)");
    }
    bin
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Starts nginx with one `server` whose body is `server_body`, in which `UPSTREAM` stands for
/// `http://<upstream>`. `None` (with a message) when nginx is not installed.
async fn nginx(upstream: SocketAddr, server_body: &str) -> Option<Nginx> {
    let bin = installed_nginx()?;
    for _attempt in 0..5 {
        // A port that was free a moment ago: another test may take it before nginx binds it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if let Some(proxy) = nginx_on(&bin, port, upstream, server_body).await {
            return Some(proxy);
        }
    }
    panic!("nginx did not start in 5 attempts");
}

/// One try at starting nginx on `port`: `None` if it did not come up on it within 5 s.
async fn nginx_on(bin: &Path, port: u16, upstream: SocketAddr, body: &str) -> Option<Nginx> {
    let dir = std::env::temp_dir().join(format!(
        "webchan_nginx_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    let body = body.replace("UPSTREAM", &format!("http://{upstream}"));
    let conf = format!(
        "daemon off;\nmaster_process off;\nerror_log {d}/error.log info;\npid {d}/nginx.pid;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           server {{\n    listen 127.0.0.1:{port};\n{body}\n  }}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let mut child = Command::new(bin)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx did not start");
    // Up when nginx has written its pid file, which it does only once its listening socket is
    // bound, and the port accepts. A connection alone proves nothing: when another process
    // listens on the port, the connect reaches that one while nginx retries its bind (2.5 s)
    // before it gives up; a test then sends its requests to another test's server.
    let pid_file = dir.join("nginx.pid");
    let pid = child.id().to_string();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = child.try_wait() {
            break; // exited: the port was taken, most likely
        }
        let bound = std::fs::read_to_string(&pid_file).is_ok_and(|p| p.trim() == pid);
        if bound && TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Some(Nginx { child, port, dir });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    eprintln!(
        "nginx did not come up on {port}: {}",
        std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
    );
    let _ = std::fs::remove_dir_all(&dir);
    None
}

/// The harness's own check: a port another process listens on is not taken for nginx's,
/// though a connection to it succeeds (what once sent a test's request to another test's
/// server, and the test waited in vain for its channel).
#[tokio::test]
async fn the_harness_does_not_take_another_listener_for_nginx() {
    let Some(bin) = installed_nginx() else { return };
    let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = other.local_addr().unwrap().port();
    let upstream = SocketAddr::from(([127, 0, 0, 1], 9));
    let started = Instant::now();
    let proxy = nginx_on(&bin, port, upstream, &plain_location("/", "")).await;
    assert!(proxy.is_none(), "nginx taken as up on a port another listener holds");
    eprintln!("refused after {:?}", started.elapsed());
    // and on a free port, the same call brings nginx up
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let proxy = nginx_on(&bin, free, upstream, &plain_location("/", "")).await;
    assert!(proxy.is_some_and(|p| p.port == free), "nginx did not come up on a free port");
}

/// nginx's WebSocket proxying, as its docs show (<https://nginx.org/en/docs/http/websocket.html>).
fn ws_location(path: &str, extra: &str) -> String {
    format!(
        "    location {path} {{\n      proxy_pass UPSTREAM;\n      proxy_http_version 1.1;\n\
         \x20     proxy_set_header Upgrade $http_upgrade;\n      proxy_set_header Connection \"upgrade\";\n\
         \x20     {extra}\n    }}\n"
    )
}

/// A location with nothing but `proxy_pass`: nginx's defaults (HTTP/1.0 to the upstream,
/// `Connection: close`, `proxy_buffering on`).
fn plain_location(path: &str, extra: &str) -> String {
    format!("    location {path} {{\n      proxy_pass UPSTREAM;\n      {extra}\n    }}\n")
}

// ---------------------------------------------------------------------------------------------
// clients

async fn ws_via(proxy: &Nginx, path: &str) -> WsClient {
    let url = format!("ws://{}{path}", proxy.addr());
    let (ws, _) =
        tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(url))
            .await
            .expect("no handshake through nginx within 5 s")
            .expect("handshake through nginx failed");
    ws
}

/// A raw HTTP/1.1 request; the connection, to read the response from as it comes.
async fn http_request(addr: SocketAddr, path: &str, headers: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    tcp
}

/// Reads from `tcp` into `buf` until `needle` is in it, or `within` passes, or EOF. True if found.
async fn read_until(
    tcp: &mut TcpStream,
    buf: &mut Vec<u8>,
    needle: &str,
    within: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if String::from_utf8_lossy(buf).contains(needle) {
            return true;
        }
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => {
                return String::from_utf8_lossy(buf).contains(needle)
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads until EOF (or `within`): (everything, whether EOF came).
async fn read_to_eof(tcp: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Ok(Ok(0)) => return (buf, true),
            Ok(Err(_)) => return (buf, true),
            Err(_) => return (buf, false),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A server that hands each channel to the test, and records each channel's events.
async fn channels(config: Config) -> (SocketAddr, mpsc::UnboundedReceiver<Channel>) {
    serve_channels(config).await
}

fn keepalive(interval_ms: u64, timeout_ms: u64) -> Config {
    Config::default()
        .keepalive(Some((Duration::from_millis(interval_ms), Duration::from_millis(timeout_ms))))
}

async fn wait_closed(ch: &mut Channel, within: Duration) -> Option<webchan::CloseInfo> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ch.next()).await {
            Ok(Some(Event::Closed(info))) => return Some(info),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// WebSockets

#[tokio::test]
async fn websocket_echo_close_codes_and_pings_pass_through_nginx() {
    let (addr, mut chans) = channels(Config::default()).await;
    let Some(proxy) = nginx(addr, &ws_location("/", "")).await else { return };

    // Echo, text and binary; a client ping is answered.
    let mut ws = ws_via(&proxy, "/echo").await;
    let mut ch = next_channel(&mut chans).await;
    assert_eq!(ch.kind(), Kind::WebSocket);
    let echo = tokio::spawn(async move {
        let mut closed = None;
        while let Some(e) = ch.next().await {
            match e {
                Event::Message(m) => {
                    let _ = ch.send(m.into()).await;
                }
                Event::Closed(info) => closed = Some(info),
                _ => {}
            }
        }
        closed
    });
    ws.send(WsMessage::text("hello")).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("hello")));
    ws.send(WsMessage::binary(vec![0u8, 1, 2, 255])).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::binary(vec![0u8, 1, 2, 255])));
    let big: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
    ws.send(WsMessage::binary(big.clone())).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::binary(big)), "1 MiB through nginx");
    ws.send(WsMessage::Ping(b"p".to_vec().into())).await.unwrap();
    let pong =
        tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(pong, WsMessage::Pong(b"p".to_vec().into()));
    // The client closes with 4000: the server sees 4000 and its reason, the client the echo.
    ws.close(Some(CloseFrame { code: CloseCode::from(4000), reason: "client bye".into() }))
        .await
        .unwrap();
    let info = tokio::time::timeout(Duration::from_secs(5), echo).await.unwrap().unwrap();
    assert_eq!(info, Some(webchan::CloseInfo::websocket(4000, "client bye")));

    // The server closes with 4001: the client sees it.
    let mut ws = ws_via(&proxy, "/second").await;
    let ch = next_channel(&mut chans).await;
    assert!(ch.sender().start_close(4001, "server bye"));
    let mut got = None;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        if let WsMessage::Close(frame) = m {
            got = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
        }
    }
    assert_eq!(got, Some((4001, "server bye".to_owned())));
}

/// nginx cuts an upgraded connection after `proxy_read_timeout` without data from the upstream
/// (60 s by default). webchan's keepalive pings (with the client's pongs) keep it open.
#[tokio::test]
async fn keepalive_pings_keep_an_idle_websocket_open_past_proxy_read_timeout() {
    let (addr, mut chans) = channels(keepalive(400, 1000)).await;
    let Some(proxy) = nginx(addr, &ws_location("/", "proxy_read_timeout 1500ms;")).await else {
        return;
    };
    let mut ws = ws_via(&proxy, "/").await;
    let mut ch = next_channel(&mut chans).await;
    // Idle for 2.5 proxy_read_timeouts; the client answers pings while it reads.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(4000);
    let mut pings = 0;
    while let Ok(m) = tokio::time::timeout_at(deadline, ws.next()).await {
        match m {
            Some(Ok(WsMessage::Ping(_))) => pings += 1,
            other => {
                panic!("the idle WebSocket was cut through nginx: {other:?} after {pings} pings")
            }
        }
    }
    assert!(pings >= 5, "{pings} pings");
    assert!(ch.is_open());
    ws.send(WsMessage::text("still here")).await.unwrap();
    match next_of(&mut ch).await {
        Some(Event::Open) => {}
        other => panic!("{other:?}"),
    }
    match next_of(&mut ch).await {
        Some(Event::Message(m)) => assert_eq!(m, webchan::Incoming::Text("still here".into())),
        other => panic!("{other:?}"),
    }
}

/// What webchan sees when nginx cuts an idle WebSocket (keepalive longer than nginx's
/// `proxy_read_timeout`): nginx closes the upstream TCP connection without a close frame.
#[tokio::test]
async fn a_websocket_nginx_cuts_reports_closed_1006_at_once() {
    let (addr, mut chans) = channels(keepalive(30_000, 20_000)).await;
    let Some(proxy) = nginx(addr, &ws_location("/", "proxy_read_timeout 1s;")).await else {
        return;
    };
    let mut ws = ws_via(&proxy, "/").await;
    let mut ch = next_channel(&mut chans).await;
    let started = Instant::now();
    // The client sees its connection end (no close frame: nginx has none to send).
    let client_end = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    eprintln!("client after {:?}: {client_end:?}", started.elapsed());
    let info = wait_closed(&mut ch, Duration::from_secs(5)).await;
    let took = started.elapsed();
    eprintln!("server: {info:?} after {took:?}");
    assert_eq!(info.as_ref().and_then(|i| i.code), Some(1006), "{info:?}");
    assert!(took < Duration::from_millis(2500), "Closed came {took:?} after the cut began");
}

/// A client that talks (every 300 ms) to a server that never writes: nginx's
/// `proxy_read_timeout` counts the upstream's silence. Does the conversation survive?
#[tokio::test]
async fn a_talking_client_and_a_silent_server_survive_proxy_read_timeout() {
    let (addr, mut chans) = channels(keepalive(5_000, 5_000)).await;
    let Some(proxy) = nginx(addr, &ws_location("/", "proxy_read_timeout 1s;")).await else {
        return;
    };
    let mut ws = ws_via(&proxy, "/").await;
    let mut ch = next_channel(&mut chans).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(e) = ch.next().await {
            let _ = tx.send(e);
        }
    });
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_millis(3500) {
        if ws.send(WsMessage::text(format!("m{sent}"))).await.is_err() {
            break;
        }
        sent += 1;
        // Read (and so answer pings) for 300 ms.
        match tokio::time::timeout(Duration::from_millis(300), ws.next()).await {
            Err(_) => {}
            Ok(Some(Ok(WsMessage::Ping(_)))) => {}
            Ok(other) => panic!("after {:?}, {sent} sent: {other:?}", started.elapsed()),
        }
    }
    let mut received = 0;
    while let Ok(e) = rx.try_recv() {
        match e {
            Event::Message(_) => received += 1,
            Event::Closed(info) => panic!("closed after {received} messages: {info:?}"),
            _ => {}
        }
    }
    assert_eq!(received, sent);
}

// ---------------------------------------------------------------------------------------------
// HTTP streams and SSE

/// The first message of a stream, then (after 300 ms) a second; the client must see the first
/// long before the stream ends. Returns how long the first took to arrive (None: not in 2 s).
async fn first_message_delay(
    proxy: &Nginx,
    path: &str,
    headers: &str,
    chans: &mut mpsc::UnboundedReceiver<Channel>,
) -> (Option<Duration>, String) {
    let mut tcp = http_request(proxy.addr(), path, headers).await;
    let ch = next_channel(chans).await;
    let sender = ch.sender();
    let started = Instant::now();
    let feeder = tokio::spawn(async move {
        let _ = sender.send("first-message\n".into()).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let _ = sender.send_and_close("last-message\n".into()).await;
        drop(ch);
    });
    let mut buf = Vec::new();
    let found = read_until(&mut tcp, &mut buf, "first-message", Duration::from_secs(2)).await;
    let took = started.elapsed();
    if !found {
        let more = read_until(&mut tcp, &mut buf, "first-message", Duration::from_secs(3)).await;
        eprintln!("(held: first-message seen {more} after {:?})", started.elapsed());
    }
    feeder.abort();
    (found.then_some(took), String::from_utf8_lossy(&buf).into_owned())
}

/// Sends a first message through nginx with `location` and asserts it arrives within 500 ms.
async fn first_message_at_once(location: String, path: &str, headers: &str, what: &str) {
    let (addr, mut chans) = channels(Config::default()).await;
    let Some(proxy) = nginx(addr, &location).await else { return };
    let (took, seen) = first_message_delay(&proxy, path, headers, &mut chans).await;
    eprintln!("{what}: {took:?}\n{seen}");
    assert!(took.is_some_and(|t| t < Duration::from_millis(500)), "{what}: {took:?}: {seen}");
}

const SSE: &str = "Accept: text/event-stream\r\n";

#[tokio::test]
async fn sse_events_reach_the_client_at_once_through_nginx_defaults() {
    let what = "SSE through nginx's defaults (HTTP/1.0 upstream)";
    first_message_at_once(plain_location("/", ""), "/events", SSE, what).await;
}

#[tokio::test]
async fn sse_events_reach_the_client_at_once_through_nginx_http11() {
    let what = "SSE through nginx (HTTP/1.1 upstream)";
    first_message_at_once(ws_location("/", ""), "/events", SSE, what).await;
}

// A plain HTTP stream behind `location / { proxy_pass ...; }` (nginx's defaults: HTTP/1.0
// upstream, `proxy_buffering on`) is held by nginx until it ends (or 4-8 KiB gather) unless
// its head says `X-Accel-Buffering: no`, which the handler sets (README, "Behind nginx"):
// see `control_http_stream_with_x_accel_buffering_no_passes_nginx_defaults_at_once`.

/// Over an HTTP/1.1 upstream nginx passes a plain stream's chunks at once.
#[tokio::test]
async fn http_stream_chunks_reach_the_client_at_once_through_nginx_http11() {
    let what = "HTTP stream through nginx (HTTP/1.1 upstream)";
    first_message_at_once(plain_location("/", "proxy_http_version 1.1;"), "/stream", "", what)
        .await;
}

/// A quiet HTTP stream that nginx gives up on (`proxy_read_timeout`): webchan should see the
/// channel closed once nginx has closed its connection.
#[tokio::test]
async fn a_quiet_http_stream_nginx_cuts_reports_closed() {
    let (addr, mut chans) = channels(Config::default()).await;
    let Some(proxy) = nginx(addr, &ws_location("/", "proxy_read_timeout 1s;")).await else {
        return;
    };
    let mut tcp = http_request(proxy.addr(), "/quiet", "").await;
    let mut ch = next_channel(&mut chans).await;
    ch.send("hello\n".into()).await.unwrap();
    let started = Instant::now();
    let (seen, eof) = read_to_eof(&mut tcp, Duration::from_secs(4)).await;
    eprintln!(
        "client: eof {eof} after {:?}: {}",
        started.elapsed(),
        String::from_utf8_lossy(&seen)
    );
    let info = wait_closed(&mut ch, Duration::from_secs(4)).await;
    eprintln!("server: {info:?} after {:?}, open {}", started.elapsed(), ch.is_open());
    assert!(info.is_some(), "webchan never saw nginx close the stream's connection");
}

/// The same without nginx: an HTTP/1.0 request straight to webchan, as nginx sends it
/// (`proxy_http_version 1.0`, `Connection: close`).
#[tokio::test]
async fn http10_stream_first_message_is_written_at_once_without_proxy() {
    let (addr, mut chans) = channels(Config::default()).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("GET /stream HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let ch = next_channel(&mut chans).await;
    let sender = ch.sender();
    let started = Instant::now();
    let feeder = tokio::spawn(async move {
        let r = sender.send("first-message\n".into()).await;
        eprintln!("first send: {r:?} after {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_secs(3)).await;
        let _ = sender.send_and_close("last-message\n".into()).await;
        drop(ch);
    });
    let mut buf = Vec::new();
    let found = read_until(&mut tcp, &mut buf, "first-message", Duration::from_secs(2)).await;
    eprintln!("found {found} after {:?}: {:?}", started.elapsed(), String::from_utf8_lossy(&buf));
    feeder.abort();
    assert!(found, "{:?}", String::from_utf8_lossy(&buf));
}

/// A plain stream whose handler sets `X-Accel-Buffering: no` passes nginx's defaults at once,
/// as the README says.
#[tokio::test]
async fn control_http_stream_with_x_accel_buffering_no_passes_nginx_defaults_at_once() {
    let addr = serve_with(
        Config::default(),
        |mut reply| {
            reply.headers_mut().insert("x-accel-buffering", http::HeaderValue::from_static("no"));
            reply
        },
        |ch: Channel| async move {
            let _ = ch.sender().send("first-message\n".into()).await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let _ = ch.sender().send_and_close("last-message\n".into()).await;
        },
    )
    .await;
    let Some(proxy) = nginx(addr, &plain_location("/", "")).await else { return };
    let started = Instant::now();
    let mut tcp = http_request(proxy.addr(), "/stream", "").await;
    let mut buf = Vec::new();
    let found = read_until(&mut tcp, &mut buf, "first-message", Duration::from_secs(2)).await;
    assert!(
        found && started.elapsed() < Duration::from_millis(500),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
}

// ---------------------------------------------------------------------------------------------
// Shutdown through the proxy

#[tokio::test]
async fn shutdown_closes_a_proxied_websocket_with_1001_and_ends_proxied_streams() {
    let shutdown = webchan::Shutdown::new();
    let (addr, mut chans) = channels(Config::default().shutdown(&shutdown)).await;
    let mut body = ws_location("/ws", "");
    body.push_str(&ws_location("/v11", ""));
    body.push_str(&plain_location("/v10", ""));
    let Some(proxy) = nginx(addr, &body).await else { return };

    let started_at = Instant::now();
    let watch = |mut ch: Channel, name: &'static str| {
        tokio::spawn(async move {
            while let Some(e) = ch.next().await {
                if let Event::Closed(info) = e {
                    eprintln!("{name}: Closed {info:?} at {:?}", started_at.elapsed());
                    return Some(info);
                }
            }
            None
        })
    };
    let mut ws = ws_via(&proxy, "/ws").await;
    let ws_ch = watch(next_channel(&mut chans).await, "WebSocket");
    let mut s11 = http_request(proxy.addr(), "/v11/stream", "").await;
    let ch = next_channel(&mut chans).await;
    ch.sender().send("one-one\n".into()).await.unwrap();
    let ch11 = watch(ch, "HTTP/1.1 stream");
    let mut sse = http_request(proxy.addr(), "/v11/events", "Accept: text/event-stream\r\n").await;
    let ch = next_channel(&mut chans).await;
    ch.sender().send("tick".into()).await.unwrap();
    let chsse = watch(ch, "SSE");
    let mut s10 = http_request(proxy.addr(), "/v10/stream", "").await;
    let ch = next_channel(&mut chans).await;
    ch.sender().send("one-zero\n".into()).await.unwrap();
    let ch10 = watch(ch, "HTTP/1.0 stream");
    let mut b11 = Vec::new();
    assert!(read_until(&mut s11, &mut b11, "one-one", Duration::from_secs(2)).await);
    let mut bsse = Vec::new();
    assert!(read_until(&mut sse, &mut bsse, "data: tick", Duration::from_secs(2)).await);
    let mut b10 = Vec::new();
    let early10 = read_until(&mut s10, &mut b10, "one-zero", Duration::from_millis(500)).await;
    eprintln!("HTTP/1.0 stream's first message through nginx before the shutdown: {early10}");

    // The client reads (and so answers the close) while the server shuts down.
    let ws_client = tokio::spawn(async move {
        let mut got = None;
        while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(8), ws.next()).await {
            if let WsMessage::Close(frame) = m {
                got = frame.map(|f| u16::from(f.code));
            }
        }
        got
    });
    let started = Instant::now();
    let report =
        tokio::time::timeout(Duration::from_secs(10), shutdown.shutdown(Duration::from_secs(5)))
            .await
            .expect("shutdown hung");
    let shutdown_took = started.elapsed();
    eprintln!("report {report:?} after {shutdown_took:?}");

    let got = ws_client.await.unwrap();
    assert_eq!(got, Some(1001), "the WebSocket's close through nginx");
    for (name, tcp, mut buf, expect) in [
        ("HTTP/1.1 stream", &mut s11, b11, "one-one"),
        ("SSE", &mut sse, bsse, "retry:"),
        ("HTTP/1.0 stream", &mut s10, b10, "one-zero"),
    ] {
        let (seen, eof) = read_to_eof(tcp, Duration::from_secs(3)).await;
        buf.extend_from_slice(&seen);
        let seen = String::from_utf8_lossy(&buf).into_owned();
        eprintln!("{name}: eof {eof}: {seen:?}");
        // nginx keeps the client's connection: a complete chunked response ends in `0\r\n\r\n`.
        assert!(seen.ends_with("0\r\n\r\n"), "{name}: not a complete response: {seen:?}");
        assert!(seen.contains(expect), "{name}: {seen:?}");
    }
    for (name, h) in [("WebSocket", ws_ch), ("HTTP/1.1", ch11), ("SSE", chsse), ("HTTP/1.0", ch10)]
    {
        let info = tokio::time::timeout(Duration::from_secs(3), h).await;
        eprintln!("{name}: {info:?}");
    }
    assert_eq!(report.forced, 0, "{report:?}");
    assert!(shutdown_took < Duration::from_secs(3), "shutdown took {shutdown_took:?}");
}

/// An SSE request over HTTP/1.0 with `Connection: keep-alive`, straight to webchan: the client's
/// connection and the server's channel.
async fn http10_keep_alive_sse() -> (TcpStream, Channel) {
    let (addr, mut chans) = channels(Config::default()).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("GET /events HTTP/1.0\r\nHost: {addr}\r\nConnection: keep-alive\r\nAccept: text/event-stream\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    (tcp, next_channel(&mut chans).await)
}

/// An SSE stream over HTTP/1.0 (nginx's default upstream protocol, or any 1.0 client) with
/// `Connection: keep-alive`: the body is close-delimited, so the head must not promise
/// keep-alive (RFC 9112 §6.3, §9.3); before stop 30 it did. The plain stream gets `Connection: close`
/// (http1_semantics::http_1_0_keep_alive_gets_a_close_delimited_stream).
#[tokio::test]
async fn http10_keep_alive_sse_gets_connection_close() {
    let (mut tcp, ch) = http10_keep_alive_sse().await;
    ch.sender().send("tick".into()).await.unwrap();
    let mut buf = Vec::new();
    assert!(read_until(&mut tcp, &mut buf, "data: tick", Duration::from_secs(2)).await);
    let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    eprintln!("{text:?}");
    let head = text.split("\r\n\r\n").next().unwrap().to_owned();
    assert!(!head.contains("connection: keep-alive"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
}

/// A quiet SSE stream through nginx: the keepalive comments keep nginx's
/// `proxy_read_timeout` from cutting it.
#[tokio::test]
async fn sse_keepalive_comments_keep_a_quiet_stream_open_past_proxy_read_timeout() {
    let (addr, mut chans) =
        channels(Config::default().sse_keepalive(Some(Duration::from_millis(400)))).await;
    let Some(proxy) = nginx(addr, &plain_location("/", "proxy_read_timeout 1s;")).await else {
        return;
    };
    let mut tcp = http_request(proxy.addr(), "/events", "Accept: text/event-stream\r\n").await;
    let mut ch = next_channel(&mut chans).await;
    let (seen, eof) = read_to_eof(&mut tcp, Duration::from_millis(3000)).await;
    assert!(!eof, "nginx cut the quiet SSE stream: {:?}", String::from_utf8_lossy(&seen));
    assert!(ch.is_open());
    ch.send("late".into()).await.unwrap();
    let mut buf = Vec::new();
    assert!(read_until(&mut tcp, &mut buf, "data: late", Duration::from_secs(2)).await);
    drop(ch);
}

/// Keeps the channel's queue full (16 MiB) of 64 KiB messages until a send fails.
async fn fill(ch: Channel) {
    let block = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
    let sender = ch.sender();
    loop {
        match sender.try_send(block.clone().into()) {
            Ok(_) => {}
            Err((webchan::Error::QueueFull { .. }, _)) => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Err(_) => break,
        }
    }
    drop(ch);
}

/// A stream a shutdown forces (its client reads nothing) is "aborted, so its client sees it
/// cut short over HTTP/1.1" (`Shutdown`'s docs): straight to webchan, or through nginx with an
/// HTTP/1.1 upstream and `proxy_buffering off` (so that nginx stops reading once its client
/// stops). Returns (forced, whether the client got a complete-looking chunked response, the
/// start of what it got); `None` without nginx.
async fn forced_stream(through_nginx: bool) -> Option<(usize, bool, String)> {
    let shutdown = webchan::Shutdown::new();
    // A queue larger than what hyper buffers: at the deadline the stream is mid-queue.
    let addr = serve(
        Config::default().queue_limit(16 << 20).shutdown(&shutdown),
        |ch: Channel| async move {
            fill(ch).await;
        },
    )
    .await;
    let proxy = if through_nginx {
        let location = plain_location("/", "proxy_buffering off; proxy_http_version 1.1;");
        Some(nginx(addr, &location).await?)
    } else {
        None
    };
    let mut tcp = http_request(proxy.as_ref().map_or(addr, Nginx::addr), "/big", "").await;
    let mut buf = Vec::new();
    assert!(read_until(&mut tcp, &mut buf, "\r\n\r\n", Duration::from_secs(3)).await);
    // The client stops reading; the queues fill up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = tokio::time::timeout(
        Duration::from_secs(10),
        shutdown.shutdown(Duration::from_millis(500)),
    )
    .await
    .expect("shutdown hung");
    // Now the client reads everything there is.
    let (rest, _eof) = read_to_eof(&mut tcp, Duration::from_secs(3)).await;
    buf.extend_from_slice(&rest);
    let head = String::from_utf8_lossy(&buf[..buf.len().min(200)]).into_owned();
    Some((report.forced, buf.ends_with(b"\r\n0\r\n\r\n"), head))
}

#[tokio::test]
async fn a_forced_stream_is_seen_cut_short_through_nginx_http11() {
    let Some((forced, complete, head)) = forced_stream(true).await else { return };
    assert_eq!(forced, 1);
    assert!(!complete, "the client took a forced stream for complete: {head:?}");
}

#[tokio::test]
async fn a_forced_stream_is_seen_cut_short_without_proxy() {
    let (forced, complete, head) = forced_stream(false).await.expect("no nginx involved");
    assert_eq!(forced, 1);
    assert!(!complete, "the client took a forced stream for complete: {head:?}");
}

/// A WebSocket through a location that forgot `proxy_http_version 1.1` (nginx then speaks
/// HTTP/1.0 to the upstream): the client gets a 4xx that says why, not a hang.
#[tokio::test]
async fn a_websocket_through_nginx_http10_gets_a_clear_400() {
    let (addr, _chans) = channels(Config::default()).await;
    let body = plain_location(
        "/",
        "proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\";",
    );
    let Some(proxy) = nginx(addr, &body).await else { return };
    let url = format!("ws://{}/", proxy.addr());
    let result =
        tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(url))
            .await
            .expect("the handshake hung");
    match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned();
            eprintln!("{} {body:?}", response.status());
            assert_eq!(response.status(), 400);
            assert!(body.contains("HTTP/1.1"), "{body:?}; nginx: {}", proxy.error_log());
        }
        other => panic!("{other:?}"),
    }
}

/// A client that leaves nginx in the middle of a quiet stream (plain and SSE, nginx's
/// defaults): nginx closes its upstream connection, and webchan should report `Closed` soon.
#[tokio::test]
async fn a_client_leaving_nginx_closes_the_quiet_stream_soon() {
    let (addr, mut chans) = channels(Config::default()).await;
    let Some(proxy) = nginx(addr, &plain_location("/", "")).await else { return };
    for (path, headers) in [("/stream", ""), ("/events", "Accept: text/event-stream\r\n")] {
        let tcp = http_request(proxy.addr(), path, headers).await;
        let mut ch = next_channel(&mut chans).await;
        ch.send("hello\n".into()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        drop(tcp);
        let info = wait_closed(&mut ch, Duration::from_secs(5)).await;
        eprintln!("{path}: {info:?} after {:?}", started.elapsed());
        assert!(info.is_some(), "{path}: no Closed within 5 s of the client leaving nginx");
    }
}

/// The same SSE stream over HTTP/1.0 with keep-alive, ended by the server: its body is
/// close-delimited, so the client must see the connection close, or it waits forever.
#[tokio::test]
async fn http10_keep_alive_sse_ended_by_the_server_closes_the_connection() {
    let (mut tcp, ch) = http10_keep_alive_sse().await;
    ch.sender().send_and_close("tick".into()).await.unwrap();
    let (seen, eof) = read_to_eof(&mut tcp, Duration::from_secs(3)).await;
    let seen = String::from_utf8_lossy(&seen).into_owned();
    eprintln!("eof {eof}: {seen:?}");
    assert!(seen.contains("data: tick"), "{seen:?}");
    assert!(eof, "the close-delimited SSE body never ended: the client waits forever: {seen:?}");
}
