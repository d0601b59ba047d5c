//! In-process benches: a channel end to end over `tokio::io::duplex` (no sockets, no kernel),
//! with hyper serving one side and a client on the other.
//!
//! - `ws_echo/16B` and `ws_echo/16KiB`: a tokio-tungstenite client sends a batch of messages,
//!   the server echoes them through a `Channel` (split, `send_all`), the client reads them back.
//! - `ws_receive_text/{ascii,accented,japanese}`: the client sends batches of 16 KiB text
//!   messages, the server checks each (UTF-8) and answers with its length in 8 bytes: what
//!   receiving text costs, by the kind of text (the client does not check the answers).
//! - `http_stream/1KiB` and `http_stream/64KiB`: a task sends chunks through a `Sender`; a hyper
//!   client reads the chunked body to its end.
//! - `completions/{1000,10000,40000}`: a task queues that many 16-byte messages with
//!   `try_send`, keeps every `Completion` and then awaits them all, while a hyper client reads
//!   the body: the cost per send must not grow with the number outstanding (it did, until
//!   2026-12-05: each outcome was looked up in vectors searched end to end).
//!
//! - `ws_deflate/{plain,deflate}/{300B,16KiB}`: a raw client sends batches of JSON text
//!   messages, a 300-byte chat message or 16 KiB of a list of records (masked; with `deflate`,
//!   compressed once beforehand, as a client without context takeover sends them), the server
//!   echoes them through a `Channel` (with `deflate`, inflated, checked, compressed again), the
//!   client reads the frames back: what `Config::permessage_deflate` costs the server per
//!   message. The bytes on the wire each way are printed once.
//!
//! `cargo bench --bench channel`

mod support;

use std::convert::Infallible;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::serve;
use tokio::io::DuplexStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use webchan::Message;

/// GETs `/` with a hyper HTTP/1.1 client over `io`; returns the body's length.
async fn read_body(io: DuplexStream) -> usize {
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.unwrap();
    tokio::spawn(conn);
    let request = http::Request::get("/")
        .header("host", "bench")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let mut body = send.send_request(request).await.unwrap().into_body();
    let mut got = 0;
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame.unwrap().data_ref() {
            got += d.len();
        }
    }
    got
}

fn ws_echo(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut group = c.benchmark_group("ws_echo");
    for (name, size, batch) in [("16B", 16usize, 256usize), ("16KiB", 16 * 1024, 16)] {
        let (mut ws, payload) = rt.block_on(async {
            let (client, server) = tokio::io::duplex(256 * 1024);
            serve(server, support::echo);
            let (ws, _) = tokio_tungstenite::client_async("ws://bench/", client).await.unwrap();
            (ws, vec![7u8; size])
        });
        group.throughput(Throughput::Bytes((size * batch) as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                rt.block_on(async {
                    for _ in 0..batch {
                        ws.feed(WsMessage::binary(payload.clone())).await.unwrap();
                    }
                    ws.flush().await.unwrap();
                    for _ in 0..batch {
                        match ws.next().await {
                            Some(Ok(WsMessage::Binary(b))) => assert_eq!(b.len(), size),
                            other => panic!("{other:?}"),
                        }
                    }
                });
            });
        });
    }
    group.finish();
}

/// Answers each text message with its length (8 bytes, big-endian).
async fn text_lengths(channel: webchan::Channel) {
    let (mut tx, rx) = channel.split();
    let mut lengths = rx.filter_map(|e| {
        std::future::ready(match e {
            webchan::Event::Message(webchan::Incoming::Text(t)) => {
                Some(Ok(Message::from((t.len() as u64).to_be_bytes().to_vec())))
            }
            _ => None,
        })
    });
    let _ = tx.send_all(&mut lengths).await;
}

