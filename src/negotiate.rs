//! Turning a request into a channel: WebSocket handshake checks, the `101`, or an HTTP stream.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};

use tracing::Instrument;

use crate::head::RequestHead;
use crate::shared::Shared;
use crate::stream::{Body, StreamHead};
use crate::{Channel, CloseInfo, Config, Error, Kind};

/// Turns a request into a [`Channel`] and the response that goes with it.
///
/// A valid WebSocket upgrade request (RFC 6455 §4.2.1: `GET`, HTTP/1.1, one `Host`, `Upgrade:
/// websocket`, `Connection: upgrade`, a `Sec-WebSocket-Key` of 16 base64 bytes,
/// `Sec-WebSocket-Version: 13`, no body and no `Expect`) becomes a WebSocket channel; any
/// request that does not ask for an upgrade becomes an HTTP stream channel. Works with any
/// request body type: the body is not read.
///
/// The [`Reply`] is the response: add headers to it (`Set-Cookie`, a chosen
/// `Sec-WebSocket-Protocol`, CORS...) or set an HTTP stream's status, then return its output
/// from the service. For a WebSocket it resolves at once to the `101` (`200` over HTTP/2;
/// `503` once a shutdown's deadline dropped the channel: see [`Reply`]); the channel opens once
/// hyper has sent it. For an HTTP stream it resolves when the head is due: at the first send or
/// close, so that a first [`Message::Response`](crate::Message::Response) can still set the
/// status and headers.
///
/// The WebSocket connection is driven by a task spawned on the current tokio runtime. It takes
/// the connection from hyper's upgrade handle, which hyper puts in the request's extensions: a
/// layer that rebuilds the request must keep them, and the connection must be served with
/// upgrades on (hyper-util's `serve_connection_with_upgrades`, hyper's `with_upgrades()`;
/// `axum::serve` does). Without either the reply is still a `101` (a handler can be tested
/// without a server), the client's connection ends after it, and the channel reports
/// [`Error::Upgrade`](crate::Error::Upgrade), whose text names the cause, then `Closed` (1006).
///
/// # Errors
///
/// A request that asks for a WebSocket but gets the handshake wrong gets no channel: the
/// [`Rejection`] holds a response whose body says why — 400 for a missing or malformed
/// header, a body or an `Expect` (and, with [`Config::permessage_deflate`] on, a
/// `Sec-WebSocket-Extensions` that is no extension list), 405 for a method other than GET (or
/// a plain HTTP/2 CONNECT), 426 with
/// `Sec-WebSocket-Version: 13` for another version, 403 for an `Origin` that
/// [`Config::allowed_origins`] does not list, 501 for an HTTP/2 extended CONNECT of another
/// `:protocol`; and 503 for any request once the [`Shutdown`](crate::Shutdown) of its `Config`
/// has begun.
///
/// # Panics
///
/// If called outside a tokio runtime for a WebSocket request, or for an HTTP stream with a
/// [`Config::timeout`] (its timer is the runtime's). Nothing of the channel is left behind:
/// its [`Shutdown`](crate::Shutdown) does not count it.
///
/// # Examples
///
/// A hyper service:
///
/// ```
/// use std::convert::Infallible;
/// use futures::StreamExt;
/// use webchan::{Config, Event};
///
/// async fn handle(
///     request: http::Request<hyper::body::Incoming>,
/// ) -> Result<http::Response<webchan::Body>, Infallible> {
///     let (reply, mut channel) = match webchan::as_channel(request, Config::default()) {
///         Ok(pair) => pair,
///         Err(rejection) => return Ok(rejection.into_response()),
///     };
///     tokio::spawn(async move {
///         while let Some(event) = channel.next().await {
///             match event {
///                 Event::Open => {
///                     let _ = channel.send("hello".into()).await;
///                 }
///                 Event::Message(m) => {
///                     let _ = channel.send(m.into()).await;
///                 }
///                 _ => {}
///             }
///         }
///     });
///     Ok(reply.await)
/// }
/// ```
pub fn as_channel<B>(request: Request<B>, config: Config) -> Result<(Reply, Channel), Rejection> {
    let (mut parts, _body) = request.into_parts();
    // Held until the channel is registered (see `Shutdown::enter`).
    let _entering = match config.get().shutdown.as_ref().map(crate::Shutdown::enter) {
        Some(None) => {
            return Err(Rejection {
                status: StatusCode::SERVICE_UNAVAILABLE,
                reason: "the server is shutting down",
                http1: false,
            })
        }
        entering => entering.flatten(),
    };
    match classify(&parts, &config) {
        Class::Stream => {
            let sse = match config.get().sse {
                crate::sse::Mode::Always => true,
                crate::sse::Mode::Never => false,
                _ => accepts_event_stream(&parts.headers),
            };
            let shared =
                Arc::new(Shared::new(Kind::HttpStream, sse, RequestHead::new(parts), config));
            // Made before the channel is registered: with a timeout it starts a task, which
            // panics outside a runtime (before stop 30, 2026-12-06, the registered channel was
            // then counted by its `Shutdown` for good).
            let head = StreamHead::new(Arc::clone(&shared));
            shared.register();
            shared.open();
            let reply = Reply::new(StatusCode::OK, HeaderMap::new(), ReplyState::Stream(head));
            Ok((reply, Channel::new(shared)))
        }
        Class::WebSocket { accept } => {
            let deflate = match negotiate_deflate(&parts.headers, &config) {
                Ok(deflate) => deflate,
                Err(reason) => {
                    let http1 = parts.version < Version::HTTP_2;
                    return Err(Rejection { status: StatusCode::BAD_REQUEST, reason, http1 });
                }
            };
            let on_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
            let shared =
                Arc::new(Shared::new(Kind::WebSocket, false, RequestHead::new(parts), config));
            shared.register();
            let channel = Channel::new(Arc::clone(&shared));
            let unstarted = crate::ws::Unstarted::new(Arc::clone(&shared));
            // In the handler's span: what the connection logs is tied to its request.
            let agreed = deflate.as_ref().map(|(agreed, _)| *agreed);
            tokio::spawn(crate::ws::drive(unstarted, on_upgrade, agreed).in_current_span());
            let mut headers = HeaderMap::new();
            if let Some((_, extensions)) = deflate {
                headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, extensions);
            }
            if let Some(protocol) = shared.protocol() {
                // A token (checked by `Config::protocols`): a valid header value.
                if let Ok(value) = HeaderValue::from_str(protocol) {
                    headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
                }
            }
            let status = match accept {
                // HTTP/1.1 (RFC 6455): 101 Switching Protocols.
                Some(accept) => {
                    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
                    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
                    StatusCode::SWITCHING_PROTOCOLS
                }
                // HTTP/2 extended CONNECT (RFC 8441): 200, no accept key, no body.
                None => StatusCode::OK,
            };
            let reply = Reply::new(status, headers, ReplyState::Ready(Arc::clone(&shared), status));
            Ok((reply, channel))
        }
        Class::Reject(status, reason) => {
            Err(Rejection { status, reason, http1: parts.version < Version::HTTP_2 })
        }
    }
}

