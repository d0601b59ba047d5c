//! HTTP stream channels, end to end over 127.0.0.1 with hyper clients (HTTP/1.1, HTTP/2) and
//! raw TCP (HTTP/1.0, HEAD, disconnects).

mod support;

use std::time::Duration;

use futures::StreamExt;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use webchan::{Channel, CloseInfo, Config, Event, Kind, Message};

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

#[tokio::test]
async fn an_ordinary_request_becomes_an_http_stream_channel() {
    let (rec, mut rx) = recorder();
    let addr = serve(Config::default(), move |ch: Channel| {
        let kind = ch.kind();
        let path = ch.originating_request().uri.path().to_owned();
        let agent = ch.originating_request().headers.get("x-test").cloned();
        let open = ch.is_open();
        let sender = ch.sender();
        let f = rec(ch);
        async move {
            assert_eq!(kind, Kind::HttpStream);
            assert_eq!(path, "/stream");
            assert_eq!(agent.unwrap(), "yes");
            assert!(open);
            sender.send("one ".into()).await.unwrap();
            sender.send("two".into()).await.unwrap();
            sender.close().await;
            f.await;
        }
    })
    .await;
    let mut req = get(addr, "/stream");
    req.headers_mut().insert("x-test", "yes".parse().unwrap());
    let response = http1_get(addr, req).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    assert_eq!(&response.body()[..], b"one two");
    let events = events_until_closed(&mut rx).await;
    assert!(matches!(events[0], Event::Open));
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(matches!(&events[1], Event::Closed(info) if *info == CloseInfo::http()), "{events:?}");
}

#[tokio::test]
async fn the_head_waits_for_the_first_send_so_a_response_head_sets_status_and_headers() {
    let addr = serve_with(
        Config::default(),
        |mut reply| {
            reply.headers_mut().insert("x-handler", "kept".parse().unwrap());
            reply.headers_mut().insert("content-type", "text/plain".parse().unwrap());
            reply
        },
        |ch: Channel| async move {
            let sender = ch.sender();
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut headers = http::HeaderMap::new();
            headers.insert("content-type", "application/x-custom".parse().unwrap());
            sender
                .send(Message::response(http::StatusCode::CREATED, headers, "first"))
                .await
                .unwrap();
            // A second head is refused; the channel stays usable.
            let err = sender
                .send(Message::response(http::StatusCode::OK, http::HeaderMap::new(), "x"))
                .await
                .unwrap_err();
            assert!(err.is_invalid_message(), "{err}");
            sender.send(" second".into()).await.unwrap();
            sender.close().await;
        },
    )
    .await;
    let response = http1_get(addr, get(addr, "/")).await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-handler"], "kept");
    assert_eq!(response.headers()["content-type"], "application/x-custom");
    assert_eq!(&response.body()[..], b"first second");
}

#[tokio::test]
async fn a_first_send_that_closes_gives_a_content_length_response() {
    let addr = serve(Config::default(), |ch: Channel| async move {
        ch.sender().send_and_close("whole body".into()).await.unwrap();
    })
    .await;
    let response = http1_get(addr, get(addr, "/")).await;
    assert_eq!(response.headers()["content-length"], "10");
    assert!(response.headers().get("transfer-encoding").is_none());
    assert_eq!(&response.body()[..], b"whole body");
}

#[tokio::test]
async fn an_empty_first_send_that_closes_gives_content_length_zero() {
    let addr = serve(Config::default(), |ch: Channel| async move {
        ch.sender().send_and_close("".into()).await.unwrap();
    })
    .await;
    let response = http1_get(addr, get(addr, "/")).await;
    assert_eq!(response.headers()["content-length"], "0");
    assert!(response.body().is_empty());
}

#[tokio::test]
async fn a_response_head_with_close_gives_an_ordinary_response() {
    let addr = serve(Config::default(), |ch: Channel| async move {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-a", "b".parse().unwrap());
        let head = Message::response(http::StatusCode::NOT_FOUND, headers, "nope");
        ch.sender().send_and_close(head).await.unwrap();
    })
    .await;
    let response = http1_get(addr, get(addr, "/")).await;
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["x-a"], "b");
    assert_eq!(response.headers()["content-length"], "4");
    assert_eq!(&response.body()[..], b"nope");
}

#[tokio::test]
async fn closing_with_no_send_gives_an_empty_response_with_the_handlers_status_and_headers() {
    let addr = serve_with(
        Config::default(),
        |mut reply| {
            *reply.status_mut() = http::StatusCode::ACCEPTED;
            reply.headers_mut().insert("set-cookie", "a=1".parse().unwrap());
            reply
        },
        |ch: Channel| async move { ch.close().await },
    )
    .await;
    let response = http1_get(addr, get(addr, "/")).await;
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["set-cookie"], "a=1");
    assert!(response.body().is_empty());
}

#[tokio::test]
async fn http_1_0_gets_a_body_that_ends_at_connection_close() {
    let addr = serve(Config::default(), |ch: Channel| async move {
        let s = ch.sender();
        s.send("line 1\n".into()).await.unwrap();
        s.send("line 2\n".into()).await.unwrap();
        s.close().await;
    })
    .await;
    let out = raw_http(addr, b"GET /old HTTP/1.0\r\nHost: x\r\n\r\n").await;
    let text = text_of(&out);
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    assert!(!text.to_ascii_lowercase().contains("transfer-encoding"), "{text}");
    assert!(text.ends_with("\r\n\r\nline 1\nline 2\n"), "{text}");
}

#[tokio::test]
async fn http_2_streams_work_the_same() {
    let (rec, mut rx) = recorder();
    let addr = serve(Config::default(), move |ch: Channel| {
        let s = ch.sender();
        let version = ch.originating_request().version;
        let f = rec(ch);
        async move {
            assert_eq!(version, http::Version::HTTP_2);
            for i in 0..3 {
                s.send(format!("chunk {i};").into()).await.unwrap();
            }
            s.close().await;
            f.await;
        }
    })
    .await;
    let mut sender = h2_client(addr).await;
    let response = sender.send_request(get(addr, "/h2")).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"chunk 0;chunk 1;chunk 2;");
    let events = events_until_closed(&mut rx).await;
    assert!(matches!(events.last(), Some(Event::Closed(i)) if i.code.is_none()));
}

