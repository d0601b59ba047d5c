//! Property tests of request classification and WebSocket handshake validation, through the
//! public `webchan::as_channel`: random methods, versions, header sets, keys and origins.
//!
//! - it never panics;
//! - a request without an `Upgrade: websocket` token (and not a CONNECT) always becomes an
//!   HTTP stream;
//! - a request with one becomes a WebSocket exactly when every RFC 6455 §4.2.1 condition
//!   holds (and the Origin is allowed), else it gets a 4xx — one of the statuses of the
//!   conditions it breaks — with a non-empty reason;
//! - a CONNECT is never an HTTP stream: it becomes a WebSocket over HTTP/2 exactly when the
//!   RFC 8441 conditions hold (HTTP/2, `:protocol` websocket, `Sec-WebSocket-Version: 13`,
//!   an allowed Origin), else it is refused with a reason;
//! - an accepted upgrade's `Sec-WebSocket-Accept` is the RFC value (checked against
//!   tungstenite's `derive_accept_key`; HTTP/2 has none: 200), and its channel never opens
//!   without hyper's upgrade.
//!
//! This is the substitute for a `cargo fuzz` target (cargo-fuzz needs a nightly toolchain,
//! which this machine does not have). 1,000 cases per property by default; more with
//! `PROPTEST_CASES=200000 cargo test --release --test proptest_negotiate`.

use std::time::Duration;

use futures::StreamExt;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Version};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use webchan::{CloseInfo, Config, Error, Event, Kind};

const ALLOWED: [&str; 2] = ["https://good.example", "http://localhost:3000"];

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    // No regression files: this crate does not keep a proptest-regressions directory.
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

// ---- an independent oracle ----

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Strict base64 (RFC 4648 §3.5: padding required, unused bits zero); `None` if invalid.
fn unbase64(s: &[u8]) -> Option<Vec<u8>> {
    if s.is_empty() || s.len() % 4 != 0 {
        return None;
    }
    let pad = s.iter().rev().take_while(|c| **c == b'=').count();
    if pad > 2 {
        return None;
    }
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut out = Vec::new();
    for &c in &s[..s.len() - pad] {
        let v = B64.iter().position(|b| *b == c)? as u32;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    (bits == 0).then_some(out)
}

/// The comma-separated tokens of every value of a header that is text.
fn tokens<'a>(headers: &'a http::HeaderMap, name: &HeaderName) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect()
}

fn has_token(headers: &http::HeaderMap, name: &HeaderName, token: &str) -> bool {
    tokens(headers, name).iter().any(|t| t.eq_ignore_ascii_case(token))
}

/// Whether the allow-list (if any) refuses the request's `Origin`: a single one, visible ASCII,
/// among the entries (case aside). Two `Origin` headers, or one that is not visible ASCII, are
/// refused (since stop 28, 2026-12-05; RFC 6454 §7.3: a user agent sends one).
fn origin_refused(headers: &http::HeaderMap, allowed: Option<&[&str]>) -> bool {
    let Some(allowed) = allowed else { return false };
    let origins: Vec<_> = headers.get_all(header::ORIGIN).iter().collect();
    match origins[..] {
        [] => false,
        [origin] => !origin
            .to_str()
            .is_ok_and(|origin| allowed.iter().any(|a| a.eq_ignore_ascii_case(origin.trim()))),
        _ => true,
    }
}

