//! Shared test helpers: a server built on webchan on 127.0.0.1:0, and clients.
#![allow(dead_code, unreachable_pub)]

pub mod callbacks;
pub mod deflate;
pub mod h2raw;

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

/// A server on 127.0.0.1:0 (HTTP/1.1 and HTTP/2, with upgrades and RFC 8441) whose handler
/// makes every request a channel with `config`, lets `prepare` adjust the reply, and hands the
/// channel to `run` on its own task.
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
    serve_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), config, prepare, run)
}

/// A server whose handler turns every upgrade down: the `Reply`'s status set to 403 (the
/// channel then ends with an error; plain requests too get 403).
pub async fn serve_forbidding(config: Config) -> SocketAddr {
    serve_with(
        config,
        |mut reply| {
            *reply.status_mut() = http::StatusCode::FORBIDDEN;
            reply
        },
        echo_or_ok,
    )
    .await
}

/// A `prepare` for [`serve_with`]: the stream's text in ISO-2022-JP (`Content-Type`).
pub fn iso_2022_jp(mut reply: Reply) -> Reply {
    let value = "text/plain; charset=ISO-2022-JP".parse().unwrap();
    reply.headers_mut().insert("content-type", value);
    reply
}

/// hyper-util's auto builder as the README recommends it: WebSockets over HTTP/2 too (RFC
/// 8441), and a connection window larger than each stream's.
pub fn server_builder() -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .enable_connect_protocol()
        .initial_stream_window_size(256 * 1024)
        .initial_connection_window_size(8 << 20);
    builder
}

/// A server on `listener` whose service is `handle` as it is (the test's handler does all the
/// webchan calls): hyper-util's auto builder with upgrades, HTTP/2 with RFC 8441, the windows
/// the README recommends and a large header list.
pub fn serve_handler<H, Fut, B>(listener: TcpListener, handle: H) -> SocketAddr
where
    H: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let addr = listener.local_addr().unwrap();
    let handle = Arc::new(handle);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let handle = Arc::clone(&handle);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let response = handle(request);
                    async move { Ok::<_, Infallible>(response.await) }
                });
                let mut builder = server_builder();
                builder.http2().max_header_list_size(1 << 20);
                let _ = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service).await;
            });
        }
    });
    addr
}

/// [`serve_with`] on a listener of the test's own.
pub fn serve_on<P, F, Fut>(listener: TcpListener, config: Config, prepare: P, run: F) -> SocketAddr
where
    P: Fn(Reply) -> Reply + Send + Sync + 'static,
    F: Fn(Channel) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
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
                let _ = server_builder()
                    .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

/// A server on 127.0.0.1:0 (with RFC 8441) whose handler is
/// `compat::as_channel(request, options)`, letting `prepare` change each response before it
/// is awaited.
pub async fn serve_compat_with<P>(options: webchan::compat::Options, prepare: P) -> SocketAddr
where
    P: Fn(&mut webchan::compat::ResponseFuture) + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let prepare = Arc::new(prepare);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let options = options.clone();
            let prepare = Arc::clone(&prepare);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let mut response = webchan::compat::as_channel(request, options.clone());
                    prepare(&mut response);
                    async move { Ok::<_, Infallible>(response.await) }
                });
                let _ = server_builder()
                    .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

/// [`serve_compat_with`] with responses as they are.
pub async fn serve_compat(options: webchan::compat::Options) -> SocketAddr {
    serve_compat_with(options, |_| {}).await
}

/// Records every event of every channel and sends them to the test.
pub type BoxFut = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

pub fn recorder(
) -> (impl Fn(Channel) -> BoxFut + Send + Sync + 'static, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let f = move |mut channel: Channel| {
        let tx = tx.clone();
        Box::pin(async move {
            while let Some(event) = channel.next().await {
                let _ = tx.send(event);
            }
        }) as BoxFut
    };
    (f, rx)
}

