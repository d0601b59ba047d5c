//! Keepalive, dead-peer detection and pings on WebSockets, over real sockets with short intervals.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use support::*;
use tokio::sync::mpsc;
use webchan::{Channel, CloseInfo, Config, Event};

fn keepalive(interval_ms: u64, timeout_ms: u64) -> Config {
    Config::default()
        .keepalive(Some((Duration::from_millis(interval_ms), Duration::from_millis(timeout_ms))))
}

#[tokio::test]
async fn a_peer_that_never_answers_pings_is_dropped_with_1006_keepalive_timeout() {
    let (rec, mut rx) = recorder();
    let addr = serve(keepalive(100, 200), rec).await;
    // A raw client that reads but never answers.
    let mut raw = RawWs::connect(addr).await;
    let (first, _) = raw.read_frame().await.expect("a ping");
    assert_eq!(first, 0x89, "the server pings a silent peer");
    assert!(raw.eof().await, "the server did not drop the dead peer");
    let events = events_until_closed(&mut rx).await;
    assert!(
        matches!(events.last(), Some(Event::Closed(i)) if *i == CloseInfo::websocket(1006, "keepalive timeout")),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_peer_that_answers_pings_stays_connected_while_nobody_reads_or_writes() {
    let (addr, mut channels) = serve_channels(keepalive(100, 150)).await;
    let mut ws = ws_connect(addr, "/").await;
    let ch = next_channel(&mut channels).await;
    // The application neither reads nor writes; the client answers pings while it polls.
    let mut pings = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1200);
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, ws.next()).await {
        if let WsMessage::Ping(_) = m.expect("connection error") {
            pings += 1;
        }
    }
    assert!(pings >= 3, "only {pings} pings in 1.2 s with a 100 ms interval");
    assert!(ch.is_open());
    let mut ch = ch;
    send_text(&mut ws, "still here").await;
    loop {
        match next_of(&mut ch).await {
            Some(Event::Message(m)) => {
                assert_eq!(m, webchan::Incoming::Text("still here".into()));
                break;
            }
            Some(Event::Open) => continue,
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_peer_that_answers_pings_stays_connected_while_the_server_stops_reading_for_a_slow_application(
) {
    // The application reads nothing, so after 4 KiB of messages the server stops reading: the
    // client's pongs then wait unread in the kernel with the rest. Before 2026-12-05 keepalive
    // took that for a dead peer: 1006 "keepalive timeout" after ~0.4 s, and 95 of these 100
    // messages lost.
    let config = keepalive(100, 150).queue_limit(4096);
    let (addr, mut channels) = serve_channels(config).await;
    let mut raw = RawWs::connect(addr).await;
    let mut ch = next_channel(&mut channels).await;
    for i in 0..100u32 {
        raw.frame(0x82, &numbered(i, 1024)).await;
    }
    // The client answers every ping for 1.2 s (interval + timeout several times over).
    let mut pings = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1200);
    while let Ok(frame) = tokio::time::timeout_at(deadline, raw.read_frame()).await {
        let (first, payload) = frame.expect("the server dropped the connection");
        assert_eq!(first, 0x89, "only pings from the server");
        pings += 1;
        raw.frame(0x8a, &payload).await;
    }
    assert!(pings >= 1, "no ping in 1.2 s");
    // The application catches up: every message, in order, and the channel still open.
    assert!(matches!(next_of(&mut ch).await, Some(Event::Open)));
    for i in 0..100u32 {
        match next_of(&mut ch).await {
            Some(Event::Message(webchan::Incoming::Binary(b))) => {
                assert_eq!(u32::from_be_bytes(b[..4].try_into().unwrap()), i)
            }
            other => panic!("message {i}: {other:?}"),
        }
    }
    assert!(ch.is_open());
    // And keepalive works again once reading resumed: a client that stops answering goes.
    assert!(raw.eof().await, "the server did not drop the peer that stopped answering");
    let events = all_events(&mut ch).await;
    assert_eq!(closed_of(&events), CloseInfo::websocket(1006, "keepalive timeout"));
}

#[tokio::test]
async fn keepalive_pings_do_not_count_as_traffic_for_the_idle_timeout() {
    let config = keepalive(50, 1000).timeout(Duration::from_millis(400));
    let (rec, mut rx) = recorder();
    let addr = serve(config, rec).await;
    let mut ws = ws_connect(addr, "/").await;
    // Answering pings (by polling) is not traffic: the idle timeout still closes.
    let mut close = None;
    while let Some(m) = next_msg(&mut ws).await {
        if let WsMessage::Close(f) = m {
            close = f;
            break;
        }
    }
    assert_eq!(close.expect("a close frame").reason.as_str(), "idle timeout");
    let events = events_until_closed(&mut rx).await;
    assert!(
        matches!(events.last(), Some(Event::Closed(i)) if i.reason.as_deref() == Some("idle timeout"))
    );
}

#[tokio::test]
async fn keepalive_off_sends_no_ping() {
    let (addr, _channels) = serve_channels(Config::default().keepalive(None)).await;
    let mut raw = RawWs::connect(addr).await;
    let got = tokio::time::timeout(Duration::from_millis(300), raw.read_frame()).await;
    assert!(got.is_err(), "a frame came with keepalive off: {got:?}");
}

/// A real client process, stopped with SIGSTOP: the kernel still acknowledges TCP, but no pong
/// comes back. Python's standard library does the handshake (no package needed).
#[tokio::test]
async fn a_stopped_client_process_is_detected() {
    let (rec, mut rx) = recorder();
    let addr = serve(keepalive(100, 300), rec).await;
    let script = format!(
        "import socket,sys,time\n\
         s=socket.create_connection(('127.0.0.1',{port}))\n\
         s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n'\n\
         b'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n')\n\
         buf=b''\n\
         while b'\\r\\n\\r\\n' not in buf: buf+=s.recv(1)\n\
         print('open', flush=True)\n\
         time.sleep(60)\n",
        port = addr.port()
    );
    let mut child = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 is needed for this test");
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(line.trim(), "open");
    assert!(matches!(next_event(&mut rx).await, Event::Open));
    let pid = child.id().unwrap().to_string();
    let stopped = std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    assert!(stopped.success());
    let events = events_until_closed(&mut rx).await;
    let _ = std::process::Command::new("kill").args(["-CONT", &pid]).status();
    let _ = child.kill().await;
    assert!(
        matches!(events.last(), Some(Event::Closed(i)) if *i == CloseInfo::websocket(1006, "keepalive timeout")),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_pings_and_never_reads_does_not_grow_the_server_without_bound() {
    // Each ping's pong was encoded at once and waited in the write buffer, and pings do not
    // count against the queue limit: before 2026-12-05 the server's memory grew by ~95 MiB
    // for ~96 MiB of pings. Now only the latest unanswered ping is kept (RFC 6455 §5.5.3).
    const CAP: usize = 96 << 20; // bytes of pings the client is allowed to write
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    socket.set_send_buffer_size(64 * 1024).unwrap();
    let client = tokio::net::TcpSocket::new_v4().unwrap();
    client.set_send_buffer_size(64 * 1024).unwrap();
    client.set_recv_buffer_size(64 * 1024).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let (tx, mut channels) = mpsc::unbounded_channel();
    // Small queue: whatever bound the server keeps, it is not this one.
    let addr = serve_on(
        socket.listen(16).unwrap(),
        Config::default().queue_limit(64 * 1024),
        |r| r,
        move |ch: Channel| {
            let _ = tx.send(ch);
            async {}
        },
    );
    let tcp = client.connect(addr).await.unwrap();
    let raw = RawWs::upgrade(tcp, addr, "/").await;
    let ch = next_channel(&mut channels).await; // a channel the application holds
    let before = rss_kib();
    // Pings of 125 bytes, 1,000 to a write, from a thread of their own; the client never reads.
    let mut batch = Vec::new();
    for _ in 0..1000 {
        batch.extend(encode_frame(0x89, Some([1, 2, 3, 4]), &[b'p'; 125], None));
    }
    // Stays connected (and reads nothing) until the test ends; until the client is stopped by
    // TCP or has written its cap (20 s at most).
    let hold = Duration::from_secs(30);
    let written = flood_from_thread(raw, batch, CAP, hold, Duration::from_millis(500)).await;
    let grown = rss_kib().saturating_sub(before);
    let wrote = written.load(Ordering::SeqCst);
    eprintln!("client wrote {} KiB of pings; server RSS grew {grown} KiB", wrote >> 10);
    assert!(
        grown < 16 * 1024,
        "the server's memory grew by {grown} KiB for {} KiB of pings from a client that reads nothing \
         (queue_limit 64 KiB, socket buffers 64 KiB)",
        wrote >> 10
    );
    drop(ch);
}

/// A WebSocket (keepalive 200 ms / 800 ms) on which the server sends 64 KiB messages without
/// pause, from the returned task, until a send fails.
async fn a_busy_stream() -> (RawWs, Channel, tokio::task::JoinHandle<()>) {
    let (addr, mut channels) = serve_channels(keepalive(200, 800)).await;
    let raw = RawWs::connect(addr).await;
    let ch = next_channel(&mut channels).await;
    let sender = ch.sender();
    let writer = tokio::spawn(async move {
        let chunk = bytes::Bytes::from(vec![7u8; 64 * 1024]);
        while sender.send(webchan::Message::Binary(chunk.clone())).await.is_ok() {}
    });
    (raw, ch, writer)
}

/// The server streams 64 KiB messages without pause to a client that reads ~3 MiB/s and
/// answers every ping the moment it sees one: alive, though each ping waits behind megabytes in
/// the kernel's buffers. A write that takes bytes after the socket was full shows the client's
/// TCP acknowledged data, which counts as life. Before stop 27 (2026-12-05) only frames from
/// the client counted: dropped with 1006 "keepalive timeout" after 1.6 s (4.8 MB read, one
/// ping answered).
#[tokio::test]
async fn a_live_client_reading_a_busy_stream_slowly_is_not_taken_for_dead() {
    let (raw, mut ch, writer) = a_busy_stream().await;
    let (r, mut w) = raw.tcp.into_split();
    let mut reader = RawWs { tcp: r, buf: raw.buf };
    let start = std::time::Instant::now();
    let (mut pings, mut data, mut dropped) = (0, 0usize, false);
    while start.elapsed() < Duration::from_secs(4) {
        match tokio::time::timeout(Duration::from_secs(10), reader.read_frame()).await {
            Ok(Some((0x89, p))) => {
                pings += 1;
                RawWs { tcp: &mut w, buf: Vec::new() }.frame(0x8a, &p).await;
            }
            Ok(Some((_, p))) => {
                data += p.len();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(None) => {
                dropped = true;
                break;
            }
            Err(_) => panic!("nothing from the server in 10 s"),
        }
    }
    let events = if dropped { all_events(&mut ch).await } else { Vec::new() };
    assert!(
        !dropped,
        "a client that read {data} bytes and answered {pings} pings was dropped: {events:?}"
    );
    writer.abort();
}

/// The other side of that rule: a client that reads nothing while the server streams is still
/// found dead (the writes stop taking bytes, so nothing counts as life).
#[tokio::test]
async fn a_client_that_reads_nothing_of_a_busy_stream_is_dropped() {
    let (raw, mut ch, writer) = a_busy_stream().await;
    let events = all_events(&mut ch).await;
    assert_eq!(closed_of(&events), CloseInfo::websocket(1006, "keepalive timeout"), "{events:?}");
    writer.abort();
    drop(raw);
}

/// `keepalive(Some((0, timeout)))` is off, as a zero `timeout` and a zero `sse_keepalive` are.
/// Before stop 27 (2026-12-05) it pinged a quiet client at every sweep: 99 pings in 1 s.
#[tokio::test]
async fn a_zero_keepalive_interval_means_none() {
    let addr =
        serve(Config::default().keepalive(Some((Duration::ZERO, Duration::from_secs(5)))), echo)
            .await;
    let mut raw = RawWs::connect(addr).await;
    // A round trip proves the connection is up; then a second of quiet, no ping.
    raw.frame(0x82, b"hello").await;
    assert_eq!(raw.read_frame().await, Some((0x82, b"hello".to_vec())));
    let quiet = tokio::time::timeout(Duration::from_secs(1), raw.read_frame()).await;
    assert!(quiet.is_err(), "a frame from a server with keepalive off: {quiet:?}");
}
