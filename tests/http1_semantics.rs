//! The HTTP/1 semantics of HTTP stream channels, over raw sockets on 127.0.0.1: HEAD, HTTP/1.0,
//! statuses without content, a handler's Content-Length and Transfer-Encoding, pipelining,
//! unread request bodies, `Expect: 100-continue`. Written in a review of stop 27 (2026-12-05);
//! the tests named in RELIABILITY.md failed on the code before its fixes.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use webchan::{Channel, Config, Event, Message};

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

/// One response read off a raw connection.
#[derive(Debug)]
struct Resp {
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn status(&self) -> u16 {
        self.head[9..12].parse().unwrap()
    }
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// A raw HTTP/1 connection that reads responses one at a time.
struct Raw {
    tcp: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl Raw {
    async fn connect(addr: std::net::SocketAddr) -> Self {
        Self { tcp: TcpStream::connect(addr).await.unwrap(), buf: Vec::new(), eof: false }
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.unwrap();
    }

    /// Reads more; false at EOF (or reset).
    async fn fill(&mut self) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = [0u8; 65536];
        let n = tokio::time::timeout(Duration::from_secs(10), self.tcp.read(&mut chunk))
            .await
            .expect("nothing from the server within 10 s")
            .unwrap_or(0);
        if n == 0 {
            self.eof = true;
            return false;
        }
        self.buf.extend_from_slice(&chunk[..n]);
        true
    }

    /// The next response; `no_body` for a HEAD request (or 204/304).
    async fn response(&mut self, no_body: bool) -> Resp {
        let end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            assert!(self.fill().await, "EOF before a response head; got {:?}", text_of(&self.buf));
        };
        let head = text_of(&self.buf[..end]);
        self.buf.drain(..end);
        let mut resp = Resp { head, body: Vec::new() };
        let status = resp.status();
        if no_body || status == 204 || status == 304 || (100..200).contains(&status) {
            return resp;
        }
        if resp
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            loop {
                let line_end = loop {
                    if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break p;
                    }
                    assert!(
                        self.fill().await,
                        "EOF inside a chunked body: {:?}",
                        text_of(&resp.body)
                    );
                };
                let size =
                    usize::from_str_radix(text_of(&self.buf[..line_end]).trim(), 16).unwrap();
                self.buf.drain(..line_end + 2);
                while self.buf.len() < size + 2 {
                    assert!(self.fill().await, "EOF inside a chunk: {:?}", text_of(&resp.body));
                }
                resp.body.extend_from_slice(&self.buf[..size]);
                self.buf.drain(..size + 2);
                if size == 0 {
                    return resp;
                }
            }
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len.parse().unwrap();
            while self.buf.len() < len {
                assert!(self.fill().await, "EOF inside a Content-Length body");
            }
            resp.body = self.buf.drain(..len).collect();
            resp
        } else {
            while self.fill().await {}
            resp.body = std::mem::take(&mut self.buf);
            resp
        }
    }

    /// Waits for EOF (10 s at most); returns what came before it.
    async fn rest(&mut self) -> Vec<u8> {
        while self.fill().await {}
        std::mem::take(&mut self.buf)
    }
}

/// A handler that streams "twelve bytes" then "more" and closes, reporting the outcome of
/// each send (and the method) on `tx`.
async fn serve_twelve_more() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<(http::Method, Vec<Result<(), webchan::Error>>)>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default(), move |ch: Channel| {
        let tx = tx.clone();
        async move {
            let method = ch.originating_request().method.clone();
            let s = ch.sender();
            let a = s.send("twelve bytes".into()).await;
            let b = s.send("more".into()).await;
            s.close().await;
            let _ = tx.send((method, vec![a, b]));
        }
    })
    .await;
    (addr, rx)
}