/// A well-behaved handler: a WebSocket echoes every message; an HTTP stream gets "ok" as a
/// plain response.
pub async fn echo_or_ok(channel: Channel) {
    if channel.kind() == webchan::Kind::HttpStream {
        let _ = channel.sender().send_and_close("ok".into()).await;
        return;
    }
    echo(channel).await;
}

/// An echo handler: sends back every message (an HTTP stream, which receives none, stays open
/// until the client leaves).
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
pub async fn next_msg<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Option<WsMessage>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
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
pub async fn http1_get(
    addr: SocketAddr,
    request: Request<http_body_util::Empty<bytes::Bytes>>,
) -> Response<bytes::Bytes> {
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

/// An HTTP/2 (prior knowledge) client connection to `addr`, driven on its own task.
pub type H2Sender = hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>;

pub async fn h2_client(addr: SocketAddr) -> H2Sender {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Frames go out at once (see `RawWs::upgrade_with`).
    tcp.set_nodelay(true).unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// [`h2_client`] with fixed flow-control windows (no adaptive window): the stream's, and the
/// connection's if given (else hyper's default).
pub async fn h2_client_windowed(
    addr: SocketAddr,
    stream_window: u32,
    connection_window: Option<u32>,
) -> H2Sender {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    builder.initial_stream_window_size(stream_window).adaptive_window(false);
    if let Some(window) = connection_window {
        builder.initial_connection_window_size(window);
    }
    let (sender, conn) = builder.handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// An extended CONNECT (RFC 8441) asking for a WebSocket at `path`.
pub fn h2_websocket_request(
    addr: SocketAddr,
    path: &str,
) -> Request<http_body_util::Empty<bytes::Bytes>> {
    let mut request = Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("http://{addr}{path}"))
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::new())
        .unwrap();
    request.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
    request
}

/// A WebSocket over HTTP/2 (RFC 8441): an extended CONNECT to `path` with `:protocol`
/// websocket on `sender`'s connection; asserts the 200 and gives the upgraded stream.
pub async fn h2_websocket(
    sender: &mut H2Sender,
    addr: SocketAddr,
    path: &str,
) -> TokioIo<hyper::upgrade::Upgraded> {
    let response = sender.send_request(h2_websocket_request(addr, path)).await.unwrap();
    assert_eq!(response.status(), 200, "extended CONNECT");
    TokioIo::new(hyper::upgrade::on(response).await.unwrap())
}

/// The same, as a client WebSocket.
pub async fn h2_ws(
    sender: &mut H2Sender,
    addr: SocketAddr,
    path: &str,
) -> tokio_tungstenite::WebSocketStream<TokioIo<hyper::upgrade::Upgraded>> {
    let io = h2_websocket(sender, addr, path).await;
    tokio_tungstenite::WebSocketStream::from_raw_socket(
        io,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await
}

pub fn get(addr: SocketAddr, path: &str) -> Request<http_body_util::Empty<bytes::Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .header("host", addr.to_string())
        .body(http_body_util::Empty::new())
        .unwrap()
}

/// The bytes of one frame: `first` is the first header byte (FIN, RSV, opcode); `mask`
/// none for an unmasked frame; the header declares `declared` bytes (the payload's length
/// when `None`).
pub fn encode_frame(
    first: u8,
    mask: Option<[u8; 4]>,
    payload: &[u8],
    declared: Option<u64>,
) -> Vec<u8> {
    let mut out = vec![first];
    let len = declared.unwrap_or(payload.len() as u64);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len < 65536 {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    match mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// The values of the header `name` in a response head as text (its status line skipped).
pub fn header_values(head: &str, name: &str) -> Vec<String> {
    head.lines()
        .skip(1)
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
        .collect()
}

/// A raw WebSocket client over a TcpStream: handshake by hand, frames by hand, for tests that
/// need to send what a well-behaved client library never would. `S` is the connection, or one
/// half of it.
pub struct RawWs<S = tokio::net::TcpStream> {
    pub tcp: S,
    pub buf: Vec<u8>,
}

impl RawWs {
    /// Connects and upgrades `/`.
    pub async fn connect(addr: SocketAddr) -> Self {
        Self::connect_path(addr, "/").await
    }

    /// Connects and upgrades `path`.
    pub async fn connect_path(addr: SocketAddr, path: &str) -> Self {
        Self::upgrade(tokio::net::TcpStream::connect(addr).await.unwrap(), addr, path).await
    }

    /// Connects and upgrades `/` with `extra` header lines (each ending in CRLF) in the
    /// request; gives the 101's head too.
    pub async fn connect_with(addr: SocketAddr, extra: &str) -> (Self, String) {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        Self::upgrade_with(tcp, addr, "/", extra).await
    }

    /// Upgrades `path` over a connection of the test's own making.
    pub async fn upgrade(tcp: tokio::net::TcpStream, addr: SocketAddr, path: &str) -> Self {
        Self::upgrade_with(tcp, addr, path, "").await.0
    }

    /// Upgrades `path` with `extra` header lines (each ending in CRLF) in the request; gives
    /// the 101's head too.
    pub async fn upgrade_with(
        mut tcp: tokio::net::TcpStream,
        addr: SocketAddr,
        path: &str,
        extra: &str,
    ) -> (Self, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Each frame a test writes goes out at once: with Nagle's algorithm, a small write
        // after another waits for the server's delayed acknowledgement (~40 ms here).
        tcp.set_nodelay(true).unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut chunk))
                .await
                .expect("no handshake answer within 10 s")
                .unwrap();
            assert!(n > 0, "server closed during handshake");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..pos]).to_string();
                assert!(head.starts_with("HTTP/1.1 101"), "{head}");
                assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
                buf.drain(..pos + 4);
                return (Self { tcp, buf }, head);
            }
        }
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> RawWs<S> {
    /// Writes one masked frame.
    pub async fn frame(&mut self, first: u8, payload: &[u8]) {
        self.raw(&encode_frame(first, Some([0x12, 0x34, 0x56, 0x78]), payload, None)).await;
    }

    /// Writes raw bytes; the peer may already have failed the connection: errors are ignored.
    pub async fn raw(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let _ = self.tcp.write_all(bytes).await;
    }
}

