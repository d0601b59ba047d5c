//! Echo and streaming servers for the loopback comparison, one per library.
//!
//! ```text
//! servers NAME PORT [FILE]
//! ```
//!
//! Every server runs on a tokio `current_thread` runtime (one worker), listens on
//! 127.0.0.1:PORT, sets `TCP_NODELAY` on accepted sockets (all of them alike) and prints
//! `ready` once bound. WebSocket servers answer every text/binary message with the same
//! message; stream servers answer `GET /?chunk=BYTES&total=BYTES` with a streamed (chunked)
//! body of `total` bytes sent in chunks of `chunk` bytes, each chunk the same bytes
//! (`compare::pattern`). File servers answer `GET /` with the content of FILE, read anew for
//! each request (chunked; `?length=1` declares its `Content-Length` instead). Idle servers
//! answer `GET /` with a chunked body that sends `compare::pattern(64)` and then nothing
//! more, never ending: an HTTP stream held open.
//!
//! Names: webchan, tungstenite, tungstenite-batched, axum, fastwebsockets (WebSocket echo);
//! webchan-stream, hyper-stream, hyper-stream-vec (HTTP streams); webchan-file, hyper-file (a file, FILE
//! required); webchan-idle, hyper-idle (idle HTTP streams). The uWebSockets peer (`uws`) is
//! a separate C++ program, `uws/echo.cpp`.
//!
//! Environment: `QUEUE_LIMIT` (bytes) sets webchan-stream's `Config::queue_limit`; `VEC_N`
//! (default 16) the chunks per frame of hyper-stream-vec; `KEEPALIVE=0` turns webchan's
//! keepalive off (and with it the process-wide sweeper thread);
//! `FWS_SPIN_NS=N` makes the fastwebsockets server busy-wait N ns before each echo, to see what
//! more server work per message does to a round trip (benches/HISTORY.md, 2026-12-04);
//! `FWS_TOUCH_LINES=N` (and `FWS_TOUCH_SPAN=LINES`) makes it read N cache lines, one after the
//! other, before each echo: what one more line touched per round trip costs;
//! `WEBCHAN_LOOP=1` makes the webchan echo an unsplit `Channel` that awaits `send` for each
//! message (the API of the crate's own examples) instead of `send_all` on the split halves;
//! `FWS_YIELD=1` makes it yield between reading a message and writing it back (the order a
//! task hand-off gives: every ready connection read before any write); `RUNTIME=multi` runs
//! every server on tokio's multi-thread scheduler with one worker instead of `current_thread`;
//! `THREAD=1` starts an idle thread in any server (a multi-threaded process, as webchan's
//! keepalive sweeper makes it) and `TICK=1` a 1 s interval on its runtime (a timer, as a
//! sweeper task would keep).