/// RFC 9110 §8.6: "a server MUST NOT send Content-Length in such a response [to HEAD] unless
/// its field value equals the decimal number of octets that would have been sent in the
/// content of a response if the same request had used the GET method".
#[tokio::test]
async fn head_of_a_stream_has_no_content_length_that_get_would_not_have() {
    let (addr, mut outcomes) = serve_twelve_more().await;
    let mut c = Raw::connect(addr).await;
    c.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let get = c.response(false).await;
    c.write(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let head = c.response(true).await;
    let _ = outcomes.recv().await;
    let _ = outcomes.recv().await;
    assert_eq!(get.body, b"twelve bytesmore", "{get:?}");
    println!("GET head: {:?}\nHEAD head: {:?}", get.head, head.head);
    if let Some(len) = head.header("content-length") {
        assert_eq!(
            len,
            get.body.len().to_string(),
            "the HEAD response declares a Content-Length that differs from the GET's body \
             (GET was chunked: {:?})",
            get.header("transfer-encoding")
        );
    }
}

#[tokio::test]
async fn head_then_get_on_one_keep_alive_connection() {
    let (addr, mut outcomes) = serve_twelve_more().await;
    let mut c = Raw::connect(addr).await;
    // Pipelined: HEAD then GET.
    c.write(
        b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let head = c.response(true).await;
    assert_eq!(head.status(), 200, "{head:?}");
    let get = c.response(false).await;
    assert_eq!(get.status(), 200, "{get:?}");
    assert_eq!(get.body, b"twelve bytesmore", "{get:?}");
    let rest = c.rest().await;
    assert!(rest.is_empty(), "after the GET: {:?}", text_of(&rest));
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (m, r) =
            tokio::time::timeout(Duration::from_secs(10), outcomes.recv()).await.unwrap().unwrap();
        seen.push((
            m,
            r.iter().map(|r| r.as_ref().map_err(|e| e.to_string()).map(drop)).collect::<Vec<_>>(),
        ));
    }
    println!("{seen:?}");
    for (m, r) in seen {
        if m == http::Method::HEAD {
            assert!(r[0].is_ok(), "HEAD first send: {r:?}");
            assert!(r[1].is_err(), "HEAD second send: {r:?}");
        } else {
            assert!(r.iter().all(Result::is_ok), "GET sends: {r:?}");
        }
    }
}

#[tokio::test]
async fn head_with_send_and_close_completes() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default(), move |ch: Channel| {
        let tx = tx.clone();
        async move {
            let r = tokio::time::timeout(
                Duration::from_secs(5),
                ch.sender().send_and_close("hello".into()),
            )
            .await;
            let _ = tx.send(r.map(|r| r.map_err(|e| e.to_string())));
        }
    })
    .await;
    let mut c = Raw::connect(addr).await;
    c.write(
        b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let head = c.response(true).await;
    assert_eq!(head.header("content-length").as_deref(), Some("5"), "{head:?}");
    let get = c.response(false).await;
    assert_eq!(get.body, b"hello");
    for _ in 0..2 {
        let r = rx.recv().await.unwrap();
        assert!(matches!(r, Ok(Ok(()))), "{r:?}");
    }
}

/// A HEAD for a download: the handler declares the length of the file.
#[tokio::test]
async fn head_with_a_declared_length_and_a_reader_keeps_it() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default(), move |ch: Channel| {
        let tx = tx.clone();
        async move {
            let mut h = http::HeaderMap::new();
            h.insert("content-length", "1000".parse().unwrap());
            let body =
                Message::reader(tokio::io::AsyncReadExt::take(tokio::io::repeat(b'x'), 1000));
            let r =
                ch.sender().send_and_close(Message::response(http::StatusCode::OK, h, body)).await;
            let _ = tx.send(r.map_err(|e| e.to_string()));
        }
    })
    .await;
    let mut c = Raw::connect(addr).await;
    c.write(
        b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let head = c.response(true).await;
    assert_eq!(head.header("content-length").as_deref(), Some("1000"), "{head:?}");
    let get = c.response(false).await;
    assert_eq!(get.body.len(), 1000);
    for _ in 0..2 {
        let r = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
        assert!(r.is_ok(), "{r:?}");
    }
}

