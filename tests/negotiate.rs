//! Request classification and WebSocket handshake checks, over real sockets: a malformed
//! upgrade gets a 4xx whose body says why, and no channel.

mod support;

use std::time::Duration;

use futures::StreamExt;
use support::*;
use webchan::{Config, Event};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Sends `request` with the given header lines; returns (status line, full response text), and
/// the number of channels the server made.
async fn exchange(
    method: &str,
    version: &str,
    headers: &[(&str, &str)],
) -> (String, String, usize) {
    let (addr, mut channels) = serve_channels(Config::default()).await;
    let made = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&made);
    // Count the channels and drop them at once.
    tokio::spawn(async move {
        while channels.recv().await.is_some() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let mut req = format!("{method} /ws {version}\r\nHost: x\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection-Close-Marker: 1\r\n\r\n");
    let text = String::from_utf8_lossy(
        &tokio::time::timeout(Duration::from_secs(10), async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.write_all(req.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            // Read until the end of the (Content-Length delimited) response.
            loop {
                let n = tcp.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
                let s = String::from_utf8_lossy(&out).to_string();
                if let Some(pos) = s.find("\r\n\r\n") {
                    let len = s[..pos]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if out.len() >= pos + 4 + len {
                        break;
                    }
                }
            }
            out
        })
        .await
        .unwrap(),
    )
    .to_string();
    let status = text.lines().next().unwrap_or_default().to_owned();
    tokio::time::sleep(Duration::from_millis(50)).await;
    (status, text, made.load(std::sync::atomic::Ordering::SeqCst))
}

fn base() -> Vec<(&'static str, &'static str)> {
    vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", KEY),
        ("Sec-WebSocket-Version", "13"),
    ]
}

fn without(name: &str) -> Vec<(&'static str, &'static str)> {
    base().into_iter().filter(|(k, _)| !k.eq_ignore_ascii_case(name)).collect()
}

fn with(name: &'static str, value: &'static str) -> Vec<(&'static str, &'static str)> {
    let mut h = without(name);
    h.push((name, value));
    h
}

#[tokio::test]
async fn a_valid_upgrade_gets_101_with_the_accept_key() {
    let (status, text, made) = exchange("GET", "HTTP/1.1", &base()).await;
    assert!(status.starts_with("HTTP/1.1 101"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{text}"
    );
    assert_eq!(made, 1);
}

#[tokio::test]
async fn header_tokens_are_case_insensitive_and_lists_are_allowed() {
    let headers = vec![
        ("Upgrade", "WebSocket"),
        ("Connection", "keep-alive, UPGRADE"),
        ("Sec-WebSocket-Key", KEY),
        ("Sec-WebSocket-Version", "13"),
    ];
    let (status, text, _) = exchange("GET", "HTTP/1.1", &headers).await;
    assert!(status.starts_with("HTTP/1.1 101"), "{text}");
}

#[tokio::test]
async fn no_upgrade_header_is_an_http_stream() {
    let (status, text, made) = exchange("GET", "HTTP/1.1", &without("Upgrade")).await;
    // The channel is dropped at once: an empty 200 response.
    assert!(status.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(made, 1);
}

async fn rejected(
    headers: &[(&str, &str)],
    method: &str,
    version: &str,
    code: u16,
    why: &str,
) -> String {
    let (status, text, made) = exchange(method, version, headers).await;
    assert!(status.contains(&format!(" {code} ")), "expected {code}: {text}");
    assert!(text.contains(why), "expected the reason {why:?} in: {text}");
    assert_eq!(made, 0, "a rejected upgrade made a channel");
    text
}

#[tokio::test]
async fn a_missing_key_is_400() {
    rejected(&without("Sec-WebSocket-Key"), "GET", "HTTP/1.1", 400, "needs a Sec-WebSocket-Key")
        .await;
}

#[tokio::test]
async fn a_key_of_the_wrong_length_is_400() {
    rejected(&with("Sec-WebSocket-Key", "c2hvcnQ="), "GET", "HTTP/1.1", 400, "16 bytes in base64")
        .await;
    rejected(
        &with("Sec-WebSocket-Key", "!!!!!!!!!!!!!!!!!!!!!!=="),
        "GET",
        "HTTP/1.1",
        400,
        "16 bytes",
    )
    .await;
}

#[tokio::test]
async fn a_duplicate_key_is_400() {
    let mut h = base();
    h.push(("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA=="));
    rejected(&h, "GET", "HTTP/1.1", 400, "more than one Sec-WebSocket-Key").await;
}

#[tokio::test]
async fn version_8_is_426_with_the_supported_version() {
    let text =
        rejected(&with("Sec-WebSocket-Version", "8"), "GET", "HTTP/1.1", 426, "only 13").await;
    assert!(text.to_ascii_lowercase().contains("sec-websocket-version: 13"), "{text}");
}

#[tokio::test]
async fn a_missing_version_is_426() {
    let text =
        rejected(&without("Sec-WebSocket-Version"), "GET", "HTTP/1.1", 426, "Version: 13").await;
    assert!(text.to_ascii_lowercase().contains("sec-websocket-version: 13"), "{text}");
}

#[tokio::test]
async fn a_post_upgrade_is_405() {
    let text = rejected(&base(), "POST", "HTTP/1.1", 405, "GET method").await;
    assert!(text.to_ascii_lowercase().contains("allow: get"), "{text}");
}

#[tokio::test]
async fn a_missing_connection_upgrade_is_400() {
    rejected(&without("Connection"), "GET", "HTTP/1.1", 400, "Connection: Upgrade").await;
}

#[tokio::test]
async fn an_http_1_0_upgrade_is_400() {
    rejected(&base(), "GET", "HTTP/1.0", 400, "needs HTTP/1.1").await;
}

#[tokio::test]
async fn the_server_keeps_serving_after_rejections() {
    let (addr, _channels) = serve_channels(Config::default()).await;
    let bad = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nConnection: close\r\n\r\n";
    for _ in 0..5 {
        let out = raw_http(addr, bad.as_bytes()).await;
        assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 400"));
    }
    let mut ws = ws_connect(addr, "/").await;
    futures::SinkExt::send(&mut ws, WsMessage::text("ok")).await.unwrap();
}

#[tokio::test]
async fn an_origin_outside_the_allow_list_is_403_and_listed_or_absent_origins_pass() {
    let config = Config::default().allowed_origins(["https://good.example"]);
    let (addr, _channels) = serve_channels(config).await;
    let upgrade = |origin: Option<&str>| {
        let mut req = String::from(
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        );
        if let Some(o) = origin {
            req.push_str(&format!("Origin: {o}\r\n"));
        }
        req.push_str("\r\n");
        req
    };
    async fn status_line(addr: std::net::SocketAddr, req: String) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).to_string()
    }
    let evil = status_line(addr, upgrade(Some("https://evil.example"))).await;
    assert!(evil.starts_with("HTTP/1.1 403"), "{evil}");
    assert!(evil.contains("Origin of this WebSocket upgrade is not allowed"), "{evil}");
    let good = status_line(addr, upgrade(Some("https://GOOD.example"))).await;
    assert!(good.starts_with("HTTP/1.1 101"), "{good}");
    let none = status_line(addr, upgrade(None)).await;
    assert!(none.starts_with("HTTP/1.1 101"), "{none}");
}

