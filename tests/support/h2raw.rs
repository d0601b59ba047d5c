//! A raw HTTP/2 client (frames by hand, HPACK literals, no Huffman), for what a well-behaved
//! client library hides: which frames end a stream (END_STREAM or RST_STREAM), GOAWAY, flow
//! control stalls. Written for the RFC 8441 tests of stop 27; shared since stop 28.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::encode_frame;

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const WINDOW_UPDATE: u8 = 8;
pub const END_STREAM: u8 = 1;
pub const END_HEADERS: u8 = 4;

/// A raw HTTP/2 client connection.
pub struct H2Raw {
    pub tcp: tokio::net::TcpStream,
    buf: Vec<u8>,
    /// The server's SETTINGS (id, value).
    pub settings: Vec<(u16, u32)>,
}

#[derive(Debug, Clone)]
pub struct Frame {
    pub ty: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

pub fn hpack_literal(out: &mut Vec<u8>, name: &str, value: &str) {
    // Literal header field without indexing, new name; no Huffman.
    out.push(0x00);
    assert!(name.len() < 127 && value.len() < 127);
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
}

impl H2Raw {
    pub async fn connect(addr: SocketAddr) -> Self {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        let mut me = Self { tcp, buf: Vec::new(), settings: Vec::new() };
        me.send(SETTINGS, 0, 0, &[]).await;
        // The server's SETTINGS first.
        let f = me.read().await.expect("server SETTINGS");
        assert_eq!(f.ty, SETTINGS, "{f:?}");
        for s in f.payload.chunks(6) {
            me.settings.push((
                u16::from_be_bytes([s[0], s[1]]),
                u32::from_be_bytes(s[2..6].try_into().unwrap()),
            ));
        }
        me.send(SETTINGS, 1, 0, &[]).await; // ACK
        me
    }

    pub async fn send(&mut self, ty: u8, flags: u8, stream: u32, payload: &[u8]) {
        let mut out = Vec::with_capacity(9 + payload.len());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.push(ty);
        out.push(flags);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        let _ = self.tcp.write_all(&out).await;
    }

    /// The next frame (SETTINGS ACKs, PINGs and WINDOW_UPDATEs answered or skipped); None at
    /// EOF; panics after 10 s.
    pub async fn read(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let f = Frame {
                        ty: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes(self.buf[5..9].try_into().unwrap())
                            & 0x7fff_ffff,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    return Some(f);
                }
            }
            let mut chunk = [0u8; 65536];
            let n = tokio::time::timeout(Duration::from_secs(10), self.tcp.read(&mut chunk))
                .await
                .expect("no HTTP/2 frame within 10 s")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next frame of interest: skips SETTINGS (acks them), connection WINDOW_UPDATEs and
    /// PINGs (answered).
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            let f = self.read().await?;
            match f.ty {
                SETTINGS => {
                    if f.flags & 1 == 0 {
                        self.send(SETTINGS, 1, 0, &[]).await;
                    }
                }
                PING => {
                    if f.flags & 1 == 0 {
                        self.send(PING, 1, 0, &f.payload).await;
                    }
                }
                WINDOW_UPDATE => {}
                _ => return Some(f),
            }
        }
    }

    /// Extended CONNECT on `stream`; returns the response HEADERS frame.
    pub async fn connect_ws(
        &mut self,
        addr: SocketAddr,
        stream: u32,
        extra: &[(&str, &str)],
    ) -> Frame {
        let mut block = Vec::new();
        hpack_literal(&mut block, ":method", "CONNECT");
        hpack_literal(&mut block, ":protocol", "websocket");
        hpack_literal(&mut block, ":scheme", "http");
        hpack_literal(&mut block, ":path", "/");
        hpack_literal(&mut block, ":authority", &addr.to_string());
        hpack_literal(&mut block, "sec-websocket-version", "13");
        for (n, v) in extra {
            hpack_literal(&mut block, n, v);
        }
        self.send(HEADERS, END_HEADERS, stream, &block).await;
        let f = self.next().await.expect("a response");
        assert!(f.ty == HEADERS && f.stream == stream, "before the response: {f:?}");
        f
    }

    /// A GET of `path` on `stream` (END_STREAM: no request body); returns the response
    /// HEADERS frame.
    pub async fn get(&mut self, addr: SocketAddr, stream: u32, path: &str) -> Frame {
        let mut block = Vec::new();
        hpack_literal(&mut block, ":method", "GET");
        hpack_literal(&mut block, ":scheme", "http");
        hpack_literal(&mut block, ":path", path);
        hpack_literal(&mut block, ":authority", &addr.to_string());
        self.send(HEADERS, END_HEADERS | END_STREAM, stream, &block).await;
        let f = self.next().await.expect("a response");
        assert!(f.ty == HEADERS && f.stream == stream, "before the response: {f:?}");
        f
    }

    /// One masked WebSocket frame in a DATA frame.
    pub async fn ws_frame(&mut self, stream: u32, first: u8, payload: &[u8], flags: u8) {
        let bytes = encode_frame(first, Some([1, 2, 3, 4]), payload, None);
        self.send(DATA, flags, stream, &bytes).await;
    }

    /// Every frame until EOF or `quiet` of nothing, with the DATA payloads concatenated per
    /// stream (the WebSocket bytes).
    pub async fn collect(&mut self, quiet: Duration) -> Vec<Frame> {
        let mut out = Vec::new();
        loop {
            match tokio::time::timeout(quiet, self.next()).await {
                Ok(Some(f)) => out.push(f),
                Ok(None) | Err(_) => return out,
            }
        }
    }
}

pub fn describe(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .map(|f| match f.ty {
            DATA => format!(
                "DATA(s{} {}{:02x?})",
                f.stream,
                if f.flags & END_STREAM != 0 { "END_STREAM " } else { "" },
                &f.payload[..f.payload.len().min(16)]
            ),
            RST_STREAM => format!(
                "RST_STREAM(s{} code {})",
                f.stream,
                u32::from_be_bytes(f.payload[..4].try_into().unwrap())
            ),
            GOAWAY => format!("GOAWAY {:02x?}", f.payload),
            HEADERS => format!("HEADERS(s{} flags {:x} {:02x?})", f.stream, f.flags, f.payload),
            t => format!("type {t} s{} flags {:x}", f.stream, f.flags),
        })
        .collect()
}