use std::convert::Infallible;
use std::future::{ready, Future};
use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use bytes::Bytes;
use futures::{FutureExt, SinkExt, StreamExt};
use http::{header, Request, Response, StatusCode};
use http_body_util::{Either, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

const NAMES: &[&str] = &[
    "webchan",
    "tungstenite",
    "tungstenite-batched",
    "axum",
    "fastwebsockets",
    "webchan-stream",
    "hyper-stream",
    "hyper-stream-vec",
    "webchan-file",
    "hyper-file",
    "webchan-idle",
    "hyper-idle",
];

/// The file the file servers send, and its length.
static FILE: OnceLock<(PathBuf, u64)> = OnceLock::new();

/// The one chunk an idle HTTP stream sends (shared: its bytes are not per connection).
static IDLE_CHUNK: OnceLock<Bytes> = OnceLock::new();

/// Bytes in the one chunk of an idle HTTP stream (the load client expects as many).
const IDLE_CHUNK_LEN: usize = 64;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(name), Some(port)) = (args.get(1), args.get(2).and_then(|p| p.parse::<u16>().ok()))
    else {
        eprintln!("usage: servers NAME PORT   (NAME: {})", NAMES.join(", "));
        std::process::exit(2);
    };
    if name.ends_with("-file") {
        let Some(path) = args.get(3) else {
            eprintln!("usage: servers {name} PORT FILE");
            std::process::exit(2);
        };
        let len = match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => meta.len(),
            Ok(_) => {
                eprintln!("{path}: not a file");
                std::process::exit(2);
            }
            Err(error) => {
                eprintln!("{path}: {error}");
                std::process::exit(2);
            }
        };
        FILE.set((PathBuf::from(path), len)).unwrap();
    }
    IDLE_CHUNK.set(Bytes::from(compare::pattern(IDLE_CHUNK_LEN))).unwrap();
    // RUNTIME=multi: tokio's multi-thread scheduler with one worker (the flavour of
    // `#[tokio::main]`) instead of `current_thread`, for experiments (benches/HISTORY.md,
    // 2026-12-05).
    let runtime = if std::env::var("RUNTIME").is_ok_and(|v| v == "multi") {
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()
    } else {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    }
    .unwrap();
    // Experiments (benches/HISTORY.md, stop 35): THREAD=1 starts an idle thread, making the
    // process multi-threaded as webchan's keepalive sweeper does (glibc then takes its
    // cancellation atomics around every system call); TICK=1 keeps a 1 s `tokio::time::interval`
    // ticking on the runtime, as a sweeper task would (every park an `epoll_wait` with a
    // timeout).
    if std::env::var("THREAD").is_ok_and(|v| v == "1") {
        std::thread::spawn(|| loop {
            std::thread::park();
        });
    }
    runtime.block_on(async move {
        if std::env::var("TICK").is_ok_and(|v| v == "1") {
            tokio::spawn(async {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                loop {
                    tick.tick().await;
                }
            });
        }
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        match name.as_str() {
            "webchan" => serve(listener, webchan_ws).await,
            "tungstenite" => serve(listener, |r| tungstenite_ws(r, false)).await,
            "tungstenite-batched" => serve(listener, |r| tungstenite_ws(r, true)).await,
            "fastwebsockets" => serve(listener, fastwebsockets_ws).await,
            "webchan-stream" => serve(listener, webchan_stream).await,
            "hyper-stream" => serve(listener, hyper_stream).await,
            "hyper-stream-vec" => serve(listener, hyper_stream_vec).await,
            "webchan-file" => serve(listener, webchan_file).await,
            "hyper-file" => serve(listener, hyper_file).await,
            "webchan-idle" => serve(listener, webchan_idle).await,
            "hyper-idle" => serve(listener, hyper_idle).await,
            "axum" => axum_ws(listener).await,
            other => {
                eprintln!("unknown server {other:?} (one of: {})", NAMES.join(", "));
                std::process::exit(2);
            }
        }
    });
}

fn announce() {
    println!("ready");
    let _ = std::io::stdout().flush();
}

/// hyper-util's auto builder with upgrades, one task per connection: the same HTTP stack for
/// every hyper-based server.
async fn serve<H, Fut, B>(listener: TcpListener, handler: H)
where
    H: Fn(Request<Incoming>) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    announce();
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(error) => {
                // EMFILE and friends: do not spin.
                eprintln!("accept: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(move |request| handler(request).map(Ok::<_, Infallible>));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                .await;
        });
    }
}

// ---------------------------------------------------------------------------------------------
// webchan

async fn webchan_ws(request: Request<Incoming>) -> Response<webchan::Body> {
    let mut config = webchan::Config::default();
    if std::env::var("KEEPALIVE").is_ok_and(|v| v == "0") {
        config = config.keepalive(None);
    }
    match webchan::as_channel(request, config) {
        Ok((reply, channel)) => {
            if std::env::var("WEBCHAN_LOOP").is_ok() {
                tokio::spawn(webchan_loop(channel));
            } else {
                tokio::spawn(webchan_echo(channel));
            }
            reply.await
        }
        Err(rejection) => rejection.into_response(),
    }
}

/// Exactly examples/autobahn.rs: the Sink half forwards the Stream half's messages.
async fn webchan_echo(channel: webchan::Channel) {
    let (mut tx, rx) = channel.split();
    let mut messages = rx.filter_map(|event| {
        ready(match event {
            webchan::Event::Message(m) => Some(Ok(m.into())),
            _ => None,
        })
    });
    let _ = tx.send_all(&mut messages).await;
}

/// `WEBCHAN_LOOP=1`: a loop of `next` and `send` on the whole channel, as the crate's examples
/// do (a function of its own, so that `webchan_echo`'s code stays what it was).
async fn webchan_loop(mut channel: webchan::Channel) {
    while let Some(event) = channel.next().await {
        if let webchan::Event::Message(m) = event {
            if channel.send(m.into()).await.is_err() {
                break;
            }
        }
    }
}

