//! WebSocket subprotocols chosen from `Config::protocols` (RFC 6455 §4.2.2), over real sockets
//! on 127.0.0.1: tokio-tungstenite's client (which checks that the `101` names one it offered),
//! raw clients for what a library does not send, and HTTP/2 (RFC 8441).

mod support;

use futures::{SinkExt, StreamExt};
use support::{h2_client, h2_websocket_request, next_channel, next_msg, serve_channels, RawWs};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use webchan::{Config, Event, Kind};

fn chat() -> Config {
    Config::default().protocols(["v2.chat", "v1.chat"])
}

fn protocols_of(head: &str) -> Vec<String> {
    support::header_values(head, "sec-websocket-protocol")
}

#[tokio::test]
async fn the_servers_first_choice_among_those_offered_is_named_and_seen_by_every_handle() {
    let (addr, mut channels) = serve_channels(chat()).await;
    let mut request = format!("ws://{addr}/").into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", "v1.chat, v2.chat".parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    // The server's order, not the client's.
    assert_eq!(response.headers()["sec-websocket-protocol"], "v2.chat");
    let channel = next_channel(&mut channels).await;
    assert_eq!(channel.protocol(), Some("v2.chat"));
    let (sender, mut receiver) = channel.split();
    assert_eq!((sender.protocol(), receiver.protocol()), (Some("v2.chat"), Some("v2.chat")));
    assert!(matches!(receiver.next().await, Some(Event::Open)));
    ws.send(WsMessage::text("hi")).await.unwrap();
    assert!(matches!(receiver.next().await, Some(Event::Message(_))));
    sender.send("back".into()).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("back")));

    // Only the second offered: it is the one.
    let mut request = format!("ws://{addr}/").into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", "v1.chat".parse().unwrap());
    let (_ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "v1.chat");
    assert_eq!(next_channel(&mut channels).await.protocol(), Some("v1.chat"));
}

#[tokio::test]
async fn offers_over_several_lines_with_spaces_are_read_and_names_compare_exactly() {
    let (addr, mut channels) = serve_channels(chat()).await;
    let offer = "Sec-WebSocket-Protocol: other ,  v1.chat\r\nSec-WebSocket-Protocol:v2.chat\r\n";
    let (_raw, head) = RawWs::connect_with(addr, offer).await;
    assert_eq!(protocols_of(&head), ["v2.chat"], "{head}");
    assert_eq!(next_channel(&mut channels).await.protocol(), Some("v2.chat"));

    // Another case is another name; none in common: no header, no protocol.
    for offer in
        ["Sec-WebSocket-Protocol: V2.CHAT, v1.Chat\r\n", "Sec-WebSocket-Protocol: other\r\n", ""]
    {
        let (mut raw, head) = RawWs::connect_with(addr, offer).await;
        assert_eq!(protocols_of(&head), Vec::<String>::new(), "{offer:?}: {head}");
        let channel = next_channel(&mut channels).await;
        assert_eq!(channel.protocol(), None, "{offer:?}");
        // The connection works all the same.
        let mut receiver = channel;
        assert!(matches!(receiver.next().await, Some(Event::Open)));
        raw.frame(0x81, b"x").await;
        assert!(matches!(receiver.next().await, Some(Event::Message(_))));
    }
}

#[tokio::test]
async fn without_a_list_none_is_chosen_and_an_http_stream_has_none() {
    let (addr, mut channels) = serve_channels(Config::default()).await;
    let (_raw, head) = RawWs::connect_with(addr, "Sec-WebSocket-Protocol: v2.chat\r\n").await;
    assert_eq!(protocols_of(&head), Vec::<String>::new(), "{head}");
    assert_eq!(next_channel(&mut channels).await.protocol(), None);

    let (addr, mut channels) = serve_channels(chat()).await;
    let request =
        format!("GET /stream HTTP/1.1\r\nHost: {addr}\r\nSec-WebSocket-Protocol: v2.chat\r\n\r\n");
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, request.as_bytes()).await.unwrap();
    let channel = next_channel(&mut channels).await;
    assert_eq!(channel.kind(), Kind::HttpStream);
    assert_eq!(channel.protocol(), None);
}

#[tokio::test]
async fn over_http2_the_choice_is_the_same() {
    let (addr, mut channels) = serve_channels(chat()).await;
    let mut sender = h2_client(addr).await;
    let mut request = h2_websocket_request(addr, "/");
    request.headers_mut().insert("sec-websocket-protocol", "v1.chat, v2.chat".parse().unwrap());
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["sec-websocket-protocol"], "v2.chat");
    assert_eq!(next_channel(&mut channels).await.protocol(), Some("v2.chat"));
}

#[test]
#[should_panic(expected = "is not a token")]
fn a_name_that_is_not_a_token_is_refused_at_once() {
    let _ = Config::default().protocols(["chat, v2"]);
}