enum Class {
    Stream,
    /// A WebSocket; the accept key for HTTP/1.1, none for HTTP/2.
    WebSocket {
        accept: Option<HeaderValue>,
    },
    Reject(StatusCode, &'static str),
}

/// Does the header hold this token in its comma-separated list (case-insensitive)?
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// `tchar` of RFC 9110 §5.6.2: what a token (a subprotocol's name, an extension's) is made of.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The first of `ours` that the client offered in its `Sec-WebSocket-Protocol` headers
/// (`offered`: their values, each a comma-separated list), RFC 6455 §4.2.2.
pub(crate) fn choose_protocol<'a, 'b>(
    offered: impl Iterator<Item = &'b [u8]>,
    ours: &'a [String],
) -> Option<&'a str> {
    let offered: Vec<&[u8]> =
        offered.flat_map(|v| v.split(|b| *b == b',')).map(<[u8]>::trim_ascii).collect();
    ours.iter().find(|p| offered.contains(&p.as_bytes())).map(String::as_str)
}

/// The permessage-deflate offer accepted, if [`Config::permessage_deflate`] is on (see
/// there); `Err`: a `Sec-WebSocket-Extensions` header that does not parse.
fn negotiate_deflate(
    headers: &HeaderMap,
    config: &Config,
) -> Result<Option<(crate::deflate::Agreed, HeaderValue)>, &'static str> {
    if !config.get().permessage_deflate {
        return Ok(None);
    }
    crate::deflate::negotiate(headers, config.get().deflate_client_context)
}

