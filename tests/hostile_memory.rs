//! What a hostile or broken peer can make the server hold, against the docs (from stop 29's
//! review, 2026-12-05). Memory is counted by a global allocator (this file is a test binary of
//! its own; its tests run one at a time, see `SERIAL`); `--nocapture` shows the figures.
mod support;
// The process's allocator, counting live bytes (`live()`); for the test binaries that
// include it.
#[path = "support/counting.rs"]
mod counting;
use counting::live;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use support::*;
use webchan::{Channel, Config, Event};

/// The tests of this file count the same allocator: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const MASK: [u8; 4] = [1, 2, 3, 4];

/// A server with `config` whose application takes each channel and reads nothing; a raw
/// WebSocket client on small socket buffers (64 KiB), so that the kernel holds little.
async fn raw_pair(config: Config) -> (RawWs, Channel) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    socket.set_send_buffer_size(64 * 1024).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let (addr, mut channels) = serve_channels_on(socket.listen(16).unwrap(), config);
    let client = tokio::net::TcpSocket::new_v4().unwrap();
    client.set_send_buffer_size(64 * 1024).unwrap();
    client.set_recv_buffer_size(64 * 1024).unwrap();
    let tcp = client.connect(addr).await.unwrap();
    let raw = RawWs::upgrade(tcp, addr, "/").await;
    let ch = next_channel(&mut channels).await;
    (raw, ch)
}

/// [`flood_from_thread`], holding the connection 12 s, checked every 200 ms; then lets the
/// server settle on what it has.
async fn flood(raw: RawWs, batch: Vec<u8>, cap: usize) -> Arc<AtomicUsize> {
    let hold = Duration::from_secs(12);
    let written = flood_from_thread(raw, batch, cap, hold, Duration::from_millis(200)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    written
}

fn bytes_of(m: webchan::Incoming) -> bytes::Bytes {
    match m {
        webchan::Incoming::Text(t) => t.into_bytes(),
        webchan::Incoming::Binary(b) => b,
        _ => unreachable!(),
    }
}

/// Takes every message the channel holds (with a 10 s bound), until `n` came.
async fn take_messages(ch: &mut Channel, n: usize) {
    let mut got = 0;
    while got < n {
        match tokio::time::timeout(Duration::from_secs(10), ch.next()).await.expect("stalled") {
            Some(Event::Message(_)) => got += 1,
            Some(Event::Open) => {}
            other => panic!("after {got} messages: {other:?}"),
        }
    }
}

/// Config::queue_limit: "Incoming: a WebSocket stops reading from the client while the
/// application has more than this many bytes of messages not yet taken from the stream, each
/// counted with its slot in the queue (48 bytes), so empty ones count too ... A read holds at
/// most this more and one message." RELIABILITY ("Sizes and rates"): a flood of empty messages
/// is "held to the limit". A client that puts ~4 KiB of unsolicited pongs (RFC 6455 §5.5.3
/// allows them; they count against nothing) between 1-byte messages makes each message's
/// payload the only live slice of a 4 KiB payload arena (src/bufpool.rs `copy_small`: the
/// pongs' copies are dropped at once, the message's keeps the arena): before stop 29 each
/// message counted 49 bytes held ~4 KiB (22 MiB against a 256 KiB limit); now small messages
/// waiting behind a read's burst are copied into storage of their own size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_messages_between_pongs_are_held_to_the_queue_limit() {
    let _serial = SERIAL.lock().await;
    const LIMIT: usize = 256 * 1024;
    let (raw, mut ch) = raw_pair(Config::default().queue_limit(LIMIT).keepalive(None)).await;
    // One period: a 1-byte binary message, then 33 pongs of 125 bytes (4,125 bytes: past an
    // arena, whatever the offset), 1,000 periods to a write.
    let mut period = encode_frame(0x82, Some(MASK), b"m", None);
    for _ in 0..33 {
        period.extend(encode_frame(0x8A, Some(MASK), &[b'p'; 125], None));
    }
    let batch: Vec<u8> = period.iter().copied().cycle().take(period.len() * 1000).collect();
    let per = period.len();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (before, rss_before) = (live(), rss_kib());
    let written = flood(raw, batch, 256 << 20).await;
    let (grown, rss_grown) = (live() - before, rss_kib().saturating_sub(rss_before));
    let wrote = written.load(Ordering::SeqCst);
    let messages = wrote / per;
    eprintln!(
        "client wrote {} KiB ({messages} messages behind pongs); server heap grew {} KiB \
         (RSS {rss_grown} KiB) for a {} KiB queue limit",
        wrote >> 10,
        grown >> 10,
        LIMIT >> 10
    );
    // The docs' bound: the limit, a read's worth more (another limit) and one message; a
    // generous 512 KiB for buffers and the kernel-side slack on top.
    let bound = (2 * LIMIT + 512 * 1024) as isize;
    let held = grown;
    // Then the application reads: every message arrives (the flood was fair), so the memory
    // was the messages' own.
    take_messages(&mut ch, 1000.min(messages)).await;
    assert!(
        held < bound,
        "unread 1-byte messages (counted 49 bytes each) held {} KiB of heap against a {} KiB \
         queue limit (bound {} KiB)",
        held >> 10,
        LIMIT >> 10,
        bound >> 10
    );
}