/// `?chunk=&total=` (and `api=send` for one awaited `Sender::send` per chunk instead of the
/// Sink). The chunks are produced by another task than hyper's connection task.
async fn webchan_stream(request: Request<Incoming>) -> Response<webchan::Body> {
    let params = StreamParams::from_query(request.uri().query());
    let mut config = webchan::Config::default();
    if let Some(limit) = std::env::var("QUEUE_LIMIT").ok().and_then(|v| v.parse().ok()) {
        config = config.queue_limit(limit);
    }
    let (reply, channel) = match webchan::as_channel(request, config) {
        Ok(pair) => pair,
        Err(rejection) => return rejection.into_response(),
    };
    tokio::spawn(async move {
        let (mut tx, _rx) = channel.split();
        let chunk = Bytes::from(compare::pattern(params.chunk));
        if params.api_send {
            for piece in params.pieces(chunk) {
                if tx.send(piece.into()).await.is_err() {
                    return;
                }
            }
            tx.close().await;
        } else {
            let mut pieces = futures::stream::iter(params.pieces(chunk))
                .map(|b| Ok::<webchan::Message, webchan::Error>(b.into()));
            if tx.send_all(&mut pieces).await.is_ok() {
                let _ = SinkExt::close(&mut tx).await;
            }
        }
    });
    reply.await
}

/// The file as one message: `Message::file` (opened when its turn comes, read
/// `webchan::CHUNK_SIZE` bytes at a time), sent with `send_and_close` so that the body ends.
/// With `?length=1` the handler declares the file's `Content-Length` on the reply.
async fn webchan_file(request: Request<Incoming>) -> Response<webchan::Body> {
    let declare = query_flag(request.uri().query(), "length");
    let (mut reply, channel) = match webchan::as_channel(request, webchan::Config::default()) {
        Ok(pair) => pair,
        Err(rejection) => return rejection.into_response(),
    };
    let (path, len) = FILE.get().expect("file servers have a FILE");
    if declare {
        reply.headers_mut().insert(header::CONTENT_LENGTH, (*len).into());
    }
    let message = webchan::Message::file(path.clone());
    tokio::spawn(async move {
        let _ = channel.sender().send_and_close(message).await;
    });
    reply.await
}

/// One chunk, then an HTTP stream held open: the task waits for the channel's events (the
/// `Closed` when the client goes away), as an application holding a stream would.
async fn webchan_idle(request: Request<Incoming>) -> Response<webchan::Body> {
    let (reply, mut channel) = match webchan::as_channel(request, webchan::Config::default()) {
        Ok(pair) => pair,
        Err(rejection) => return rejection.into_response(),
    };
    tokio::spawn(async move {
        let chunk = IDLE_CHUNK.get().unwrap().clone();
        if channel.send(chunk.into()).await.is_err() {
            return;
        }
        while channel.next().await.is_some() {}
    });
    reply.await
}

// ---------------------------------------------------------------------------------------------
// raw hyper stream

async fn hyper_stream(
    request: Request<Incoming>,
) -> Response<StreamBody<impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>>>> {
    let params = StreamParams::from_query(request.uri().query());
    let chunk = Bytes::from(compare::pattern(params.chunk));
    let body = StreamBody::new(futures::stream::iter(
        params.pieces(chunk).map(|b| Ok::<_, Infallible>(Frame::data(b))),
    ));
    Response::new(body)
}

/// hyper-stream with frames of `VEC_N` chunks each, one vectored `Buf` (no copy): what raw
/// hyper gains from writing several chunks with one `writev`, which webchan's body does with
/// the messages it finds queued.
async fn hyper_stream_vec(
    request: Request<Incoming>,
) -> Response<StreamBody<impl futures::Stream<Item = Result<Frame<Parts>, Infallible>>>> {
    let params = StreamParams::from_query(request.uri().query());
    let chunk = Bytes::from(compare::pattern(params.chunk));
    let n = std::env::var("VEC_N").ok().and_then(|v| v.parse().ok()).unwrap_or(16usize).max(1);
    let all: Vec<Bytes> = params.pieces(chunk).collect();
    let frames: Vec<_> = all
        .chunks(n)
        .map(|c| {
            let remaining = c.iter().map(Bytes::len).sum();
            Ok(Frame::data(Parts { parts: c.iter().cloned().collect(), remaining }))
        })
        .collect();
    Response::new(StreamBody::new(futures::stream::iter(frames)))
}

/// Several buffers as one `Buf`.
struct Parts {
    parts: std::collections::VecDeque<Bytes>,
    remaining: usize,
}