/// An `Origin` outside [`Config::allowed_origins`] gets 403; so do two `Origin` headers (a
/// browser sends one, RFC 6454 §7.3) and one that is not visible ASCII. Before stop 28
/// (2026-12-05) only the first of two was checked (an allowed one let a second through), and
/// an unreadable one was taken for `""`.
fn check_origin(headers: &HeaderMap, config: &Config) -> Option<Class> {
    let allowed = config.get().allowed_origins.as_ref()?;
    let reason = match single(headers, header::ORIGIN) {
        Ok(None) => return None,
        Ok(Some(origin)) => match origin.to_str() {
            Ok(origin) if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin.trim())) => {
                return None
            }
            Ok(_) => "the Origin of this WebSocket upgrade is not allowed",
            Err(_) => "the Origin header of this WebSocket upgrade is not visible ASCII",
        },
        Err(()) => "a WebSocket upgrade may carry one Origin header, not more",
    };
    Some(Class::Reject(StatusCode::FORBIDDEN, reason))
}

/// CONNECT: a WebSocket over HTTP/2 (RFC 8441: `:protocol = websocket`), nothing else; it is
/// never an HTTP stream.
fn classify_connect(parts: &http::request::Parts, config: &Config) -> Class {
    let protocol = parts.extensions.get::<hyper::ext::Protocol>();
    let Some(protocol) = protocol.filter(|_| parts.version == Version::HTTP_2) else {
        return Class::Reject(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is only served for WebSockets over HTTP/2 (RFC 8441)",
        );
    };
    if !protocol.as_str().eq_ignore_ascii_case("websocket") {
        return Class::Reject(
            StatusCode::NOT_IMPLEMENTED,
            "the only CONNECT protocol served is websocket",
        );
    }
    if let Some(rejected) = check_origin(&parts.headers, config) {
        return rejected;
    }
    match single(&parts.headers, header::SEC_WEBSOCKET_VERSION) {
        Ok(Some(v)) if v.as_bytes().trim_ascii() == b"13" => Class::WebSocket { accept: None },
        Err(()) => {
            Class::Reject(StatusCode::BAD_REQUEST, "more than one Sec-WebSocket-Version header")
        }
        _ => Class::Reject(
            StatusCode::UPGRADE_REQUIRED,
            "a WebSocket needs the header Sec-WebSocket-Version: 13",
        ),
    }
}

/// Does the `Accept` header name `text/event-stream`, with a `q` other than 0? `q=0` means
/// "not acceptable" (RFC 9110 §12.4.2): before stop 28 (2026-12-05) such a request got an
/// event stream all the same. Wildcards (`*/*`, `text/*`) do not ask for one.
fn accepts_event_stream(headers: &HeaderMap) -> bool {
    let refused = |param: &str| {
        param.split_once('=').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("q")
                && value.trim().parse::<f32>().is_ok_and(|q| q == 0.0)
        })
    };
    headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|s| {
        s.split(',').any(|range| {
            let mut parts = range.split(';');
            parts.next().unwrap_or_default().trim().eq_ignore_ascii_case("text/event-stream")
                && !parts.any(refused)
        })
    })
}

/// The single value of a header that must appear once.
fn single(headers: &HeaderMap, name: header::HeaderName) -> Result<Option<&HeaderValue>, ()> {
    let mut all = headers.get_all(name).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(());
    }
    Ok(first)
}

fn is_valid_key(key: &[u8]) -> bool {
    // 16 bytes in base64: 22 significant characters and "==".
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22].iter().all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
        // the last significant character carries 2 bits, the other 4 must be zero
        && matches!(key[21], b'A' | b'Q' | b'g' | b'w')
}