/// What RFC 6455 §4.2.1 (and the allow-list) say of a request with an upgrade token: the
/// statuses of the conditions it breaks (empty: it must be accepted).
fn violations(request: &Request<()>, allowed: Option<&[&str]>) -> Vec<StatusCode> {
    let headers = request.headers();
    let mut out = Vec::new();
    if origin_refused(headers, allowed) {
        out.push(StatusCode::FORBIDDEN);
    }
    if request.method() != Method::GET {
        out.push(StatusCode::METHOD_NOT_ALLOWED);
    }
    if request.version() != Version::HTTP_11 {
        out.push(StatusCode::BAD_REQUEST);
    }
    if !has_token(headers, &header::CONNECTION, "upgrade") {
        out.push(StatusCode::BAD_REQUEST);
    }
    let versions: Vec<_> = headers.get_all(header::SEC_WEBSOCKET_VERSION).iter().collect();
    match versions[..] {
        [] => out.push(StatusCode::UPGRADE_REQUIRED),
        [v] if v.as_bytes().trim_ascii() != b"13" => out.push(StatusCode::UPGRADE_REQUIRED),
        [_] => {}
        _ => out.push(StatusCode::BAD_REQUEST),
    }
    let keys: Vec<_> = headers.get_all(header::SEC_WEBSOCKET_KEY).iter().collect();
    match keys[..] {
        [key] if unbase64(key.as_bytes().trim_ascii()).is_some_and(|k| k.len() == 16) => {}
        _ => out.push(StatusCode::BAD_REQUEST),
    }
    // RFC 6455 §4.2.1 (2), RFC 9112 §3.2: exactly one Host.
    if headers.get_all(header::HOST).iter().count() != 1 {
        out.push(StatusCode::BAD_REQUEST);
    }
    // No body (RFC 9112 §6.3: a length other than 0, or a transfer coding) and no `Expect`
    // (RFC 9110 §7.8 would want a 100 before the 101): the WebSocket's bytes follow the head.
    let length = |v: &http::HeaderValue| {
        !v.as_bytes().split(|b| *b == b',').all(|n| {
            let n = n.trim_ascii();
            !n.is_empty() && n.iter().all(|b| *b == b'0')
        })
    };
    if headers.contains_key(header::TRANSFER_ENCODING)
        || headers.get_all(header::CONTENT_LENGTH).iter().any(length)
        || headers.contains_key(header::EXPECT)
    {
        out.push(StatusCode::BAD_REQUEST);
    }
    out
}

/// The same for a CONNECT (RFC 8441 §4, §5): the statuses of the conditions it breaks.
fn connect_violations(request: &Request<()>, allowed: Option<&[&str]>) -> Vec<StatusCode> {
    let headers = request.headers();
    let protocol = request.extensions().get::<hyper::ext::Protocol>();
    let mut out = Vec::new();
    match protocol {
        // Not an extended CONNECT, or not over HTTP/2: a proxy's CONNECT, not ours.
        _ if request.version() != Version::HTTP_2 => out.push(StatusCode::METHOD_NOT_ALLOWED),
        None => out.push(StatusCode::METHOD_NOT_ALLOWED),
        // Another protocol than websocket: not implemented here (400 would do as well).
        Some(p) if !p.as_str().eq_ignore_ascii_case("websocket") => {
            out.extend([StatusCode::NOT_IMPLEMENTED, StatusCode::BAD_REQUEST]);
        }
        Some(_) => {}
    }
    if origin_refused(headers, allowed) {
        out.push(StatusCode::FORBIDDEN);
    }
    let versions: Vec<_> = headers.get_all(header::SEC_WEBSOCKET_VERSION).iter().collect();
    match versions[..] {
        [] => out.push(StatusCode::UPGRADE_REQUIRED),
        [v] if v.as_bytes().trim_ascii() != b"13" => out.push(StatusCode::UPGRADE_REQUIRED),
        [_] => {}
        _ => out.push(StatusCode::BAD_REQUEST),
    }
    out
}

// ---- strategies ----

/// A header value: mostly printable ASCII, sometimes obs-text (bytes 0x80..=0xFF).
fn any_value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![8 => 0x20u8..0x7f, 1 => Just(b'\t'), 1 => 0x80u8..=0xff],
        0..40,
    )
}

fn pick(options: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(options).prop_map(|s| s.as_bytes().to_vec())
}

fn upgrade_value() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        12 => pick(&["websocket", "WebSocket", "WEBSOCKET", " websocket ", "h2c, websocket",
                    "websocket,h2c", "foo , WebSocket"]),
        3 => pick(&["h2c", "websockets", "web socket", "websocket/13", "", ",", "webSocket2"]),
        1 => any_value(),
        1 => Just(b"websocket \xff".to_vec()),
    ]
    .boxed()
}

fn connection_value() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        16 => pick(&["Upgrade", "upgrade", "keep-alive, Upgrade", "UPGRADE,keep-alive", " upgrade "]),
        3 => pick(&["close", "keep-alive", "upgrades", "up grade", ""]),
        1 => any_value(),
    ]
    .boxed()
}

fn version_value() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        16 => pick(&["13", " 13", "13 "]),
        3 => pick(&["8", "7", "14", "", "13, 8", "013", "1 3", "+13"]),
        1 => any_value(),
    ]
    .boxed()
}

