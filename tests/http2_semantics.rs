//! The HTTP/2 semantics of HTTP stream channels, over real sockets on 127.0.0.1: many streams
//! on one connection, RST_STREAM, windows of 0, HEAD, statuses without content. Written in a
//! review of stop 27 (2026-12-05).

mod support;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use webchan::{Channel, Config, Event, Message};

type Client = hyper::client::conn::http2::SendRequest<BoxBody<Bytes, Infallible>>;

async fn h2(addr: std::net::SocketAddr, window: Option<u32>) -> Client {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut b = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    if let Some(w) = window {
        b.initial_stream_window_size(w).adaptive_window(false);
    }
    let (sender, conn) = b.handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    sender
}

fn req(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
) -> http::Request<BoxBody<Bytes, Infallible>> {
    http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(http_body_util::Empty::new().boxed())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_streams_on_one_connection() {
    let addr = serve(Config::default(), |ch: Channel| async move {
        let path = ch.originating_request().uri.path().to_owned();
        let s = ch.sender();
        for i in 0..5 {
            s.send(format!("{path}:{i};").into()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        s.close().await;
    })
    .await;
    let client = h2(addr, None).await;
    let mut tasks = Vec::new();
    for n in 0..150 {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.ready().await.unwrap();
            let r = c.send_request(req(addr, "GET", &format!("/s{n}"))).await.unwrap();
            let body = r.into_body().collect().await.unwrap().to_bytes();
            let want: String = (0..5).map(|i| format!("/s{n}:{i};")).collect();
            assert_eq!(body, want.as_bytes());
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(20), t).await.expect("stream hung").unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rst_stream_mid_stream_closes_that_channel_only() {
    let (addr, mut channels) = serve_channels(Config::default()).await;
    let client = h2(addr, None).await;
    let mut client1 = client.clone();
    let r1 = tokio::spawn(async move { client1.send_request(req(addr, "GET", "/one")).await });
    let mut ch1 = next_channel(&mut channels).await;
    // The head goes at the first send.
    tokio::time::timeout(Duration::from_secs(10), ch1.send("first".into()))
        .await
        .expect("first send hung")
        .unwrap();
    let r1 =
        tokio::time::timeout(Duration::from_secs(10), r1).await.expect("no head").unwrap().unwrap();
    let mut client2 = client.clone();
    let other = tokio::spawn(async move { client2.send_request(req(addr, "GET", "/two")).await });
    let ch2 = next_channel(&mut channels).await;
    let mut body1 = r1.into_body();
    let f = tokio::time::timeout(Duration::from_secs(10), body1.frame())
        .await
        .expect("no frame")
        .unwrap()
        .unwrap();
    assert_eq!(f.into_data().unwrap(), "first");
    drop(body1); // RST_STREAM(CANCEL)
                 // The channel closes; later sends fail.
    let mut events = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(10), ch1.next())
        .await
        .expect("no Closed within 10 s of the client's RST_STREAM")
    {
        events.push(e);
    }
    assert!(matches!(events.last(), Some(Event::Closed(_))), "{events:?}");
    let late = tokio::time::timeout(Duration::from_secs(10), ch1.send("late".into()))
        .await
        .expect("late send hung");
    assert!(late.unwrap_err().is_closed());
    // The other stream on the connection is unaffected.
    let s2 = ch2.sender();
    tokio::time::timeout(Duration::from_secs(10), s2.send("two".into()))
        .await
        .expect("s2 send hung")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), s2.close()).await.expect("s2 close hung");
    let r2 = tokio::time::timeout(Duration::from_secs(10), other)
        .await
        .expect("other hung")
        .unwrap()
        .unwrap();
    assert_eq!(r2.into_body().collect().await.unwrap().to_bytes(), "two");
}

/// Same, without a timeout: the send waits (backpressure), then the client opens the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_window_then_the_client_leaves() {
    let (addr, mut channels) = serve_channels(Config::default()).await;
    let mut client = h2(addr, Some(0)).await;
    let pending = tokio::spawn(async move {
        let r = client.send_request(req(addr, "GET", "/")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(r);
        // keep the connection
        tokio::time::sleep(Duration::from_secs(20)).await;
        drop(client);
    });
    let ch = next_channel(&mut channels).await;
    let sender = ch.sender();
    let sent = tokio::time::timeout(Duration::from_secs(10), sender.send("hello".into()))
        .await
        .expect("the send hung after the client reset its stream");
    assert!(sent.is_err(), "{sent:?}");
    pending.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_request() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default(), move |ch: Channel| {
        let tx = tx.clone();
        async move {
            let s = ch.sender();
            let a = s.send("twelve bytes".into()).await;
            let b = s.send("more".into()).await;
            let _ = tx.send((a.is_ok(), b.is_err()));
        }
    })
    .await;
    let mut client = h2(addr, None).await;
    let r = client.send_request(req(addr, "HEAD", "/")).await.unwrap();
    println!("{:?}", r.headers());
    let body = tokio::time::timeout(Duration::from_secs(5), r.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert!(body.is_empty());
    assert_eq!(rx.recv().await.unwrap(), (true, true));
    // The connection goes on.
    let r = client.send_request(req(addr, "GET", "/")).await.unwrap();
    let body = tokio::time::timeout(Duration::from_secs(5), r.into_body().collect()).await;
    println!("{body:?}");
}

/// RFC 9113 §8.1.1: a 204 (or 304) response with DATA is malformed; RFC 9110 §8.6: no
/// Content-Length on a 204.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_204_sent_whole_has_no_content_length_nor_data() {
    let addr = serve(Config::default(), |ch: Channel| async move {
        let _ = ch
            .sender()
            .send_and_close(Message::response(
                http::StatusCode::NO_CONTENT,
                http::HeaderMap::new(),
                "oops",
            ))
            .await;
    })
    .await;
    let mut client = h2(addr, None).await;
    let r = client.send_request(req(addr, "GET", "/")).await;
    println!("{r:?}");
    let r = r.unwrap();
    assert_eq!(r.status(), 204);
    let headers = r.headers().clone();
    let body = r.into_body().collect().await.map(|b| b.to_bytes());
    println!("{headers:?} {body:?}");
    assert!(headers.get("content-length").is_none(), "{headers:?}");
    assert!(body.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_204_stream_with_messages_after() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default(), move |ch: Channel| {
        let tx = tx.clone();
        async move {
            let s = ch.sender();
            let a = s
                .send(Message::response(http::StatusCode::NO_CONTENT, http::HeaderMap::new(), "x"))
                .await;
            let b = s.send("after".into()).await;
            let c = tokio::time::timeout(Duration::from_secs(5), s.close()).await.is_ok();
            let _ = tx.send(format!("{a:?} {b:?} close returned: {c}"));
        }
    })
    .await;
    let mut client = h2(addr, None).await;
    let r = client.send_request(req(addr, "GET", "/")).await;
    let r = r.unwrap();
    let status = r.status();
    let body = tokio::time::timeout(Duration::from_secs(5), r.into_body().collect())
        .await
        .map(|b| b.map(|b| b.to_bytes()).map_err(|e| e.to_string()));
    let sends = rx.recv().await.unwrap();
    println!("status {status} body {body:?} sends {sends}");
    assert_eq!(status, 204);
    let body = body.expect("204 body hung").expect("204 body failed");
    assert!(body.is_empty(), "DATA on a 204: {body:?}");
}

