//! The WebSocket opening handshake (RFC 6455 §4.1-4.4, §11.3; RFC 8441 §4-5; RFC 9110 header
//! syntax) and Server-Sent Events (WHATWG HTML §9.2) at their edges, over real sockets (from
//! stop 29's review, 2026-12-05). Some tests run Node's `EventSource` (node 20, as the browser
//! test needs).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::h2raw::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use webchan::{sse, Channel, Config};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Writes `request` on a new connection and reads the response head; returns it (without the
/// final CRLFCRLF), the connection, and the bytes read after the head.
async fn head_of(addr: SocketAddr, request: &[u8]) -> (String, TcpStream, Vec<u8>) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..p]).to_string();
            let rest = buf[p + 4..].to_vec();
            return (head, tcp, rest);
        }
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut chunk))
            .await
            .expect("no response head within 10 s")
            .unwrap_or(0);
        assert!(n > 0, "EOF before a response head: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn upgrade_request(addr: SocketAddr, extra: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// After a 101: sends a masked text frame and expects it echoed.
async fn expect_echo(tcp: TcpStream, rest: Vec<u8>, what: &str) {
    let mut ws = RawWs { tcp, buf: rest };
    ws.frame(0x81, b"ping-echo").await;
    let got = ws.read_frame().await;
    assert_eq!(
        got.as_ref().map(|(f, p)| (*f, String::from_utf8_lossy(p).to_string())),
        Some((0x81, "ping-echo".to_owned())),
        "{what}: the echo of a text frame sent after the 101 (a close frame 0x88 here means \
         the server read something else as WebSocket frames)"
    );
}

// ======================= PART 1: the opening handshake =======================

/// RFC 9110 §7.8: "A server that sends a 426 (Upgrade Required) response MUST send an Upgrade
/// header field to indicate the acceptable protocols" (also §15.5.22); and a sender of
/// Upgrade "MUST also send an 'Upgrade' connection option in the Connection header field".
/// RFC 6455 §4.4 adds the `Sec-WebSocket-Version` (checked by tests/negotiate.rs).
#[tokio::test]
async fn a_426_carries_upgrade_websocket_as_rfc_9110_requires() {
    let addr = serve(Config::default(), echo_or_ok).await;
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 8\r\n\r\n"
    );
    let (head, _tcp, _) = head_of(addr, request.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 426"), "{head}");
    assert_eq!(header_values(&head, "sec-websocket-version"), ["13"], "{head}");
    let upgrade = header_values(&head, "upgrade");
    assert!(
        upgrade.iter().any(|v| v.eq_ignore_ascii_case("websocket")),
        "RFC 9110 §7.8/§15.5.22: a 426 MUST carry Upgrade naming the acceptable protocol; \
         got:\n{head}"
    );
    let connection = header_values(&head, "connection");
    assert!(
        connection
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade")),
        "RFC 9110 §7.8: with Upgrade, Connection must list \"upgrade\"; got:\n{head}"
    );
}

/// RFC 9110 §8.6: "A server MUST NOT send a Content-Length header field in any response with
/// a status code of 1xx"; RFC 9112 §6.1 the same for Transfer-Encoding. The 101 also carries
/// exactly one Upgrade: websocket, Connection: Upgrade and the RFC accept value (RFC 6455
/// §4.2.2 5), and no Sec-WebSocket-Protocol/Extensions the client did not ask for.
#[tokio::test]
async fn the_101_is_exact_no_length_no_transfer_encoding_no_protocol_or_extension() {
    let addr = serve(Config::default(), echo_or_ok).await;
    let extra = "Sec-WebSocket-Protocol: chat, superchat\r\n\
                 Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
    let (head, tcp, rest) = head_of(addr, upgrade_request(addr, extra).as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(header_values(&head, "content-length").is_empty(), "{head}");
    assert!(header_values(&head, "transfer-encoding").is_empty(), "{head}");
    assert_eq!(header_values(&head, "sec-websocket-accept"), [ACCEPT], "{head}");
    assert_eq!(header_values(&head, "upgrade").len(), 1, "{head}");
    assert!(header_values(&head, "sec-websocket-protocol").is_empty(), "{head}");
    assert!(header_values(&head, "sec-websocket-extensions").is_empty(), "{head}");
    expect_echo(tcp, rest, "after a 101").await;
}

/// A client that writes its first frame in the same TCP write as the request (RFC 6455 §4.1
/// tells a client to wait for the response, but some pipeline): the bytes hyper read with
/// the head are handed to the WebSocket, not lost.
#[tokio::test]
async fn a_first_frame_in_the_same_write_as_the_request_is_not_lost() {
    let addr = serve(Config::default(), echo_or_ok).await;
    let mut bytes = upgrade_request(addr, "").into_bytes();
    bytes.extend(encode_frame(0x81, Some([9, 8, 7, 6]), b"early", None));
    let (head, tcp, rest) = head_of(addr, &bytes).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut ws = RawWs { tcp, buf: rest };
    let got = ws.read_frame().await;
    assert_eq!(
        got.as_ref().map(|(f, p)| (*f, String::from_utf8_lossy(p).to_string())),
        Some((0x81, "early".to_owned()))
    );
}

/// An upgrade request with a body, or `Expect: 100-continue`: refused with 400 and the reason.
/// Its body's bytes belong to the HTTP request (RFC 9112 §6.3), and a 101 before them made the
/// WebSocket read them as frames; `Expect` asks for a 100 before the 101 (RFC 9110 §7.8).
/// Before stop 29 every case got a 101: a body in the head's own write was drained by hyper, a
/// body written after it was read as frames (1002), and the `Expect` got no 100. The cases
/// without body bytes here are those whose client waits: the refusal comes before the body.
#[tokio::test]
async fn an_upgrade_with_a_body_or_an_expect_is_refused_with_the_reason() {
    let addr = serve(Config::default(), echo_or_ok).await;
    let no_body = "a WebSocket upgrade request has no body";
    let cases: [(&str, &[u8], &str); 6] = [
        ("Content-Length: 5\r\n", b"hello", no_body),
        ("Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n", no_body),
        ("Content-Length: 300000\r\n", b"", no_body),
        ("Content-Length: 5\r\n", b"", no_body),
        ("Transfer-Encoding: chunked\r\n", b"", no_body),
        (
            "Content-Length: 0\r\nExpect: 100-continue\r\n",
            b"",
            "a WebSocket upgrade request has no body to expect a 100 (Continue) for",
        ),
    ];
    for (headers, body, reason) in cases {
        let mut bytes = upgrade_request(addr, headers).into_bytes();
        bytes.extend_from_slice(body);
        let (head, mut tcp, mut rest) = head_of(addr, &bytes).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{headers:?} {body:?}: {head}");
        let length: usize = header_values(&head, "content-length")[0].parse().unwrap();
        while rest.len() < length {
            let mut chunk = [0u8; 1024];
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "{headers:?}: EOF in the body");
            rest.extend_from_slice(&chunk[..n]);
        }
        let said = String::from_utf8_lossy(&rest[..length]).into_owned();
        assert_eq!(said, format!("{reason}\n"), "{headers:?}");
    }
}

/// `Content-Length: 0` is no body at all: an ordinary upgrade.
#[tokio::test]
async fn an_upgrade_with_content_length_0_is_an_ordinary_upgrade() {
    let addr = serve(Config::default(), echo_or_ok).await;
    let bytes = upgrade_request(addr, "Content-Length: 0\r\n");
    let (head, tcp, rest) = head_of(addr, bytes.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    expect_echo(tcp, rest, "upgrade with Content-Length: 0").await;
}

/// Header lists (RFC 9110 §5.6.1): tokens over several lines, odd spacing, case, empty
/// elements; the upgrade token anywhere in the Upgrade list.
#[tokio::test]
async fn upgrade_and_connection_lists_over_several_lines_and_empty_elements() {
    let addr = serve(Config::default(), echo_or_ok).await;
    for (i, headers) in [
        "Upgrade: h2c\r\nUpgrade: websocket\r\nConnection: keep-alive\r\nConnection: Upgrade\r\n",
        "Upgrade: websocket, h2c\r\nConnection: ,, keep-alive ,upgrade,\r\n",
        "Upgrade: h2c ,\tWebSocket\t\r\nConnection:upgrade\r\n",
        "upgrade: WEBSOCKET\r\nconnection: UpGrAdE\r\n",
    ]
    .iter()
    .enumerate()
    {
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\n{headers}Sec-WebSocket-Key: {KEY}\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        let (head, tcp, rest) = head_of(addr, request.as_bytes()).await;
        assert!(head.starts_with("HTTP/1.1 101"), "case {i} {headers:?}: {head}");
        assert_eq!(header_values(&head, "sec-websocket-accept"), [ACCEPT]);
        expect_echo(tcp, rest, &format!("case {i}")).await;
    }
}

/// Absolute-form request target (RFC 9112 §3.2.2) with a Host header: an ordinary upgrade.
#[tokio::test]
async fn an_absolute_form_target_upgrades() {
    let addr = serve(Config::default(), echo_or_ok).await;
    let request = format!(
        "GET http://{addr}/ws?x=1 HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let (head, tcp, rest) = head_of(addr, request.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    expect_echo(tcp, rest, "absolute-form").await;
}

/// HEAD with upgrade headers: 405 with Allow: GET, and (HEAD) no body.
#[tokio::test]
async fn a_head_upgrade_is_405_with_allow_get_and_no_body() {
    let addr = serve(Config::default(), echo_or_ok).await;
    let request = format!(
        "HEAD /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n\
         GET /next HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let (head, mut tcp, mut rest) = head_of(addr, request.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    assert_eq!(header_values(&head, "allow"), ["GET"], "{head}");
    // The next response follows at once: no body after the HEAD's head.
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest)).await;
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.starts_with("HTTP/1.1 200"), "after the HEAD's 405: {rest:?}");
}

/// Keys that are not base64 of exactly 16 bytes, and Version lists: 400 / 426.
#[tokio::test]
async fn keys_and_versions_at_the_edges() {
    let addr = serve(Config::default(), echo_or_ok).await;
    let cases: &[(&str, &str, u16)] = &[
        ("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ\r\n", "13", 400), // no padding
        ("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=\r\n", "13", 400), // one '='
        ("Sec-WebSocket-Key: dGhlIHNhbXBs ZSBub25jZQ==\r\n", "13", 400), // inner space
        ("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==\r\n", "13", 400), // unused bits set
        ("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ-_\r\n", "13", 400), // base64url
        ("Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n", "13", 400), // 20 bytes
        ("Sec-WebSocket-Key: \r\n", "13", 400),
        ("Sec-WebSocket-Key: \t dGhlIHNhbXBsZSBub25jZQ== \t\r\n", "13", 101), // OWS
        (&*format!("Sec-WebSocket-Key: {KEY}\r\n"), "13, 8", 426),
        (&*format!("Sec-WebSocket-Key: {KEY}\r\n"), "13\r\nSec-WebSocket-Version: 13", 400),
    ];
    for (key, version, status) in cases {
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             {key}Sec-WebSocket-Version: {version}\r\n\r\n"
        );
        let (head, _tcp, _) = head_of(addr, request.as_bytes()).await;
        assert!(head.starts_with(&format!("HTTP/1.1 {status}")), "{key:?} {version:?}: {head}");
        if *status == 101 {
            assert_eq!(header_values(&head, "sec-websocket-accept"), [ACCEPT]);
        }
    }
}