/// The same with messages just over the copy limit (1,025 bytes) that come one at a time, as
/// a chat client's do (no hostility needed): each is alone in its read. Before stop 29 its
/// payload took the whole read buffer as its storage, so with `read_buffer_size` 64 KiB each
/// message counted 1,073 bytes held 64 KiB (15 MiB in all; 233 MiB with 1 MiB); now one that
/// fills less than half of the buffer is copied out. Figures: set `H_RBUF` to the read buffer
/// size (default 65536).
#[tokio::test(flavor = "current_thread")]
async fn messages_read_one_at_a_time_into_a_large_read_buffer_are_held_to_the_queue_limit() {
    let _serial = SERIAL.lock().await;
    const LIMIT: usize = 256 * 1024;
    let rbuf: usize = std::env::var("H_RBUF").ok().and_then(|v| v.parse().ok()).unwrap_or(65536);
    let config = Config::default().queue_limit(LIMIT).keepalive(None).read_buffer_size(rbuf);
    let (mut raw, mut ch) = raw_pair(config).await;
    let message = encode_frame(0x82, Some(MASK), &[b'x'; 1025], None);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (before, rss_before) = (live(), rss_kib());
    let mut sent = 0;
    while sent * (1025 + 48) <= LIMIT + 2048 {
        raw.raw(&message).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
        sent += 1;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let grown = live() - before;
    let rss_grown = rss_kib().saturating_sub(rss_before);
    eprintln!(
        "{sent} messages of 1,025 bytes ({} KiB counted) unread: server heap grew {} KiB, RSS \
         {rss_grown} KiB (queue limit {} KiB, read buffer {} KiB)",
        sent * 1073 / 1024,
        grown >> 10,
        LIMIT >> 10,
        rbuf >> 10
    );
    take_messages(&mut ch, sent).await;
    let bound = (2 * LIMIT + 512 * 1024) as isize;
    assert!(
        grown < bound,
        "{sent} unread messages of 1,025 bytes held {} KiB of heap against a {} KiB queue limit \
         (read buffer {} KiB)",
        grown >> 10,
        LIMIT >> 10,
        rbuf >> 10
    );
}

/// A message in 100,000 fragments of 1 byte, and one trickled after a header announcing the
/// whole of it: what the server holds meanwhile stays near the message's size (here, the
/// message limit of 1 MiB), not a multiple of it; the message arrives whole.
#[tokio::test(flavor = "current_thread")]
async fn a_message_in_tiny_fragments_holds_about_its_size() {
    let _serial = SERIAL.lock().await;
    const MAX: usize = 1 << 20;
    let config = Config::default().max_message_size(MAX).keepalive(None);
    let (mut raw, mut ch) = raw_pair(config).await;
    assert!(matches!(next_of(&mut ch).await, Some(Event::Open)));
    let mut batch = encode_frame(0x02, Some(MASK), b"a", None);
    for _ in 0..99_998 {
        batch.extend(encode_frame(0x00, Some(MASK), b"b", None));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = live();
    raw.raw(&batch).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = live() - before;
    raw.frame(0x80, b"c").await;
    match next_of(&mut ch).await {
        Some(Event::Message(m)) => assert_eq!(bytes_of(m).len(), 100_000),
        other => panic!("{other:?}"),
    }
    eprintln!(
        "a 100,000-byte message in 1-byte fragments: {} KiB held while unfinished",
        held >> 10
    );
    assert!(held < 512 * 1024, "{held} B held for a 100,000-byte message in fragments");
}

/// RFC 6455 §5.5.1: after sending a close frame, the peer sends no more data; a server that
/// received one must not deliver data frames that follow it. Many close frames: one answer.
#[tokio::test(flavor = "current_thread")]
async fn data_and_closes_after_the_clients_close_are_ignored() {
    let _serial = SERIAL.lock().await;
    let (rec, mut rx) = recorder();
    let addr = serve(Config::default(), rec).await;
    let mut raw = RawWs::connect(addr).await;
    let mut bytes = encode_frame(0x82, Some(MASK), b"before", None);
    bytes.extend(encode_frame(0x88, Some(MASK), &[0x03, 0xe8], None));
    for _ in 0..50 {
        bytes.extend(encode_frame(0x82, Some(MASK), b"after", None));
        bytes.extend(encode_frame(0x88, Some(MASK), &[0x0f, 0xa0], None));
        bytes.extend(encode_frame(0x89, Some(MASK), b"ping", None));
    }
    raw.raw(&bytes).await;
    let mut frames = Vec::new();
    while let Some(f) = raw.read_frame().await {
        frames.push(f);
    }
    let events = events_until_closed(&mut rx).await;
    let messages: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(bytes_of(m.clone()).to_vec()),
            _ => None,
        })
        .collect();
    assert_eq!(messages, vec![b"before".to_vec()], "{events:?}");
    assert!(events.iter().all(|e| !matches!(e, Event::Error(_))), "{events:?}");
    assert_eq!(closed_of(&events), webchan::CloseInfo::websocket(1000, ""));
    assert_eq!(frames, vec![(0x88, vec![0x03, 0xe8])], "one close frame answers, nothing else");
}