impl<S: tokio::io::AsyncRead + Unpin> RawWs<S> {
    /// Reads one frame from the server: (first header byte, payload); None at EOF or reset.
    pub async fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(frame) = take_frame(&mut self.buf) {
                return Some(frame);
            }
            let mut chunk = [0u8; 65536];
            let Ok(n) = tokio::time::timeout(Duration::from_secs(10), self.tcp.read(&mut chunk))
                .await
                .expect("no frame from the server within 10 s")
            else {
                return None;
            };
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads frames until a close frame; returns its code (1005 if none) and reason.
    pub async fn read_close(&mut self) -> Option<(u16, String)> {
        while let Some((first, payload)) = self.read_frame().await {
            if first & 0x0f == 0x8 {
                if payload.len() < 2 {
                    return Some((1005, String::new()));
                }
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                return Some((code, String::from_utf8_lossy(&payload[2..]).to_string()));
            }
        }
        None
    }

    /// True when the server closed the TCP connection (EOF or reset) within 10 s.
    pub async fn eof(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.tcp.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => continue,
            }
        }
    }
}

/// Collects the events of one channel until `Closed` (inclusive); panics after 10 s.
pub async fn events_until_closed(rx: &mut mpsc::UnboundedReceiver<Event>) -> Vec<Event> {
    let mut out = Vec::new();
    loop {
        let e = next_event(rx).await;
        let closed = matches!(e, Event::Closed(_));
        out.push(e);
        if closed {
            return out;
        }
    }
}

