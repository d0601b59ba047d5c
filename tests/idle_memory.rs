//! What an idle WebSocket channel holds after bursts of small messages, counted by a global
//! allocator (this file is a test binary of its own, and its tests run one at a time).
//! Before 2026-12-05 the queues kept the room of their largest burst: 1.5 MiB after 20,000
//! messages in and 1.9 MiB after 20,000 out, against ~3.5 KiB for a fresh channel. Now a
//! drained queue keeps room for at most `KEPT_SLOTS` (8) entries.
mod support;
// The process's allocator, counting live bytes (`live()`); for the test binaries that
// include it.
#[path = "support/counting.rs"]
mod counting;
use counting::live;

use std::time::Duration;

use futures::StreamExt;
use support::*;
use webchan::{Config, Event};

const N: usize = 20_000;

/// The live heap once the channel, its sender and its client are gone: what they held is the
/// difference with the heap before (the per-thread buffer pools, bounded whatever the number of
/// channels, stay).
async fn gone(sender: webchan::Sender, ch: webchan::Channel, raw: RawWs) -> isize {
    drop(sender);
    drop(ch);
    drop(raw);
    tokio::time::sleep(Duration::from_millis(300)).await;
    live()
}

/// The tests of this file count the same allocator: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "current_thread")]
async fn an_idle_channel_gives_back_what_bursts_of_small_messages_took() {
    let _serial = SERIAL.lock().await;
    let (addr, mut channels) = serve_channels(Config::default()).await;
    let mut raw = RawWs::connect(addr).await;
    let mut ch = next_channel(&mut channels).await;
    assert!(matches!(ch.next().await, Some(Event::Open)));
    // Warm up: one message each way, so that pools and arenas exist.
    raw.frame(0x82, b"x").await;
    assert!(matches!(ch.next().await, Some(Event::Message(_))));
    ch.send("y".into()).await.unwrap();
    raw.read_frame().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = live();

    // Incoming: a burst of 1-byte messages (20 KB, far under the 1 MiB queue limit) that the
    // application reads a moment later, one by one.
    let mut burst = Vec::new();
    for _ in 0..N {
        burst.extend(encode_frame(0x82, Some([1, 2, 3, 4]), b"z", None));
    }
    raw.raw(&burst).await;
    drop(burst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..N {
        match tokio::time::timeout(Duration::from_secs(10), ch.next()).await.unwrap() {
            Some(Event::Message(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_in = live();

    // Outgoing: a burst of 1-byte sends, which the client reads.
    let sender = ch.sender();
    let mut completions = Vec::new();
    for _ in 0..N {
        completions.push(sender.try_send("w".into()).unwrap());
    }
    for _ in 0..N {
        raw.read_frame().await.unwrap();
    }
    for c in completions.drain(..) {
        c.await.unwrap();
    }
    drop(completions);
    // The test client's own read buffer grew with the burst: not the server's.
    raw.buf = Vec::new();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_out = live();
    let gone = gone(sender, ch, raw).await;
    let (fresh, held_in, held_out) = (before - gone, after_in - gone, after_out - gone);
    eprintln!("held by the channel: {fresh} B fresh, {held_in} B after {N} in, {held_out} B after {N} out");
    assert!(
        held_in < 16 * 1024 && held_out < 16 * 1024,
        "an idle WebSocket channel holds {held_in} B after receiving {N} 1-byte messages and \
         {held_out} B after sending {N} ({fresh} B before the bursts)"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_send_made_while_a_burst_is_written_leaves_no_room_behind() {
    // The connection's drained batch is swapped into the shared queue by the next take: a
    // send made while a burst was written put the burst's room there, where nothing shrank it
    // (1.8 MiB after 20,000 sends, before this test's commit).
    let _serial = SERIAL.lock().await;
    let (addr, mut channels) = serve_channels(Config::default().queue_limit(64 << 20)).await;
    let mut raw = RawWs::connect(addr).await;
    let mut ch = next_channel(&mut channels).await;
    assert!(matches!(ch.next().await, Some(Event::Open)));
    ch.send("y".into()).await.unwrap();
    raw.read_frame().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A burst of 1 KiB sends; the client reads nothing yet, so the socket fills while the
    // connection still holds most of the burst in its batch.
    let sender = ch.sender();
    let payload = bytes::Bytes::from(vec![b'w'; 1024]);
    let mut completions = Vec::new();
    for _ in 0..N {
        completions.push(sender.try_send(webchan::Message::Binary(payload.clone())).unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // One more send meanwhile (a live channel's next message).
    completions.push(sender.try_send("v".into()).unwrap());
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Now the client reads it all.
    for _ in 0..=N {
        raw.read_frame().await.unwrap();
    }
    for c in completions.drain(..) {
        c.await.unwrap();
    }
    drop(completions);
    drop(payload);
    raw.buf = Vec::new();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = live();

    let held = idle - gone(sender, ch, raw).await;
    eprintln!("held by the idle channel: {held} B after a burst of {N} sends and one more");
    assert!(
        held < 16 * 1024,
        "an idle WebSocket channel holds {held} B after a burst of {N} sends and one more \
         made while the burst was written"
    );
}

/// Many short WebSockets with keepalive on (the default) leave nothing behind once the
/// keepalive thread has swept them: its list of connections gives back the room a burst took.
/// Before stop 27 (2026-12-05) the list kept the most connections ever seen between two sweeps
/// (72 bytes each: +590 KB after a churn of ~21,000 a second, for good).
#[tokio::test(flavor = "current_thread")]
async fn a_burst_of_short_websockets_leaves_no_room_behind_in_the_keepalive_list() {
    let _one_at_a_time = SERIAL.lock().await;
    let addr = serve(Config::default(), |mut ch: webchan::Channel| async move {
        while ch.next().await.is_some() {}
    })
    .await;
    let burst = |n: usize| async move {
        for _ in 0..n / 100 {
            let clients = (0..100).map(|_| async {
                let mut raw = RawWs::connect(addr).await;
                raw.frame(0x88, &[0x0f, 0xa0]).await;
            });
            futures::future::join_all(clients).await;
        }
        // Two sweeps (at least one a second): the gone connections leave the list.
        tokio::time::sleep(Duration::from_millis(2500)).await;
    };
    burst(500).await; // warm-up: the thread's buffer pools, the list's first room
    let before = live();
    let started = std::time::Instant::now();
    burst(4000).await;
    let rate = 4000.0 / (started.elapsed().as_secs_f64() - 2.5);
    let grown = live() - before;
    assert!(grown < 32 * 1024, "{grown} bytes more after 4,000 WebSockets ({rate:.0} a second)");
}