impl bytes::Buf for Parts {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.parts.front().map_or(&[], |b| b.as_ref())
    }

    fn advance(&mut self, mut cnt: usize) {
        self.remaining -= cnt;
        while cnt > 0 {
            let Some(front) = self.parts.front_mut() else { panic!("advance past the end") };
            if cnt < front.len() {
                bytes::Buf::advance(front, cnt);
                return;
            }
            cnt -= front.len();
            self.parts.pop_front();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, part) in dst.iter_mut().zip(self.parts.iter()) {
            *slot = std::io::IoSlice::new(part);
            n += 1;
        }
        n
    }
}

/// tokio::fs::File + tokio_util's `ReaderStream` in a `StreamBody`, the file opened for each
/// request. `?cap=BYTES` sets the `ReaderStream`'s read size (default `webchan::CHUNK_SIZE`,
/// 16 KiB, the size webchan reads a file in; `ReaderStream::new` would read 4 KiB);
/// `?length=1` declares the `Content-Length`.
async fn hyper_file(
    request: Request<Incoming>,
) -> Response<
    Either<
        StreamBody<impl futures::Stream<Item = Result<Frame<Bytes>, std::io::Error>>>,
        Empty<Bytes>,
    >,
> {
    let query = request.uri().query();
    let declare = query_flag(query, "length");
    let cap = query_value(query, "cap")
        .and_then(|v| v.parse().ok())
        .unwrap_or(webchan::CHUNK_SIZE)
        .max(1);
    let (path, len) = FILE.get().expect("file servers have a FILE");
    let file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(error) => {
            eprintln!("open {}: {error}", path.display());
            let mut response = Response::new(Either::Right(Empty::new()));
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            return response;
        }
    };
    let frames = tokio_util::io::ReaderStream::with_capacity(file, cap).map(|r| r.map(Frame::data));
    let mut response = Response::new(Either::Left(StreamBody::new(frames)));
    if declare {
        response.headers_mut().insert(header::CONTENT_LENGTH, (*len).into());
    }
    response
}

/// One chunk, then a body that never ends (a stream that pends forever after it).
async fn hyper_idle(
    _request: Request<Incoming>,
) -> Response<StreamBody<impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>>>> {
    let chunk = IDLE_CHUNK.get().unwrap().clone();
    let frames =
        futures::stream::once(ready(Ok(Frame::data(chunk)))).chain(futures::stream::pending());
    Response::new(StreamBody::new(frames))
}

fn query_value<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then_some(v)
    })
}

fn query_flag(query: Option<&str>, key: &str) -> bool {
    query_value(query, key).is_some_and(|v| v == "1" || v == "true")
}

struct StreamParams {
    chunk: usize,
    total: u64,
    api_send: bool,
}

impl StreamParams {
    fn from_query(query: Option<&str>) -> Self {
        let mut p = Self { chunk: 1024, total: 16 << 20, api_send: false };
        for pair in query.unwrap_or("").split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "chunk" => p.chunk = v.parse().unwrap_or(p.chunk).max(1),
                "total" => p.total = v.parse().unwrap_or(p.total),
                "api" => p.api_send = v == "send",
                _ => {}
            }
        }
        p
    }

    /// `total` bytes as clones of `chunk` (the last one cut short).
    fn pieces(&self, chunk: Bytes) -> impl Iterator<Item = Bytes> + Send + 'static {
        let size = self.chunk as u64;
        let full = self.total / size;
        let rest = (self.total % size) as usize;
        let last = chunk.slice(..rest);
        (0..full).map(move |_| chunk.clone()).chain((rest > 0).then_some(last))
    }
}

// ---------------------------------------------------------------------------------------------
// tokio-tungstenite over a hyper upgrade

async fn tungstenite_ws(mut request: Request<Incoming>, batched: bool) -> Response<Empty<Bytes>> {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::WebSocketStream;

    let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return status(StatusCode::BAD_REQUEST);
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let _ = if batched { tungstenite_batched(ws).await } else { tungstenite_plain(ws).await };
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Empty::new())
        .unwrap()
}

type Ws = tokio_tungstenite::WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;
type WsResult = Result<(), tokio_tungstenite::tungstenite::Error>;

/// One `send` (write + flush) per message: what most hand-written code does.
async fn tungstenite_plain(mut ws: Ws) -> WsResult {
    while let Some(message) = ws.next().await {
        let message = message?;
        if message.is_text() || message.is_binary() {
            ws.send(message).await?;
        }
    }
    Ok(())
}