/// A subprotocol the handler picks from the offer, over HTTP/1.1 (several offer lines):
/// the 101 carries exactly it.
#[tokio::test]
async fn a_subprotocol_picked_from_an_offer_over_several_lines_goes_out_once() {
    let addr = serve_with(
        Config::default(),
        |reply| {
            reply.header(
                http::header::SEC_WEBSOCKET_PROTOCOL,
                http::HeaderValue::from_static("superchat"),
            )
        },
        echo_or_ok,
    )
    .await;
    let extra = "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: superchat, v3\r\n";
    let (head, tcp, rest) = head_of(addr, upgrade_request(addr, extra).as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(header_values(&head, "sec-websocket-protocol"), ["superchat"], "{head}");
    expect_echo(tcp, rest, "with a subprotocol").await;
}

// ---- HTTP/2 (RFC 8441) ----

/// RFC 8441 §4: "On requests that contain the :protocol pseudo-header field, the :scheme and
/// :path pseudo-header fields of the target URI MUST also be included." A request without
/// them is malformed (RFC 9113 §8.1.1): a stream error, never a 200.
#[tokio::test]
async fn an_extended_connect_without_path_or_scheme_is_a_stream_error() {
    let addr = serve(Config::default(), echo_or_ok).await;
    for (stream, missing) in [(1u32, ":path"), (3, ":scheme")] {
        let mut h2 = H2Raw::connect(addr).await;
        let mut block = Vec::new();
        for (n, v) in [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", &addr.to_string()),
            ("sec-websocket-version", "13"),
        ] {
            if n != missing {
                hpack_literal(&mut block, n, v);
            }
        }
        h2.send(HEADERS, END_HEADERS, stream, &block).await;
        let f = h2.next().await.expect("a frame");
        assert!(
            f.ty == RST_STREAM && f.stream == stream,
            "without {missing}: {:?}",
            describe(&[f])
        );
    }
}

/// RFC 9110 §8.6: "A server MUST NOT send a Content-Length header field in any 2xx
/// (Successful) response to a CONNECT request"; RFC 8441 §5: the answer is a 2xx, without
/// Sec-WebSocket-Accept.
#[tokio::test]
async fn the_200_to_an_extended_connect_has_no_content_length() {
    let addr = serve(Config::default(), echo_or_ok).await;
    let mut sender = h2_client(addr).await;
    let mut req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("http://{addr}/"))
        .header("sec-websocket-version", "13")
        .header("sec-websocket-protocol", "chat")
        .header("sec-websocket-extensions", "permessage-deflate")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    req.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    for name in [
        "content-length",
        "sec-websocket-accept",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
        "upgrade",
        "connection",
    ] {
        assert!(resp.headers().get(name).is_none(), "{name} on the 200: {:?}", resp.headers());
    }
}