fn classify(parts: &http::request::Parts, config: &Config) -> Class {
    let headers = &parts.headers;
    if parts.method == Method::CONNECT {
        return classify_connect(parts, config);
    }
    if !has_token(headers, header::UPGRADE, "websocket") {
        return Class::Stream;
    }
    if let Some(rejected) = check_origin(headers, config) {
        return rejected;
    }

    if parts.method != Method::GET {
        return Class::Reject(
            StatusCode::METHOD_NOT_ALLOWED,
            "a WebSocket upgrade must use the GET method",
        );
    }
    if parts.version != Version::HTTP_11 {
        return Class::Reject(StatusCode::BAD_REQUEST, "a WebSocket upgrade needs HTTP/1.1");
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Class::Reject(
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade needs the header Connection: Upgrade",
        );
    }
    match single(headers, header::SEC_WEBSOCKET_VERSION) {
        Err(()) => {
            return Class::Reject(
                StatusCode::BAD_REQUEST,
                "more than one Sec-WebSocket-Version header",
            )
        }
        Ok(None) => {
            return Class::Reject(
                StatusCode::UPGRADE_REQUIRED,
                "a WebSocket upgrade needs the header Sec-WebSocket-Version: 13",
            )
        }
        Ok(Some(v)) if v.as_bytes().trim_ascii() != b"13" => {
            return Class::Reject(
                StatusCode::UPGRADE_REQUIRED,
                "unsupported Sec-WebSocket-Version: only 13 is supported",
            )
        }
        Ok(Some(_)) => {}
    }
    let key = match single(headers, header::SEC_WEBSOCKET_KEY) {
        Err(()) => {
            return Class::Reject(StatusCode::BAD_REQUEST, "more than one Sec-WebSocket-Key header")
        }
        Ok(None) => {
            return Class::Reject(
                StatusCode::BAD_REQUEST,
                "a WebSocket upgrade needs a Sec-WebSocket-Key header",
            )
        }
        Ok(Some(key)) => key.as_bytes().trim_ascii(),
    };
    if !is_valid_key(key) {
        return Class::Reject(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key must be 16 bytes in base64 (24 characters)",
        );
    }
    // RFC 6455 §4.2.1 (2) asks for the Host header, and RFC 9112 §3.2 for exactly one on an
    // HTTP/1.1 request (hyper does not check it). Before 2026-12-05 an upgrade without one, or
    // with two, got its 101.
    if !matches!(single(headers, header::HOST), Ok(Some(_))) {
        return Class::Reject(StatusCode::BAD_REQUEST, "a WebSocket upgrade needs one Host header");
    }
    // The WebSocket's bytes follow the request head at once: a body (RFC 9112 §6.3) would be
    // read as frames once hyper hands over the socket at the 101, and `Expect: 100-continue`
    // asks for a 100 before the 101 (RFC 9110 §7.8), which hyper sends only when the body is
    // read. Before stop 29 (2026-12-05) an upgrade whose body came after its head got a 101,
    // then a close with 1002 for the body read as a frame.
    // A length is digits (RFC 9110 §8.6: `00` is 0 too), or a list of the same (hyper checks
    // they agree); anything else is taken for a body.
    let zero = |v: &HeaderValue| {
        v.as_bytes().split(|b| *b == b',').all(|n| {
            let n = n.trim_ascii();
            !n.is_empty() && n.iter().all(|b| *b == b'0')
        })
    };
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || !headers.get_all(header::CONTENT_LENGTH).iter().all(zero);
    if has_body {
        return Class::Reject(StatusCode::BAD_REQUEST, "a WebSocket upgrade request has no body");
    }
    if headers.contains_key(header::EXPECT) {
        return Class::Reject(
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade request has no body to expect a 100 (Continue) for",
        );
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key);
    match HeaderValue::from_str(&accept) {
        Ok(accept) => Class::WebSocket { accept: Some(accept) },
        Err(_) => Class::Reject(StatusCode::BAD_REQUEST, "invalid Sec-WebSocket-Key"),
    }
}