/// Feed every message that is ready, then flush once.
async fn tungstenite_batched(mut ws: Ws) -> WsResult {
    while let Some(message) = ws.next().await {
        let message = message?;
        if message.is_text() || message.is_binary() {
            ws.feed(message).await?;
        }
        while let Some(Some(message)) = ws.next().now_or_never() {
            let message = message?;
            if message.is_text() || message.is_binary() {
                ws.feed(message).await?;
            }
        }
        ws.flush().await?;
    }
    Ok(())
}

fn status(code: StatusCode) -> Response<Empty<Bytes>> {
    let mut response = Response::new(Empty::new());
    *response.status_mut() = code;
    response
}

// ---------------------------------------------------------------------------------------------
// fastwebsockets

async fn fastwebsockets_ws(mut request: Request<Incoming>) -> Response<Empty<Bytes>> {
    use fastwebsockets::{upgrade, FragmentCollector, OpCode, WebSocketError};
    let (response, upgrade) = match upgrade::upgrade(&mut request) {
        Ok(pair) => pair,
        Err(_) => return status(StatusCode::BAD_REQUEST),
    };
    let spin = std::time::Duration::from_nanos(
        std::env::var("FWS_SPIN_NS").ok().and_then(|v| v.parse().ok()).unwrap_or(0),
    );
    let yield_first = std::env::var("FWS_YIELD").is_ok_and(|v| v == "1");
    let touch = touch_chain();
    tokio::spawn(async move {
        let run = async move {
            let mut ws = FragmentCollector::new(upgrade.await?);
            loop {
                let frame = ws.read_frame().await?;
                match frame.opcode {
                    OpCode::Close => break,
                    OpCode::Text | OpCode::Binary => {
                        if !spin.is_zero() {
                            let start = std::time::Instant::now();
                            while start.elapsed() < spin {
                                std::hint::spin_loop();
                            }
                        }
                        if yield_first {
                            tokio::task::yield_now().await;
                        }
                        if let Some(chain) = &touch {
                            chase(chain);
                        }
                        ws.write_frame(frame).await?
                    }
                    _ => {}
                }
            }
            Ok::<_, WebSocketError>(())
        };
        let _ = run.await;
    });
    response
}

/// `FWS_TOUCH_LINES=N`: a chain through N cache lines at scattered places of a 4 MiB buffer,
/// followed once per echo (each load waits for the one before), to see what touching N more
/// lines per round trip costs when other processes share the core (benches/HISTORY.md, 2026-12-04).
fn touch_chain() -> Option<std::sync::Arc<Vec<usize>>> {
    let lines: usize = std::env::var("FWS_TOUCH_LINES").ok().and_then(|v| v.parse().ok())?;
    const WORDS_PER_LINE: usize = 8;
    // `FWS_TOUCH_SPAN`: how many lines the chain's lines are scattered over (a power of two, at
    // least N; default 65536, 4 MiB).
    let span: usize =
        std::env::var("FWS_TOUCH_SPAN").ok().and_then(|v| v.parse().ok()).unwrap_or(65536);
    let slots_n = span.max(lines).next_power_of_two();
    let mut chain = vec![0usize; slots_n * WORDS_PER_LINE];
    // A fixed scatter: slot i*7919 mod slots_n (odd, so distinct modulo a power of two).
    let slots: Vec<usize> = (0..lines).map(|i| (i * 7919) % slots_n).collect();
    for pair in slots.windows(2) {
        chain[pair[0] * WORDS_PER_LINE] = pair[1] * WORDS_PER_LINE;
    }
    if let Some(last) = slots.last() {
        chain[last * WORDS_PER_LINE] = usize::MAX;
    }
    (!slots.is_empty()).then(|| std::sync::Arc::new(chain))
}

fn chase(chain: &[usize]) {
    let mut at = 0;
    while at != usize::MAX {
        at = std::hint::black_box(chain[at]);
    }
}

// ---------------------------------------------------------------------------------------------
// axum

async fn axum_ws(listener: TcpListener) {
    use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
    use axum::serve::ListenerExt;

    async fn echo(mut socket: WebSocket) {
        while let Some(Ok(message)) = socket.recv().await {
            // Other frames: keep reading (tungstenite answers the close and then ends the
            // stream).
            if matches!(message, Message::Text(_) | Message::Binary(_))
                && socket.send(message).await.is_err()
            {
                break;
            }
        }
    }
    let app = axum::Router::new()
        .route("/", axum::routing::get(|ws: WebSocketUpgrade| async move { ws.on_upgrade(echo) }));
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    announce();
    axum::serve(listener, app).await.expect("axum::serve");
}
