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

#[tokio::test]
async fn a_non_ascii_event_id_comes_back_from_last_event_id() {
    // A browser sends the last id back UTF-8 encoded; `HeaderValue::to_str` takes visible
    // ASCII only, so before 2026-12-05 an id such as this one came back as `None`.
    // The id the server may send: accepted by the Event builder.
    assert!(sse::Event::new().id("é-7").data("x").to_bytes().is_ok());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default(), move |ch: Channel| {
        let _ = tx.send(ch.last_event_id().map(str::to_owned));
        async move {
            ch.close().await;
        }
    })
    .await;
    // The reconnecting EventSource's request: Accept and Last-Event-ID, in UTF-8.
    let mut req = get(addr, "/");
    req.headers_mut().insert("accept", "text/event-stream".parse().unwrap());
    req.headers_mut()
        .insert("last-event-id", http::HeaderValue::from_bytes("é-7".as_bytes()).unwrap());
    let _ = http1_get(addr, req).await;
    assert_eq!(rx.recv().await.unwrap().as_deref(), Some("é-7"));
}

#[tokio::test]
async fn a_server_sent_event_is_refused_on_a_plain_http_stream() {
    // `Message::Sse` is for a stream in SSE mode; on a plain one its framing went into the
    // body as raw UTF-8 bytes, whatever the charset, before 2026-12-05 (a WebSocket refused it).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve_with(
        Config::default().sse(sse::Mode::Never),
        |mut reply| {
            reply
                .headers_mut()
                .insert("content-type", "text/plain; charset=utf-16".parse().unwrap());
            reply
        },
        move |ch: Channel| {
            let tx = tx.clone();
            async move {
                let s = ch.sender();
                let sent = s.send(sse::Event::new().data("hi").into()).await;
                s.close().await;
                let _ = tx.send(sent);
            }
        },
    )
    .await;
    let response = http1_get(addr, get(addr, "/")).await;
    let sent = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    assert!(
        matches!(sent, Err(webchan::Error::InvalidMessage(_))),
        "accepted ({sent:?}); a text/plain UTF-16 body got the UTF-8 bytes {:?}",
        response.body()
    );
}

#[tokio::test]
async fn server_sent_events_count_all_their_bytes_against_the_queue_limit() {
    // Only an event's data counted against the queue limit: events with a 1 MiB comment were
    // all taken, 50 MiB under this 64 KiB limit, before 2026-12-05.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let config = Config::default().queue_limit(64 * 1024);
    let addr = serve(config, move |ch: Channel| {
        let tx = tx.clone();
        async move {
            let s = ch.sender();
            let big = "x".repeat(1 << 20);
            let mut accepted = 0usize;
            for _ in 0..50 {
                let event = sse::Event::new().comment(big.clone()).data("tick");
                match s.try_send(event.into()) {
                    Ok(completion) => {
                        drop(completion);
                        accepted += big.len();
                    }
                    Err((e, _)) => {
                        assert!(e.is_queue_full(), "{e}");
                        break;
                    }
                }
            }
            let _ = tx.send(accepted);
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(ch);
        }
    })
    .await;
    // A client that asks for the event stream and reads nothing.
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n").await.unwrap();
    let accepted = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    // The limit is 64 KiB: one message past it is allowed (an empty queue takes anything), and
    // hyper and the kernel may hold a few MiB more; 50 MiB is not bounded by the limit.
    assert!(
        accepted <= 8 << 20,
        "{} MiB of events queued by try_send with a 64 KiB queue limit and a client that reads nothing",
        accepted >> 20
    );
}

#[tokio::test]
async fn files_and_readers_are_refused_on_an_sse_stream_even_when_empty() {
    // The body refuses each binary piece; an empty file or reader has none, so it was
    // accepted, before 2026-12-05. Now every file and reader is refused at the send; inside a
    // sequence, as it comes (an empty one there was accepted until stop 27, 2026-12-05).
    let dir = std::env::temp_dir();
    let empty = dir.join(format!("webchan-sse-empty-{}", std::process::id()));
    let full = dir.join(format!("webchan-sse-full-{}", std::process::id()));
    std::fs::write(&empty, b"").unwrap();
    std::fs::write(&full, b"abc").unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (e2, f2) = (empty.clone(), full.clone());
    let addr = serve(Config::default().sse(sse::Mode::Always), move |ch: Channel| {
        let tx = tx.clone();
        let (e2, f2) = (e2.clone(), f2.clone());
        async move {
            let s = ch.sender();
            let results = vec![
                ("a file of 3 bytes", s.send(Message::file(&f2)).await),
                ("a reader of 3 bytes", s.send(Message::reader(&b"abc"[..])).await),
                ("an empty file", s.send(Message::file(&e2)).await),
                ("an empty reader", s.send(Message::reader(&b""[..])).await),
                ("seq[empty binary]", s.send(Message::seq([Message::from(Vec::new())])).await),
                ("seq[empty file]", s.send(Message::seq([Message::file(&e2)])).await),
                ("seq[empty reader]", s.send(Message::seq([Message::reader(&b""[..])])).await),
            ];
            s.close().await;
            let _ = tx.send(results);
        }
    })
    .await;
    let _ = http1_get(addr, get(addr, "/")).await;
    let results = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    let _ = std::fs::remove_file(&empty);
    let _ = std::fs::remove_file(&full);
    let wrong: Vec<String> = results
        .iter()
        .filter(|(_, r)| !matches!(r, Err(webchan::Error::InvalidMessage(_))))
        .map(|(what, r)| format!("{what}: {r:?}"))
        .collect();
    assert!(wrong.is_empty(), "not refused with InvalidMessage on an SSE stream: {wrong:?}");
}

/// Auto mode makes a stream SSE "when the request accepts `text/event-stream`": a `q` of 0
/// says it does not (RFC 9110 §12.4.2), any other `q` that it does. Before stop 28
/// (2026-12-05) `text/event-stream;q=0` got an event stream (`data: plain` for "plain").
#[tokio::test]
async fn an_accept_with_q_0_for_event_streams_refuses_them() {
    let addr = serve(Config::default(), |ch: Channel| async move {
        let _ = ch.sender().send_and_close("plain".into()).await;
    })
    .await;
    for (accept, sse) in [
        ("text/event-stream", true),
        ("text/html, text/event-stream; q=0.5", true),
        ("Text/Event-Stream;Q=1.0", true),
        ("text/event-stream;q=0, text/plain", false),
        ("text/plain, text/event-stream ; q = 0.000", false),
        ("*/*", false),
    ] {
        let mut req = get(addr, "/");
        req.headers_mut().insert("accept", accept.parse().unwrap());
        let response = http1_get(addr, req).await;
        let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap());
        assert_eq!(content_type == Some("text/event-stream"), sse, "{accept}: {content_type:?}");
        let body: &[u8] = if sse { b"data: plain\n\n" } else { b"plain" };
        assert_eq!(&response.body()[..], body, "{accept}");
    }
}