#[tokio::test]
async fn text_is_encoded_in_the_charset_of_the_content_type() {
    let addr = serve_with(
        Config::default(),
        |mut reply| {
            reply
                .headers_mut()
                .insert("content-type", "text/plain; charset=ISO-8859-1".parse().unwrap());
            reply
        },
        |ch: Channel| async move {
            let s = ch.sender();
            s.send("café ".into()).await.unwrap();
            s.send("€".into()).await.unwrap();
            s.close().await;
        },
    )
    .await;
    let response = http1_get(addr, get(addr, "/")).await;
    // é is 0xE9 in ISO-8859-1; € does not exist there and becomes '?'.
    assert_eq!(&response.body()[..], &[b'c', b'a', b'f', 0xE9, b' ', b'?']);
}

#[tokio::test]
async fn a_first_response_head_can_choose_the_charset() {
    let addr = serve(Config::default(), |ch: Channel| async move {
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", "text/plain; charset=Shift_JIS".parse().unwrap());
        ch.sender()
            .send_and_close(Message::response(http::StatusCode::OK, headers, "日本"))
            .await
            .unwrap();
    })
    .await;
    let response = http1_get(addr, get(addr, "/")).await;
    assert_eq!(&response.body()[..], &[0x93, 0xFA, 0x96, 0x7B]);
    assert_eq!(response.headers()["content-length"], "4");
}

#[tokio::test]
async fn single_byte_and_ucs_2_labels_are_written_as_named_not_as_their_whatwg_supersets() {
    // WHATWG (encoding_rs) reads ISO-8859-9 as windows-1254, TIS-620 and ISO-8859-11 as
    // windows-874 (the euro and curly quotes in 0x80-0x9F) and the UCS-2 labels as UTF-16LE.
    // Before stop 27 (2026-12-05) those were written: `[DE, 80, 91, 78, 92, 3F]` for the
    // first case, `[61, 00]` for the last.
    let cases: [(&str, &str, &[u8]); 4] = [
        ("ISO-8859-9", "Ş€‘x’\u{85}", &[0xDE, b'?', b'?', b'x', b'?', 0x85]),
        ("TIS-620", "ก€“", &[0xA1, b'?', b'?']),
        ("ISO-8859-11", "ก€\u{85}", &[0xA1, b'?', 0x85]),
        ("ISO-10646-UCS-2", "a😀", &[0x00, 0x61, 0x00, b'?']),
    ];
    let addr = serve(Config::default(), move |ch: Channel| async move {
        let label = ch.originating_request().uri.path().trim_start_matches('/').to_owned();
        let (_, text, _) = cases.iter().find(|(l, ..)| *l == label).unwrap();
        let mut headers = http::HeaderMap::new();
        let content_type = format!("text/plain; charset={label}");
        headers.insert("content-type", content_type.parse().unwrap());
        let head = Message::response(http::StatusCode::OK, headers, *text);
        ch.sender().send_and_close(head).await.unwrap();
    })
    .await;
    for (label, _, bytes) in cases {
        let response = http1_get(addr, get(addr, &format!("/{label}"))).await;
        assert_eq!(&response.body()[..], bytes, "{label}: {:02X?}", response.body());
    }
}

#[tokio::test]
async fn without_a_charset_text_is_utf8() {
    let addr = serve(Config::default(), |ch: Channel| async move {
        ch.sender().send_and_close("é€".into()).await.unwrap();
    })
    .await;
    let response = http1_get(addr, get(addr, "/")).await;
    assert_eq!(&response.body()[..], "é€".as_bytes());
}

#[tokio::test]
async fn an_unknown_charset_fails_the_send_and_the_channel_stays_usable() {
    let addr = serve_with(
        Config::default(),
        |mut reply| {
            reply
                .headers_mut()
                .insert("content-type", "text/plain; charset=klingon".parse().unwrap());
            reply
        },
        |ch: Channel| async move {
            let s = ch.sender();
            s.send(Message::from(b"bin ".to_vec())).await.unwrap();
            let err = s.send("text".into()).await.unwrap_err();
            assert!(
                matches!(err, webchan::Error::UnknownCharset(ref l) if l == "klingon"),
                "{err}"
            );
            s.send(Message::from(b"more".to_vec())).await.unwrap();
            s.close().await;
        },
    )
    .await;
    let response = http1_get(addr, get(addr, "/")).await;
    assert_eq!(&response.body()[..], b"bin more");
}

#[tokio::test]
async fn a_head_request_closes_after_the_first_send_and_gets_no_body() {
    let (rec, mut rx) = recorder();
    let addr = serve(Config::default(), move |ch: Channel| {
        let s = ch.sender();
        let f = rec(ch);
        async move {
            s.send("twelve bytes".into()).await.unwrap();
            assert!(s.send("more".into()).await.unwrap_err().is_closed());
            f.await;
        }
    })
    .await;
    let out = raw_http(addr, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    let text = text_of(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // No length: its GET would have streamed on, chunked, past these twelve bytes (RFC 9110
    // §8.6: a HEAD's Content-Length must be its GET's). Until stop 27 (2026-12-05) this
    // said `content-length: 12`.
    assert!(!text.to_ascii_lowercase().contains("content-length"), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "no body after the head: {text}");
    let events = events_until_closed(&mut rx).await;
    assert!(matches!(events.last(), Some(Event::Closed(_))));
}

#[tokio::test]
async fn a_five_mib_file_goes_out_byte_for_byte() {
    let path = std::env::temp_dir().join(format!("webchan-http-file-{}", std::process::id()));
    let data: Vec<u8> =
        (0..5 * 1024 * 1024).map(|i: u32| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let p = path.clone();
    let addr = serve(Config::default(), move |ch: Channel| {
        let p = p.clone();
        async move {
            let s = ch.sender();
            s.send(Message::file(p)).await.unwrap();
            s.close().await;
        }
    })
    .await;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let response = sender.send_request(get(addr, "/")).await.unwrap();
    let mut body = response.into_body();
    let mut got = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        if let Some(chunk) = frame.data_ref() {
            got.extend_from_slice(chunk);
        }
    }
    assert_eq!(got.len(), data.len());
    assert!(got == data, "file content differs");
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn a_client_that_goes_away_ends_the_channel_at_the_latest_at_the_next_send() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default(), move |mut ch: Channel| {
        let tx = tx.clone();
        async move {
            let s = ch.sender();
            s.send("first".into()).await.unwrap();
            let _ = tx.send("sent first".to_owned());
            let mut failed = false;
            for _ in 0..200 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if s.send("tick\n".into()).await.is_err() {
                    failed = true;
                    break;
                }
            }
            assert!(!s.is_open());
            let _ = tx.send(format!("send failed: {failed}"));
            let mut last = None;
            while let Some(e) = ch.next().await {
                last = Some(e);
            }
            let _ = tx.send(format!("{last:?}"));
        }
    })
    .await;
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 256];
        let _ = tcp.read(&mut buf).await.unwrap();
    } // dropped
    async fn wait(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
        tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap()
    }
    assert_eq!(wait(&mut rx).await, "sent first");
    assert_eq!(wait(&mut rx).await, "send failed: true");
    assert_eq!(wait(&mut rx).await, "Some(Closed(CloseInfo { code: None, reason: None }))");
}