/// A request body the handler never reads, sent while the stream flows and never finished:
/// the response arrives whole, and the client's upload is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_request_body_while_the_stream_flows() {
    let addr = serve(Config::default(), |ch: Channel| async move {
        let s = ch.sender();
        for i in 0..5 {
            s.send(format!("tick {i}\n").into()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s.close().await;
    })
    .await;
    let mut client = h2(addr, None).await;
    let (mut tx, rx) = futures::channel::mpsc::channel::<Bytes>(1);
    let body = http_body_util::StreamBody::new(rx.map(|b| Ok::<_, Infallible>(Frame::data(b))));
    let request =
        http::Request::post(format!("http://{addr}/")).body(BodyExt::boxed(body)).unwrap();
    let feeder = tokio::spawn(async move {
        use futures::SinkExt;
        let mut sent = 0usize;
        loop {
            if tx.send(Bytes::from(vec![b'z'; 8192])).await.is_err() {
                return sent;
            }
            sent += 8192;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let r = client.send_request(request).await.unwrap();
    let body = tokio::time::timeout(Duration::from_secs(10), r.into_body().collect())
        .await
        .expect("the stream did not end")
        .unwrap()
        .to_bytes();
    assert_eq!(body, "tick 0\ntick 1\ntick 2\ntick 3\ntick 4\n");
    // The upload ends (the server reset the request half with NO_ERROR), so the feeder's
    // channel closes.
    let sent = tokio::time::timeout(Duration::from_secs(5), feeder).await;
    println!("feeder: {sent:?}");
    // And the connection still serves.
    let r = client.send_request(req(addr, "GET", "/")).await.unwrap();
    let body = tokio::time::timeout(Duration::from_secs(10), r.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(body.len(), 35);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn originating_request() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default(), move |ch: Channel| {
        let tx = tx.clone();
        async move {
            let r = ch.originating_request();
            let _ = tx.send((r.method.clone(), r.uri.clone(), r.version, r.headers.clone()));
            ch.sender().send_and_close("ok".into()).await.unwrap();
        }
    })
    .await;
    let mut client = h2(addr, None).await;
    let request = http::Request::builder()
        .method("DELETE")
        .uri(format!("http://{addr}/p/q?x=%20y"))
        .header("x-a", "1")
        .header("x-a", "2")
        .body(http_body_util::Empty::new().boxed())
        .unwrap();
    let r = client.send_request(request).await.unwrap();
    assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), "ok");
    let (m, uri, v, h) = rx.recv().await.unwrap();
    println!("{m} {uri} {v:?} {h:?}");
    assert_eq!(m, http::Method::DELETE);
    assert_eq!(uri.to_string(), format!("http://{addr}/p/q?x=%20y"));
    assert_eq!(v, http::Version::HTTP_2);
    let xa: Vec<_> = h.get_all("x-a").iter().collect();
    assert_eq!(xa, ["1", "2"]);
}

/// A stream with a declared `Content-Length` that ends short of it (here a close after 10 of
/// 1,000 bytes) is reset, not ended: END_STREAM would make a body shorter than its length,
/// malformed (RFC 9113 §8.1.1), which a client could take for whole. Before stop 28
/// (2026-12-05) the client got the 10 bytes and END_STREAM; the application's side was
/// right (`Error(UnexpectedEof)`, `Closed`) and still is. Over HTTP/1.1 hyper drops the
/// connection, as before (`http1_semantics`).
#[tokio::test]
async fn a_declared_length_cut_short_resets_the_stream() {
    use support::h2raw::*;
    let addr = serve(Config::default(), |ch: Channel| async move {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from_static("1000"));
        let head = Message::response(http::StatusCode::OK, headers, vec![b'x'; 10]);
        let _ = ch.sender().send(head).await;
        ch.close().await;
    })
    .await;
    let mut h2 = H2Raw::connect(addr).await;
    let response = h2.get(addr, 1, "/").await;
    assert_eq!(response.flags & END_STREAM, 0, "{response:?}");
    let frames = h2.collect(Duration::from_secs(2)).await;
    let seen = describe(&frames);
    let data: usize = frames.iter().filter(|f| f.ty == DATA).map(|f| f.payload.len()).sum();
    assert_eq!(data, 10, "{seen:?}");
    assert!(!frames.iter().any(|f| f.flags & END_STREAM != 0), "ended, not reset: {seen:?}");
    assert!(frames.iter().any(|f| f.ty == RST_STREAM && f.stream == 1), "{seen:?}");
}