/// RFC 8441 §5 keeps Sec-WebSocket-Version: 13 over HTTP/2: another version gets 426 with
/// `Sec-WebSocket-Version: 13` (and over h2 no Upgrade header, which RFC 9113 §8.2.2 forbids).
#[tokio::test]
async fn an_extended_connect_of_version_8_is_426_with_the_version_and_no_upgrade_header() {
    let addr = serve(Config::default(), echo_or_ok).await;
    let mut sender = h2_client(addr).await;
    let mut req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("http://{addr}/"))
        .header("sec-websocket-version", "8")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    req.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 426);
    assert_eq!(resp.headers()["sec-websocket-version"], "13");
    assert!(resp.headers().get("upgrade").is_none());
}

// ======================= PART 2: Server-Sent Events =======================

/// One event as the WHATWG HTML standard (§9.2.6, "Interpreting an event stream") dispatches
/// it: (type, data, lastEventId).
#[derive(Debug, Clone, PartialEq)]
struct Dispatched {
    ty: String,
    data: String,
    last_event_id: String,
}

/// A WHATWG event stream parser, written from the standard: UTF-8 decode (one leading BOM
/// stripped), lines end at CRLF, LF or CR; empty line dispatches; ':' starts a comment; field
/// name up to the first ':', value after it with ONE leading space stripped; `event`, `data`
/// (value + LF appended), `id` (ignored if it holds NUL), `retry` (ASCII digits only). An
/// incomplete event at the end is discarded. Returns the events and the last `retry`.
fn whatwg_parse(bytes: &[u8]) -> (Vec<Dispatched>, Option<u64>, String) {
    let text = String::from_utf8_lossy(bytes).to_string();
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text).to_owned();
    let mut lines = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                lines.push(std::mem::take(&mut cur));
            }
            '\n' => lines.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    // An unterminated last line (`cur`) is not processed.
    let (mut data, mut ty, mut last_id_buf, mut retry) =
        (String::new(), String::new(), String::new(), None);
    let mut last_event_id = String::new();
    let mut out = Vec::new();
    for line in lines {
        if line.is_empty() {
            last_event_id = last_id_buf.clone();
            if data.is_empty() {
                ty.clear();
                continue;
            }
            if data.ends_with('\n') {
                data.pop();
            }
            out.push(Dispatched {
                ty: if ty.is_empty() { "message".into() } else { ty.clone() },
                data: std::mem::take(&mut data),
                last_event_id: last_event_id.clone(),
            });
            ty.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f.to_owned(), v.strip_prefix(' ').unwrap_or(v).to_owned()),
            None => (line.clone(), String::new()),
        };
        match field.as_str() {
            "event" => ty = value,
            "data" => {
                data.push_str(&value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => last_id_buf = value,
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                retry = value.parse().ok();
            }
            _ => {}
        }
    }
    (out, retry, last_event_id)
}