fn key_value() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        // A valid key: 16 random bytes in base64.
        16 => prop::array::uniform16(any::<u8>()).prop_map(|b| base64(&b).into_bytes()),
        // 22 base64 characters and "==": valid only when the unused bits are zero.
        2 => prop::collection::vec(prop::sample::select(B64.to_vec()), 22)
            .prop_map(|mut k| { k.extend_from_slice(b"=="); k }),
        // Base64 of another length.
        2 => prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| base64(&b).into_bytes()),
        // A valid key with whitespace around it.
        1 => prop::array::uniform16(any::<u8>()).prop_map(|b| format!(" {} ", base64(&b)).into_bytes()),
        1 => any_value(),
    ]
    .boxed()
}

fn origin_value() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        2 => pick(&["https://good.example", "HTTPS://GOOD.EXAMPLE", "http://localhost:3000",
               " https://good.example "]),
        1 => pick(&["https://evil.example", "null", "https://good.example.evil", "", "http://good.example"]),
        1 => any_value(),
    ]
    .boxed()
}

/// 0, 1 or 2 values of one header (2: a duplicate).
fn some_of(
    values: BoxedStrategy<Vec<u8>>,
    weights: (u32, u32, u32),
) -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop_oneof![
        weights.0 => Just(Vec::new()),
        weights.1 => values.clone().prop_map(|v| vec![v]),
        weights.2 => (values.clone(), values).prop_map(|(a, b)| vec![a, b]),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    method: Method,
    version: Version,
    headers: Vec<(HeaderName, Vec<u8>)>,
    /// The HTTP/2 `:protocol` pseudo-header (hyper puts it in the request's extensions).
    protocol: Option<&'static str>,
    allow_list: bool,
}

impl Case {
    fn request(&self) -> Request<()> {
        let mut request = Request::builder()
            .method(self.method.clone())
            .version(self.version)
            .uri("/chat?room=1")
            .body(())
            .unwrap();
        for (name, value) in &self.headers {
            // Every generated value is a valid header value.
            let value = HeaderValue::from_bytes(value).unwrap();
            request.headers_mut().append(name.clone(), value);
        }
        if let Some(protocol) = self.protocol {
            request.extensions_mut().insert(hyper::ext::Protocol::from_static(protocol));
        }
        request
    }

    fn config(&self) -> Config {
        if self.allow_list {
            Config::default().allowed_origins(ALLOWED)
        } else {
            Config::default()
        }
    }
}

/// Requests shaped like HTTP/1.1 upgrades (3 in 4) or like HTTP/2 extended CONNECTs, each
/// with every part sometimes wrong.
fn case() -> impl Strategy<Value = Case> {
    let h1 = (
        prop_oneof![
            24 => Just(Method::GET),
            1 => Just(Method::POST),
            1 => Just(Method::HEAD),
            1 => Just(Method::CONNECT),
            1 => Just(Method::OPTIONS),
            1 => Just(Method::from_bytes(b"WEBSOCKET").unwrap()),
        ],
        prop_oneof![
            24 => Just(Version::HTTP_11),
            1 => Just(Version::HTTP_10),
            1 => Just(Version::HTTP_09),
            1 => Just(Version::HTTP_2),
            1 => Just(Version::HTTP_3),
        ],
        prop_oneof![9 => Just(None), 1 => Just(Some("websocket"))],
    );
    let h2 = (
        prop_oneof![12 => Just(Method::CONNECT), 1 => Just(Method::GET), 1 => Just(Method::POST)],
        prop_oneof![12 => Just(Version::HTTP_2), 1 => Just(Version::HTTP_11)],
        prop_oneof![
            8 => Just(Some("websocket")),
            1 => Just(None),
            2 => prop::sample::select(vec!["WebSocket", "websockets", "connect-udp", ""])
                .prop_map(Some),
        ],
    );
    let shape = prop_oneof![3 => h1.boxed(), 1 => h2.boxed()];
    let noise_name = prop::sample::select(vec![
        "sec-websocket-protocol",
        "sec-websocket-extensions",
        "cookie",
        "x-forwarded-for",
        "content-length",
        "transfer-encoding",
        "expect",
        "sec-websocket-accept",
    ]);
    let noise_value =
        prop_oneof![4 => any_value(), 1 => pick(&["0", " 0 ", "00", "0, 0", "5", "100-continue"])];
    let noise = prop::collection::vec((noise_name, noise_value), 0..4);
    let headers = (
        some_of(upgrade_value(), (2, 12, 1)),
        some_of(connection_value(), (1, 24, 1)),
        some_of(version_value(), (1, 24, 1)),
        some_of(key_value(), (1, 24, 1)),
        some_of(origin_value(), (6, 4, 1)),
        (some_of(pick(&["x", "127.0.0.1:3000", "example.com", ""]).boxed(), (1, 24, 1)), noise),
    )
        .prop_map(|(upgrade, connection, version, key, origin, (host, noise))| {
            let mut headers = Vec::new();
            let mut add = |name: HeaderName, values: Vec<Vec<u8>>| {
                headers.extend(values.into_iter().map(|v| (name.clone(), v)));
            };
            add(header::UPGRADE, upgrade);
            add(header::CONNECTION, connection);
            add(header::SEC_WEBSOCKET_VERSION, version);
            add(header::SEC_WEBSOCKET_KEY, key);
            add(header::ORIGIN, origin);
            add(header::HOST, host);
            for (name, value) in noise {
                add(HeaderName::from_static(name), vec![value]);
            }
            headers
        });
    (shape, headers, any::<bool>()).prop_map(
        |((method, version, protocol), headers, allow_list)| Case {
            method,
            version,
            headers,
            protocol,
            allow_list,
        },
    )
}