fn ws_receive_text(c: &mut Criterion) {
    const SIZE: usize = 16 * 1024;
    const BATCH: usize = 16;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut group = c.benchmark_group("ws_receive_text");
    let kinds = [
        ("ascii", "plain ASCII text, as in most JSON. "),
        ("accented", r#"{"user":"josé","msg":"ça va, très bien"} "#),
        ("japanese", "日本語のテキストです。"),
    ];
    for (name, unit) in kinds {
        let mut text = unit.repeat(SIZE / unit.len());
        while text.len() < SIZE {
            text.push('.');
        }
        let (mut ws, text) = rt.block_on(async {
            let (client, server) = tokio::io::duplex(256 * 1024);
            serve(server, text_lengths);
            let (ws, _) = tokio_tungstenite::client_async("ws://bench/", client).await.unwrap();
            (ws, WsMessage::text(text))
        });
        group.throughput(Throughput::Bytes((SIZE * BATCH) as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                rt.block_on(async {
                    for _ in 0..BATCH {
                        ws.feed(text.clone()).await.unwrap();
                    }
                    ws.flush().await.unwrap();
                    for _ in 0..BATCH {
                        match ws.next().await {
                            Some(Ok(WsMessage::Binary(b))) => {
                                assert_eq!(b[..], (SIZE as u64).to_be_bytes());
                            }
                            other => panic!("{other:?}"),
                        }
                    }
                });
            });
        });
    }
    group.finish();
}