/// A WebSocket handshake that was refused, and the 4xx response that says why.
///
/// # Examples
///
/// ```
/// let request = http::Request::get("/chat")
///     .header("upgrade", "websocket")
///     .header("connection", "upgrade")
///     .header("sec-websocket-version", "8")
///     .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
///     .body(())?;
/// let rejection = webchan::as_channel(request, webchan::Config::default()).unwrap_err();
/// assert_eq!(rejection.status(), http::StatusCode::UPGRADE_REQUIRED);
/// let response = rejection.into_response();
/// assert_eq!(response.headers()["sec-websocket-version"], "13");
/// # Ok::<(), http::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Rejection {
    status: StatusCode,
    reason: &'static str,
    /// An HTTP/1.1 request: a 426 names the protocol to upgrade to (`Upgrade`, `Connection`),
    /// which HTTP/2 forbids (RFC 9113 §8.2.2).
    http1: bool,
}

impl Rejection {
    /// The response status: 400, 403, 405, 426, 501 (an HTTP/2 extended CONNECT of a protocol
    /// other than `websocket`), or 503 during a shutdown.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Why, in words.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The response to send: the status, a plain-text body with the reason, and
    /// `Sec-WebSocket-Version: 13` (426; over HTTP/1.1 with `Upgrade: websocket` and
    /// `Connection: Upgrade`, as RFC 9110 §15.5.22 asks) or `Allow: GET` (405).
    #[must_use]
    pub fn into_response(self) -> Response<Body> {
        let mut response = Response::new(Body::full(format!("{}\n", self.reason).into()));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        if self.status == StatusCode::UPGRADE_REQUIRED {
            headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            // Before stop 29 (2026-12-05) the 426 named no protocol.
            if self.http1 {
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            }
        }
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(header::ALLOW, HeaderValue::from_static("GET"));
        }
        response
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.reason)
    }
}

impl std::error::Error for Rejection {}

/// [`Error::ShuttingDown`] for a shutdown's 503, [`Error::Handshake`] for the rest. Before stop
/// 30 (2026-12-06) a plain request refused by a shutdown became a "websocket handshake" error.
impl From<Rejection> for Error {
    fn from(r: Rejection) -> Self {
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            Self::ShuttingDown
        } else {
            Self::Handshake(r.reason)
        }
    }
}

/// The response to a request made into a channel: a future of `Response<Body>`.
///
/// Before awaiting it, the handler can add headers and (for an HTTP stream) choose the status.
/// A WebSocket's reply resolves at once to the `101 Switching Protocols` with the headers
/// added (a `200` over HTTP/2); if the handler sets another status, the connection is not
/// upgraded and the channel yields an error and `Closed`. Once a [`Shutdown`](crate::Shutdown)'s
/// deadline has dropped the channel, it answers `503` instead (the channel got `Closed`, 1006,
/// and never opens). Dropping a WebSocket's reply unawaited refuses the upgrade
/// too, at once: a handler that makes the channel and then returns a response of its own (a
/// 403 after an auth check) leaves the connection un-upgraded, and the channel yields
/// [`Error::Upgrade`] then `Closed` (1006), never `Open`. An HTTP stream's reply resolves when
/// the head is due (the first send or close, or the timeout); dropping it before then closes
/// the channel. Polled again once it has resolved, it panics.
///
/// # Examples
///
/// ```
/// # async fn f(request: http::Request<()>) -> Result<(), Box<dyn std::error::Error>> {
/// let (mut reply, channel) = webchan::as_channel(request, webchan::Config::default())?;
/// reply.headers_mut().insert("set-cookie", "session=1".parse()?);
/// # drop(channel);
/// let _response: http::Response<webchan::Body> = reply.await;
/// # Ok(()) }
/// ```
#[must_use = "the reply is the response to return to the client"]
pub struct Reply {
    /// Boxed: a handler's future holds its `Reply` across an await, and hyper keeps room for
    /// that future for the connection's life (144 bytes inline before 2026-12-06, against
    /// one small allocation per request; `scripts/bench.sh idlehttp`).
    inner: Box<ReplyParts>,
}

struct ReplyParts {
    status: StatusCode,
    headers: HeaderMap,
    state: ReplyState,
}

enum ReplyState {
    /// A WebSocket's answer: ready at once; anything but the expected status refuses it.
    Ready(Arc<Shared>, StatusCode),
    Stream(StreamHead),
    Done,
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("status", &self.inner.status)
            .field("headers", &self.inner.headers)
            .finish_non_exhaustive()
    }
}

