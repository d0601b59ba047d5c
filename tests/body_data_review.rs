//! A review of `BodyData` made one pointer wide (2026-12-06, 9cd37ca: its buffers and receipt
//! boxed): `BodyData` as a `Buf` in code outside the crate, the completion of gathered frames'
//! sends (also under random `Buf` calls), HTTP/1.1 and HTTP/2 (flow control that stops a frame
//! midway), `BytesBody`, declared lengths, HEAD, SSE keepalive, clients that leave. Nothing
//! found; every test passes on the commit before the change too.

mod support;

use std::convert::Infallible;
use std::io::IoSlice;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::SinkExt;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use webchan::{BodyData, Channel, Completion, Config, Event, Message};

const T10: Duration = Duration::from_secs(10);

/// A channel made in-process (no connection): an HTTP/1.1 GET.
fn local_channel(config: Config) -> (webchan::Reply, Channel) {
    let request = http::Request::get("/").body(()).unwrap();
    webchan::as_channel(request, config).unwrap()
}

fn pending(c: &mut Completion) -> bool {
    futures::FutureExt::now_or_never(&mut *c).is_none()
}

/// Messages of `size` bytes filled with their number's low byte.
fn filled(i: usize, size: usize) -> Bytes {
    Bytes::from(vec![(i % 251) as u8; size])
}

#[tokio::test]
async fn a_full_bodys_data_as_a_buf_outside_the_crate() {
    let mut body = webchan::Body::full(Bytes::from_static(b"hello world"));
    let mut data: BodyData = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(body.frame().await.is_none());
    assert_eq!(data.remaining(), 11);
    assert_eq!(data.chunk(), b"hello world");
    let mut slots = [IoSlice::new(&[]); 4];
    assert_eq!(data.chunks_vectored(&mut slots), 1);
    assert_eq!(&*slots[0], b"hello world");
    assert_eq!(data.chunks_vectored(&mut []), 0);
    let clone = data.clone();
    data.advance(6);
    assert_eq!(data.chunk(), b"world");
    assert_eq!(clone.remaining(), 11, "a clone is its own cursor");
    assert_eq!(data.copy_to_bytes(2), "wo");
    assert_eq!(Bytes::from(data), "rld");
    assert_eq!(Bytes::from(clone), "hello world");

    let mut empty = BodyData::default();
    assert_eq!(empty.remaining(), 0);
    assert!(empty.chunk().is_empty());
    assert!(!empty.has_remaining());
    empty.advance(0);
    assert!(empty.copy_to_bytes(0).is_empty());
    assert_eq!(empty.chunks_vectored(&mut [IoSlice::new(b"x")]), 0);
    assert!(Bytes::from(empty.clone()).is_empty());
    assert!(Bytes::from(BodyData::from(Bytes::new())).is_empty());
    assert!(!format!("{:?}", BodyData::default()).is_empty());

    // An empty full body: one empty frame or none, never bytes.
    let mut body = webchan::Body::full(Bytes::new());
    let mut total = 0;
    while let Some(frame) = body.frame().await {
        total += frame.unwrap().into_data().unwrap().remaining();
    }
    assert_eq!(total, 0);

    // Advancing past the end panics, with or without data.
    let r = std::panic::catch_unwind(|| BodyData::default().advance(1));
    assert!(r.is_err());
    let r = std::panic::catch_unwind(|| BodyData::from(Bytes::from_static(b"ab")).advance(3));
    assert!(r.is_err());
    let r = std::panic::catch_unwind(|| BodyData::default().copy_to_bytes(1));
    assert!(r.is_err());
}

/// Queues `count` messages of `size` bytes with `try_send` on a local channel, awaits the
/// reply and gives the completions and the first frame of its body.
async fn local_gathered(
    config: Config,
    count: usize,
    size: usize,
) -> (Channel, webchan::Body, Vec<Completion>, BodyData) {
    let (reply, ch) = local_channel(config);
    let sender = ch.sender();
    let mut completions = Vec::new();
    for i in 0..count {
        completions.push(sender.try_send(Message::Binary(filled(i, size))).unwrap());
    }
    let response = tokio::time::timeout(T10, reply).await.unwrap();
    let mut body = response.into_body();
    let data = tokio::time::timeout(T10, body.frame()).await.unwrap().unwrap().unwrap();
    (ch, body, completions, data.into_data().unwrap())
}