// ---- A handler that makes a WebSocket channel, then drops its reply and answers 403 ----
//
// Immutant: a handler that answers an upgrade request with an ordinary response is not
// upgraded. Before 2026-12-05 a dropped `Reply` (or compat `ResponseFuture`) of a WebSocket
// did not refuse the upgrade: the channel got no `Error`/`Closed` while the client kept its
// connection, and once the client half-closed it, hyper handed the raw connection over as
// the pending upgrade and the channel opened on it (compat: `["open", "close Some(1006)"]`,
// with a message written to a client that got a 403).

const UPGRADE_HEADERS: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// Serves one connection per accept with `service`, upgrades enabled.
fn serve_service<S>(listener: tokio::net::TcpListener, service: S)
where
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<webchan::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let service = service.clone();
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tcp), service)
                .await;
            });
        }
    });
}

fn forbidden() -> http::Response<webchan::Body> {
    let mut r = http::Response::new(webchan::Body::empty());
    *r.status_mut() = http::StatusCode::FORBIDDEN;
    r
}

/// Connects, sends the upgrade request, and reads the response head, which must be a 403.
async fn upgrade_and_expect_403(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\n{UPGRADE_HEADERS}\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut head))
        .await
        .expect("no response within 10 s")
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    tcp
}

/// Half-closes the client's side and returns whatever the server writes after the response
/// (3 s at most).
async fn bytes_after_half_close(mut tcp: tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut rest)).await;
    rest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_websocket_reply_refuses_the_upgrade_error_then_closed_never_open() {
    type Made = (webchan::Channel, webchan::Completion);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut made) = tokio::sync::mpsc::unbounded_channel::<Made>();
    serve_service(
        listener,
        hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let tx = tx.clone();
            async move {
                if let Ok((reply, channel)) = webchan::as_channel(request, Config::default()) {
                    // Queued before the refusal: it must never reach the client.
                    let sent = channel.sender().try_send("hello after a 403".into()).unwrap();
                    // An auth check fails: the handler drops the reply and answers itself.
                    drop(reply);
                    let _ = tx.send((channel, sent));
                }
                Ok::<_, std::convert::Infallible>(forbidden())
            }
        }),
    );
    let tcp = upgrade_and_expect_403(addr).await;
    let (mut channel, sent) = tokio::time::timeout(Duration::from_secs(10), made.recv())
        .await
        .expect("no channel within 10 s")
        .unwrap();
    // The client keeps its connection: the channel still ends, with Error then Closed.
    let mut events = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(5), channel.next()).await {
        let closed = matches!(event, Event::Closed(_));
        events.push(event);
        if closed {
            break;
        }
    }
    assert!(
        matches!(
            events.as_slice(),
            [Event::Error(webchan::Error::Upgrade(_)), Event::Closed(info)] if info.code == Some(1006)
        ),
        "a dropped reply must give Error(Upgrade) then Closed(1006), no Open; got {events:?}"
    );
    assert!(matches!(sent.await, Err(webchan::Error::Closed)));
    assert!(channel.sender().try_send("later".into()).is_err());
    // The client half-closes: hyper hands the connection over as the pending upgrade, which
    // must not open the channel or write anything after the 403.
    let rest = bytes_after_half_close(tcp).await;
    assert!(
        rest.is_empty(),
        "{} bytes after the 403: {:?}",
        rest.len(),
        String::from_utf8_lossy(&rest)
    );
    let after = tokio::time::timeout(Duration::from_secs(1), channel.next()).await;
    assert!(matches!(after, Ok(None)), "an event after Closed: {after:?}");
}