/// Takes one whole server frame off the front of `buf`, if it holds one: (first header byte,
/// payload). Server frames are never masked.
pub fn take_frame(buf: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    if buf.len() < 2 {
        return None;
    }
    let first = buf[0];
    assert_eq!(buf[1] & 0x80, 0, "server frames must not be masked");
    let (len, start) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize, 10),
        n if n < 126 => (n as usize, 2),
        _ => return None,
    };
    if buf.len() < start + len {
        return None;
    }
    let payload = buf[start..start + len].to_vec();
    buf.drain(..start + len);
    Some((first, payload))
}

/// A server on `listener` that hands every channel to the test.
pub fn serve_channels_on(
    listener: TcpListener,
    config: Config,
) -> (SocketAddr, mpsc::UnboundedReceiver<Channel>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = serve_on(
        listener,
        config,
        |r| r,
        move |ch: Channel| {
            let _ = tx.send(ch);
            async {}
        },
    );
    (addr, rx)
}

/// A server that hands every channel to the test.
pub async fn serve_channels(config: Config) -> (SocketAddr, mpsc::UnboundedReceiver<Channel>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = serve(config, move |ch: Channel| {
        let _ = tx.send(ch);
        async {}
    })
    .await;
    (addr, rx)
}

pub async fn next_channel(rx: &mut mpsc::UnboundedReceiver<Channel>) -> Channel {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no channel within 10 s")
        .expect("server gone")
}

/// The next event of a channel; panics after 10 s.
pub async fn next_of(ch: &mut Channel) -> Option<Event> {
    tokio::time::timeout(Duration::from_secs(10), ch.next()).await.expect("no event within 10 s")
}

/// Every event of a channel until its stream ends (10 s at most), checking the order
/// guarantee: at most one `Open`, first; exactly one `Closed`, last.
pub async fn all_events(ch: &mut Channel) -> Vec<Event> {
    let mut events = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(10), ch.next())
        .await
        .expect("channel did not end within 10 s")
    {
        events.push(e);
    }
    assert!(events.iter().filter(|e| matches!(e, Event::Open)).count() <= 1, "{events:?}");
    if events.iter().any(|e| matches!(e, Event::Open)) {
        assert!(matches!(events[0], Event::Open), "{events:?}");
    }
    assert_eq!(events.iter().filter(|e| matches!(e, Event::Closed(_))).count(), 1, "{events:?}");
    assert!(matches!(events.last(), Some(Event::Closed(_))), "{events:?}");
    events
}

/// The `CloseInfo` of the last event, which must be `Closed`.
pub fn closed_of(events: &[Event]) -> webchan::CloseInfo {
    match events.last() {
        Some(Event::Closed(info)) => info.clone(),
        other => panic!("last event is not Closed: {other:?}"),
    }
}

/// A payload of `size` bytes (at least 4) that starts with `number` (big-endian `u32`), the
/// rest zeros: for checking that messages arrive whole and in order.
pub fn numbered(number: u32, size: usize) -> Vec<u8> {
    let mut payload = vec![0u8; size];
    payload[..4].copy_from_slice(&number.to_be_bytes());
    payload
}

/// Sends 1 KiB binary messages, each starting with its number (big-endian `u32`, from 0),
/// one at a time, until one has not completed after 300 ms (a client that reads nothing has
/// let the buffers fill: that one stays queued). Returns how many completed.
pub async fn send_numbered_until_stalled(sender: &webchan::Sender) -> u32 {
    let mut completed = 0u32;
    loop {
        let send = sender.send(webchan::Message::Binary(numbered(completed, 1024).into()));
        match tokio::time::timeout(Duration::from_millis(300), send).await {
            Ok(result) => result.unwrap(),
            Err(_) => break,
        }
        completed += 1;
        assert!(completed < 200_000, "200 MiB went to a client that never read");
    }
    assert!(completed > 0);
    completed
}