#[tokio::test]
async fn the_timeout_ends_the_stream_that_long_after_open_with_a_complete_response() {
    let (rec, mut rx) = recorder();
    let addr = serve(Config::default().timeout(Duration::from_millis(400)), move |ch: Channel| {
        let s = ch.sender();
        let f = rec(ch);
        async move {
            tokio::spawn(async move {
                // Constant traffic does not keep it open.
                while s.send("x".into()).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
            f.await;
        }
    })
    .await;
    let started = std::time::Instant::now();
    // http1_get fails the test if the body is not complete (a chunked body with its end).
    let response = http1_get(addr, get(addr, "/")).await;
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(!response.body().is_empty());
    assert!(response.body().iter().all(|b| *b == b'x'));
    let events = events_until_closed(&mut rx).await;
    assert!(matches!(events.last(), Some(Event::Closed(i)) if i.code.is_none()));
}

#[tokio::test]
async fn the_timeout_also_ends_a_stream_that_never_sent() {
    let addr =
        serve(Config::default().timeout(Duration::from_millis(200)), |ch: Channel| async move {
            // Holds the channel, sends nothing.
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(ch);
        })
        .await;
    let response = http1_get(addr, get(addr, "/")).await;
    assert_eq!(response.status(), 200);
    assert!(response.body().is_empty());
}

#[tokio::test]
async fn the_timeout_drops_a_stream_whose_client_reads_nothing_a_close_timeout_later() {
    // A client that reads nothing: `Error(TimedOut)` and `Closed` a close timeout after the
    // timeout, and the send waiting for room fails with `Closed`. Before 2026-12-05 the body's
    // timer went unseen (hyper, its buffer full, polled it no more): the stream, its sends and
    // its connection stayed for good.
    use tokio::io::AsyncWriteExt;
    let config =
        Config::default().timeout(Duration::from_secs(1)).close_timeout(Duration::from_millis(500));
    let (addr, mut channels) = serve_channels(config).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut tcp = socket.connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut ch = next_channel(&mut channels).await;
    let sender = ch.sender();
    // Sends until the buffers are full, then waits in `send`; gives the error that ends it.
    let sending = tokio::spawn(async move {
        loop {
            if let Err(e) = sender.send(Message::from(vec![7u8; 16 * 1024])).await {
                return e;
            }
        }
    });
    let events = tokio::time::timeout(Duration::from_secs(6), all_events(&mut ch))
        .await
        .expect("no Closed 6 s into a stream with a 1 s timeout (the client reads nothing)");
    // `all_events` checked that `Closed` comes once, last: the error is before it.
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Error(webchan::Error::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut
        )),
        "{events:?}"
    );
    let failed = tokio::time::timeout(Duration::from_secs(10), sending)
        .await
        .expect("the stalled send hung")
        .unwrap();
    assert!(failed.is_closed(), "{failed:?}");
    drop(tcp);
}

#[tokio::test]
async fn a_timeout_before_the_declared_content_length_is_reported_as_an_unexpected_eof() {
    // A head declaring 1000 bytes, 10 sent, then the timeout: the client's response is cut
    // short, and the channel says so, `Error(UnexpectedEof)` before `Closed`. Before 2026-12-05
    // the channel reported a clean end.
    let (addr, mut channels) =
        serve_channels(Config::default().timeout(Duration::from_millis(300))).await;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let responding = tokio::spawn(async move { sender.send_request(get(addr, "/")).await });
    let mut ch = next_channel(&mut channels).await;
    let mut headers = http::HeaderMap::new();
    headers.insert("content-length", "1000".parse().unwrap());
    let first = ch.send(Message::response(http::StatusCode::OK, headers, "0123456789")).await;
    let response =
        tokio::time::timeout(Duration::from_secs(10), responding).await.unwrap().unwrap().unwrap();
    assert_eq!(response.headers()["content-length"], "1000");
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .expect("the body neither ended nor failed within 10 s");
    assert!(body.is_err(), "a complete body with 10 of the 1000 declared bytes");
    let events = all_events(&mut ch).await;
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Error(webchan::Error::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof
        )),
        "a truncated response reported as a clean end: first send {first:?}, events {events:?}"
    );
}