type Log = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// A server whose handler makes a compat channel (whose `on_open` sends a message), then drops
/// the `ResponseFuture` and answers 403 itself.
async fn serve_compat_refusing(log: &Log) -> std::net::SocketAddr {
    use webchan::compat::{Options, SendOptions};
    let (a, b, c) = (log.clone(), log.clone(), log.clone());
    let options = Options::new()
        .on_open(move |h| {
            a.lock().unwrap().push("open".into());
            let _ = h.send("hello after a 403", SendOptions::new());
        })
        .on_error(move |_, e| b.lock().unwrap().push(format!("error {e}")))
        .on_close(move |_, i| c.lock().unwrap().push(format!("close {:?}", i.code)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    serve_service(
        listener,
        hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            // The handler makes the channel, then decides to refuse (say, an auth check): it
            // returns its own response instead of the channel's.
            drop(webchan::compat::as_channel(request, options.clone()));
            async move { Ok::<_, std::convert::Infallible>(forbidden()) }
        }),
    );
    addr
}

/// Waits (5 s at most) until the log has an entry starting with `prefix`.
async fn wait_for_entry(log: &Log, prefix: &str) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let seen = log.lock().unwrap().clone();
        if seen.iter().any(|s| s.starts_with(prefix)) || tokio::time::Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The channel closes (on_error, then on_close; no on_open) soon after the 403, while the
/// client keeps its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_a_dropped_response_future_closes_the_channel_at_once() {
    let log: Log = std::sync::Arc::default();
    let addr = serve_compat_refusing(&log).await;
    let _tcp = upgrade_and_expect_403(addr).await;
    let seen = wait_for_entry(&log, "close").await;
    assert!(
        seen.len() == 2
            && seen[0].starts_with("error websocket upgrade did not complete")
            && seen[1] == "close Some(1006)",
        "with the connection still open, a dropped ResponseFuture must give on_error then \
         on_close(1006), never on_open; got {seen:?}"
    );
}

/// The client half-closes after the 403: the server must not "open" a WebSocket on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_a_dropped_response_future_never_opens_after_the_client_half_closes() {
    let log: Log = std::sync::Arc::default();
    let addr = serve_compat_refusing(&log).await;
    let tcp = upgrade_and_expect_403(addr).await;
    let rest = bytes_after_half_close(tcp).await;
    let seen = wait_for_entry(&log, "close").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen_later = log.lock().unwrap().clone();
    assert!(
        !seen_later.iter().any(|s| s == "open") && rest.is_empty(),
        "after a 403: on_open must not run, nothing may follow the response; got {} bytes \
         ({:?}), callbacks: {seen_later:?}",
        rest.len(),
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(seen, seen_later, "a callback after on_close");
    assert_eq!(seen_later.last().map(String::as_str), Some("close Some(1006)"), "{seen_later:?}");
}

/// The status line of the answer to a raw request.
async fn status_of(addr: std::net::SocketAddr, req: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while !out.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn an_upgrade_without_exactly_one_host_header_is_400() {
    // RFC 6455 §4.2.1 (2) asks for a Host header, RFC 9112 §3.2 for exactly one on HTTP/1.1;
    // hyper does not check. Before 2026-12-05 both got a 101.
    let addr = serve(Config::default(), echo_or_ok).await;
    let upgrade = |host: &str| {
        format!(
            "GET /ws HTTP/1.1\r\n{host}Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    };
    let with_host = status_of(addr, upgrade("Host: example.com\r\n")).await;
    assert!(with_host.starts_with("HTTP/1.1 101"), "{with_host}");
    let none = status_of(addr, upgrade("")).await;
    let two = status_of(addr, upgrade("Host: a.example\r\nHost: b.example\r\n")).await;
    assert!(
        none.starts_with("HTTP/1.1 400") && two.starts_with("HTTP/1.1 400"),
        "RFC 6455 §4.2.1 (2) needs a Host header and RFC 9112 §3.2 exactly one: without a Host \
         the upgrade got {none:?}, with two Hosts {two:?}"
    );
}