/// xorshift64: a random test's plan from its seed (`random_streams`, `threads`).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// UTF-8 of 1- to 4-byte characters, at least `len` bytes.
    pub fn text(&mut self, len: usize) -> Vec<u8> {
        const CHARS: [&str; 6] = ["a", "Z", "é", "ß", "日", "😀"];
        let mut s = String::new();
        while s.len() < len {
            s.push_str(CHARS[self.below(CHARS.len())]);
        }
        s.into_bytes()
    }
}

/// The server process's resident memory, from `/proc/self/status`.
pub fn rss_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Writes `batch` again and again from a thread of its own (blocking writes) until `cap` bytes
/// went out or a write fails, then keeps the connection (reading nothing) for `hold`. Returns
/// the count of bytes written once the client is stopped by TCP or reached its cap (checked
/// every `step`, 40 times at most).
pub async fn flood_from_thread(
    raw: RawWs,
    batch: Vec<u8>,
    cap: usize,
    hold: Duration,
    step: Duration,
) -> Arc<std::sync::atomic::AtomicUsize> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let written = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&written);
    let tcp = raw.tcp.into_std().unwrap();
    tcp.set_nonblocking(false).unwrap();
    std::thread::spawn(move || {
        use std::io::Write;
        let mut tcp = tcp;
        while counter.load(Ordering::SeqCst) < cap {
            if tcp.write_all(&batch).is_err() {
                break;
            }
            counter.fetch_add(batch.len(), Ordering::SeqCst);
        }
        std::thread::sleep(hold);
        drop(tcp);
    });
    let mut last = usize::MAX;
    for _ in 0..40 {
        tokio::time::sleep(step).await;
        let now = written.load(Ordering::SeqCst);
        if now == last || now >= cap {
            break;
        }
        last = now;
    }
    written
}

/// A request over raw TCP with `Connection: close` and the `extra` header lines: the head
/// (lower case) and the body's chunks (decoded when chunked, checking the chunked framing to
/// its last chunk; else the body as one piece).
pub async fn raw_chunks(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &str,
) -> (String, Vec<Vec<u8>>) {
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
    let out = raw_http(addr, request.as_bytes()).await;
    let end = out.windows(4).position(|w| w == b"\r\n\r\n").expect("no end of head") + 4;
    let head = String::from_utf8_lossy(&out[..end]).to_lowercase();
    let mut rest = &out[end..];
    if !head.contains("transfer-encoding: chunked") {
        return (head, vec![rest.to_vec()]);
    }
    let mut chunks = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").expect("chunk size line");
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16)
                .unwrap();
        rest = &rest[line_end + 2..];
        if size == 0 {
            assert_eq!(rest, b"\r\n", "the chunked body must end properly");
            return (head, chunks);
        }
        chunks.push(rest[..size].to_vec());
        assert_eq!(&rest[size..size + 2], b"\r\n");
        rest = &rest[size + 2..];
    }
}

/// Reads data messages until the server's close frame; returns them and the frame's code and
/// reason (1005 for a close frame without a code), after the client's answer went out and the
/// server closed the connection (5 s at most).
pub async fn ws_until_close<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
) -> (Vec<WsMessage>, (u16, String))
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let mut data = Vec::new();
    let close = loop {
        match next_msg(ws).await {
            Some(WsMessage::Close(Some(CloseFrame { code, reason }))) => {
                break (code.into(), reason.as_str().to_owned())
            }
            Some(WsMessage::Close(None)) => break (1005, String::new()),
            Some(other) => data.push(other),
            None => panic!("connection ended without a close frame"),
        }
    };
    // tungstenite sends its answer to the close frame on the next poll.
    let drain = async { while let Some(Ok(_)) = ws.next().await {} };
    let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
    (data, close)
}

/// A reader that fails ("disk on fire") at once.
pub struct FailingReader;

impl tokio::io::AsyncRead for FailingReader {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Err(std::io::Error::other("disk on fire")))
    }
}