#[tokio::test]
async fn a_gathered_frame_used_as_a_buf_completes_its_sends_only_when_the_original_is_taken() {
    const SIZE: usize = 700; // above the coalescing threshold: one buffer per message
    let (_ch, _body, mut completions, mut data) = local_gathered(Config::default(), 5, SIZE).await;
    let want: Vec<u8> = (0..5).flat_map(|i| filled(i, SIZE).to_vec()).collect();
    assert_eq!(data.remaining(), 5 * SIZE, "the five messages were gathered");
    let mut slots = [IoSlice::new(&[]); 8];
    let n = data.chunks_vectored(&mut slots);
    assert_eq!(n, 5);
    let joined: Vec<u8> = slots[..n].iter().flat_map(|s| s.iter().copied()).collect();
    assert!(joined == want);
    let mut two = [IoSlice::new(&[]); 2];
    assert_eq!(data.chunks_vectored(&mut two), 2);

    // A clone taken whole completes nothing.
    let mut clone = data.clone();
    assert!(Bytes::from(clone.clone()) == want[..]);
    let all = clone.copy_to_bytes(5 * SIZE);
    assert!(all == want[..]);
    drop(clone);
    tokio::task::yield_now().await;
    assert!(completions.iter_mut().all(pending), "a clone taken whole completed sends");

    // The original, taken piecewise across buffer edges: complete only at its last byte.
    let mut got = Vec::new();
    got.extend_from_slice(&data.copy_to_bytes(SIZE - 1));
    got.extend_from_slice(&data.copy_to_bytes(2)); // across the first edge: a copy
    let c = data.chunk().len();
    got.extend_from_slice(&data.chunk()[..c]);
    data.advance(c);
    got.extend_from_slice(&data.copy_to_bytes(SIZE + 10));
    tokio::task::yield_now().await;
    assert!(completions.iter_mut().all(pending), "sends completed before every byte was taken");
    let rest = data.remaining();
    got.extend_from_slice(&data.copy_to_bytes(rest - 1));
    assert!(completions.iter_mut().all(pending), "sends completed with a byte left");
    got.extend_from_slice(&Bytes::from(data));
    assert!(got == want, "bytes differ");
    for (i, c) in completions.into_iter().enumerate() {
        let r = tokio::time::timeout(T10, c).await.expect("a send never resolved");
        assert!(r.is_ok(), "send {i}: {r:?}");
    }
}

#[tokio::test]
async fn a_gathered_frame_dropped_half_taken_fails_its_sends_with_closed() {
    // hyper drops the body with the frame when its connection fails: so do we (with the body
    // kept, the sends wait for its end: by design, shared.rs `frame_lost`).
    let (mut ch, body, completions, mut data) = local_gathered(Config::default(), 4, 700).await;
    data.advance(1000);
    drop(data);
    drop(body);
    all_fail_closed_then_the_channel_closes(completions, &mut ch).await;
}

/// Every send fails `Closed` (none hangs), and the channel's last event is `Closed`.
async fn all_fail_closed_then_the_channel_closes(
    completions: Vec<webchan::Completion>,
    ch: &mut Channel,
) {
    for c in completions {
        let r = tokio::time::timeout(T10, c).await.expect("a send never resolved");
        assert!(r.as_ref().is_err_and(webchan::Error::is_closed), "{r:?}");
    }
    let events = all_events(ch).await;
    assert!(matches!(events.last(), Some(Event::Closed(_))), "{events:?}");
}

/// Reads at least `bytes` from the server, then stops reading: how many it read.
async fn read_at_least(tcp: &mut tokio::net::TcpStream, bytes: usize) -> usize {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 64 * 1024];
    let mut read = 0;
    while read < bytes {
        let n = tokio::time::timeout(T10, tcp.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "the server closed after {read} bytes");
        read += n;
    }
    read
}

/// Messages of `size` bytes numbered from 0, sent with `try_send` until the queue's limit
/// refuses one: their completions.
fn fill_the_queue(sender: &webchan::Sender, size: usize) -> Vec<webchan::Completion> {
    let mut completions = Vec::new();
    while let Ok(c) = sender.try_send(Message::Binary(filled(completions.len(), size))) {
        completions.push(c);
        assert!(completions.len() < 100, "the queue limit never refused");
    }
    completions
}

#[tokio::test]
async fn a_gathered_frame_keeps_its_queue_room_until_its_buffers_are_gone() {
    const LIMIT: usize = 4096;
    const SIZE: usize = 1000;
    let (reply, ch) = local_channel(Config::default().queue_limit(LIMIT));
    let sender = ch.sender();
    let completions = fill_the_queue(&sender, SIZE);
    let i = completions.len();
    let response = tokio::time::timeout(T10, reply).await.unwrap();
    let mut body = response.into_body();
    let mut data = tokio::time::timeout(T10, body.frame()).await.unwrap().unwrap().unwrap();
    let data = data.data_mut().unwrap();
    assert_eq!(data.remaining(), i * SIZE);
    // The messages behind the first still count: the queue takes at most what is left.
    let mut extra = 0;
    while sender.try_send(Message::Binary(filled(99, SIZE))).is_ok() {
        extra += 1;
        assert!(extra < 100);
    }
    assert!(
        (extra + i - 1) * SIZE <= LIMIT + SIZE,
        "{i} gathered, {extra} more taken: the gathered room was given back early"
    );
    let len = data.remaining();
    let _ = data.copy_to_bytes(len);
    let r = sender.try_send(Message::Binary(filled(98, SIZE)));
    assert!(r.is_ok(), "room not given back after the frame was taken: {:?}", r.err());
    for c in completions {
        assert!(tokio::time::timeout(T10, c).await.unwrap().is_ok());
    }
}

