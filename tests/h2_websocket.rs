//! WebSockets over HTTP/2 (RFC 8441): a hyper HTTP/2 client doing extended CONNECT against a
//! server with `enable_connect_protocol`, then a WebSocket client over the upgraded stream.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;

use futures::SinkExt;
use http::{Method, Request, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{echo_or_ok, h2_client, next_msg, WsMessage};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use webchan::{Config, Kind};

/// An echo server speaking HTTP/1.1 and HTTP/2 with RFC 8441 enabled; reports each channel's
/// kind and HTTP version.
async fn server() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<(Kind, http::Version)>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        Ok::<_, Infallible>(match webchan::as_channel(req, Config::default()) {
                            Ok((reply, channel)) => {
                                let _ = tx
                                    .send((channel.kind(), channel.originating_request().version));
                                tokio::spawn(echo_or_ok(channel));
                                reply.await
                            }
                            Err(rejection) => rejection.into_response(),
                        })
                    }
                });
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder.http2().enable_connect_protocol();
                let _ = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service).await;
            });
        }
    });
    (addr, rx)
}

fn connect(
    addr: SocketAddr,
    protocol: Option<&'static str>,
    version: &str,
) -> Request<http_body_util::Empty<bytes::Bytes>> {
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{addr}/chat"))
        .header("sec-websocket-version", version)
        .body(http_body_util::Empty::new())
        .unwrap();
    if let Some(p) = protocol {
        req.extensions_mut().insert(hyper::ext::Protocol::from_static(p));
    }
    req
}

#[tokio::test]
async fn extended_connect_becomes_a_websocket_channel_answered_with_200() {
    let (addr, mut kinds) = server().await;
    let mut sender = h2_client(addr).await;
    let response = sender.send_request(connect(addr, Some("websocket"), "13")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("sec-websocket-accept").is_none());
    assert!(response.headers().get("content-length").is_none());
    assert_eq!(kinds.recv().await.unwrap(), (Kind::WebSocket, http::Version::HTTP_2));
    let upgraded = hyper::upgrade::on(response).await.unwrap();
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    ws.send(WsMessage::text("over h2")).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::text("over h2")));
    ws.send(WsMessage::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::binary(vec![1u8, 2, 3])));
    // Another stream on the same connection works side by side.
    let response = sender.send_request(support::get(addr, "/plain")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(kinds.recv().await.unwrap(), (Kind::HttpStream, http::Version::HTTP_2));
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn a_plain_connect_is_405_and_an_unknown_protocol_501_never_a_stream() {
    let (addr, mut kinds) = server().await;
    let mut sender = h2_client(addr).await;
    let plain = sender.send_request(connect(addr, None, "13")).await.unwrap();
    assert_eq!(plain.status(), StatusCode::METHOD_NOT_ALLOWED);
    let other = sender.send_request(connect(addr, Some("chat"), "13")).await.unwrap();
    assert_eq!(other.status(), StatusCode::NOT_IMPLEMENTED);
    let old = sender.send_request(connect(addr, Some("websocket"), "8")).await.unwrap();
    assert_eq!(old.status(), StatusCode::UPGRADE_REQUIRED);
    assert_eq!(old.headers()["sec-websocket-version"], "13");
    assert!(kinds.try_recv().is_err(), "a rejected CONNECT made a channel");
}