#[tokio::test]
async fn a_timeout_of_duration_max_means_none_and_does_not_panic() {
    // `Duration::MAX` as "never". Before 2026-12-05 the stream's deadline overflowed
    // (`Instant + Duration`) and panicked.
    let addr = serve(Config::default().timeout(Duration::MAX), |ch: Channel| async move {
        let _ = ch.sender().send_and_close("hello".into()).await;
    })
    .await;
    let response = http1_get(addr, get(addr, "/")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(&response.body()[..], b"hello");
}

#[tokio::test]
async fn a_sequence_and_a_reader_stream_in_order() {
    let addr = serve(Config::default(), |ch: Channel| async move {
        let s = ch.sender();
        let a = s
            .try_send(Message::seq(vec!["a".into(), Message::from(b"b".to_vec()), "c".into()]))
            .unwrap();
        let b = s.try_send(Message::reader(&b"-reader-"[..])).unwrap();
        let c = s.try_send("z".into()).unwrap();
        a.await.unwrap();
        b.await.unwrap();
        c.await.unwrap();
        s.close().await;
    })
    .await;
    let response = http1_get(addr, get(addr, "/")).await;
    assert_eq!(&response.body()[..], b"abc-reader-z");
}

#[tokio::test]
async fn a_reader_that_is_often_not_ready_still_gives_every_byte_in_order() {
    // The reader's data trickles in (each read of the pipe waits for the writer): every poll
    // that finds nothing keeps the chunk's buffer for the next one, and what arrives goes out
    // as it is, in order, chunks of at most 16 KiB.
    let addr = serve(Config::default(), |ch: Channel| async move {
        let (mut writer, reader) = tokio::io::duplex(1000);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for i in 0..40u32 {
                let piece: Vec<u8> = (0..1500u32).map(|j| ((i * 7 + j) % 251) as u8).collect();
                writer.write_all(&piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        ch.sender().send_and_close(Message::reader(reader)).await.unwrap();
    })
    .await;
    let response = http1_get(addr, get(addr, "/")).await;
    let expected: Vec<u8> =
        (0..40u32).flat_map(|i| (0..1500u32).map(move |j| ((i * 7 + j) % 251) as u8)).collect();
    assert_eq!(response.body().len(), expected.len());
    assert!(response.body()[..] == expected[..], "every byte, in order");
}

#[tokio::test]
async fn send_on_a_closed_channel_fails_with_closed() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default(), move |ch: Channel| {
        let tx = tx.clone();
        async move {
            ch.sender().send_and_close("bye".into()).await.unwrap();
            let r = ch.sender().send("late".into()).await;
            let (e, _) = ch.sender().try_send("late".into()).unwrap_err();
            let _ = tx.send((r.unwrap_err().is_closed(), e.is_closed(), ch.is_open()));
        }
    })
    .await;
    let response = http1_get(addr, get(addr, "/")).await;
    assert_eq!(&response.body()[..], b"bye");
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    assert_eq!(got, (true, true, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_streams() {
    let addr = serve(Config::default(), |ch: Channel| async move {
        let s = ch.sender();
        let path = ch.originating_request().uri.path().to_owned();
        s.send(path.into()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.send(" done".into()).await.unwrap();
        s.close().await;
    })
    .await;
    let mut tasks = Vec::new();
    for i in 0..1000 {
        tasks.push(tokio::spawn(async move {
            let r = http1_get(addr, get(addr, &format!("/{i}"))).await;
            assert_eq!(text_of(r.body()), format!("/{i} done"));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn a_declared_content_length_with_a_reader_body_completes_the_send() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default(), move |ch: Channel| {
        let tx = tx.clone();
        async move {
            use tokio::io::AsyncReadExt;
            let mut headers = http::HeaderMap::new();
            headers.insert("content-length", "100000".parse().unwrap());
            let body = Message::reader(tokio::io::repeat(b'x').take(100_000));
            let head = Message::response(http::StatusCode::OK, headers, body);
            let _ = tx.send(ch.sender().send_and_close(head).await);
        }
    })
    .await;
    let response = http1_get(addr, get(addr, "/")).await;
    assert_eq!(response.headers()["content-length"], "100000");
    assert_eq!(response.body().len(), 100_000);
    let result = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    assert!(result.is_ok(), "{result:?}");
}

/// How the handler of [`serve_queued`] answers.
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    /// A `webchan::Body`.
    Body,
    /// The same with a declared `Content-Length`.
    DeclaredLength,
    /// `Body::into_bytes_body`, boxed as a stack that wants `Bytes` frames would.
    BytesBody,
}

/// A server whose handler queues `messages` (with the Sink's `feed`, no flush) before its
/// reply is polled, so that the body finds them all queued at once; a task then flushes (its
/// outcome goes to the returned receiver) and closes.
async fn serve_queued(
    messages: Vec<bytes::Bytes>,
    answer: Answer,
) -> (std::net::SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Result<(), webchan::Error>>) {
    use futures::SinkExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (done_tx, done_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let messages = messages.clone();
            let done_tx = done_tx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let messages = messages.clone();
                    let done_tx = done_tx.clone();
                    async move {
                        let (mut reply, channel) =
                            webchan::as_channel(req, Config::default()).unwrap();
                        if answer == Answer::DeclaredLength {
                            let len: usize = messages.iter().map(bytes::Bytes::len).sum();
                            reply.headers_mut().insert(http::header::CONTENT_LENGTH, len.into());
                        }
                        let (mut tx, _rx) = channel.split();
                        for m in messages {
                            tx.feed(Message::Binary(m)).await.unwrap();
                        }
                        tokio::spawn(async move {
                            let flushed = tx.flush().await;
                            let _ = done_tx.send(flushed);
                            let _ = SinkExt::close(&mut tx).await;
                        });
                        let response = reply.await;
                        // One body type for every answer: `BodyData` frames, as hyper gets
                        // them from a plain `webchan::Body`.
                        Ok::<_, std::convert::Infallible>(match answer {
                            Answer::BytesBody => response.map(|b| {
                                b.into_bytes_body()
                                    .map_frame(|f| f.map_data(webchan::BodyData::from))
                                    .boxed_unsync()
                            }),
                            _ => response.map(|b| b.boxed_unsync()),
                        })
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, done_rx)
}

/// The chunk sizes and the body of a raw chunked HTTP/1.1 response.
fn dechunk(response: &[u8]) -> (Vec<usize>, Vec<u8>) {
    let start = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    let head = text_of(&response[..start]).to_ascii_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let (mut sizes, mut body, mut at) = (Vec::new(), Vec::new(), start);
    loop {
        let line_end = at + response[at..].windows(2).position(|w| w == b"\r\n").expect("size");
        let size = usize::from_str_radix(text_of(&response[at..line_end]).trim(), 16).unwrap();
        at = line_end + 2;
        if size == 0 {
            return (sizes, body);
        }
        sizes.push(size);
        body.extend_from_slice(&response[at..at + size]);
        assert_eq!(&response[at + size..at + size + 2], b"\r\n", "a chunk ends with CRLF");
        at += size + 2;
    }
}

/// Eight 64 KiB messages, each of its own byte, and their bytes in order.
fn eight_messages() -> (Vec<bytes::Bytes>, Vec<u8>) {
    let messages: Vec<bytes::Bytes> = (0..8u8).map(|i| vec![b'a' + i; 64 * 1024].into()).collect();
    let all = messages.concat();
    (messages, all)
}

const RAW_GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// The chunk sizes of eight queued 64 KiB messages fetched over raw HTTP/1.1 with `answer`,
/// after checking that the body is the messages in order and that every send completed.
async fn chunks_of_eight_queued(answer: Answer) -> Vec<usize> {
    let (messages, all) = eight_messages();
    let (addr, mut done) = serve_queued(messages, answer).await;
    let (sizes, body) = dechunk(&raw_http(addr, RAW_GET).await);
    assert!(body == all, "the body differs from the messages in order");
    done.recv().await.unwrap().expect("every send completed");
    sizes
}

#[tokio::test]
async fn messages_queued_behind_each_other_go_out_together_whole_and_in_order() {
    // All eight were queued when the body was first polled: one frame, one chunk.
    assert_eq!(chunks_of_eight_queued(Answer::Body).await, [8 * 64 * 1024]);
}

#[tokio::test]
async fn a_bytes_body_gives_each_message_as_its_own_chunk() {
    assert_eq!(chunks_of_eight_queued(Answer::BytesBody).await, [64 * 1024; 8]);
}

#[tokio::test]
async fn messages_that_go_out_together_arrive_whole_and_in_order_over_http_2() {
    let (messages, all) = eight_messages();
    let (addr, mut done) = serve_queued(messages, Answer::Body).await;
    let mut sender = h2_client(addr).await;
    let response = sender.send_request(get(addr, "/")).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body[..] == all[..], "the body differs from the messages in order");
    done.recv().await.unwrap().expect("every send completed");
}

#[tokio::test]
async fn a_declared_content_length_holds_for_messages_that_go_out_together() {
    let (messages, all) = eight_messages();
    let (addr, mut done) = serve_queued(messages, Answer::DeclaredLength).await;
    let response = http1_get(addr, get(addr, "/")).await;
    assert_eq!(response.headers()["content-length"], (8 * 64 * 1024).to_string());
    assert!(response.headers().get("transfer-encoding").is_none());
    assert!(response.body()[..] == all[..], "the body differs from the messages in order");
    done.recv().await.unwrap().expect("every send completed");
}

/// hyper's default `max_buf_size`: it takes frames while it holds less than this.
const HYPER_BUFFER: usize = 8192 + 4096 * 100;

#[tokio::test]
async fn messages_that_go_out_together_count_against_the_queue_until_written() {
    // A client that never reads, and server sockets with small kernel buffers, so that what
    // the sender gets accepted is mostly what webchan and hyper hold in memory. Frames gather
    // the whole queue; their messages must keep counting against the queue limit while hyper
    // holds them, or the stream holds the queue and up to one more queue in hyper.
    use futures::SinkExt;
    // A queue larger than hyper's buffer: a frame that gathered it and gave its room back
    // would let twice the queue in.
    const QUEUE: usize = 2 << 20;
    const CHUNK: usize = 64 * 1024;
    const SEND_BUFFER: u32 = 16 * 1024;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(SEND_BUFFER).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let server_buffer = socket.send_buffer_size().unwrap() as usize;
    let (tx, mut channels) = tokio::sync::mpsc::unbounded_channel();
    let run = move |ch: Channel| {
        let _ = tx.send(ch);
        async {}
    };
    let addr =
        serve_on(socket.listen(16).unwrap(), Config::default().queue_limit(QUEUE), |r| r, run);
    let client = tokio::net::TcpSocket::new_v4().unwrap();
    client.set_recv_buffer_size(16 * 1024).unwrap();
    let client_buffer = client.recv_buffer_size().unwrap() as usize;
    let mut tcp = client.connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let ch = next_channel(&mut channels).await;
    let mut sender = ch.sender();
    let chunk = bytes::Bytes::from(vec![b'x'; CHUNK]);
    let mut fed = 0usize;
    while let Ok(result) =
        tokio::time::timeout(Duration::from_millis(500), sender.feed(chunk.clone().into())).await
    {
        result.unwrap();
        fed += CHUNK;
        assert!(fed < 64 * QUEUE, "the sink never pushed back");
    }
    // The queue (with the frames hyper holds), the first buffer of each frame hyper holds (it
    // stops taking frames at HYPER_BUFFER), the message that took the queue over its limit,
    // and the kernel's buffers on both sides (each counted twice: Linux doubles the setting,
    // and loopback segments carry overhead).
    let bound = QUEUE + HYPER_BUFFER + 2 * CHUNK + 2 * (server_buffer + client_buffer);
    eprintln!("accepted {fed} bytes before the sink pushed back (bound {bound})");
    assert!(fed <= bound, "accepted {fed} bytes for a client that reads nothing (bound {bound})");
    drop(tcp);
}

#[tokio::test]
async fn with_a_queue_limit_of_zero_sends_on_an_empty_queue_still_go_out() {
    // 0 counts as 1: an empty queue always takes a message. Before 2026-12-05 the queue was
    // never under a limit of 0, and every send after the first waited forever on an empty queue.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default().queue_limit(0), move |ch: Channel| {
        let tx = tx.clone();
        async move {
            let s = ch.sender();
            for text in ["one\n", "two\n"] {
                // Each send waits for the one before it: the queue is empty every time.
                let sent = tokio::time::timeout(Duration::from_secs(3), s.send(text.into())).await;
                let _ = tx.send((text, sent.ok()));
            }
            s.close().await;
        }
    })
    .await;
    let client = tokio::spawn(async move { raw_http(addr, RAW_GET).await });
    for _ in 0..2 {
        let (text, sent) =
            tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
        assert!(
            matches!(sent, Some(Ok(()))),
            "send({text:?}) on an empty queue: {sent:?} (None: it waited 3 s, never went out)"
        );
    }
    let (_, body) = dechunk(&client.await.unwrap());
    assert_eq!(text_of(&body), "one\ntwo\n");
}

/// The body bytes of a raw chunked HTTP/1.1 response that may have been cut anywhere (a
/// dropped connection): every chunk, the last one as far as it came.
fn dechunk_prefix(response: &[u8]) -> Vec<u8> {
    let Some(head) = response.windows(4).position(|w| w == b"\r\n\r\n") else { return Vec::new() };
    let (mut body, mut at) = (Vec::new(), head + 4);
    while let Some(eol) = response[at..].windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(text_of(&response[at..at + eol]).trim(), 16).unwrap();
        at += eol + 2;
        body.extend_from_slice(&response[at..(at + size).min(response.len())]);
        at += size + 2;
        if size == 0 || at > response.len() {
            break;
        }
    }
    body
}

#[tokio::test]
async fn a_send_completes_only_once_hyper_has_written_its_bytes() {
    // As on a WebSocket (tests/websocket.rs): a client that stops reading fills the socket and
    // then hyper's buffer; the sends that completed by then must all have been written to the
    // socket, so that when the server then drops the connection at once (as a server's own
    // shutdown deadline does: the connection's task aborted), the client still reads every one
    // of them from the kernel's buffers. A send counted done while its bytes sat in hyper's
    // buffer would be lost.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SIZE: usize = 1024;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut channels) = tokio::sync::mpsc::unbounded_channel();
    let connection = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let service = hyper::service::service_fn(move |request| {
            let (reply, channel) = webchan::as_channel(request, Config::default()).unwrap();
            let _ = tx.send(channel);
            async move { Ok::<_, std::convert::Infallible>(reply.await) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(tcp), service)
            .await;
    });
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut ch = next_channel(&mut channels).await;
    // Until the socket and hyper's buffer are full.
    let completed = send_numbered_until_stalled(&ch.sender()).await;
    connection.abort();
    assert!(connection.await.unwrap_err().is_cancelled());
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut response));
    read.await.expect("the connection was not dropped").unwrap();
    let body = dechunk_prefix(&response);
    let received = body.len() / SIZE;
    for (i, message) in body.chunks_exact(SIZE).enumerate() {
        assert_eq!(message[..4], (i as u32).to_be_bytes(), "in order, none missing");
    }
    assert!(received >= completed as usize, "{completed} sends completed, {received} arrived");
    // The channel learns that the connection is gone.
    let events = all_events(&mut ch).await;
    assert!(matches!(events.last(), Some(Event::Closed(_))), "{events:?}");
}

#[tokio::test]
async fn a_closing_http_stream_closes_once_hyper_has_written_its_last_bytes() {
    // Server and client sockets with small kernel buffers, a client that reads nothing yet,
    // and 256 KiB queued then a close: hyper takes it all (it holds up to ~400 KiB), the body
    // ends, but most of it cannot be written. The close must wait for it (a close completed,
    // and `Closed` reported, while the last sends sit in hyper's buffer would tell the handler
    // they went out), and completes once the client has read everything.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SIZE: usize = 64 * 1024;
    const COUNT: usize = 4;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(16 * 1024).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let (tx, mut channels) = tokio::sync::mpsc::unbounded_channel();
    let run = move |ch: Channel| {
        let _ = tx.send(ch);
        async {}
    };
    let addr = serve_on(socket.listen(16).unwrap(), Config::default(), |r| r, run);
    let client = tokio::net::TcpSocket::new_v4().unwrap();
    client.set_recv_buffer_size(16 * 1024).unwrap();
    let mut tcp = client.connect(addr).await.unwrap();
    tcp.write_all(RAW_GET).await.unwrap();
    let mut ch = next_channel(&mut channels).await;
    let sender = ch.sender();
    for i in 0..COUNT {
        drop(sender.try_send(vec![i as u8; SIZE].into()).unwrap());
    }
    let mut close = tokio::spawn(async move { sender.close().await });
    let early = tokio::time::timeout(Duration::from_millis(300), &mut close).await;
    assert!(early.is_err(), "the close completed while the client had read nothing");
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut response));
    read.await.expect("the body did not end").unwrap();
    let (_, body) = dechunk(&response);
    assert_eq!(body.len(), SIZE * COUNT);
    assert!(body.chunks(SIZE).enumerate().all(|(i, m)| m.iter().all(|b| *b == i as u8)));
    tokio::time::timeout(Duration::from_secs(10), close).await.expect("close hung").unwrap();
    let events = all_events(&mut ch).await;
    assert!(!events.iter().any(|e| matches!(e, Event::Error(_))), "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http2_messages_a_client_read_whole_before_its_rst_stream_are_reported_sent() {
    // A frame's sends complete together once hyper has taken all of it, and HTTP/2 flow
    // control stops a frame midway. Frames gathered 32 messages before 2026-12-05: the client
    // read 48 whole, and only 32 were reported sent (the others `Err(Closed)`). Over HTTP/2 a
    // frame now holds one message.
    const SIZE: usize = 1024;
    const COUNT: u32 = 256;
    let (tx, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default(), move |ch: webchan::Channel| {
        let tx = tx.clone();
        async move {
            let sender = ch.sender();
            // Queued before hyper polls the body: the body gathers them 32 to a frame.
            let mut completions = Vec::new();
            for n in 0..COUNT {
                let payload = numbered(n, SIZE);
                completions.push(sender.try_send(Message::Binary(payload.into())).unwrap());
            }
            let mut results = Vec::new();
            for c in completions {
                results.push(
                    tokio::time::timeout(Duration::from_secs(10), c).await.is_ok_and(|r| r.is_ok()),
                );
            }
            let _ = tx.send(results);
            drop(ch);
        }
    })
    .await;
    // A client whose stream window (12 KiB) is less than a gathered frame (32 messages).
    let mut client = h2_client_windowed(addr, 12 * 1024, None).await;
    let response = client.send_request(get(addr, "/")).await.unwrap();
    let mut body = response.into_body();
    let mut got = Vec::new();
    // 48 whole messages: a frame and a half.
    while got.len() < 48 * SIZE {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("no body frame within 10 s")
            .unwrap()
            .unwrap();
        got.extend_from_slice(&frame.into_data().unwrap());
    }
    // The server sends what the window allows (up to 12 KiB more, into the middle of the
    // second frame) and waits for more window. Then the client leaves: RST_STREAM.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(body);
    let whole = got.len() / SIZE;
    for (n, message) in got.chunks_exact(SIZE).enumerate() {
        assert_eq!(message[..4], (n as u32).to_be_bytes(), "message {n} out of order");
    }
    let results = tokio::time::timeout(Duration::from_secs(20), outcomes.recv())
        .await
        .expect("outcomes within 20 s")
        .unwrap();
    let oks = results.iter().take_while(|ok| **ok).count();
    assert!(
        whole <= oks,
        "the client read {whole} whole messages, only {oks} were reported sent \
         (the others: Err(Closed), 'the message was not sent')"
    );
}

/// GETs `/` over HTTP/1.1 (`h2` false) or HTTP/2 and gives the response's declared length and
/// its body.
async fn get_over(addr: std::net::SocketAddr, h2: bool) -> (String, bytes::Bytes) {
    let response = if h2 {
        let mut sender = h2_client(addr).await;
        let response = sender.send_request(get(addr, "/")).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(Duration::from_secs(10), body.collect())
            .await
            .expect("the body within 10 s")
            .unwrap()
            .to_bytes();
        http::Response::from_parts(parts, body)
    } else {
        http1_get(addr, get(addr, "/")).await
    };
    let declared = response.headers()["content-length"].to_str().unwrap().to_owned();
    (declared, response.into_body())
}

#[tokio::test]
async fn a_file_longer_than_its_declared_content_length_sends_that_length_and_completes() {
    // A log being appended to: 20,000 bytes when the head was made, 25,000 when it is read.
    // The client gets the 20,000 declared, a complete response, and the send says so. Before
    // stop 27 (2026-12-05) the body handed hyper the file's whole last chunk, hyper wrote only
    // what was owed and dropped the rest of the frame, and the send reported `Err(Closed)`.
    let dir = std::env::temp_dir().join(format!("webchan-grown-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("log");
    let content: Vec<u8> = (0..25_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &content).unwrap();
    let (tx, mut sent) = tokio::sync::mpsc::unbounded_channel();
    let file = path.clone();
    let addr = serve(Config::default(), move |ch: Channel| {
        let (tx, file) = (tx.clone(), file.clone());
        async move {
            let mut headers = http::HeaderMap::new();
            headers.insert("content-length", "20000".parse().unwrap());
            let head = Message::response(http::StatusCode::OK, headers, Message::file(file));
            let _ = tx.send(ch.sender().send_and_close(head).await);
        }
    })
    .await;
    for h2 in [false, true] {
        let (declared, body) = get_over(addr, h2).await;
        assert_eq!(declared, "20000");
        assert!(body[..] == content[..20_000], "h2 {h2}: not the file's first 20,000 bytes");
        let result = tokio::time::timeout(Duration::from_secs(10), sent.recv()).await;
        let result = result.expect("no outcome within 10 s").unwrap();
        assert!(result.is_ok(), "h2 {h2}: the client got the whole response, yet {result:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn messages_up_to_the_declared_content_length_complete_and_those_after_fail() {
    // Three messages queued at once under a head declaring 10 bytes: the first two fill it,
    // the third has no room. Before stop 27 (2026-12-05) the three went out in one frame of
    // 15 bytes, hyper wrote 10 and dropped the frame, and all three reported `Err(Closed)`.
    let (tx, mut sent) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default(), move |ch: Channel| {
        let tx = tx.clone();
        async move {
            let sender = ch.sender();
            let mut headers = http::HeaderMap::new();
            headers.insert("content-length", "10".parse().unwrap());
            let first = Message::response(http::StatusCode::OK, headers, "01234");
            let completions = [first, Message::from("56789"), Message::from("after")]
                .map(|m| sender.try_send(m).map_err(|(e, _)| e).unwrap());
            let mut outcomes = Vec::new();
            for c in completions {
                outcomes.push(c.await);
            }
            let _ = tx.send(outcomes);
        }
    })
    .await;
    for h2 in [false, true] {
        let (declared, body) = get_over(addr, h2).await;
        assert_eq!((declared.as_str(), &body[..]), ("10", &b"0123456789"[..]), "h2 {h2}");
        let outcomes = tokio::time::timeout(Duration::from_secs(10), sent.recv()).await;
        let outcomes = outcomes.expect("no outcomes within 10 s").unwrap();
        assert!(outcomes[0].is_ok() && outcomes[1].is_ok(), "h2 {h2}: {outcomes:?}");
        assert!(outcomes[2].as_ref().is_err_and(|e| e.is_closed()), "h2 {h2}: {outcomes:?}");
    }
}

/// The spec: "Each item in an ISeq will pass through send!, and can be any of the valid
/// message types": a response head first in a sequence sent first is the stream's first
/// message, also nested first in it, also when the sequence yields it later. Before stop 27
/// (2026-12-05) the send failed with `InvalidMessage` and the stream went out with the
/// handler's head (200, no body: even the items after the head were lost).
#[tokio::test]
async fn a_response_head_first_in_a_sequence_sent_first_is_the_streams_head() {
    let addr = serve(Config::default(), |ch: Channel| async move {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-from-head", "yes".parse().unwrap());
        let head = Message::response(http::StatusCode::CREATED, headers, "a");
        let path = ch.originating_request().uri.path().to_owned();
        let first = match path.as_str() {
            "/flat" => Message::seq([head, "b".into()]),
            "/nested" => Message::seq([Message::seq([head]), "b".into()]),
            _ => {
                // The head comes 100 ms after the sequence was sent.
                let (tx, rx) = futures::channel::mpsc::unbounded();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    tx.unbounded_send(head).unwrap();
                    tx.unbounded_send("b".into()).unwrap();
                });
                Message::stream(rx)
            }
        };
        ch.sender().send_and_close(first).await.unwrap();
    })
    .await;
    for path in ["/flat", "/nested", "/later"] {
        let response = http1_get(addr, get(addr, path)).await;
        assert_eq!(response.status(), http::StatusCode::CREATED, "{path}");
        assert_eq!(response.headers()["x-from-head"], "yes", "{path}");
        assert_eq!(&response.body()[..], b"ab", "{path}");
    }
}

#[tokio::test]
async fn a_sequence_sent_first_whose_first_item_panics_fails_that_send_only() {
    let (tx, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default(), move |ch: Channel| {
        let tx = tx.clone();
        async move {
            let s = ch.sender();
            let panics = futures::stream::poll_fn(|_| -> std::task::Poll<Option<Message>> {
                panic!("a feed that breaks at once")
            });
            let first = s.send(Message::stream(panics)).await;
            let second = s.send_and_close("after".into()).await;
            let _ = tx.send((first, second));
        }
    })
    .await;
    let response = http1_get(addr, get(addr, "/")).await;
    assert_eq!(&response.body()[..], b"after");
    let (first, second) = outcomes.recv().await.unwrap();
    assert!(
        matches!(first, Err(webchan::Error::Panicked(ref m)) if m.contains("breaks")),
        "{first:?}"
    );
    assert!(second.is_ok(), "{second:?}");
}

/// ISO-2022-JP is stateful: a stream keeps one encoder across its messages and returns to
/// ASCII once, at its end (RFC 1468), whether a close or the timeout ends it. Before stop 27
/// (2026-12-05) each message ended in ASCII on its own, so two meeting in JIS X 0208 gave
/// `ESC ( B ESC $ B`, which the WHATWG decoder (browsers) reads as an error: "日�本a日x".
#[tokio::test]
async fn iso_2022_jp_messages_meet_without_escapes_between_them_and_the_stream_ends_in_ascii() {
    let config = Config::default().timeout(Duration::from_millis(300));
    let addr = serve_with(config, support::iso_2022_jp, |ch: Channel| async move {
        let s = ch.sender();
        for m in
            [Message::from("日"), "本".into(), Message::seq(["a日".into(), "".into(), "x".into()])]
        {
            s.send(m).await.unwrap();
        }
        s.send("日".into()).await.unwrap();
        if ch.originating_request().uri.path() == "/close" {
            s.close().await;
        } else {
            // The channel stays open: the timeout ends the stream.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    })
    .await;
    for path in ["/close", "/timeout"] {
        let response = http1_get(addr, get(addr, path)).await;
        let body = response.body();
        let (text, had_errors) = encoding_rs::ISO_2022_JP.decode_without_bom_handling(body);
        assert!(!had_errors, "{path}: {text:?} from {body:?}");
        assert_eq!(text, "日本a日x日", "{path}");
        assert!(body.ends_with(b"\x1b(B"), "{path}: not back in ASCII at the end: {body:?}");
    }
}

/// A sequence sent first whose first items are many empty sequences (or an endless feed of
/// them): the head looks through them without growing the stack and without holding its
/// task. A review of stop 27's own fixes (2026-12-05) found each nested sequence chained onto
/// the rest: 5,000 of them overflowed the worker thread's stack and aborted the process.
#[tokio::test]
async fn a_first_sequence_of_many_empty_sequences_is_looked_through_without_a_deep_stack() {
    let config = Config::default().timeout(Duration::from_millis(500));
    let addr = serve(config, |ch: Channel| async move {
        let s = ch.sender();
        if ch.originating_request().uri.path() == "/endless" {
            let empties = futures::stream::repeat_with(|| Message::seq([]));
            let _ = s.send(Message::stream(empties)).await;
            tokio::time::sleep(Duration::from_secs(3)).await;
        } else {
            let empties = (0..200_000).map(|_| Message::seq([]));
            let items = empties.chain(std::iter::once(Message::from("end")));
            s.send_and_close(Message::seq(items)).await.unwrap();
        }
    })
    .await;
    assert_eq!(&http1_get(addr, get(addr, "/many")).await.body()[..], b"end");
    // The timeout answers a head still looking: an empty response.
    assert_eq!(http1_get(addr, get(addr, "/endless")).await.body().len(), 0);
}

/// A head without content (204) first in a sequence sent first: content with it, or after it
/// in the sequence, fails the send as it does for a head sent alone; nothing after it is the
/// empty case, which completes. The same review found both content cases reported `Ok` though
/// nothing was sent.
#[tokio::test]
async fn a_204_first_in_a_sequence_with_content_fails_the_send() {
    let (tx, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default(), move |ch: Channel| {
        let tx = tx.clone();
        async move {
            let head = |body: &'static str| {
                Message::response(http::StatusCode::NO_CONTENT, Default::default(), body)
            };
            let first = match ch.originating_request().uri.path() {
                "/with" => Message::seq([head("x")]),
                "/after" => Message::seq([head(""), "more".into()]),
                _ => Message::seq([head("")]),
            };
            let _ = tx.send(ch.sender().send_and_close(first).await);
        }
    })
    .await;
    for (path, fails) in [("/with", true), ("/after", true), ("/empty", false)] {
        let response = http1_get(addr, get(addr, path)).await;
        assert_eq!(response.status(), http::StatusCode::NO_CONTENT, "{path}");
        assert!(response.body().is_empty(), "{path}");
        let outcome = outcomes.recv().await.unwrap();
        let failed = matches!(outcome, Err(webchan::Error::InvalidMessage(_)));
        assert_eq!(failed, fails, "{path}: {outcome:?}");
    }
}

/// The last review of the head's look into a first sequence (stop 27, 2026-12-05) found three
/// edges, each failing on the code before its fix: empty items after a 204 head counted as
/// content (the send failed); a 204 head still waiting for the end of its sequence at the
/// timeout went out as the handler's 200; and after a first sequence failed (a 1xx in it), a
/// head sent alone was refused as "not the first send" while one in a sequence was taken.
#[tokio::test]
async fn the_edges_of_a_head_found_first_in_a_sequence() {
    let (tx, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
    let config = Config::default().timeout(Duration::from_millis(300));
    let addr = serve(config, move |ch: Channel| {
        let tx = tx.clone();
        async move {
            let head = |status: u16, body: &'static str| {
                let status = http::StatusCode::from_u16(status).unwrap();
                Message::response(status, Default::default(), body)
            };
            let s = ch.sender();
            let outcome = match ch.originating_request().uri.path() {
                "/empties" => {
                    let empties = [Message::from(""), Message::from(Vec::new()), Message::seq([])];
                    let items = std::iter::once(head(204, "")).chain(empties);
                    s.send_and_close(Message::seq(items)).await
                }
                "/pending" => {
                    let rest = futures::stream::pending();
                    let items = futures::stream::iter([head(204, "")]).chain(rest);
                    s.send(Message::stream(items)).await
                }
                _ => {
                    let refused = s.send(Message::seq([head(103, "")])).await;
                    assert!(matches!(refused, Err(webchan::Error::InvalidMessage(_))));
                    s.send_and_close(head(201, "b")).await
                }
            };
            let _ = tx.send(outcome);
        }
    })
    .await;
    let cases = [("/empties", 204, ""), ("/pending", 204, ""), ("/after-a-1xx", 201, "b")];
    for (path, status, body) in cases {
        let response = http1_get(addr, get(addr, path)).await;
        assert_eq!(response.status().as_u16(), status, "{path}");
        assert_eq!(&response.body()[..], body.as_bytes(), "{path}");
        let outcome = tokio::time::timeout(Duration::from_secs(10), outcomes.recv()).await;
        let outcome = outcome.unwrap().unwrap();
        match path {
            // The timeout came before the sequence ended: not sent whole.
            "/pending" => assert!(outcome.is_err_and(|e| e.is_closed()), "{path}"),
            _ => assert!(outcome.is_ok(), "{path}: {outcome:?}"),
        }
    }
}

/// The outgoing queue's limit, at its edges (the docs were loose until stop 28, 2026-12-05:
/// "over its limit" for both): `try_send` refuses a message that would take the queue over
/// the limit (an empty queue takes any), the `Sink` waits while the queue is at the limit or
/// over. Checked on streams whose body nobody polls yet, so that nothing leaves the queue.
#[tokio::test]
async fn try_send_refuses_what_would_pass_the_limit_and_the_sink_waits_at_it() {
    use futures::{FutureExt, Sink};
    use webchan::Error;
    let fresh = || {
        let request = http::Request::get("http://x/").body(()).unwrap();
        webchan::as_channel(request, Config::default().queue_limit(100)).unwrap()
    };
    let bytes = |n| Message::from(vec![b'a'; n]);
    let ready = |sender: &mut webchan::Sender| {
        futures::future::poll_fn(|cx| std::pin::Pin::new(&mut *sender).poll_ready(cx))
            .now_or_never()
    };
    // An empty queue takes anything, even over the limit.
    let (_reply, channel) = fresh();
    assert!(channel.sender().try_send(bytes(150)).is_ok());

    let (_reply, channel) = fresh();
    let mut sender = channel.sender();
    let _a = sender.try_send(bytes(10)).unwrap();
    // 10 + 91 would pass 100: refused; 10 + 90 reaches it: taken.
    assert!(matches!(sender.try_send(bytes(91)), Err((Error::QueueFull { limit: 100 }, _))));
    let _b = sender.try_send(bytes(90)).unwrap();
    // At the limit: the Sink waits, and try_send refuses even one byte.
    assert!(ready(&mut sender).is_none(), "the Sink is ready at the limit");
    assert!(matches!(sender.try_send(bytes(1)), Err((Error::QueueFull { .. }, _))));

    // Under it: the Sink takes a message of any size.
    let (_reply, channel) = fresh();
    let mut sender = channel.sender();
    let _c = sender.try_send(bytes(99)).unwrap();
    assert!(matches!(ready(&mut sender), Some(Ok(()))));
    std::pin::Pin::new(&mut sender).start_send(bytes(500)).unwrap();
    assert!(ready(&mut sender).is_none());
}
