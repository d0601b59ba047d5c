//! Server-Sent Events mode of the HTTP stream channel: exact bytes over a hyper client, curl
//! over HTTP/1.0, HTTP/1.1 and h2c, keepalive comments, and the refusals.

mod support;

use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use support::*;
use webchan::{sse, Channel, Config, Event, Message};

fn sse_get(
    addr: std::net::SocketAddr,
    path: &str,
) -> http::Request<http_body_util::Empty<bytes::Bytes>> {
    let mut req = get(addr, path);
    req.headers_mut().insert("accept", "text/event-stream".parse().unwrap());
    req
}

#[tokio::test]
async fn the_head_goes_out_at_open_and_text_and_events_are_framed_exactly() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (addr, mut channels) = serve_channels(Config::default()).await;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let responding =
        tokio::spawn(async move { sender.send_request(sse_get(addr, "/events")).await });
    let ch = next_channel(&mut channels).await;
    // The head arrives before anything is sent.
    let response =
        tokio::time::timeout(Duration::from_secs(10), responding).await.unwrap().unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let s = ch.sender();
    tokio::spawn(async move {
        s.send("one line".into()).await.unwrap();
        s.send("multi\nline\r\nwith\rall endings".into()).await.unwrap();
        let ev = sse::Event::new().event("tick").id("7").data("{}").retry(Duration::from_secs(3));
        s.send(ev.into()).await.unwrap();
        s.close().await;
        let _ = tx.send(());
    });
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        "data: one line\n\n\
         data: multi\ndata: line\ndata: with\ndata: all endings\n\n\
         event: tick\ndata: {}\nid: 7\nretry: 3000\n\n"
    );
    rx.recv().await.unwrap();
}

#[tokio::test]
async fn invalid_events_binary_and_response_heads_are_errors_and_the_stream_goes_on() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default().sse(sse::Mode::Always), move |ch: Channel| {
        let tx = tx.clone();
        async move {
            let s = ch.sender();
            let bad_id = s.send(sse::Event::new().id("a\nb").data("x").into()).await;
            let nul_id = s.send(sse::Event::new().id("a\0b").data("x").into()).await;
            let bad_type = s.send(sse::Event::new().event("a\rb").data("x").into()).await;
            let binary = s.send(Message::from(vec![1u8, 2])).await;
            let head =
                s.send(Message::response(http::StatusCode::OK, http::HeaderMap::new(), "x")).await;
            s.send("after".into()).await.unwrap();
            s.close().await;
            let _ = tx.send([bad_id, nul_id, bad_type, binary, head]);
        }
    })
    .await;
    // No Accept header: Mode::Always makes it SSE anyway.
    let response = http1_get(addr, get(addr, "/")).await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(&response.body()[..], b"data: after\n\n");
    for result in tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap() {
        assert!(result.unwrap_err().is_invalid_message());
    }
}

#[tokio::test]
async fn a_quiet_stream_gets_keepalive_comments() {
    let config = Config::default().sse_keepalive(Some(Duration::from_millis(100)));
    let addr = serve(config, |ch: Channel| async move {
        tokio::time::sleep(Duration::from_millis(550)).await;
        ch.sender().send("late".into()).await.unwrap();
        ch.close().await;
    })
    .await;
    let response = http1_get(addr, sse_get(addr, "/")).await;
    let body = std::str::from_utf8(response.body()).unwrap().to_owned();
    let comments = body.matches(":\n\n").count();
    assert!(comments >= 3, "{comments} keepalive comments in 550 ms at 100 ms: {body:?}");
    assert!(body.ends_with("data: late\n\n"), "{body:?}");
    assert_eq!(body.replace(":\n\n", ""), "data: late\n\n");
}

#[tokio::test]
async fn a_keepalive_of_zero_means_none_not_a_flood_of_comments() {
    // Zero means no keepalive, as for `Config::timeout`. Before 2026-12-05 it sent a comment at
    // every tick of the timer (~1,000 a second), a busy loop of hyper's connection task.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = Config::default().sse_keepalive(Some(Duration::ZERO));
    let addr = serve(config, |ch: Channel| async move {
        // A quiet stream: nothing to send for a while.
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(ch);
    })
    .await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    // The head, and no comment: not megabytes of ":\n\n".
    assert!(got.len() < 4096, "{} bytes in 1 s of a quiet SSE stream", got.len());
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
    assert_eq!(text.matches(":\n\n").count(), 0, "{text:?}");
}

#[tokio::test]
async fn a_keepalive_of_duration_max_means_none_and_does_not_panic() {
    // `Duration::MAX` as "never". Before 2026-12-05 the keepalive's deadline overflowed
    // (`Instant + Duration`) and panicked.
    let config = Config::default().sse_keepalive(Some(Duration::MAX));
    let addr = serve(config, |ch: Channel| async move {
        let s = ch.sender();
        let _ = s.send("one".into()).await;
        let _ = s.send("two".into()).await;
        s.close().await;
    })
    .await;
    let response = http1_get(addr, sse_get(addr, "/")).await;
    assert_eq!(&response.body()[..], b"data: one\n\ndata: two\n\n");
}

#[tokio::test]
async fn mode_never_keeps_a_plain_stream_and_last_event_id_is_exposed() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default().sse(sse::Mode::Never), move |ch: Channel| {
        let _ = tx.send(ch.last_event_id().map(str::to_owned));
        async move {
            ch.sender().send_and_close("plain".into()).await.unwrap();
        }
    })
    .await;
    let mut req = sse_get(addr, "/");
    req.headers_mut().insert("last-event-id", "41".parse().unwrap());
    let response = http1_get(addr, req).await;
    assert!(response.headers().get("content-type").is_none());
    assert_eq!(&response.body()[..], b"plain");
    assert_eq!(rx.recv().await.unwrap().as_deref(), Some("41"));
}

#[tokio::test]
async fn status_204_ends_an_sse_stream_at_once() {
    let (rec, mut rx) = recorder();
    let addr = serve_with(
        Config::default(),
        |mut reply| {
            *reply.status_mut() = http::StatusCode::NO_CONTENT;
            reply
        },
        rec,
    )
    .await;
    let response = http1_get(addr, sse_get(addr, "/")).await;
    assert_eq!(response.status(), 204);
    assert!(response.body().is_empty());
    let events = events_until_closed(&mut rx).await;
    assert!(matches!(events.last(), Some(Event::Closed(_))));
}

/// curl, a real client, over HTTP/1.0, HTTP/1.1 and h2c: every event arrives and curl exits 0.
#[tokio::test]
async fn curl_reads_the_stream_over_http_1_0_1_1_and_h2c() {
    let addr = serve(Config::default(), |ch: Channel| async move {
        let s = ch.sender();
        for i in 0..3 {
            s.send(sse::Event::new().id(i.to_string()).data(format!("n={i}")).into())
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        s.close().await;
    })
    .await;
    let expected = "data: n=0\nid: 0\n\ndata: n=1\nid: 1\n\ndata: n=2\nid: 2\n\n";
    for flag in ["--http1.0", "--http1.1", "--http2-prior-knowledge"] {
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "-N", "--max-time", "10", flag, "-H", "Accept: text/event-stream"])
            .arg(format!("http://{addr}/"))
            .output()
            .await
            .expect("curl is needed for this test");
        assert!(out.status.success(), "{flag}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "{flag}");
    }
}