/// A WebSocket client over a duplex pipe written by hand: `permessage-deflate` offered (no
/// context takeover) when `deflate`; gives the pipe and what the 101 agreed to.
async fn raw_ws(io: &mut DuplexStream, deflate: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let offer = if deflate {
        "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n"
    } else {
        ""
    };
    let request = format!(
        "GET / HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
    );
    io.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(io.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    head.lines()
        .find_map(|l| l.strip_prefix("sec-websocket-extensions: "))
        .unwrap_or_default()
        .to_owned()
}

/// One masked client frame with FIN (and RSV1 when `compressed`).
fn client_frame(opcode: u8, compressed: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | if compressed { 0x40 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n < 65536 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let key = [0x11, 0x22, 0x33, 0x44];
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

/// Reads `count` server frames; gives the bytes they took and whether each had RSV1.
async fn read_frames(io: &mut DuplexStream, buf: &mut Vec<u8>, count: usize) -> (usize, bool) {
    use tokio::io::AsyncReadExt;
    let (mut bytes, mut all_compressed) = (0, true);
    for _ in 0..count {
        loop {
            if buf.len() >= 4 {
                let (len, header) = match buf[1] & 0x7F {
                    126 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
                    127 if buf.len() >= 10 => {
                        (u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize, 10)
                    }
                    127 => (usize::MAX, 0),
                    n => (usize::from(n), 2),
                };
                if len != usize::MAX && buf.len() >= header + len {
                    all_compressed &= buf[0] & 0x40 != 0;
                    bytes += header + len;
                    buf.drain(..header + len);
                    break;
                }
            }
            let mut chunk = [0u8; 65536];
            let n = io.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the server ended the connection");
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    (bytes, all_compressed)
}

fn ws_deflate(c: &mut Criterion) {
    use tokio::io::AsyncWriteExt;
    const SIZE: usize = 16 * 1024;
    const BATCH: usize = 16;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut group = c.benchmark_group("ws_deflate");
    // A chat message as an application would send it (~300 bytes of JSON, little repeated
    // inside it), and 16 KiB of a JSON list of such records.
    let chat = r#"{"type":"message","room":"general","user":{"id":48213,"name":"alice"},"text":"Are we still meeting at three? I moved the slides to the shared folder, and the numbers for December are in the second tab.","sent":"2026-12-06T05:41:07.123Z","reactions":[{"emoji":"thumbsup","count":3}]}"#;
    let unit = r#"{"user":"alice","room":"general","text":"message number","seq":12345} "#;
    let mut list = unit.repeat(SIZE / unit.len());
    while list.len() < SIZE {
        list.push(' ');
    }
    for (name, deflate, text) in [
        ("plain/300B", false, chat),
        ("deflate/300B", true, chat),
        ("plain/16KiB", false, list.as_str()),
        ("deflate/16KiB", true, list.as_str()),
    ] {
        let size = text.len();
        let (mut io, batch) = rt.block_on(async {
            let (mut client, server) = tokio::io::duplex(256 * 1024);
            let config = webchan::Config::default().permessage_deflate(deflate);
            support::serve_with(server, config, support::echo);
            let agreed = raw_ws(&mut client, deflate).await;
            assert_eq!(agreed.starts_with("permessage-deflate"), deflate, "{agreed}");
            let payload = if deflate {
                let mut z = flate2::Compress::new(flate2::Compression::default(), false);
                let mut out = Vec::with_capacity(size + 64);
                z.compress_vec(text.as_bytes(), &mut out, flate2::FlushCompress::Sync).unwrap();
                out.truncate(out.len() - 4);
                out
            } else {
                text.as_bytes().to_vec()
            };
            let frame = client_frame(0x1, deflate, &payload);
            (client, frame.repeat(BATCH))
        });
        let mut buf = Vec::new();
        let (sent, (received, compressed)) = rt.block_on(async {
            io.write_all(&batch).await.unwrap();
            (batch.len() / BATCH, read_frames(&mut io, &mut buf, BATCH).await)
        });
        assert_eq!(compressed, deflate);
        eprintln!(
            "ws_deflate/{name}: {size} bytes of text per message, {sent} on the wire to the \
             server, {} back",
            received / BATCH
        );
        group.throughput(Throughput::Bytes((size * BATCH) as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                rt.block_on(async {
                    io.write_all(&batch).await.unwrap();
                    read_frames(&mut io, &mut buf, BATCH).await
                })
            });
        });
    }
    group.finish();
}

fn http_stream(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut group = c.benchmark_group("http_stream");
    const TOTAL: usize = 4 * 1024 * 1024;
    for (name, chunk) in [("1KiB", 1024usize), ("64KiB", 64 * 1024)] {
        group.throughput(Throughput::Bytes(TOTAL as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                rt.block_on(stream_from_task(TOTAL, move |sender| async move {
                    let data = bytes::Bytes::from(vec![1u8; chunk]);
                    let mut sink = sender.clone();
                    for _ in 0..TOTAL / chunk {
                        sink.feed(Message::Binary(data.clone())).await.unwrap();
                    }
                    sink.flush().await.unwrap();
                    sender.close().await;
                }));
            });
        });
    }
    group.finish();
}

fn completions(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut group = c.benchmark_group("completions");
    for count in [1_000usize, 10_000, 40_000] {
        group.throughput(Throughput::Elements(count as u64));
        group.bench_function(BenchmarkId::from_parameter(count), |b| {
            b.iter(|| {
                rt.block_on(stream_from_task(count * 16, move |sender| async move {
                    let data = bytes::Bytes::from_static(b"0123456789abcdef");
                    let completions: Vec<_> = (0..count)
                        .map(|_| sender.try_send(Message::Binary(data.clone())).unwrap())
                        .collect();
                    for completion in completions {
                        completion.await.unwrap();
                    }
                    sender.close().await;
                }));
            });
        });
    }
    group.finish();
}

/// One HTTP stream over a duplex pipe: `produce` sends on its channel from a task of its own
/// (not hyper's), and a hyper client reads the body, which must be `total` bytes.
async fn stream_from_task<F, Fut>(total: usize, produce: F)
where
    F: Fn(webchan::Sender) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (client, server) = tokio::io::duplex(256 * 1024);
    serve(server, move |channel| async move {
        tokio::spawn(produce(channel.sender()));
    });
    assert_eq!(read_body(client).await, total);
}

/// The baseline: raw hyper with a `StreamBody` over the same chunks, made on hyper's task.
fn hyper_stream_baseline(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut group = c.benchmark_group("hyper_stream_baseline");
    const TOTAL: usize = 4 * 1024 * 1024;
    for (name, chunk) in [("1KiB", 1024usize), ("64KiB", 64 * 1024)] {
        group.throughput(Throughput::Bytes(TOTAL as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                rt.block_on(async move {
                    let (client, server) = tokio::io::duplex(256 * 1024);
                    tokio::spawn(async move {
                        let service = service_fn(move |_req| async move {
                            let data = bytes::Bytes::from(vec![1u8; chunk]);
                            let frames = futures::stream::iter((0..TOTAL / chunk).map(move |_| {
                                Ok::<_, Infallible>(hyper::body::Frame::data(data.clone()))
                            }));
                            Ok::<_, Infallible>(http::Response::new(
                                http_body_util::StreamBody::new(frames),
                            ))
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(server), service)
                            .await;
                    });
                    assert_eq!(read_body(client).await, TOTAL);
                });
            });
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    ws_echo,
    ws_receive_text,
    ws_deflate,
    http_stream,
    hyper_stream_baseline,
    completions
);
criterion_main!(benches);
