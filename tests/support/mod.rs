//! Shared test helpers: a server built on webchan on 127.0.0.1:0, and clients.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use webchan::{Body, Channel, Config, Event, Reply};

pub type WsClient =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
pub use tokio_tungstenite::tungstenite::Message as WsMessage;

/// A server on 127.0.0.1:0 (HTTP/1.1 and HTTP/2, with upgrades) whose handler makes every
/// request a channel with `config`, lets `prepare` adjust the reply, and hands the channel to
/// `run` on its own task.
pub async fn serve<F, Fut>(config: Config, run: F) -> SocketAddr
where
    F: Fn(Channel) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    serve_with(config, |reply| reply, run).await
}

pub async fn serve_with<P, F, Fut>(config: Config, prepare: P, run: F) -> SocketAddr
where
    P: Fn(Reply) -> Reply + Send + Sync + 'static,
    F: Fn(Channel) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let run = Arc::new(run);
    let prepare = Arc::new(prepare);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let run = Arc::clone(&run);
            let prepare = Arc::clone(&prepare);
            let config = config.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let run = Arc::clone(&run);
                    let prepare = Arc::clone(&prepare);
                    let config = config.clone();
                    async move {
                        let response: Response<Body> = match webchan::as_channel(req, config) {
                            Ok((reply, channel)) => {
                                let reply = prepare(reply);
                                tokio::spawn(run(channel));
                                reply.await
                            }
                            Err(rejection) => rejection.into_response(),
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                let builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service).await;
            });
        }
    });
    addr
}

/// Records every event of every channel and sends them to the test.
pub fn recorder() -> (
    impl Fn(Channel) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static,
    mpsc::UnboundedReceiver<Event>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let f = move |mut channel: Channel| {
        let tx = tx.clone();
        Box::pin(async move {
            while let Some(event) = channel.next().await {
                let _ = tx.send(event);
            }
        }) as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
    };
    (f, rx)
}

/// An echo handler: sends back every message; an HTTP stream gets "hello" and closes.
pub async fn echo(mut channel: Channel) {
    while let Some(event) = channel.next().await {
        if let Event::Message(m) = event {
            if channel.send(m.into()).await.is_err() {
                break;
            }
        }
    }
}

pub async fn ws_connect(addr: SocketAddr, path: &str) -> WsClient {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}{path}")).await.unwrap();
    ws
}

/// The next data or close message, skipping pings and pongs; panics after 10 s.
pub async fn next_msg(ws: &mut WsClient) -> Option<WsMessage> {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no websocket message within 10 s");
        match next {
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
            Some(Ok(m)) => return Some(m),
            Some(Err(_)) | None => return None,
        }
    }
}

/// The next event; panics after 10 s.
pub async fn next_event(rx: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no event within 10 s")
        .expect("event channel ended")
}

pub async fn send_text(ws: &mut WsClient, s: &str) {
    ws.send(WsMessage::text(s)).await.unwrap();
}

/// A raw HTTP exchange: writes `request`, reads until the server closes.
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out))
        .await
        .expect("server did not close within 10 s")
        .unwrap();
    out
}

/// A hyper HTTP/1.1 client request; returns the response with its body collected.
pub async fn http1_get(addr: SocketAddr, request: Request<http_body_util::Empty<bytes::Bytes>>)
    -> Response<bytes::Bytes>
{
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("body not complete within 10 s")
        .unwrap()
        .to_bytes();
    Response::from_parts(parts, body)
}

pub fn get(addr: SocketAddr, path: &str) -> Request<http_body_util::Empty<bytes::Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .header("host", addr.to_string())
        .body(http_body_util::Empty::new())
        .unwrap()
}