#[test]
fn the_test_parser_follows_the_standard() {
    let (events, retry, _) = whatwg_parse(
        b"\xEF\xBB\xBFdata: a\r\ndata:b\rdata\n\n:c\nevent:  t\nid: 1\0\nid: 2\nretry: 1x\n\
          retry: 30\ndata: z\n\ndata: cut",
    );
    assert_eq!(
        events,
        [
            Dispatched { ty: "message".into(), data: "a\nb\n".into(), last_event_id: "".into() },
            Dispatched { ty: " t".into(), data: "z".into(), last_event_id: "2".into() },
        ]
    );
    assert_eq!(retry, Some(30));
}

fn sse_request(addr: SocketAddr) -> http::Request<http_body_util::Empty<bytes::Bytes>> {
    let mut req = get(addr, "/events");
    req.headers_mut().insert("accept", "text/event-stream".parse().unwrap());
    req
}

/// Every field value that is hard to frame, sent as text and as `sse::Event`s, read back by
/// the WHATWG algorithm over a real HTTP/1.1 connection: each must arrive as one event whose
/// data is the text with its line breaks (CRLF, CR, LF) read as LF, leading spaces kept, NUL
/// kept; event types and ids with leading spaces kept; comments never become fields.
#[tokio::test]
async fn every_hard_value_survives_the_whatwg_parser() {
    let texts: Vec<&'static str> = vec![
        " one leading space",
        "  two leading spaces",
        "",
        "\n",
        "a\r\nb\rc\nd",
        "nul\0inside",
        ":starts with a colon",
        "data: fake\n\nid: 99\nevent: evil",
        "ends with CR\r",
        "\u{feff}BOM first",
        "trailing space ",
        "\r\n\r\n",
    ];
    let texts2 = texts.clone();
    let addr = serve(Config::default(), move |ch: Channel| {
        let texts = texts2.clone();
        async move {
            let s = ch.sender();
            for t in texts {
                s.send(t.into()).await.unwrap();
            }
            let events = [
                sse::Event::new().event(" spaced type").id(" 7").data(" x"),
                sse::Event::new().event("").data("y"),
                sse::Event::new().comment("c1\ndata: injected\r\nevent: evil\rid: 666").data("z"),
                sse::Event::new().id("").data("w"),
                sse::Event::new().retry(Duration::from_millis(1500)).data("r"),
                sse::Event::new().event("t\0nul").id("é-8").data(""),
                sse::Event::new().comment("").comment(" lead").data("c"),
            ];
            for e in events {
                s.send(e.into()).await.unwrap();
            }
            s.close().await;
        }
    })
    .await;
    let response = http1_get(addr, sse_request(addr)).await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let (events, retry, _) = whatwg_parse(response.body());
    let norm = |t: &str| t.replace("\r\n", "\n").replace('\r', "\n");
    let mut expected: Vec<Dispatched> = texts
        .iter()
        .map(|t| Dispatched { ty: "message".into(), data: norm(t), last_event_id: "".into() })
        .collect();
    let e = |ty: &str, data: &str, id: &str| Dispatched {
        ty: ty.into(),
        data: data.into(),
        last_event_id: id.into(),
    };
    expected.extend([
        e(" spaced type", " x", " 7"),
        e("message", "y", " 7"),
        e("message", "z", " 7"),
        e("message", "w", ""),
        e("message", "r", ""),
        e("t\0nul", "", "é-8"),
        e("message", "c", "é-8"),
    ]);
    assert_eq!(retry, Some(1500));
    for (i, want) in expected.iter().enumerate() {
        assert_eq!(
            events.get(i),
            Some(want),
            "event {i}; the body was {:?}",
            String::from_utf8_lossy(response.body())
        );
    }
    assert_eq!(events.len(), expected.len());
}

