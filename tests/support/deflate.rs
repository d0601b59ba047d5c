//! A client's side of permessage-deflate (RFC 7692) for the tests: an offer, a compressor kept
//! from message to message as a browser's is, and an inflater for the server's messages.
#![allow(dead_code, unreachable_pub)]

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The offer browsers, Node's `ws` and Python's `websockets` send, as a request header line.
pub const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
/// What webchan answers to it.
pub const AGREED: &str = "permessage-deflate; server_no_context_takeover";
/// The four bytes a sender strips from each compressed message (RFC 7692 §7.2.1).
pub const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// The client's compressor, kept from message to message (as every browser's is).
pub struct Deflater(pub Compress);

impl Deflater {
    pub fn new() -> Self {
        Self(Compress::new(Compression::default(), false))
    }

    /// A message's payload, compressed whole, its last four bytes stripped.
    pub fn compress(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 64);
        let before = self.0.total_in();
        self.0.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
        assert_eq!((self.0.total_in() - before) as usize, data.len(), "not all compressed");
        assert!(out.ends_with(&TAIL), "output buffer too small");
        out.truncate(out.len() - TAIL.len());
        out
    }
}

/// Inflates one server message with a fresh context (the server agreed to
/// `server_no_context_takeover`): all of it must be taken, without error.
pub fn inflate(payload: &[u8]) -> Vec<u8> {
    inflate_up_to(payload, 4 << 20)
}

/// [`inflate`] for messages of up to `cap` bytes.
pub fn inflate_up_to(payload: &[u8], cap: usize) -> Vec<u8> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&TAIL);
    let mut d = Decompress::new(false);
    let mut out = Vec::with_capacity(cap);
    let status = d.decompress_vec(&input, &mut out, FlushDecompress::Sync).expect("inflates");
    assert!(matches!(status, Status::Ok | Status::BufError), "{status:?}");
    assert!(out.len() < out.capacity(), "more than {cap} bytes");
    assert_eq!(d.total_in() as usize, input.len(), "not all of the message inflated");
    out
}

/// Reads the server's next data message, past pings and pongs: `Ok((RSV1, payload as sent))`,
/// or `Err` with the close code (1005 for a close without one, 0 at EOF).
pub async fn read_message<S>(ws: &mut super::RawWs<S>) -> Result<(bool, Vec<u8>), u16>
where
    S: tokio::io::AsyncRead + Unpin,
{
    loop {
        let Some((first, payload)) = ws.read_frame().await else { return Err(0) };
        match first & 0x0f {
            0x8 => {
                return Err(if payload.len() >= 2 {
                    u16::from_be_bytes([payload[0], payload[1]])
                } else {
                    1005
                })
            }
            0x9 | 0xa => continue,
            _ => {
                assert!(first & 0x80 != 0, "a fragmented message from the server");
                return Ok((first & 0x40 != 0, payload));
            }
        }
    }
}

/// An extended CONNECT (RFC 8441) for a WebSocket at `/` with [`OFFER`]'s offer.
pub fn h2_request_with_offer(
    addr: std::net::SocketAddr,
) -> http::Request<http_body_util::Empty<bytes::Bytes>> {
    let mut request = super::h2_websocket_request(addr, "/");
    let offer = OFFER.trim_end().split_once(": ").expect("a header line").1;
    request.headers_mut().insert("sec-websocket-extensions", offer.parse().unwrap());
    request
}

/// The `Sec-WebSocket-Extensions` values of a response head.
pub fn extensions_of(head: &str) -> Vec<String> {
    super::header_values(head, "sec-websocket-extensions")
}
