//! Smoke tests.
mod support;
use support::*;
use webchan::{Config, Event, Incoming};

#[tokio::test]
async fn ws_echo_and_close() {
    let addr = serve(Config::default(), echo).await;
    let mut ws = ws_connect(addr, "/").await;
    send_text(&mut ws, "hi").await;
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("hi")));
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn http_stream_smoke() {
    let addr = serve(Config::default(), |ch: webchan::Channel| async move {
        let s = ch.sender();
        s.send("a".into()).await.unwrap();
        s.send("b".into()).await.unwrap();
        s.close().await;
    })
    .await;
    let r = http1_get(addr, get(addr, "/")).await;
    assert_eq!(&r.body()[..], b"ab");
    assert_eq!(r.headers()["transfer-encoding"], "chunked");
}

#[tokio::test]
async fn ws_events() {
    let (rec, mut rx) = recorder();
    let addr = serve(Config::default(), rec).await;
    let mut ws = ws_connect(addr, "/x").await;
    assert!(matches!(next_event(&mut rx).await, Event::Open));
    send_text(&mut ws, "yo").await;
    match next_event(&mut rx).await {
        Event::Message(Incoming::Text(t)) => assert_eq!(t, "yo"),
        e => panic!("{e:?}"),
    }
    ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: 4000u16.into(),
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    match next_event(&mut rx).await {
        Event::Closed(info) => {
            assert_eq!(info.code, Some(4000));
            assert_eq!(info.reason.as_deref(), Some("bye"));
        }
        e => panic!("{e:?}"),
    }
}