impl Reply {
    fn new(status: StatusCode, headers: HeaderMap, state: ReplyState) -> Self {
        Self { inner: Box::new(ReplyParts { status, headers, state }) }
    }

    /// The status the response will have (an HTTP stream's first
    /// [`Message::Response`](crate::Message::Response) can still change it).
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.inner.status
    }

    /// Has it resolved (its response given out)?
    pub(crate) fn is_done(&self) -> bool {
        matches!(self.inner.state, ReplyState::Done)
    }

    /// The status, to change it.
    pub fn status_mut(&mut self) -> &mut StatusCode {
        &mut self.inner.status
    }

    /// The headers the response will have.
    #[must_use]
    pub fn headers(&self) -> &HeaderMap {
        &self.inner.headers
    }

    /// The headers, to add to them.
    ///
    /// A WebSocket's `Sec-WebSocket-Protocol` must name one of the protocols the client
    /// offered in its own (RFC 6455 §4.2.2: a client fails the connection otherwise); webchan
    /// sends what is set here as it is ([`Config::protocols`] chooses one for you, and then it
    /// is here already). Leave `Sec-WebSocket-Extensions` as it is: it holds
    /// the permessage-deflate agreement when [`Config::permessage_deflate`] made one (removed,
    /// the client would take the compressed frames for a protocol error), and an extension
    /// added here would be one webchan does not implement.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.inner.headers
    }

    /// Adds a header, by value.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(reply: webchan::Reply) -> webchan::Reply {
    /// reply.header(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"))
    /// # }
    /// ```
    pub fn header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.inner.headers.append(name, value);
        self
    }
}

impl Future for Reply {
    type Output = Response<Body>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response<Body>> {
        let this = &mut *self.inner;
        match &mut this.state {
            ReplyState::Ready(shared, expected) => {
                if shared.is_forced() {
                    // A shutdown's deadline dropped the channel before its reply was returned
                    // (see `Shared::drop_connection`): no upgrade, as for a new request.
                    this.state = ReplyState::Done;
                    let rejection = Rejection {
                        status: StatusCode::SERVICE_UNAVAILABLE,
                        reason: "the server is shutting down",
                        http1: false,
                    };
                    return Poll::Ready(rejection.into_response());
                }
                if this.status != *expected {
                    // The handler chose another answer: no upgrade.
                    for name in [
                        header::UPGRADE,
                        header::CONNECTION,
                        header::SEC_WEBSOCKET_ACCEPT,
                        header::SEC_WEBSOCKET_EXTENSIONS,
                        header::SEC_WEBSOCKET_PROTOCOL,
                    ] {
                        this.headers.remove(name);
                    }
                    shared.refuse_upgrade(this.status, *expected);
                }
                this.state = ReplyState::Done;
                let mut response = Response::new(Body::empty());
                *response.status_mut() = this.status;
                *response.headers_mut() = std::mem::take(&mut this.headers);
                Poll::Ready(response)
            }
            ReplyState::Stream(head) => {
                let response =
                    std::task::ready!(head.poll_head(cx, this.status, &mut this.headers));
                this.state = ReplyState::Done;
                Poll::Ready(response)
            }
            ReplyState::Done => panic!("Reply polled after completion"),
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        // A WebSocket's reply dropped before it gave its response: the handler answered with
        // a response of its own (or gave up), so the client never gets the `101`. Refuse the
        // upgrade now, so that the channel ends at once (Error, then Closed) and `ws::drive`
        // does not open it on the connection hyper may still hand over (it does for any
        // request that asked for an upgrade, whatever the response). An HTTP stream's
        // `StreamHead` closes its channel when dropped.
        if let ReplyState::Ready(shared, _) = &self.inner.state {
            let error = Error::Upgrade(Arc::new(ReplyDropped));
            shared.finish(CloseInfo::websocket(1006, ""), Some(error));
        }
    }
}

/// Why a WebSocket whose [`Reply`] was dropped never opened.
#[derive(Debug)]
struct ReplyDropped;

impl fmt::Display for ReplyDropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "the reply was dropped before it was returned (the handler answered with a \
             response of its own, or the request was abandoned): no 101 was sent",
        )
    }
}

impl std::error::Error for ReplyDropped {}