/// Config::max_frame_size: "The server reads a frame into room it makes as the bytes come, at
/// most 16 MiB ahead of them: a client announcing a frame of any size costs no more until it
/// sends it." What a frame header announcing the default limit (16 MiB), and one byte of it,
/// make the server allocate at once, per connection: the room for the whole frame (16 MiB of
/// heap for 15 bytes; not resident until written). Passing: it shows what the code does.
#[tokio::test(flavor = "current_thread")]
async fn a_header_announcing_a_large_frame_reserves_its_room_at_once() {
    let _serial = SERIAL.lock().await;
    const N: usize = 8;
    const FRAME: u64 = 16 << 20;
    let (addr, mut channels) = serve_channels(Config::default().keepalive(None)).await;
    let mut raws = Vec::new();
    let mut chs = Vec::new();
    for _ in 0..N {
        raws.push(RawWs::connect(addr).await);
        chs.push(next_channel(&mut channels).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (before, rss_before) = (live(), rss_kib());
    for raw in &mut raws {
        let mut head = encode_frame(0x82, Some(MASK), &[], Some(FRAME));
        head.push(b'x');
        raw.raw(&head).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (grown, rss_grown) = (live() - before, rss_kib().saturating_sub(rss_before));
    eprintln!(
        "{N} clients that sent a header announcing {} MiB and 1 byte: heap +{} KiB, RSS +{rss_grown} KiB",
        FRAME >> 20,
        grown >> 10
    );
    // Then the idle clients trickle a byte every 100 ms for a second: nothing more is taken.
    for _ in 0..10 {
        for raw in &mut raws {
            raw.raw(b"y").await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = live() - before;
    eprintln!("after a second of trickling: heap +{} KiB", after >> 10);
    assert!(grown >= (N as isize) * (FRAME as isize - 8192), "heap +{grown} B");
    assert!(after < grown + (1 << 20), "trickling took more: {after} B");
    drop(chs);
}

/// Feeds fresh 16 KiB messages through the `Sink` until one has waited 300 ms; returns how
/// many were taken.
async fn feed_until_stalled(ch: &mut Channel) -> usize {
    use futures::SinkExt;
    let mut taken = 0;
    loop {
        let message = webchan::Message::Binary(vec![7u8; 16 * 1024].into());
        match tokio::time::timeout(Duration::from_millis(300), ch.feed(message)).await {
            Ok(r) => r.unwrap(),
            Err(_) => return taken,
        }
        taken += 1;
        assert!(taken < 20_000, "320 MiB taken for a client that reads nothing");
    }
}

/// Config::queue_limit: "the Sink waits while this many bytes or more are queued and not yet
/// written". What the server holds for a client that reads nothing, with the Sink fed fresh
/// 16 KiB messages until it waits: a WebSocket over HTTP/1.1, an HTTP stream over HTTP/1.1,
/// a WebSocket and an HTTP stream over HTTP/2 (raw client, default 64 KiB windows, no
/// WINDOW_UPDATE ever).
#[tokio::test(flavor = "current_thread")]
async fn a_client_that_reads_nothing_costs_the_queue_limit_and_buffers() {
    let _serial = SERIAL.lock().await;
    const LIMIT: usize = 256 * 1024;
    let config = Config::default().queue_limit(LIMIT).keepalive(None);
    let mut report = Vec::new();
    // WebSocket over HTTP/1.1.
    {
        let (raw, mut ch) = raw_pair(config.clone()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = live();
        let taken = feed_until_stalled(&mut ch).await;
        report.push(("ws h1", taken, live() - before));
        drop((raw, ch));
    }
    let (addr, mut channels) = serve_channels(config.clone()).await;
    // HTTP stream over HTTP/1.1: a raw GET whose response is never read.
    {
        use tokio::io::AsyncWriteExt;
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(64 * 1024).unwrap();
        let mut tcp = socket.connect(addr).await.unwrap();
        tcp.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
        let mut ch = next_channel(&mut channels).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = live();
        let taken = feed_until_stalled(&mut ch).await;
        report.push(("http h1", taken, live() - before));
        drop((tcp, ch));
    }
    // WebSocket and HTTP stream over HTTP/2, windows never updated.
    {
        let mut h2 = support::h2raw::H2Raw::connect(addr).await;
        h2.connect_ws(addr, 1, &[]).await;
        let mut ch = next_channel(&mut channels).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = live();
        let taken = feed_until_stalled(&mut ch).await;
        report.push(("ws h2", taken, live() - before));
        drop(ch);
        let mut h2 = support::h2raw::H2Raw::connect(addr).await;
        // The GET's HEADERS by hand: the response comes with the first send.
        let mut block = Vec::new();
        for (n, v) in [(":method", "GET"), (":scheme", "http"), (":path", "/")] {
            support::h2raw::hpack_literal(&mut block, n, v);
        }
        support::h2raw::hpack_literal(&mut block, ":authority", &addr.to_string());
        use support::h2raw::{END_HEADERS, END_STREAM, HEADERS};
        h2.send(HEADERS, END_HEADERS | END_STREAM, 1, &block).await;
        let mut ch = next_channel(&mut channels).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = live();
        let taken = feed_until_stalled(&mut ch).await;
        report.push(("http h2", taken, live() - before));
        drop(ch);
    }
    for (what, taken, grown) in &report {
        eprintln!("{what}: the Sink took {taken} messages of 16 KiB; heap +{} KiB", grown >> 10);
    }
    for (what, taken, grown) in report {
        assert!(
            grown < (2 * LIMIT + 512 * 1024) as isize,
            "{what}: {} KiB held for a client that reads nothing ({taken} sends taken, queue {} KiB)",
            grown >> 10,
            LIMIT >> 10
        );
    }
}

/// One HTTP/2 connection opening 300 WebSockets (RFC 8441, `H_N` to change) without waiting
/// for answers, each sending one 10-byte message and reading nothing: how many the server
/// takes (hyper's concurrent stream limit, 200: the rest get REFUSED_STREAM), and the heap
/// each holds. Figures; passes while each holds less than 32 KiB. (With 1,000, h2 sends
/// GOAWAY for the resets its refusals cause, and no channel is made: hyper's, not webchan's.)
#[tokio::test(flavor = "current_thread")]
async fn a_thousand_websockets_on_one_h2_connection() {
    let _serial = SERIAL.lock().await;
    use support::h2raw::{hpack_literal, DATA, END_HEADERS, HEADERS};
    let (addr, mut channels) = serve_channels(Config::default().keepalive(None)).await;
    let mut h2 = support::h2raw::H2Raw::connect(addr).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = live();
    let mut out = Vec::new();
    let count: u32 = std::env::var("H_N").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    for i in 0..count {
        let stream = 2 * i + 1;
        let mut block = Vec::new();
        for (n, v) in [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http")] {
            hpack_literal(&mut block, n, v);
        }
        hpack_literal(&mut block, ":path", "/");
        hpack_literal(&mut block, ":authority", &addr.to_string());
        hpack_literal(&mut block, "sec-websocket-version", "13");
        for (ty, flags, payload) in [
            (HEADERS, END_HEADERS, block),
            (DATA, 0, encode_frame(0x82, Some(MASK), b"0123456789", None)),
        ] {
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
            out.push(ty);
            out.push(flags);
            out.extend_from_slice(&stream.to_be_bytes());
            out.extend_from_slice(&payload);
        }
    }
    {
        use tokio::io::AsyncWriteExt;
        let _ = h2.tcp.write_all(&out).await;
    }
    drop(out);
    let mut chs = Vec::new();
    if std::env::var("H_DEBUG").is_ok() {
        let frames = h2.collect(Duration::from_millis(500)).await;
        eprintln!("{:?}", support::h2raw::describe(&frames[..frames.len().min(12)]));
    }
    while let Ok(Some(ch)) =
        tokio::time::timeout(Duration::from_millis(1000), channels.recv()).await
    {
        chs.push(ch);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let grown = live() - before;
    let n = chs.len();
    eprintln!(
        "{count} extended CONNECTs on one connection: {n} channels; heap +{} KiB ({} B each)",
        grown >> 10,
        grown / n.max(1) as isize
    );
    assert!(n > 0);
    assert!(grown / (n as isize) < 32 * 1024, "{grown} B for {n} WebSockets");
    drop(chs);
}