// ---- properties ----

/// Runs one case; `Err` describes a broken property.
async fn check(case: Case) -> Result<(), TestCaseError> {
    let request = case.request();
    let allowed = case.allow_list.then_some(&ALLOWED[..]);
    let connect = request.method() == Method::CONNECT;
    let upgrade = has_token(request.headers(), &header::UPGRADE, "websocket");
    let expected =
        if connect { connect_violations(&request, allowed) } else { violations(&request, allowed) };
    let key = request.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let http1 = request.version() < Version::HTTP_2;
    match webchan::as_channel(request, case.config()) {
        Ok((reply, channel)) if !upgrade && !connect => {
            prop_assert_eq!(channel.kind(), Kind::HttpStream);
            prop_assert!(channel.is_open());
            prop_assert_eq!(reply.status(), StatusCode::OK);
            prop_assert_eq!(channel.originating_request().uri.path(), "/chat");
        }
        Err(rejection) if !upgrade && !connect => {
            return Err(TestCaseError::fail(format!(
                "no upgrade token, but rejected: {rejection}"
            )));
        }
        Ok((reply, mut channel)) => {
            prop_assert!(expected.is_empty(), "accepted a request that breaks {:?}", expected);
            prop_assert_eq!(channel.kind(), Kind::WebSocket);
            let response = reply.await;
            if connect {
                // RFC 8441 §5: a 200, and no Sec-WebSocket-Accept.
                prop_assert_eq!(response.status(), StatusCode::OK);
                prop_assert!(!response.headers().contains_key(header::SEC_WEBSOCKET_ACCEPT));
                prop_assert!(!response.headers().contains_key(header::UPGRADE));
            } else {
                prop_assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
                prop_assert_eq!(&response.headers()[header::UPGRADE], "websocket");
                prop_assert_eq!(&response.headers()[header::CONNECTION], "Upgrade");
                let key = key.unwrap();
                let accept = derive_accept_key(key.as_bytes().trim_ascii());
                prop_assert_eq!(
                    response.headers()[header::SEC_WEBSOCKET_ACCEPT].to_str().unwrap(),
                    accept
                );
            }
            // Not served by hyper, so no upgrade: an error and Closed(1006), never Open.
            let events: Vec<Event> =
                tokio::time::timeout(Duration::from_secs(10), (&mut channel).collect())
                    .await
                    .map_err(|_| TestCaseError::fail("the channel did not end"))?;
            prop_assert!(
                matches!(&events[..], [Event::Error(Error::Upgrade(_)), Event::Closed(info)]
                    if *info == CloseInfo::websocket(1006, "")),
                "{:?}",
                events
            );
        }
        Err(rejection) => {
            prop_assert!(!expected.is_empty(), "rejected a valid upgrade: {}", rejection);
            let status = rejection.status();
            prop_assert!(status.is_client_error() || status == StatusCode::NOT_IMPLEMENTED);
            prop_assert!(expected.contains(&status), "{} is not one of {:?}", rejection, expected);
            let reason = rejection.reason();
            prop_assert!(!reason.trim().is_empty());
            let response = rejection.into_response();
            prop_assert_eq!(response.status(), status);
            if status == StatusCode::UPGRADE_REQUIRED {
                prop_assert_eq!(&response.headers()[header::SEC_WEBSOCKET_VERSION], "13");
                // RFC 9110 §15.5.22 over HTTP/1.1; HTTP/2 has no Upgrade (RFC 9113 §8.2.2).
                let upgrade = response.headers().get(header::UPGRADE);
                if http1 {
                    prop_assert_eq!(upgrade.map(|v| v.as_bytes()), Some(&b"websocket"[..]));
                    prop_assert_eq!(&response.headers()[header::CONNECTION], "Upgrade");
                } else {
                    prop_assert!(upgrade.is_none());
                }
            }
            if status == StatusCode::METHOD_NOT_ALLOWED {
                prop_assert!(response.headers().contains_key(header::ALLOW));
            }
            let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap();
            let body = String::from_utf8(body.to_bytes().to_vec()).unwrap();
            prop_assert!(body.contains(reason), "{:?} does not say {:?}", body, reason);
        }
    }
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

proptest! {
    #![proptest_config(config())]

    /// Random requests: classification, validation, the accept key and the rejections.
    #[test]
    fn every_request_is_classified_as_rfc_6455_says(case in case()) {
        runtime().block_on(check(case))?;
    }

    /// Requests without any Upgrade header, whatever else they carry, are HTTP streams (a
    /// CONNECT aside: see the first property).
    #[test]
    fn a_request_without_an_upgrade_token_is_an_http_stream(
        mut case in case(),
        upgrade in prop::option::of(pick(&["h2c", "websockets", "", "tls/1.0, h2c"])),
    ) {
        case.headers.retain(|(name, _)| name != header::UPGRADE);
        if case.method == Method::CONNECT {
            case.method = Method::GET;
        }
        if let Some(value) = upgrade {
            case.headers.push((header::UPGRADE, value));
        }
        let (_reply, channel) = runtime().block_on(async { webchan::as_channel(case.request(), case.config()) })
            .map_err(|r| TestCaseError::fail(format!("rejected: {r}")))?;
        prop_assert_eq!(channel.kind(), Kind::HttpStream);
    }

    /// A well-formed upgrade with any key of 16 bytes is accepted with the RFC accept value.
    #[test]
    fn any_valid_key_is_accepted_with_the_rfc_accept_value(key in prop::array::uniform16(any::<u8>())) {
        let key = base64(&key);
        let request = Request::get("/")
            .header("host", "x")
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", &key)
            .body(())
            .unwrap();
        let response = runtime().block_on(async {
            let (reply, _channel) = webchan::as_channel(request, Config::default()).unwrap();
            reply.await
        });
        prop_assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        let accept = response.headers()[header::SEC_WEBSOCKET_ACCEPT].to_str().unwrap().to_owned();
        prop_assert_eq!(&accept, &derive_accept_key(key.as_bytes()));
        // The accept value is itself the base64 of a 20-byte SHA-1 digest.
        prop_assert_eq!(unbase64(accept.as_bytes()).map(|d| d.len()), Some(20));
    }
}

#[test]
fn the_oracle_agrees_with_the_rfc_example() {
    // RFC 6455 §1.3: the sample nonce and its accept value.
    assert_eq!(base64(b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
    assert_eq!(unbase64(b"dGhlIHNhbXBsZSBub25jZQ==").unwrap(), b"the sample nonce");
    assert_eq!(derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    // Strictness: unused bits set, missing padding, bad characters.
    assert!(unbase64(b"dGhlIHNhbXBsZSBub25jZR==").is_none());
    assert!(unbase64(b"dGhlIHNhbXBsZSBub25jZQ").is_none());
    assert!(unbase64(b"dGhlIHNhbXBsZSBub25jZ!==").is_none());
}

#[test]
fn the_generator_reaches_every_outcome() {
    // 1,000 requests from the generator (fixed seed): each outcome must occur, so that the
    // properties above are not vacuous.
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = case();
    let rt = runtime();
    let _guard = rt.enter();
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..1000 {
        let case = strategy.new_tree(&mut runner).unwrap().current();
        let outcome = match webchan::as_channel(case.request(), case.config()) {
            Ok((_, channel)) if case.method == Method::CONNECT => {
                format!("{:?} over HTTP/2", channel.kind())
            }
            Ok((_, channel)) => format!("{:?}", channel.kind()),
            Err(rejection) => rejection.status().as_u16().to_string(),
        };
        *seen.entry(outcome).or_default() += 1;
    }
    eprintln!("outcomes of 1,000 generated requests: {seen:?}");
    for outcome in
        ["HttpStream", "WebSocket", "WebSocket over HTTP/2", "400", "403", "405", "426", "501"]
    {
        assert!(seen.get(outcome).copied().unwrap_or(0) >= 10, "{outcome} too rare: {seen:?}");
    }
}