#[tokio::test]
async fn http_1_0_keep_alive_gets_a_close_delimited_stream() {
    let (addr, mut outcomes) = serve_twelve_more().await;
    let mut c = Raw::connect(addr).await;
    c.write(b"GET / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n").await;
    let r = c.response(false).await;
    println!("{:?}", r.head);
    assert!(r.head.starts_with("HTTP/1.0 200"), "{r:?}");
    assert!(r.header("transfer-encoding").is_none(), "{r:?}");
    assert!(
        !r.header("connection").unwrap_or_default().eq_ignore_ascii_case("keep-alive"),
        "a close-delimited body with Connection: keep-alive: {r:?}"
    );
    assert_eq!(r.body, b"twelve bytesmore");
    let (_, res) = outcomes.recv().await.unwrap();
    assert!(res.iter().all(Result::is_ok), "{res:?}");
}

#[tokio::test]
async fn http_1_0_send_and_close_keeps_alive_when_asked() {
    let addr = serve(Config::default(), |ch: Channel| async move {
        ch.sender().send_and_close("whole".into()).await.unwrap();
    })
    .await;
    let mut c = Raw::connect(addr).await;
    c.write(b"GET / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n").await;
    let r = c.response(false).await;
    assert_eq!(r.body, b"whole", "{r:?}");
    c.write(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").await;
    let r2 = c.response(false).await;
    assert_eq!(r2.body, b"whole", "{r2:?}");
}

#[tokio::test]
async fn pipelined_requests_the_first_a_stream() {
    let addr = serve(Config::default(), |ch: Channel| async move {
        let path = ch.originating_request().uri.path().to_owned();
        let s = ch.sender();
        if path == "/a" {
            for i in 0..3 {
                s.send(format!("a{i};").into()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            s.close().await;
        } else {
            s.send_and_close(format!("{path}!").into()).await.unwrap();
        }
    })
    .await;
    let mut c = Raw::connect(addr).await;
    c.write(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let a = c.response(false).await;
    let b = c.response(false).await;
    let cc = c.response(false).await;
    assert_eq!(a.body, b"a0;a1;a2;");
    assert_eq!(b.body, b"/b!");
    assert_eq!(cc.body, b"/c!");
    assert!(c.rest().await.is_empty());
}

#[tokio::test]
async fn connection_close_from_the_client() {
    let (addr, mut outcomes) = serve_twelve_more().await;
    let mut c = Raw::connect(addr).await;
    c.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    let r = c.response(false).await;
    assert_eq!(r.body, b"twelve bytesmore");
    assert_eq!(r.header("connection").as_deref(), Some("close"), "{r:?}");
    assert!(c.rest().await.is_empty());
    let (_, res) = outcomes.recv().await.unwrap();
    assert!(res.iter().all(Result::is_ok), "{res:?}");
}

/// A small unread body: hyper drains it; the connection stays usable.
#[tokio::test]
async fn a_small_unread_body_then_another_request() {
    let (addr, _outcomes) = serve_twelve_more().await;
    let mut c = Raw::connect(addr).await;
    c.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello").await;
    let r = c.response(false).await;
    assert_eq!(r.body, b"twelve bytesmore", "{r:?}");
    println!("{:?}", r.head);
    c.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    if r.header("connection").as_deref() != Some("close") {
        let r2 = c.response(false).await;
        assert_eq!(r2.body, b"twelve bytesmore", "{r2:?}");
    }
}

/// `Expect: 100-continue`, body never sent, handler never reads it.
#[tokio::test]
async fn expect_100_continue_with_an_unread_body() {
    let (addr, mut outcomes) = serve_twelve_more().await;
    let mut c = Raw::connect(addr).await;
    c.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let r = c.response(false).await;
    println!("{:?}", r.head);
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(r.body, b"twelve bytesmore", "{r:?}");
    let (_, res) = outcomes.recv().await.unwrap();
    assert!(res.iter().all(Result::is_ok), "{res:?}");
    // RFC 9110 §10.1.1: SHOULD say whether it closes or reads the content.
    if r.header("connection").as_deref() != Some("close") {
        // then it must read the 10 bytes as the body, and answer the next request
        c.write(b"0123456789GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        let r2 = c.response(false).await;
        assert_eq!(r2.body, b"twelve bytesmore", "{r2:?}");
    } else {
        assert!(c.rest().await.is_empty());
    }
}

/// A client that keeps sending a large request body slowly while the stream flows: the
/// stream arrives whole, and the end of the stream is not lost to a reset.
#[tokio::test]
async fn a_slow_request_body_while_the_stream_flows() {
    let (tx, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default(), move |ch: Channel| {
        let tx = tx.clone();
        async move {
            let s = ch.sender();
            let mut res = Vec::new();
            for i in 0..5 {
                res.push(s.send(format!("tick {i}\n").into()).await.map_err(|e| e.to_string()));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            s.close().await;
            let _ = tx.send(res);
        }
    })
    .await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    wr.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n").await.unwrap();
    let writer = tokio::spawn(async move {
        let piece = vec![b'z'; 4096];
        loop {
            if wr.write_all(&piece).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    // Read slowly, after the server has finished.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut out = Vec::new();
    let mut chunk = [0u8; 65536];
    let mut err = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rd.read(&mut chunk)).await.unwrap() {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    writer.abort();
    let res = outcomes.recv().await.unwrap();
    println!("sends: {res:?}\nread error: {err:?}\n{}", text_of(&out));
    assert!(res.iter().all(Result::is_ok), "{res:?}");
    let text = text_of(&out);
    assert!(text.contains("tick 4\n"), "{text}");
    assert!(text.ends_with("0\r\n\r\n"), "the response was cut (read error {err:?}): {text}");
}

/// `Message::response(204, ..)` as the first send of a stream: no body may follow.
#[tokio::test]
async fn a_204_head_with_an_empty_first_message_completes_the_send() {
    let (tx, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default(), move |ch: Channel| {
        let tx = tx.clone();
        async move {
            let s = ch.sender();
            let a = s
                .send(Message::response(http::StatusCode::NO_CONTENT, http::HeaderMap::new(), ""))
                .await;
            let b = s.send("after".into()).await;
            s.close().await;
            let _ = tx.send(vec![a.map_err(|e| e.to_string()), b.map_err(|e| e.to_string())]);
        }
    })
    .await;
    let mut c = Raw::connect(addr).await;
    c.write(
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let r = c.response(false).await;
    assert_eq!(r.status(), 204, "{r:?}");
    assert!(r.header("content-length").is_none(), "RFC 9110 §8.6: {r:?}");
    assert!(r.header("transfer-encoding").is_none(), "RFC 9112 §6.1: {r:?}");
    let r2 = c.response(false).await;
    assert_eq!(r2.status(), 204, "{r2:?}");
    let res = outcomes.recv().await.unwrap();
    println!("{res:?}");
    assert!(res[0].is_ok(), "the 204 went out whole, yet its send says {:?}", res[0]);
}

/// RFC 9110 §8.6: "A server MUST NOT send a Content-Length header field in any response with a
/// status code of 1xx (Informational) or 204 (No Content)."
#[tokio::test]
async fn a_204_sent_whole_has_no_content_length() {
    let (tx, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default(), move |ch: Channel| {
        let tx = tx.clone();
        async move {
            let r = ch
                .sender()
                .send_and_close(Message::response(
                    http::StatusCode::NO_CONTENT,
                    http::HeaderMap::new(),
                    "oops",
                ))
                .await;
            let _ = tx.send(r.map_err(|e| e.to_string()));
        }
    })
    .await;
    let mut c = Raw::connect(addr).await;
    c.write(
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let r = c.response(false).await;
    let r2 = c.response(false).await;
    let res = outcomes.recv().await.unwrap();
    println!("{r:?}\n{r2:?}\nsend: {res:?}");
    assert_eq!(r.status(), 204);
    assert!(r.header("content-length").is_none(), "a 204 with Content-Length: {:?}", r.head);
}

/// A 304 whose stream continues: what the handler sees.
#[tokio::test]
async fn a_304_then_more_messages() {
    let (tx, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default(), move |ch: Channel| {
        let tx = tx.clone();
        async move {
            let s = ch.sender();
            let a = s
                .send(Message::response(http::StatusCode::NOT_MODIFIED, http::HeaderMap::new(), ""))
                .await;
            let b = s.send("after".into()).await;
            let c = tokio::time::timeout(Duration::from_secs(5), s.close()).await;
            let _ =
                tx.send((a.map_err(|e| e.to_string()), b.map_err(|e| e.to_string()), c.is_ok()));
        }
    })
    .await;
    let mut c = Raw::connect(addr).await;
    c.write(
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let r = c.response(false).await;
    let r2 = c.response(false).await;
    let res = outcomes.recv().await.unwrap();
    println!("{r:?}\n{r2:?}\nsends: {res:?}");
    assert_eq!(r.status(), 304);
    assert!(res.2, "close hung");
    assert!(res.0.is_ok(), "the 304 went out whole, yet its send says {:?}", res.0);
}

/// A user `Transfer-Encoding: chunked` on a response sent whole (send_and_close).
#[tokio::test]
async fn a_transfer_encoding_header_on_a_response_sent_whole() {
    let (tx, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default(), move |ch: Channel| {
        let tx = tx.clone();
        async move {
            let mut h = http::HeaderMap::new();
            h.insert("transfer-encoding", "chunked".parse().unwrap());
            let r = ch
                .sender()
                .send_and_close(Message::response(http::StatusCode::OK, h, "whole"))
                .await;
            let _ = tx.send(r.map_err(|e| e.to_string()));
        }
    })
    .await;
    let out = raw_http(addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    let res = outcomes.recv().await.unwrap();
    println!("wire: {:?}\nsend: {res:?}", text_of(&out));
    assert!(
        text_of(&out).starts_with("HTTP/1.1 200"),
        "no response at all on the wire ({:?}), yet the send said {res:?}",
        text_of(&out)
    );
}

/// A user `Transfer-Encoding: chunked` on a streamed response.
#[tokio::test]
async fn a_transfer_encoding_header_on_a_stream() {
    let addr = serve(Config::default(), |ch: Channel| async move {
        let mut h = http::HeaderMap::new();
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        let s = ch.sender();
        s.send(Message::response(http::StatusCode::OK, h, "a")).await.unwrap();
        s.send("b".into()).await.unwrap();
        s.close().await;
    })
    .await;
    let mut c = Raw::connect(addr).await;
    c.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let r = c.response(false).await;
    assert_eq!(r.body, b"ab", "{r:?}");
    // And over HTTP/1.0 (no chunked there).
    let out = raw_http(addr, b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").await;
    let text = text_of(&out);
    assert!(text.ends_with("\r\n\r\nab"), "{text}");
}

/// Both Content-Length and Transfer-Encoding set by the handler on a stream.
#[tokio::test]
async fn content_length_and_transfer_encoding_both_set() {
    let (tx, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default(), move |ch: Channel| {
        let tx = tx.clone();
        async move {
            let mut h = http::HeaderMap::new();
            h.insert("content-length", "2".parse().unwrap());
            h.insert("transfer-encoding", "chunked".parse().unwrap());
            let s = ch.sender();
            let a = s.send(Message::response(http::StatusCode::OK, h, "a")).await;
            let b = s.send("b".into()).await;
            s.close().await;
            let _ = tx.send((a.map_err(|e| e.to_string()), b.map_err(|e| e.to_string())));
        }
    })
    .await;
    let out = raw_http(addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    let res = outcomes.recv().await.unwrap();
    println!("wire: {:?}\nsends: {res:?}", text_of(&out));
    assert!(
        text_of(&out).starts_with("HTTP/1.1 "),
        "no response on the wire; the sends said {res:?}"
    );
}

/// An unparsable Content-Length set by the handler on a stream.
#[tokio::test]
async fn an_invalid_content_length_value() {
    let (tx, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default(), move |ch: Channel| {
        let tx = tx.clone();
        async move {
            let mut h = http::HeaderMap::new();
            h.insert("content-length", "abc".parse().unwrap());
            let s = ch.sender();
            let a = s.send(Message::response(http::StatusCode::OK, h, "a")).await;
            let _ = tx.send(a.map_err(|e| e.to_string()));
        }
    })
    .await;
    let out = raw_http(addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    let res = outcomes.recv().await.unwrap();
    println!("wire: {:?}\nsend: {res:?}", text_of(&out));
    assert!(
        text_of(&out).starts_with("HTTP/1.1 "),
        "no response on the wire; the send said {res:?}"
    );
}

/// `Content-Length: 0` with an empty first message: the response is complete.
#[tokio::test]
async fn content_length_zero_and_an_empty_first_send_completes() {
    let (tx, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default(), move |ch: Channel| {
        let tx = tx.clone();
        async move {
            let mut h = http::HeaderMap::new();
            h.insert("content-length", "0".parse().unwrap());
            let s = ch.sender();
            let a = s.send(Message::response(http::StatusCode::OK, h, "")).await;
            let b = s.send("late".into()).await;
            let c = tokio::time::timeout(Duration::from_secs(5), s.close()).await.is_ok();
            let _ = tx.send((a.map_err(|e| e.to_string()), b.map_err(|e| e.to_string()), c));
        }
    })
    .await;
    let mut c = Raw::connect(addr).await;
    c.write(
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let r = c.response(false).await;
    let r2 = c.response(false).await;
    let res = outcomes.recv().await.unwrap();
    println!("{r:?}\n{r2:?}\nsends: {res:?}");
    assert_eq!(r.header("content-length").as_deref(), Some("0"));
    assert!(res.2, "close hung");
    assert!(res.0.is_ok(), "the empty first send of a complete 0-length response: {:?}", res.0);
}

/// The originating request comes back as it was sent.
#[tokio::test]
async fn originating_request_is_intact() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default(), move |ch: Channel| {
        let tx = tx.clone();
        async move {
            let r = ch.originating_request();
            let headers: Vec<(String, Vec<u8>)> = r
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect();
            let _ = tx.send((r.method.clone(), r.uri.clone(), r.version, headers));
            ch.sender().send_and_close("ok".into()).await.unwrap();
        }
    })
    .await;
    let req: &[u8] = b"PATCH /a%20b/c?x=1&y=%7Bz%7D&x=2 HTTP/1.1\r\nHost: h.example:81\r\nX-Dup: one\r\nx-dup: two\r\nX-Obs: caf\xe9\r\nX-Empty:\r\nAccept: */*\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let out = raw_http(addr, req).await;
    assert!(text_of(&out).starts_with("HTTP/1.1 200"));
    let (method, uri, version, headers) = rx.recv().await.unwrap();
    assert_eq!(method.as_str(), "PATCH");
    assert_eq!(uri.to_string(), "/a%20b/c?x=1&y=%7Bz%7D&x=2");
    assert_eq!(version, http::Version::HTTP_11);
    let expect: Vec<(String, Vec<u8>)> = vec![
        ("host".into(), b"h.example:81".to_vec()),
        ("x-dup".into(), b"one".to_vec()),
        ("x-dup".into(), b"two".to_vec()),
        ("x-obs".into(), b"caf\xe9".to_vec()),
        ("x-empty".into(), b"".to_vec()),
        ("accept".into(), b"*/*".to_vec()),
        ("content-length".into(), b"0".to_vec()),
        ("connection".into(), b"close".to_vec()),
    ];
    assert_eq!(headers, expect);
    // Absolute form and asterisk form.
    for (req, want_uri, want_method) in [
        (&b"GET http://other.example/p?q HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n"[..], "http://other.example/p?q", "GET"),
        (&b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"[..], "*", "OPTIONS"),
    ] {
        let out = raw_http(addr, req).await;
        assert!(text_of(&out).starts_with("HTTP/1.1 200"), "{}", text_of(&out));
        let (method, uri, _, _) = rx.recv().await.unwrap();
        assert_eq!(method.as_str(), want_method);
        assert_eq!(uri.to_string(), want_uri);
    }
}

/// The stream channel's events when the client closes mid-stream after a HEAD... and the
/// event order on a plain stream that the client leaves.
#[tokio::test]
async fn head_events_are_open_then_closed() {
    let (rec, mut rx) = recorder();
    let addr = serve(Config::default(), move |ch: Channel| {
        let s = ch.sender();
        let f = rec(ch);
        async move {
            let _ = s.send("x".into()).await;
            f.await;
        }
    })
    .await;
    let mut c = Raw::connect(addr).await;
    c.write(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let _ = c.response(true).await;
    let events = events_until_closed(&mut rx).await;
    assert!(matches!(events[0], Event::Open), "{events:?}");
    assert_eq!(events.len(), 2, "{events:?}");
}

/// A HEAD handler that declares the length the GET would have and sends no body
/// (RFC 9110 §9.3.2: the same header fields as for GET; §8.6: a Content-Length in a HEAD
/// response is the GET's length).
#[tokio::test]
async fn head_with_a_declared_length_and_no_body_keeps_it() {
    let addr = serve(Config::default(), |ch: Channel| async move {
        let mut h = http::HeaderMap::new();
        h.insert("content-length", "1000".parse().unwrap());
        let _ = ch.sender().send_and_close(Message::response(http::StatusCode::OK, h, "")).await;
    })
    .await;
    let mut c = Raw::connect(addr).await;
    c.write(b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    let head = c.response(true).await;
    println!("{:?}", head.head);
    assert_eq!(head.header("content-length").as_deref(), Some("1000"), "{:?}", head.head);
}

#[tokio::test]
async fn sse_over_http_1_0_and_head() {
    let addr = serve(Config::default(), |ch: Channel| async move {
        let s = ch.sender();
        let _ = s.send("a".into()).await;
        let _ = s.send("b".into()).await;
        s.close().await;
    })
    .await;
    let out = raw_http(addr, b"GET / HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n").await;
    let text = text_of(&out);
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    assert!(text.ends_with("\r\n\r\ndata: a\n\ndata: b\n\n"), "{text}");
    let mut c = Raw::connect(addr).await;
    c.write(b"HEAD / HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n").await;
    let head = c.response(true).await;
    assert_eq!(head.header("content-type").as_deref(), Some("text/event-stream"), "{head:?}");
    let get = c.response(false).await;
    assert_eq!(get.body, b"data: a\n\ndata: b\n\n", "{get:?}");
}

/// A 1xx is not a final response: `Message::response(103, ..)` is refused at once and the
/// channel stays usable. Before stop 27 (2026-12-05) the send was accepted and hyper answered
/// HTTP/1.1 with a 500 (over HTTP/2: a malformed response), the sends failing `Closed`.
#[tokio::test]
async fn a_1xx_response_head_is_refused_and_the_channel_goes_on() {
    let (tx, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(Config::default(), move |ch: Channel| {
        let tx = tx.clone();
        async move {
            let s = ch.sender();
            let early = http::StatusCode::from_u16(103).unwrap();
            let a = s.send(Message::response(early, http::HeaderMap::new(), "early")).await;
            let b = s.send_and_close("after".into()).await;
            let _ = tx.send((a, b));
        }
    })
    .await;
    let mut c = Raw::connect(addr).await;
    c.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    let text = text_of(&c.rest().await);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nafter"), "{text}");
    let (a, b) = outcomes.recv().await.unwrap();
    assert!(matches!(a, Err(webchan::Error::InvalidMessage(_))), "{a:?}");
    assert!(b.is_ok(), "{b:?}");
}