/// The head of an SSE response: Content-Type text/event-stream, Cache-Control no-cache, no
/// Content-Length (also when the handler's first send is `send_and_close`), chunked on
/// HTTP/1.1; over HTTP/2 the same headers.
#[tokio::test]
async fn an_sse_head_has_no_content_length_even_for_send_and_close() {
    let addr = serve(Config::default(), |ch: Channel| async move {
        let _ = ch.sender().send_and_close("only".into()).await;
    })
    .await;
    let request = format!(
        "GET /events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    );
    let (head, mut tcp, mut rest) = head_of(addr, request.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(header_values(&head, "content-type"), ["text/event-stream"], "{head}");
    assert_eq!(header_values(&head, "cache-control"), ["no-cache"], "{head}");
    assert!(header_values(&head, "content-length").is_empty(), "{head}");
    assert_eq!(header_values(&head, "transfer-encoding"), ["chunked"], "{head}");
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest)).await;
    assert_eq!(
        String::from_utf8_lossy(&rest).to_ascii_lowercase(),
        "c\r\ndata: only\n\n\r\n0\r\n\r\n"
    );

    let mut sender = h2_client(addr).await;
    let mut req = http::Request::get(format!("http://{addr}/events"))
        .header("accept", "text/event-stream")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    *req.version_mut() = http::Version::HTTP_2;
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    assert!(resp.headers().get("content-length").is_none(), "{:?}", resp.headers());
}

