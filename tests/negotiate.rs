//! Request classification and WebSocket handshake checks, over real sockets: a malformed
//! upgrade gets a 4xx whose body says why, and no channel.

mod support;

use std::time::Duration;

use support::*;
use webchan::Config;

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