#[tokio::test]
async fn a_bytes_body_in_process_gives_buffers_completes_sends_and_gives_room_back() {
    const LIMIT: usize = 4096;
    const SIZE: usize = 1000;
    let (reply, ch) = local_channel(Config::default().queue_limit(LIMIT));
    let sender = ch.sender();
    let mut completions = fill_the_queue(&sender, SIZE);
    let i = completions.len();
    let response = tokio::time::timeout(T10, reply).await.unwrap();
    let mut body = response.into_body().into_bytes_body();
    let mut got = Vec::new();
    for (k, completion) in completions.iter_mut().enumerate() {
        let frame = tokio::time::timeout(T10, body.frame()).await.unwrap().unwrap().unwrap();
        let bytes = frame.into_data().unwrap();
        assert_eq!(bytes.len(), SIZE, "buffer {k}");
        got.push(bytes);
        if k + 1 < i {
            tokio::task::yield_now().await;
            assert!(pending(completion), "send {k} completed before its frame was out");
        }
    }
    for (k, c) in completions.into_iter().enumerate() {
        let r = tokio::time::timeout(T10, c).await.expect("a send never resolved");
        assert!(r.is_ok(), "send {k}: {r:?}");
        assert!(got[k].iter().all(|b| *b == (k % 251) as u8));
    }
    // Room is back: the queue takes a full limit again.
    let mut again = 0;
    while sender.try_send(Message::Binary(filled(7, SIZE))).is_ok() {
        again += 1;
        assert!(again < 100);
    }
    assert!(again + 1 >= i, "room not given back: {again} taken after {i}");
}

/// A server whose handler runs `run` on the channel and serves its reply's body as is or as
/// a `BytesBody`, on hyper-util's auto builder (HTTP/1.1 and HTTP/2).
async fn serve_body<F, Fut>(config: Config, bytes_body: bool, run: F) -> std::net::SocketAddr
where
    F: Fn(Channel) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let (config, run) = (config.clone(), run.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let (config, run) = (config.clone(), run.clone());
                    async move {
                        let (reply, ch) = webchan::as_channel(req, config).unwrap();
                        tokio::spawn(run(ch));
                        let response = reply.await;
                        Ok::<_, Infallible>(if bytes_body {
                            response.map(|b| {
                                b.into_bytes_body()
                                    .map_frame(|f| f.map_data(BodyData::from))
                                    .boxed_unsync()
                            })
                        } else {
                            response.map(|b| b.boxed_unsync())
                        })
                    }
                });
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder.http2().initial_connection_window_size(8 << 20);
                let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
            });
        }
    });
    addr
}

/// Sizes of a mixed stream: empty, tiny (coalesced), mid and large messages.
fn mixed_sizes(n: usize) -> Vec<usize> {
    let mut rng = Rng(0x9cd3_7ca0_1234_5678);
    (0..n)
        .map(|_| match rng.below(5) {
            0 => 0,
            1 => rng.between(1, 100),
            2 => rng.between(400, 700),
            3 => rng.between(1000, 5000),
            _ => rng.between(20_000, 70_000),
        })
        .collect()
}

/// Sends the mixed messages (some fed in bursts, some awaited) and reports every outcome.
async fn send_mixed(
    ch: Channel,
    sizes: Vec<usize>,
    out: tokio::sync::mpsc::UnboundedSender<Vec<Result<(), webchan::Error>>>,
) {
    let sender = ch.sender();
    let mut completions: Vec<Result<Completion, Result<(), webchan::Error>>> = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let payload = filled(i, *size);
        if i % 7 == 0 {
            // Awaited: the queue drains behind it.
            let r = tokio::time::timeout(
                Duration::from_secs(20),
                sender.send(Message::Binary(payload)),
            );
            completions.push(Err(r.await.expect("send hung")));
        } else {
            let c = loop {
                match sender.try_send(Message::Binary(payload.clone())) {
                    Ok(c) => break c,
                    Err((e, _)) if e.is_queue_full() => {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((e, _)) => panic!("{e}"),
                }
            };
            completions.push(Ok(c));
        }
    }
    let mut results = Vec::new();
    for c in completions {
        results.push(match c {
            Ok(c) => tokio::time::timeout(Duration::from_secs(20), c).await.expect("send hung"),
            Err(r) => r,
        });
    }
    sender.close().await;
    let _ = out.send(results);
}