const EVENTSOURCE_JS: &str = r#"
const [url, want] = [process.argv[2], +process.argv[3]];
const es = new EventSource(url);
const out = [];
const done = (why) => { console.log(JSON.stringify({ why, out })); es.close(); process.exit(0); };
let got = 0;
es.onmessage = (e) => { out.push({ data: e.data, id: e.lastEventId }); if (++got >= want) done("enough"); };
es.onerror = () => { out.push({ error: es.readyState }); if (es.readyState === 2) done("closed"); };
setTimeout(() => done("timeout"), 5000);
"#;

/// Node's `EventSource` (undici, WHATWG) against a server that sends one event per
/// connection with the id `ids[k]` and `retry: 50`, then ends the stream: the client
/// reconnects with `Last-Event-ID`; returns what the client saw and what
/// `Channel::last_event_id` said on each connection.
async fn eventsource_run(ids: &'static [&'static str]) -> (String, Vec<Option<String>>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let addr = serve(Config::default(), move |ch: Channel| {
        let k = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _ = tx.send(ch.last_event_id().map(str::to_owned));
        async move {
            let s = ch.sender();
            if let Some(id) = ids.get(k) {
                let event = sse::Event::new()
                    .retry(Duration::from_millis(50))
                    .id(*id)
                    .data(format!("n{k}"));
                let _ = s.send(event.into()).await;
            }
            s.close().await;
        }
    })
    .await;
    // One script per run: two tests run this at once, and each removes its script when done
    // (one path for both made the other's node find none, now and then, before stop 30).
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let script =
        std::env::temp_dir().join(format!("webchan-eventsource-{}-{run}.mjs", std::process::id()));
    std::fs::write(&script, EVENTSOURCE_JS).unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new("node")
            .arg("--experimental-eventsource")
            .arg("--no-warnings")
            .arg(&script)
            .arg(format!("http://{addr}/events"))
            .arg(ids.len().to_string())
            .output(),
    )
    .await
    .expect("node did not finish")
    .expect("node is needed for this test");
    let _ = std::fs::remove_file(&script);
    let mut seen = Vec::new();
    while let Ok(id) = rx.try_recv() {
        seen.push(id);
    }
    (String::from_utf8_lossy(&out.stdout).trim().to_owned(), seen)
}

