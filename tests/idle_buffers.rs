//! A connection in a conversation keeps its read and write buffers from one message to the
//! next; once quiet, it gives them back: with keepalive on (the default) when a sweep of the
//! keepalive thread finds its peer silent (two sweeps at most, a sweep at least once a
//! second), with keepalive off as soon as it goes idle. (At most 256 connections keep theirs
//! at once: `keepalive::HOLDERS_MAX`, checked by that module's unit test.) Measured as the
//! heap the process holds per open connection (with the counting allocator, so this binary
//! has one test, alone in its process).

#[path = "support/counting.rs"]
mod counting;
mod support;

use std::time::{Duration, Instant};

use futures::SinkExt;
use support::{echo, next_msg, serve, ws_connect, WsClient, WsMessage};
use webchan::Config;

/// Connections measured at once: enough that the thread's buffer pool (32 buffers of 4 KiB,
/// full or empty depending on what came before) moves the figure per connection by ~650 B at
/// most; no more than keep their buffers at once (256).
const N: usize = 200;

/// `N` connections that each echoed `messages` small messages and stay open.
async fn conversations(config: Config, messages: u8) -> Vec<WsClient> {
    let addr = serve(config, echo).await;
    let mut clients = Vec::with_capacity(N);
    for _ in 0..N {
        let mut ws = ws_connect(addr, "/").await;
        for i in 0..messages {
            ws.send(WsMessage::Binary(vec![i; 16].into())).await.unwrap();
            match next_msg(&mut ws).await {
                Some(WsMessage::Binary(b)) => assert_eq!(&b[..], &[i; 16]),
                other => panic!("expected the echo, got {other:?}"),
            }
        }
        clients.push(ws);
    }
    // Every server task has run to its idle point once the last echo is back, but the
    // connection's task may still be on its way there: a moment for it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    clients
}

/// `N` conversations of `messages` each (see [`conversations`]), and a measure of the heap per
/// connection held since just before they opened.
async fn opened(config: Config, messages: u8) -> (Vec<WsClient>, impl Fn() -> isize) {
    let before = counting::live();
    let clients = conversations(config, messages).await;
    (clients, move || (counting::live() - before) / N as isize)
}

/// Closes the connections, and gives the server a moment to drop them.
async fn close(clients: Vec<WsClient>) {
    drop(clients);
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_quiet_connection_gives_its_buffers_back_and_a_talking_one_keeps_them() {
    // Keepalive off: the buffers go back as soon as each connection is idle.
    let (off, held) = opened(Config::default().keepalive(None), 3).await;
    let off_held = held();
    close(off).await;

    // Keepalive on: kept while the peer talks...
    let (on, held) = opened(Config::default(), 3).await;
    let talking = held();
    // ...and given back within two sweeps once it is silent (up to 10 s on a loaded machine).
    let started = Instant::now();
    let mut quiet = held();
    while quiet > off_held + 1024 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        quiet = held();
    }
    eprintln!(
        "heap per open connection: keepalive off {off_held} B; on, talking {talking} B, \
         quiet {quiet} B after {:?}",
        started.elapsed()
    );
    // Two buffers of 4 KiB each kept by every talking connection, up to 32 of them taken from
    // the pool (which has them back once they are quiet): 7.5 KiB per connection or more.
    assert!(talking - quiet >= 7 * 1024, "talking {talking} B, quiet {quiet} B: buffers not kept");
    // Quiet, the connection holds what one without keepalive holds, and its watch (~150 B),
    // give or take the pool's ~650 B.
    assert!(
        (quiet - off_held).abs() < 1536,
        "quiet with keepalive {quiet} B, without {off_held} B: buffers not given back"
    );
    close(on).await;

    // A connection that only opened has carried nothing: it keeps no buffer, keepalive or not
    // (`scripts/idle-rss.sh`'s idle connections).
    let (off, held) = opened(Config::default().keepalive(None), 0).await;
    let off_opened = held();
    close(off).await;
    let (on, held) = opened(Config::default(), 0).await;
    let on_opened = held();
    eprintln!(
        "heap per connection that only opened: keepalive off {off_opened} B, on {on_opened} B"
    );
    assert!(
        (on_opened - off_opened).abs() < 1536,
        "opened only, with keepalive {on_opened} B, without {off_opened} B: buffers kept"
    );
    drop(on);
}