async fn mixed_over(h2: bool, bytes_body: bool, limit: usize) {
    let sizes = mixed_sizes(600);
    let want: Vec<u8> =
        sizes.iter().enumerate().flat_map(|(i, s)| filled(i, *s).to_vec()).collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let s2 = sizes.clone();
    let addr = serve_body(Config::default().queue_limit(limit), bytes_body, move |ch| {
        send_mixed(ch, s2.clone(), tx.clone())
    })
    .await;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = if h2 {
        let (mut s, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let r = s.send_request(get(addr, "/")).await.unwrap();
        assert_eq!(r.version(), http::Version::HTTP_2);
        tokio::time::timeout(Duration::from_secs(30), r.into_body().collect()).await.unwrap()
    } else {
        let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        let r = s.send_request(get(addr, "/")).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), r.into_body().collect()).await.unwrap()
    };
    let body = body.unwrap().to_bytes();
    assert_eq!(body.len(), want.len());
    assert!(body[..] == want[..], "bytes differ");
    let results = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.unwrap().unwrap();
    for (i, r) in results.iter().enumerate() {
        assert!(r.is_ok(), "send {i} ({} bytes): {r:?}", sizes[i]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_messages_with_empty_ones_complete_over_h1() {
    mixed_over(false, false, 256 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_messages_with_empty_ones_complete_over_h2() {
    mixed_over(true, false, 256 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_messages_through_a_bytes_body_with_a_small_queue_limit_h1() {
    mixed_over(false, true, 4096).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_messages_through_a_bytes_body_with_a_small_queue_limit_h2() {
    mixed_over(true, true, 4096).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_messages_through_a_bytes_body_with_a_tiny_queue_limit() {
    // 3,000 messages of 600 bytes (not coalesced) under a 2 KiB limit, awaited by a sink.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve_body(Config::default().queue_limit(2048), true, move |ch| {
        let tx = tx.clone();
        async move {
            let (mut sink, _rx) = ch.split();
            let mut r = Ok(());
            for i in 0..3000 {
                r = r.and(sink.feed(Message::Binary(filled(i, 600))).await);
            }
            let r = r.and(tokio::time::timeout(T10, sink.flush()).await.expect("flush hung"));
            let _ = tx.send(r);
            let _ = SinkExt::close(&mut sink).await;
        }
    })
    .await;
    let response = http1_get(addr, get(addr, "/")).await;
    assert_eq!(response.body().len(), 3000 * 600);
    for (i, m) in response.body().chunks(600).enumerate() {
        assert!(m.iter().all(|b| *b == (i % 251) as u8), "message {i}");
    }
    let r = tokio::time::timeout(T10, rx.recv()).await.unwrap().unwrap();
    assert!(r.is_ok(), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_tiny_window_slow_reader_then_reset_no_ok_beyond_what_the_client_got() {
    const SIZE: usize = 1500;
    const COUNT: u32 = 200;
    const WINDOW: u32 = 4096;
    let (tx, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
    let (chtx, mut chrx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default(), move |ch: Channel| {
        let tx = tx.clone();
        let chtx = chtx.clone();
        async move {
            let sender = ch.sender();
            let mut completions = Vec::new();
            for n in 0..COUNT {
                let c = sender.try_send(Message::Binary(numbered(n, SIZE).into())).unwrap();
                completions.push(c);
            }
            let _ = chtx.send(ch);
            let mut results = Vec::new();
            for c in completions {
                let r = tokio::time::timeout(Duration::from_secs(20), c).await;
                results.push(r.map(|r| r.map_err(|e| e.is_closed())));
            }
            let _ = tx.send(results);
        }
    })
    .await;
    let mut client = h2_client_windowed(addr, WINDOW, Some(WINDOW)).await;
    let response = client.send_request(get(addr, "/")).await.unwrap();
    let mut body = response.into_body();
    let mut got = Vec::new();
    while got.len() < 20 * SIZE + 700 {
        let frame = tokio::time::timeout(T10, body.frame()).await.unwrap().unwrap().unwrap();
        got.extend_from_slice(&frame.into_data().unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(body);
    let mut ch = tokio::time::timeout(T10, chrx.recv()).await.unwrap().unwrap();
    let results =
        tokio::time::timeout(Duration::from_secs(30), outcomes.recv()).await.unwrap().unwrap();
    assert!(results.iter().all(Result::is_ok), "a send hung: {results:?}");
    let oks = results.iter().take_while(|r| matches!(r, Ok(Ok(())))).count();
    assert!(
        results[oks..].iter().all(|r| matches!(r, Ok(Err(true)))),
        "after the first failure all fail Closed: {results:?}"
    );
    let whole = got.len() / SIZE;
    for (n, m) in got.chunks_exact(SIZE).enumerate() {
        assert_eq!(m[..4], (n as u32).to_be_bytes());
    }
    // At most one window's worth beyond what the client read may have been written.
    let bound = (got.len() + WINDOW as usize) / SIZE;
    assert!(whole <= oks, "read {whole} whole, {oks} reported sent");
    assert!(oks <= bound, "{oks} reported sent, client read {} bytes (bound {bound})", got.len());
    let events = all_events(&mut ch).await;
    assert!(matches!(events.last(), Some(Event::Closed(_))), "{events:?}");
}

/// Declared length cut in the middle of a message, with the messages queued (fed) at once.
async fn declared_cut(h2: bool) {
    const SIZE: usize = 1000;
    const DECLARED: usize = 5 * SIZE + 300;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve_body(Config::default(), false, move |ch| {
        let tx = tx.clone();
        async move {
            let sender = ch.sender();
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::CONTENT_LENGTH, DECLARED.into());
            let mut cs = Vec::new();
            cs.push(
                sender
                    .try_send(Message::response(
                        http::StatusCode::OK,
                        headers,
                        Message::Binary(filled(0, SIZE)),
                    ))
                    .unwrap(),
            );
            for i in 1..10 {
                cs.push(sender.try_send(Message::Binary(filled(i, SIZE))).unwrap());
            }
            let mut results = Vec::new();
            for c in cs {
                results.push(tokio::time::timeout(Duration::from_secs(20), c).await.ok());
            }
            let _ = tx.send(results);
        }
    })
    .await;
    let (version, body) = if h2 {
        let mut s = h2_client(addr).await;
        let r = s.send_request(get(addr, "/")).await.unwrap();
        assert_eq!(r.headers()["content-length"], DECLARED.to_string());
        (r.version(), r.into_body().collect().await.unwrap().to_bytes())
    } else {
        let r = http1_get(addr, get(addr, "/")).await;
        assert_eq!(r.headers()["content-length"], DECLARED.to_string());
        (r.version(), r.into_body())
    };
    let want: Vec<u8> = (0..6).flat_map(|i| filled(i, SIZE).to_vec()).take(DECLARED).collect();
    assert!(body[..] == want[..], "{version:?}: {} bytes", body.len());
    let results = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.unwrap().unwrap();
    for (i, r) in results.iter().enumerate() {
        let r = r.as_ref().unwrap_or_else(|| panic!("send {i} hung"));
        if i <= 5 {
            assert!(r.is_ok(), "send {i}: {r:?}");
        } else {
            assert!(r.as_ref().is_err_and(webchan::Error::is_closed), "send {i}: {r:?}");
        }
    }
}

#[tokio::test]
async fn a_declared_length_cut_mid_message_with_queued_messages_h1() {
    declared_cut(false).await;
}

#[tokio::test]
async fn a_declared_length_cut_mid_message_with_queued_messages_h2() {
    declared_cut(true).await;
}

#[tokio::test]
async fn a_head_request_with_queued_messages_resolves_every_send() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve_body(Config::default(), false, move |ch| {
        let tx = tx.clone();
        async move {
            let sender = ch.sender();
            let mut cs = Vec::new();
            for i in 0..40 {
                cs.push(sender.try_send(Message::Binary(filled(i, 700 * (i % 3)))).unwrap());
            }
            let mut results = Vec::new();
            for c in cs {
                results.push(tokio::time::timeout(Duration::from_secs(20), c).await.is_ok());
            }
            let _ = tx.send(results);
        }
    })
    .await;
    for _ in 0..2 {
        let (head, chunks) = raw_chunks(addr, "HEAD", "/", "").await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(chunks.iter().all(Vec::is_empty), "a HEAD got a body: {head}");
        let results =
            tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.unwrap().unwrap();
        assert!(results.iter().all(|r| *r), "a send hung: {results:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_with_keepalives_between_events_and_empty_messages() {
    let config = Config::default()
        .sse(webchan::sse::Mode::Always)
        .sse_keepalive(Some(Duration::from_millis(200)));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve_body(config, false, move |ch| {
        let tx = tx.clone();
        async move {
            let sender = ch.sender();
            let mut results = Vec::new();
            for i in 0..6 {
                results.push(sender.send(format!("event {i}").into()).await);
                results.push(sender.send(Message::Binary(Bytes::new())).await);
                if i % 2 == 0 {
                    tokio::time::sleep(Duration::from_millis(700)).await;
                }
            }
            sender.close().await;
            let _ = tx.send(results);
        }
    })
    .await;
    for h2 in [false, true] {
        let body = if h2 {
            let mut s = h2_client(addr).await;
            let r = s.send_request(get(addr, "/")).await.unwrap();
            tokio::time::timeout(Duration::from_secs(20), r.into_body().collect())
                .await
                .unwrap()
                .unwrap()
                .to_bytes()
        } else {
            http1_get(addr, get(addr, "/")).await.into_body()
        };
        let text = String::from_utf8(body.to_vec()).unwrap();
        let events: Vec<&str> = text.lines().filter(|l| l.starts_with("data:")).collect();
        let want: Vec<String> = (0..6).map(|i| format!("data: event {i}")).collect();
        let events: Vec<String> =
            events.iter().map(|s| s.replace("data:event", "data: event")).collect();
        assert_eq!(events, want, "h2 {h2}: {text:?}");
        assert!(text.contains(":\n\n"), "no keepalive comment: {text:?}");
        let results = tokio::time::timeout(T10, rx.recv()).await.unwrap().unwrap();
        for (i, r) in results.iter().enumerate() {
            // An empty binary message on SSE may be refused as invalid; it must not hang or
            // break the stream.
            if i % 2 == 0 {
                assert!(r.is_ok(), "event send {i}: {r:?}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_with_frames_queued_in_hyper_fails_the_rest_closed() {
    use tokio::io::AsyncWriteExt;
    const SIZE: usize = 700;
    for run in 0..3 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_send_buffer_size(16 * 1024).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let server_buffer = socket.send_buffer_size().unwrap() as usize;
        let (chtx, mut channels) = tokio::sync::mpsc::unbounded_channel();
        let run_fn = move |ch: Channel| {
            let _ = chtx.send(ch);
            async {}
        };
        let addr = serve_on(
            socket.listen(16).unwrap(),
            Config::default().queue_limit(1 << 20),
            |r| r,
            run_fn,
        );
        let client = tokio::net::TcpSocket::new_v4().unwrap();
        client.set_recv_buffer_size(16 * 1024).unwrap();
        let client_buffer = client.recv_buffer_size().unwrap() as usize;
        let mut tcp = client.connect(addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut ch = next_channel(&mut channels).await;
        let sender = ch.sender();
        let mut cs = Vec::new();
        for n in 0..1400u32 {
            match sender.try_send(Message::Binary(numbered(n, SIZE).into())) {
                Ok(c) => cs.push(c),
                Err((e, _)) => panic!("{e}"),
            }
        }
        let read = read_at_least(&mut tcp, 100 * 1024).await;
        drop(tcp);
        let mut oks = 0;
        let mut closed = 0;
        for c in cs {
            match tokio::time::timeout(Duration::from_secs(20), c).await.expect("a send hung") {
                Ok(()) => oks += 1,
                Err(e) => {
                    assert!(e.is_closed(), "{e}");
                    closed += 1;
                }
            }
        }
        eprintln!("run {run}: {oks} ok, {closed} closed, read {read}");
        let bound = read + 2 * (server_buffer + client_buffer) + 2 * SIZE;
        assert!(
            oks * SIZE <= bound,
            "{oks} sends Ok, {} bytes, client read {read} (bound {bound})",
            oks * SIZE
        );
        assert!(closed > 0, "every send Ok though the client read {read} of {} bytes", 1400 * SIZE);
        let events = all_events(&mut ch).await;
        assert!(matches!(events.last(), Some(Event::Closed(_))), "{events:?}");
        assert!(tokio::time::timeout(T10, sender.send("late".into())).await.unwrap().is_err());
    }
}

#[tokio::test]
async fn a_gathered_frame_advanced_partway_lists_the_rest_and_reads_through_buf_helpers() {
    let (_ch, _body, completions, mut data) = local_gathered(Config::default(), 3, 600).await;
    data.advance(250);
    let mut slots = [IoSlice::new(&[]); 4];
    let n = data.chunks_vectored(&mut slots);
    assert_eq!(n, 3);
    assert_eq!(slots[0].len(), 350);
    assert_eq!(slots[1].len() + slots[2].len(), 1200);
    assert_eq!(data.get_u8(), 0);
    let mut out = [0u8; 400];
    data.copy_to_slice(&mut out); // across the first edge
    assert!(out[..349].iter().all(|b| *b == 0) && out[349..].iter().all(|b| *b == 1));
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut (&mut data).reader(), &mut rest).unwrap();
    assert_eq!(rest.len(), 1800 - 651);
    assert!(!data.has_remaining());
    for c in completions {
        assert!(tokio::time::timeout(T10, c).await.unwrap().is_ok());
    }
}

#[tokio::test]
async fn a_bytes_body_dropped_with_buffers_pending_fails_its_sends_and_closes() {
    let (reply, mut ch) = local_channel(Config::default().queue_limit(64 * 1024));
    let sender = ch.sender();
    let mut completions = Vec::new();
    for i in 0..5 {
        completions.push(sender.try_send(Message::Binary(filled(i, 700))).unwrap());
    }
    let response = tokio::time::timeout(T10, reply).await.unwrap();
    let mut body = response.into_body().into_bytes_body();
    let first = tokio::time::timeout(T10, body.frame()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.into_data().unwrap().len(), 700);
    drop(body);
    all_fail_closed_then_the_channel_closes(completions, &mut ch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_a_bytes_body_stream_resolves_every_send() {
    use tokio::io::AsyncWriteExt;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve_body(Config::default().queue_limit(8 * 1024), true, move |mut ch: Channel| {
        let tx = tx.clone();
        async move {
            let sender = ch.sender();
            let mut outcomes = (0usize, 0usize);
            for n in 0..20_000u32 {
                let r = tokio::time::timeout(
                    Duration::from_secs(20),
                    sender.send(Message::Binary(numbered(n, 700).into())),
                )
                .await
                .expect("a send hung");
                match r {
                    Ok(()) => outcomes.0 += 1,
                    Err(e) => {
                        assert!(e.is_closed(), "{e}");
                        outcomes.1 += 1;
                        break;
                    }
                }
            }
            let mut closed = false;
            while let Ok(Some(e)) = tokio::time::timeout(T10, ch.recv()).await {
                closed |= matches!(e, Event::Closed(_));
            }
            let _ = tx.send((outcomes, closed));
        }
    })
    .await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let read = read_at_least(&mut tcp, 200 * 1024).await;
    drop(tcp);
    let ((oks, failed), closed) =
        tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.unwrap().unwrap();
    eprintln!("{oks} ok, {failed} failed, read {read}");
    assert_eq!(failed, 1, "the sends never failed after the client left ({oks} Ok)");
    assert!(closed, "the channel never got Closed");
}

/// curl's stdout for `url` with `args`.
async fn curl(args: &[&str], url: String) -> Vec<u8> {
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-S", "--max-time", "30"])
        .args(args)
        .arg(url)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(40), out).await.unwrap().unwrap();
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_mixed_gathered_messages_whole_over_h1_h2_and_a_bytes_body() {
    let sizes = mixed_sizes(400);
    let want: Vec<u8> =
        sizes.iter().enumerate().flat_map(|(i, s)| filled(i, *s).to_vec()).collect();
    for (bytes_body, args) in [
        (false, &["--http1.1"][..]),
        (false, &["--http2-prior-knowledge"][..]),
        (true, &["--http1.1", "--limit-rate", "2M"][..]),
        (true, &["--http2-prior-knowledge"][..]),
        (false, &["--http1.0"][..]),
    ] {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let s2 = sizes.clone();
        let addr = serve_body(Config::default().queue_limit(32 * 1024), bytes_body, move |ch| {
            send_mixed(ch, s2.clone(), tx.clone())
        })
        .await;
        let body = curl(args, format!("http://{addr}/")).await;
        assert_eq!(body.len(), want.len(), "{args:?}");
        assert!(body == want, "{args:?}: bytes differ");
        let results =
            tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.unwrap().unwrap();
        assert!(
            results.iter().all(Result::is_ok),
            "{args:?}: {:?}",
            results.iter().find(|r| r.is_err())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_a_close_behind_a_stalled_window_resolves_when_the_client_resets() {
    const SIZE: usize = 1500;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default(), move |ch: Channel| {
        let tx = tx.clone();
        async move {
            let sender = ch.sender();
            let mut cs = Vec::new();
            for n in 0..100u32 {
                cs.push(sender.try_send(Message::Binary(numbered(n, SIZE).into())).unwrap());
            }
            let close = tokio::time::timeout(Duration::from_secs(20), sender.close()).await;
            let mut results = Vec::new();
            for c in cs {
                results.push(tokio::time::timeout(Duration::from_secs(20), c).await);
            }
            let _ = tx.send((close.is_ok(), results));
        }
    })
    .await;
    let mut client = h2_client_windowed(addr, 3000, None).await;
    let response = client.send_request(get(addr, "/")).await.unwrap();
    let mut body = response.into_body();
    let mut got = 0;
    while got < 7 * SIZE {
        let frame = tokio::time::timeout(T10, body.frame()).await.unwrap().unwrap().unwrap();
        got += frame.into_data().unwrap().len();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(body);
    let (closed, results) =
        tokio::time::timeout(Duration::from_secs(45), rx.recv()).await.unwrap().unwrap();
    assert!(closed, "close() hung after the client reset the stream");
    assert!(results.iter().all(Result::is_ok), "a send hung");
    let oks = results.iter().filter(|r| matches!(r, Ok(Ok(())))).count();
    eprintln!("client read {got} bytes, {oks} sends Ok");
    assert!(oks >= got / SIZE && oks <= (got + 3000) / SIZE + 1, "{oks} Ok for {got} bytes");
}

/// Random messages queued on a local channel, the body's frames taken through random `Buf`
/// calls; checks the bytes against the messages and that a send completes exactly when the
/// last byte of the frame holding its end was taken.
static MULTI: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

async fn random_frames(seed: u64) {
    let mut rng = Rng(seed);
    let (reply, ch) = local_channel(Config::default().queue_limit(1 << 22));
    let sender = ch.sender();
    let count = rng.between(1, 80);
    let mut ends = Vec::new();
    let mut want = Vec::new();
    let mut completions = Vec::new();
    for i in 0..count {
        let size = match rng.below(4) {
            0 => rng.below(3),
            1 => rng.between(1, 600),
            2 => rng.between(500, 3000),
            _ => rng.between(3000, 20_000),
        };
        let payload = Bytes::from(rng.bytes(size));
        want.extend_from_slice(&payload);
        ends.push(want.len());
        completions.push(Some(sender.try_send(Message::Binary(payload)).unwrap()));
        let _ = i;
    }
    let closing = tokio::spawn({
        let sender = sender.clone();
        async move { sender.close().await }
    });
    let response = tokio::time::timeout(T10, reply).await.unwrap();
    let mut body = response.into_body();
    let mut got: Vec<u8> = Vec::new();
    let mut boundary = 0usize; // bytes of whole frames taken
    let mut outcome: Vec<Option<bool>> = vec![None; count];
    let check = |completions: &mut Vec<Option<Completion>>,
                 outcome: &mut Vec<Option<bool>>,
                 boundary: usize,
                 what: &str| {
        for i in 0..count {
            if let Some(c) = completions[i].as_mut() {
                if let Some(r) = futures::FutureExt::now_or_never(c) {
                    outcome[i] = Some(r.is_ok());
                    completions[i] = None;
                }
            }
            let size = if i == 0 { ends[0] } else { ends[i] - ends[i - 1] };
            if size == 0 {
                continue;
            }
            let should = ends[i] <= boundary;
            assert_eq!(
                outcome[i].is_some(),
                should,
                "seed {seed:#x} {what}: send {i} (end {}) done {:?}, frames taken to {boundary}",
                ends[i],
                outcome[i]
            );
            if should {
                assert_eq!(outcome[i], Some(true), "seed {seed:#x}: send {i}");
            }
        }
    };
    while let Some(frame) = tokio::time::timeout(T10, body.frame()).await.unwrap() {
        let mut data = frame.unwrap().into_data().unwrap();
        let len = data.remaining();
        if data.chunk().len() < len {
            MULTI.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if rng.chance(20) {
            let clone = data.clone();
            drop(clone);
        }
        while data.has_remaining() {
            let left = data.remaining();
            match rng.below(5) {
                0 => {
                    let n = rng.between(0, data.chunk().len());
                    got.extend_from_slice(&data.chunk()[..n]);
                    data.advance(n);
                }
                1 => {
                    let n = rng.between(0, left);
                    got.extend_from_slice(&data.copy_to_bytes(n));
                }
                2 => {
                    let mut slots = [IoSlice::new(&[]); 40];
                    let k = rng.between(0, 40);
                    let n = data.chunks_vectored(&mut slots[..k]);
                    let joined: usize = slots[..n].iter().map(|s| s.len()).sum();
                    assert!(joined <= left && (n < k || joined == left || n == k));
                    let take = rng.between(0, joined);
                    let mut taken = 0;
                    for s in &slots[..n] {
                        let part = (take - taken).min(s.len());
                        got.extend_from_slice(&s[..part]);
                        taken += part;
                    }
                    data.advance(take);
                }
                3 => {
                    let n = rng.between(0, left.min(5000));
                    let mut buf = vec![0u8; n];
                    data.copy_to_slice(&mut buf);
                    got.extend_from_slice(&buf);
                }
                _ => {
                    // A clone is the rest of the frame, and taking it completes nothing.
                    let c = data.clone();
                    assert_eq!(c.remaining(), left);
                    let at = got.len();
                    assert!(Bytes::from(c)[..] == want[at..at + left], "seed {seed:#x}: clone");
                }
            }
            tokio::task::yield_now().await;
            if data.has_remaining() {
                check(&mut completions, &mut outcome, boundary, "mid-frame");
            }
        }
        boundary += len;
        drop(data);
        tokio::task::yield_now().await;
        check(&mut completions, &mut outcome, boundary, "frame taken");
    }
    assert!(got == want, "seed {seed:#x}: bytes differ ({} vs {})", got.len(), want.len());
    tokio::time::timeout(T10, closing).await.expect("close hung").unwrap();
    for (i, c) in completions.into_iter().enumerate() {
        if let Some(c) = c {
            let r = tokio::time::timeout(T10, c).await.expect("a send hung");
            assert!(r.is_ok(), "seed {seed:#x}: send {i}: {r:?}");
        }
    }
}

#[tokio::test]
async fn random_buf_calls_on_gathered_frames_complete_sends_at_the_frames_last_byte() {
    for k in 0..300u64 {
        random_frames(0x5eed_0000_0000_0001 ^ (k.wrapping_mul(0x9e37_79b9_7f4a_7c15))).await;
    }
    let multi = MULTI.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{multi} frames of several buffers");
    assert!(multi > 100, "frames were not gathered: {multi}");
}