/// A real WHATWG client reconnects and sends the last id back: `last_event_id()` gives it.
/// (ASCII ids only: Node 20's undici sends the header as Latin-1, not UTF-8 as the standard
/// says, so "é-8" arrives as the byte 0xE9 and `last_event_id()` gives `None`, as documented.)
#[tokio::test]
async fn eventsource_reconnects_with_last_event_id_and_the_channel_sees_it() {
    let (client, seen) = eventsource_run(&["7", "in ner", "last"]).await;
    assert!(client.contains(r#""why":"enough""#), "{client}");
    let some = |s: &str| Some(s.to_owned());
    assert_eq!(seen[..3], [None, some("7"), some("in ner")], "client: {client}");
}

/// Doc: `sse::Event::id` says the id is what "a reconnecting browser sends back as
/// `Last-Event-ID`". An id with leading or trailing spaces (accepted; the WHATWG parser keeps
/// them: "id:  9 " gives " 9 ") cannot come back as it was: HTTP strips a field value's
/// outer whitespace (RFC 9110 §5.5), and `last_event_id()` gives "9". Passes: shows what the
/// code does.
#[tokio::test]
async fn an_event_id_with_outer_spaces_comes_back_trimmed() {
    let (client, seen) = eventsource_run(&[" 9 ", "next"]).await;
    assert!(client.contains(r#""id":" 9 ""#), "{client}");
    assert_eq!(seen[..2], [None, Some("9".to_owned())], "client: {client}");
}

/// An id must come back as a `Last-Event-ID` header: one with a control character other than
/// tab (U+0001, DEL) is refused (`InvalidMessage`, by `to_bytes` and by a send), a tab is
/// not. Before stop 29 such an id was sent, and the client could never reconnect: Node's
/// `EventSource` refused to send the header, and a client that sent it got hyper's 400.
#[tokio::test]
async fn an_event_id_with_a_control_character_is_refused() {
    for id in ["a\u{1}b", "a\u{7f}b", "a\0b", "a\rb"] {
        let event = sse::Event::new().id(id).data("x");
        assert!(matches!(event.to_bytes(), Err(webchan::Error::InvalidMessage(_))), "{id:?}");
    }
    let tab = sse::Event::new().id("a\tb").data("x").to_bytes().unwrap();
    assert_eq!(&tab[..], b"data: x\nid: a\tb\n\n");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default(), move |ch: Channel| {
        let tx = tx.clone();
        async move {
            let s = ch.sender();
            let refused = s.send(sse::Event::new().id("a\u{1}b").data("x").into()).await;
            let _ = tx.send(matches!(refused, Err(webchan::Error::InvalidMessage(_))));
            let _ = s.send(sse::Event::new().id("next").data("y").into()).await;
            s.close().await;
        }
    })
    .await;
    let response = http1_get(addr, sse_request(addr)).await;
    assert!(rx.recv().await.unwrap(), "the send of the bad id was not refused");
    assert_eq!(&response.body()[..], b"data: y\nid: next\n\n");
}

/// After a 426 on a keep-alive connection (no `Connection: close` on it), a client that
/// repeats the handshake with version 13 on the same connection (RFC 6455 §4.4: "The client
/// can now repeat the handshake that conforms to version 13") gets its 101 — or the server
/// closed the connection after the 426 (then the client knows to reconnect). Not: silence.
#[tokio::test]
async fn a_handshake_repeated_after_a_426_on_the_same_connection_is_answered_or_closed() {
    let addr = serve(Config::default(), echo_or_ok).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let bad = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 25\r\n\r\n"
    );
    tcp.write_all(bad.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // The 426 and its body (Content-Length delimited).
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    assert!(head.starts_with("HTTP/1.1 426"), "{head}");
    let len: usize = header_values(&head, "content-length")[0].parse().unwrap();
    while buf.len() < head_end + len {
        let n = tcp.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    }
    let closes = header_values(&head, "connection").iter().any(|v| v.eq_ignore_ascii_case("close"));
    let _ = tcp.write_all(upgrade_request(addr, "").as_bytes()).await;
    let mut after = buf[head_end + len..].to_vec();
    let outcome = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if after.windows(4).any(|w| w == b"\r\n\r\n") {
                return "answered";
            }
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return "closed",
                Ok(n) => after.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .unwrap_or("silence");
    assert!(
        outcome == "closed" || String::from_utf8_lossy(&after).starts_with("HTTP/1.1 101"),
        "the handshake repeated on the 426's connection (426 said Connection: close: {closes}): \
         {outcome}, {:?}",
        String::from_utf8_lossy(&after)
    );
}

/// An upgrade on a keep-alive connection after an ordinary request on it.
#[tokio::test]
async fn an_upgrade_after_a_plain_request_on_the_same_connection() {
    let addr = serve(Config::default(), echo_or_ok).await;
    let mut bytes = format!("GET /plain HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes();
    bytes.extend_from_slice(upgrade_request(addr, "").as_bytes());
    let (head, mut tcp, mut rest) = head_of(addr, &bytes).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let len: usize = header_values(&head, "content-length")[0].parse().unwrap();
    let mut chunk = [0u8; 4096];
    while rest.len() < len || !rest[len..].windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut chunk))
            .await
            .expect("no second response")
            .unwrap();
        assert!(n > 0, "EOF: {:?}", String::from_utf8_lossy(&rest));
        rest.extend_from_slice(&chunk[..n]);
    }
    let second = &rest[len..];
    let p = second.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head2 = String::from_utf8_lossy(&second[..p]).to_string();
    assert!(head2.starts_with("HTTP/1.1 101"), "{head2}");
    expect_echo(tcp, second[p + 4..].to_vec(), "upgrade after a plain request").await;
}

/// `Connection: Upgrade, close` / `close, Upgrade`: still a handshake (RFC 9110 §7.6.1: a
/// list); the WebSocket works after the 101 (or the upgrade is refused with a 4xx).
#[tokio::test]
async fn connection_upgrade_with_close_in_the_list() {
    let addr = serve(Config::default(), echo_or_ok).await;
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: close, Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let (head, tcp, rest) = head_of(addr, request.as_bytes()).await;
    if head.starts_with("HTTP/1.1 4") {
        return;
    }
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    expect_echo(tcp, rest, "Connection: close, Upgrade").await;
}

/// Doc: `sse::Event::event` says the type "selects the `EventSource` listener", and
/// `Event::new` that only an event with no field is ignored. WHATWG §9.2.6 dispatches nothing
/// for an event without `data` (the data buffer is empty): `Event::new().event("ping")` or
/// `.event("tick").id("5")` never reaches a listener (the id is still taken). Passes: shows
/// what a client does with what the code sends.
#[tokio::test]
async fn an_event_without_data_is_never_dispatched() {
    let addr = serve(Config::default(), |ch: Channel| async move {
        let s = ch.sender();
        s.send(sse::Event::new().event("ping").into()).await.unwrap();
        s.send(sse::Event::new().event("tick").id("5").into()).await.unwrap();
        s.send(sse::Event::new().event("tick").data("").into()).await.unwrap();
        s.close().await;
    })
    .await;
    let response = http1_get(addr, sse_request(addr)).await;
    assert_eq!(
        String::from_utf8_lossy(response.body()),
        "event: ping\n\nevent: tick\nid: 5\n\nevent: tick\ndata: \n\n"
    );
    let (events, _, last_id) = whatwg_parse(response.body());
    assert_eq!(
        events,
        [Dispatched { ty: "tick".into(), data: "".into(), last_event_id: "5".into() }]
    );
    assert_eq!(last_id, "5");
}
