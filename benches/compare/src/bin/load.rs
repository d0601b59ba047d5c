//! Load client for the loopback comparison: raw TCP, hand-written masked WebSocket frames,
//! batched writes, every echoed byte verified. One `current_thread` runtime.
//!
//! ```text
//! load echo   --port P [--conns 64] [--inflight 8] [--size 16] [--duration 5] [--pid SERVER_PID] [--text]
//! load stream --port P [--conns 16] [--chunk 1024] [--total 16777216] [--duration 5] [--pid SERVER_PID]
//! load stream --port P --file PATH [--query length=1] [--conns 16] [--duration 5] [--pid SERVER_PID]
//! load idle   --port P [--conns 5000] [--size 65536] [--sources 20] [--source-base 1] [--settle 2] --pid SERVER_PID
//! load idlehttp --port P [--conns 5000] [--chunk 64] [--sources 20] [--source-base 1] [--settle 2] --pid SERVER_PID
//! ```
//!
//! `echo`: C connections, each keeping K messages of S bytes in flight for D seconds; every
//! echo must come back in order, with the same opcode and bytes (each message carries its
//! sequence number and a per-position pattern). Ping-pong is `--conns 1 --inflight 1`.
//! `stream`: C connections, each GETting `/?chunk=S&total=T` again and again for D seconds
//! (keep-alive; chunked or Content-Length), every body byte checked, each body's length checked.
//! With `--file`, each connection GETs `/` (plus `?QUERY`) and every body must be that file's
//! content, byte for byte and whole (the client reads the file once and compares).
//! `idle`: opens N WebSocket connections from source addresses 127.0.0.1..127.0.0.SOURCES
//! (127.0.0.BASE..127.0.0.(BASE+SOURCES-1) with `--source-base BASE`: several clients, each
//! its own addresses), reads the server's RSS, then has each connection echo one S-byte
//! message (64 at a time), waits `settle` seconds and reads it again.
//! `idlehttp`: opens N HTTP/1.1 connections the same way, each GETting `/` and reading the
//! response head and a first body chunk of exactly `chunk` bytes (`compare::pattern`); the body
//! must not end. After `settle` seconds the server's RSS is read again, and each connection
//! is checked to have received nothing more and to be still open.
//!
//! With `--pid`, the server's CPU time (utime + stime from /proc/PID/stat) over the measured
//! window and its RSS (VmRSS) are read too, and for `stream` its peak RSS since it started
//! (VmHWM); for `echo` also how often per message the server's main thread (the runtime's, in
//! every server of `servers`) gave up its core of its own accord (`vol_cs_per_msg`: it blocked,
//! for these servers in `epoll_wait`) or was preempted (`invol_cs_per_msg`), from
//! /proc/PID/status. With client and server on one core (ping-pong) that pattern differs
//! between servers and moves the rate (benches/HISTORY.md, "Unmasking with AVX2, and the rest
//! of the 16 KiB gap"). The last line on stdout is `key=value` pairs for scripts/bench.sh; the
//! exit status is 1 on any error or mismatch.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

type Res<T> = Result<T, String>;

struct Args(HashMap<String, String>);

impl Args {
    fn get<T: std::str::FromStr>(&self, key: &str, default: T) -> T {
        match self.0.get(key) {
            Some(v) => v.parse().unwrap_or_else(|_| die(&format!("bad value for --{key}: {v}"))),
            None => default,
        }
    }
    fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }
}

fn die(message: &str) -> ! {
    eprintln!("load: {message}");
    std::process::exit(2)
}

fn main() {
    let mut argv = std::env::args().skip(1);
    let scenario =
        argv.next().unwrap_or_else(|| die("usage: load echo|stream|idle|idlehttp --port P ..."));
    let mut map = HashMap::new();
    let rest: Vec<String> = argv.collect();
    let mut i = 0;
    while i < rest.len() {
        let key =
            rest[i].strip_prefix("--").unwrap_or_else(|| die(&format!("bad arg {}", rest[i])));
        if key == "text" {
            map.insert(key.to_owned(), "1".to_owned());
            i += 1;
        } else {
            let value = rest.get(i + 1).unwrap_or_else(|| die(&format!("--{key} needs a value")));
            map.insert(key.to_owned(), value.clone());
            i += 2;
        }
    }
    let args = Args(map);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let ok = runtime.block_on(async move {
        match scenario.as_str() {
            "echo" => echo(&args).await,
            "stream" => stream(&args).await,
            "idle" => idle(&args).await,
            "idlehttp" => idle_http(&args).await,
            other => die(&format!("unknown scenario {other}")),
        }
    });
    std::process::exit(if ok { 0 } else { 1 });
}

// ---------------------------------------------------------------------------------------------
// /proc

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: &str) -> Option<f64> {
    cpu_split(pid).map(|(user, system)| user + system)
}

/// utime and stime of a process, in seconds: its own code and the kernel's work for it.
fn cpu_split(pid: &str) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime / clock_ticks(), stime / clock_ticks()))
}

fn rss_kib(pid: &str) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// Peak resident set size since the process started.
fn hwm_kib(pid: &str) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// The context switches of a process's main thread so far: (voluntary, involuntary).
fn switches(pid: &str) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some((
        status_field(&status, "voluntary_ctxt_switches:")?,
        status_field(&status, "nonvoluntary_ctxt_switches:")?,
    ))
}

fn status_kib(pid: &str, key: &str) -> Option<u64> {
    status_field(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?, key)
}

/// The number after `key` in the text of a /proc/PID/status.
fn status_field(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

struct Window {
    pid: Option<String>,
    t0: Instant,
    server_cpu0: Option<(f64, f64)>,
    client_cpu0: Option<f64>,
    switches0: Option<(u64, u64)>,
}

struct Measured {
    secs: f64,
    server_cpu: Option<f64>,
    /// The server's CPU time split: (user, system).
    server_split: Option<(f64, f64)>,
    client_cpu: Option<f64>,
    /// The server's main thread's context switches: (voluntary, involuntary).
    switches: Option<(u64, u64)>,
}

impl Window {
    fn start(pid: Option<String>) -> Self {
        let server_cpu0 = pid.as_deref().and_then(cpu_split);
        let switches0 = pid.as_deref().and_then(switches);
        Self { server_cpu0, client_cpu0: cpu_seconds("self"), switches0, t0: Instant::now(), pid }
    }
    fn stop(&self) -> Measured {
        let secs = self.t0.elapsed().as_secs_f64();
        let server_split = match (self.pid.as_deref().and_then(cpu_split), self.server_cpu0) {
            (Some(b), Some(a)) => Some((b.0 - a.0, b.1 - a.1)),
            _ => None,
        };
        let client_cpu = match (cpu_seconds("self"), self.client_cpu0) {
            (Some(b), Some(a)) => Some(b - a),
            _ => None,
        };
        let server_cpu = server_split.map(|(user, system)| user + system);
        let switches = match (self.pid.as_deref().and_then(switches), self.switches0) {
            (Some(b), Some(a)) => Some((b.0 - a.0, b.1 - a.1)),
            _ => None,
        };
        Measured { secs, server_cpu, server_split, client_cpu, switches }
    }
}

fn report(fields: &[(&str, String)]) {
    let line: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("{}", line.join(" "));
}

fn opt(v: Option<f64>, scale: f64, digits: usize) -> String {
    v.map_or_else(|| "NA".to_owned(), |v| format!("{:.*}", digits, v * scale))
}

/// (RSS `a` − RSS `b`) / `conns`, in KiB, or "NA".
fn kib_per_conn(a: Option<u64>, b: Option<u64>, conns: u32) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}", (a as f64 - b as f64) / conns as f64),
        _ => "NA".into(),
    }
}

fn show_kib(r: Option<u64>) -> String {
    r.map_or("NA".into(), |r| r.to_string())
}

/// Opens `conns` connections, 64 at a time, with `open(i)`: the opened ones and the seconds
/// it took, or `None` when any failed (every error printed and reported for `scenario`).
async fn open_all<T, F, Fut>(scenario: &str, conns: u32, open: F) -> Option<(Vec<T>, f64)>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Res<T>>,
{
    let t0 = Instant::now();
    let opened: Vec<Res<T>> =
        futures::stream::iter(0..conns).map(open).buffered(64).collect().await;
    let mut streams = Vec::new();
    let mut errors = Vec::new();
    for (i, result) in opened.into_iter().enumerate() {
        match result {
            Ok(stream) => streams.push(stream),
            Err(e) => errors.push(format!("connection {i}: {e}")),
        }
    }
    if !errors.is_empty() {
        print_errors(&errors);
        report(&[("scenario", scenario.into()), ("errors", errors.len().to_string())]);
        return None;
    }
    Some((streams, t0.elapsed().as_secs_f64()))
}

fn print_errors(errors: &[String]) {
    for e in errors.iter().take(10) {
        eprintln!("load: error: {e}");
    }
    if errors.len() > 10 {
        eprintln!("load: ... and {} more errors", errors.len() - 10);
    }
}

// ---------------------------------------------------------------------------------------------
// connections and the WebSocket handshake

async fn connect(port: u16, source: u8) -> Res<TcpStream> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    if source > 1 {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, source));
        socket.bind(SocketAddr::new(ip, 0)).map_err(|e| format!("bind 127.0.0.{source}: {e}"))?;
    }
    let target = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    let tcp = socket.connect(target).await.map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    Ok(tcp)
}

/// `--sources S --source-base B`: connection `i` comes from 127.0.0.(B + i % S).
fn source_of(args: &Args) -> impl Fn(u32) -> u8 {
    let sources: u32 = args.get("sources", 20u32).max(1);
    let base: u32 = args.get("source-base", 1);
    if base == 0 || base + sources - 1 > 255 {
        die(&format!("--source-base {base} --sources {sources}: beyond 127.0.0.255"));
    }
    move |i| (base + i % sources) as u8
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads an HTTP response head; returns (head, bytes after it).
async fn read_head(tcp: &mut TcpStream, mut buf: Vec<u8>) -> Res<(String, Vec<u8>)> {
    loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..at]).into_owned();
            return Ok((head, buf[at + 4..].to_vec()));
        }
        if buf.len() > 16 << 10 {
            return Err("response head over 16 KiB".into());
        }
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).await.map_err(|e| format!("read head: {e}"))?;
        if n == 0 {
            return Err("connection closed before the response head".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Client side of the opening handshake; returns the bytes that followed the 101 response.
async fn ws_handshake(tcp: &mut TcpStream, port: u16) -> Res<Vec<u8>> {
    let request = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.map_err(|e| format!("write handshake: {e}"))?;
    let (head, rest) = read_head(tcp, Vec::new()).await?;
    if !head.starts_with("HTTP/1.1 101") {
        return Err(format!("handshake: {}", head.lines().next().unwrap_or("")));
    }
    if header(&head, "sec-websocket-accept") != Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") {
        return Err("handshake: wrong Sec-WebSocket-Accept".into());
    }
    Ok(rest)
}

async fn open_ws(port: u16, source: u8) -> Res<(TcpStream, Vec<u8>)> {
    let mut tcp = connect(port, source).await?;
    let rest = ws_handshake(&mut tcp, port).await?;
    Ok((tcp, rest))
}

// ---------------------------------------------------------------------------------------------
// frames

/// What one connection sends, pre-masked: only the sequence number (the first 8 bytes)
/// changes from message to message.
struct Gen {
    size: usize,
    opcode: u8,
    mask: [u8; 4],
    plain: Vec<u8>,
    masked: Vec<u8>,
}

impl Gen {
    fn new(size: usize, text: bool, id: u32) -> Self {
        let mask = [0x5a ^ id as u8, 0x3c ^ (id >> 8) as u8, 0xa5, 0x96 ^ (id >> 16) as u8];
        let plain = compare::pattern(size);
        let masked = plain.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
        Self { size, opcode: if text { 1 } else { 2 }, mask, plain, masked }
    }

    fn push(&self, out: &mut Vec<u8>, seq: u64) {
        push_header(out, self.opcode, self.size, self.mask);
        let at = out.len();
        out.extend_from_slice(&self.masked);
        for k in 0..self.size.min(8) {
            out[at + k] = seq_byte(seq, k) ^ self.mask[k % 4];
        }
    }

    fn check(&self, opcode: u8, payload: &[u8], seq: u64) -> Res<()> {
        if opcode != self.opcode {
            return Err(format!("message {seq}: opcode {opcode}, sent {}", self.opcode));
        }
        if payload.len() != self.size {
            return Err(format!("message {seq}: {} bytes, sent {}", payload.len(), self.size));
        }
        let head = self.size.min(8);
        let seq_ok = (0..head).all(|k| payload[k] == seq_byte(seq, k));
        if !seq_ok || payload[head..] != self.plain[head..] {
            let at = (0..self.size)
                .find(|&k| payload[k] != if k < head { seq_byte(seq, k) } else { self.plain[k] })
                .unwrap_or(0);
            return Err(format!("message {seq}: wrong bytes (first difference at byte {at})"));
        }
        Ok(())
    }
}

/// Printable, so that text messages stay valid UTF-8.
fn seq_byte(seq: u64, k: usize) -> u8 {
    b'0' + ((seq >> (6 * k)) & 63) as u8
}

fn push_header(out: &mut Vec<u8>, opcode: u8, len: usize, mask: [u8; 4]) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
}

fn push_masked(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    push_header(out, opcode, payload.len(), mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

const MAX_MESSAGE: usize = 64 << 20;

/// A frame from the server: (fin, opcode, payload range, frame length), or None when `buf` does
/// not hold a whole frame yet (then `need` is the frame's length when known).
fn parse_frame(buf: &[u8], need: &mut usize) -> Res<Option<(bool, u8, usize, usize)>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b1 & 0x80 != 0 {
        return Err("masked frame from the server".into());
    }
    if b0 & 0x70 != 0 {
        return Err("RSV bits set".into());
    }
    let (len, header) = match b1 & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => {
            (u64::from_be_bytes(buf[2..10].try_into().unwrap()).min(u64::MAX >> 1) as usize, 10)
        }
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    if len > MAX_MESSAGE {
        return Err(format!("frame of {len} bytes"));
    }
    if buf.len() < header + len {
        *need = header + len;
        return Ok(None);
    }
    Ok(Some((b0 & 0x80 != 0, b0 & 0x0f, header, header + len)))
}

/// A read buffer with a window of unparsed bytes.
struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    fn new(capacity: usize, leftover: &[u8]) -> Self {
        let mut buf = vec![0u8; capacity.max(leftover.len() * 2)];
        buf[..leftover.len()].copy_from_slice(leftover);
        Self { buf, start: 0, end: leftover.len() }
    }
    /// Room to read into, for a frame of `need` bytes at `start`.
    fn room(&mut self, need: usize) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() || self.start + need > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if need > self.buf.len() || self.end == self.buf.len() {
                let grown = need.max(self.buf.len() * 2);
                self.buf.resize(grown, 0);
            }
        }
        &mut self.buf[self.end..]
    }
}

// ---------------------------------------------------------------------------------------------
// echo

struct Shared {
    stop: AtomicBool,
    messages: AtomicU64,
}

async fn echo(args: &Args) -> bool {
    let port: u16 = args.get("port", 9000);
    let conns: u32 = args.get("conns", 64);
    let inflight: u64 = args.get("inflight", 8);
    let size: usize = args.get("size", 16);
    let duration = Duration::from_secs_f64(args.get("duration", 5.0));
    let pid: Option<String> = args.0.get("pid").cloned();
    let text = args.has("text");

    let Some((streams, _)) = open_all("echo", conns, |_| open_ws(port, 1)).await else {
        return false;
    };
    let shared = Arc::new(Shared { stop: AtomicBool::new(false), messages: AtomicU64::new(0) });
    let rss_before = pid.as_deref().and_then(rss_kib);
    let window = Window::start(pid.clone());
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(id, (tcp, rest))| {
            let gen = Gen::new(size, text, id as u32);
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let run = echo_conn(tcp, rest, gen, inflight, &shared);
                match tokio::time::timeout(duration + Duration::from_secs(15), run).await {
                    Ok(r) => r,
                    Err(_) => Err("timed out (server stopped answering)".into()),
                }
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    let measured = window.stop();
    let messages = shared.messages.load(Relaxed);
    let rss = pid.as_deref().and_then(rss_kib);
    shared.stop.store(true, Relaxed);
    let mut errors = Vec::new();
    for (id, task) in tasks.into_iter().enumerate() {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(format!("connection {id}: {e}")),
            Err(e) => errors.push(format!("connection {id}: task failed: {e}")),
        }
    }
    print_errors(&errors);
    let rate = messages as f64 / measured.secs;
    report(&[
        ("scenario", "echo".into()),
        ("conns", conns.to_string()),
        ("inflight", inflight.to_string()),
        ("size", size.to_string()),
        ("secs", format!("{:.3}", measured.secs)),
        ("messages", messages.to_string()),
        ("rate", format!("{rate:.0}")),
        ("mbps", format!("{:.1}", rate * size as f64 / 1e6)),
        ("server_cpu_s", opt(measured.server_cpu, 1.0, 3)),
        ("server_cpu_pct", opt(measured.server_cpu.map(|c| c / measured.secs), 100.0, 1)),
        ("cpu_us_per_msg", opt(measured.server_cpu.map(|c| c / messages.max(1) as f64), 1e6, 3)),
        (
            "user_us_per_msg",
            opt(measured.server_split.map(|c| c.0 / messages.max(1) as f64), 1e6, 3),
        ),
        (
            "sys_us_per_msg",
            opt(measured.server_split.map(|c| c.1 / messages.max(1) as f64), 1e6, 3),
        ),
        ("client_cpu_pct", opt(measured.client_cpu.map(|c| c / measured.secs), 100.0, 1)),
        (
            "vol_cs_per_msg",
            opt(measured.switches.map(|s| s.0 as f64 / messages.max(1) as f64), 1.0, 3),
        ),
        (
            "invol_cs_per_msg",
            opt(measured.switches.map(|s| s.1 as f64 / messages.max(1) as f64), 1.0, 3),
        ),
        ("rss_before_kib", rss_before.map_or("NA".into(), |r| r.to_string())),
        ("rss_kib", rss.map_or("NA".into(), |r| r.to_string())),
        ("errors", errors.len().to_string()),
    ]);
    errors.is_empty() && messages > 0
}

async fn echo_conn(
    mut tcp: TcpStream,
    leftover: Vec<u8>,
    gen: Gen,
    inflight: u64,
    shared: &Shared,
) -> Res<()> {
    let (mut rd, mut wr) = tcp.split();
    let mut rb = ReadBuf::new((64 << 10).max(2 * (gen.size + 14)), &leftover);
    let mut out: Vec<u8> = Vec::with_capacity(inflight as usize * (gen.size + 14));
    let mut out_pos = 0;
    let (mut sent, mut received) = (0u64, 0u64);
    for _ in 0..inflight {
        gen.push(&mut out, sent);
        sent += 1;
    }
    let mut closing = false;
    let mut fragments: Option<(u8, Vec<u8>)> = None;
    let mut need = 0;
    loop {
        // Every whole frame in the buffer.
        let mut batch = 0u64;
        while let Some((fin, opcode, header, len)) =
            parse_frame(&rb.buf[rb.start..rb.end], &mut need)?
        {
            let payload = &rb.buf[rb.start + header..rb.start + len];
            match (opcode, fin, fragments.as_mut()) {
                (1 | 2, true, None) => {
                    gen.check(opcode, payload, received)?;
                    received += 1;
                    batch += 1;
                }
                (1 | 2, false, None) => fragments = Some((opcode, payload.to_vec())),
                (0, _, Some((_, data))) => {
                    data.extend_from_slice(payload);
                    if data.len() > MAX_MESSAGE {
                        return Err("message over 64 MiB".into());
                    }
                    if fin {
                        let (op, data) = fragments.take().unwrap();
                        gen.check(op, &data, received)?;
                        received += 1;
                        batch += 1;
                    }
                }
                (8, _, _) => {
                    if closing && received == sent {
                        return Ok(());
                    }
                    let code = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                    return Err(format!(
                        "server closed ({code:?}) with {} messages outstanding",
                        sent - received
                    ));
                }
                (9, true, _) => push_masked(&mut out, 0xA, payload, gen.mask),
                (10, true, _) => {}
                _ => return Err(format!("unexpected frame: opcode {opcode}, fin {fin}")),
            }
            rb.start += len;
            need = 0;
        }
        if batch > 0 {
            shared.messages.fetch_add(batch, Relaxed);
            if !shared.stop.load(Relaxed) {
                for _ in 0..batch {
                    gen.push(&mut out, sent);
                    sent += 1;
                }
            }
        }
        if !closing && received == sent && shared.stop.load(Relaxed) {
            push_masked(&mut out, 0x8, &1000u16.to_be_bytes(), gen.mask);
            closing = true;
        }
        let room = rb.room(need);
        let n = if out_pos < out.len() {
            tokio::select! {
                biased;
                w = wr.write(&out[out_pos..]) => {
                    let n = w.map_err(|e| format!("write: {e}"))?;
                    out_pos += n;
                    if out_pos == out.len() {
                        out.clear();
                        out_pos = 0;
                    }
                    continue;
                }
                r = rd.read(room) => r,
            }
        } else {
            rd.read(room).await
        };
        match n {
            Ok(0) | Err(_) if closing && received == sent => return Ok(()),
            Ok(0) => {
                return Err(format!(
                    "server closed the connection, {} outstanding",
                    sent - received
                ))
            }
            Ok(n) => rb.end += n,
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// idle connections: RSS per connection

async fn idle(args: &Args) -> bool {
    let port: u16 = args.get("port", 9000);
    let conns: u32 = args.get("conns", 5000);
    let size: usize = args.get("size", 65536);
    let source = source_of(args);
    let settle = Duration::from_secs_f64(args.get("settle", 2.0));
    let Some(pid) = args.0.get("pid").cloned() else { die("idle needs --pid") };
    let text = args.has("text");

    let rss0 = rss_kib(&pid);
    let Some((mut streams, open_secs)) =
        open_all("idle", conns, |i| open_ws(port, source(i))).await
    else {
        return false;
    };
    let mut errors: Vec<String> = Vec::new();
    tokio::time::sleep(settle).await;
    let rss1 = rss_kib(&pid);

    // One message each, 64 connections at a time.
    let gen = Gen::new(size, text, 7);
    let results: Vec<Res<()>> = futures::stream::iter(streams.iter_mut())
        .map(|(tcp, leftover)| {
            let gen = &gen;
            async move {
                let mut out = Vec::with_capacity(size + 14);
                gen.push(&mut out, 0);
                tcp.write_all(&out).await.map_err(|e| format!("write: {e}"))?;
                let mut rb = ReadBuf::new(size + 14, &std::mem::take(leftover));
                let mut need = 0;
                loop {
                    if let Some((fin, opcode, header, len)) =
                        parse_frame(&rb.buf[rb.start..rb.end], &mut need)?
                    {
                        let payload = &rb.buf[rb.start + header..rb.start + len];
                        match (opcode, fin) {
                            (1 | 2, true) => {
                                gen.check(opcode, payload, 0)?;
                                *leftover = rb.buf[rb.start + len..rb.end].to_vec();
                                return Ok(());
                            }
                            (9 | 10, true) => {
                                rb.start += len;
                                need = 0;
                                continue;
                            }
                            _ => return Err(format!("unexpected frame: opcode {opcode}")),
                        }
                    }
                    let room = rb.room(need);
                    match tcp.read(room).await {
                        Ok(0) => return Err("closed by the server".into()),
                        Ok(n) => rb.end += n,
                        Err(e) => return Err(format!("read: {e}")),
                    }
                }
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    errors.extend(results.into_iter().filter_map(Result::err));
    tokio::time::sleep(settle).await;
    let rss2 = rss_kib(&pid);

    // Close them all (close frame; no wait for the answer beyond a short drain).
    let close_results: Vec<()> = futures::stream::iter(streams.iter_mut())
        .map(|(tcp, _)| async move {
            let mut out = Vec::new();
            push_masked(&mut out, 0x8, &1000u16.to_be_bytes(), [1, 2, 3, 4]);
            if tcp.write_all(&out).await.is_ok() {
                let mut sink = [0u8; 256];
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Ok(n) = tcp.read(&mut sink).await {
                        if n == 0 {
                            break;
                        }
                    }
                })
                .await;
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    drop(close_results);
    drop(streams);

    print_errors(&errors);
    let per = |a, b| kib_per_conn(a, b, conns);
    report(&[
        ("scenario", "idle".into()),
        ("conns", conns.to_string()),
        ("size", size.to_string()),
        ("open_secs", format!("{open_secs:.2}")),
        ("rss_before_kib", show_kib(rss0)),
        ("rss_idle_kib", show_kib(rss1)),
        ("rss_after_kib", show_kib(rss2)),
        ("idle_kib_per_conn", per(rss1, rss0)),
        ("after_kib_per_conn", per(rss2, rss0)),
        ("errors", errors.len().to_string()),
    ]);
    errors.is_empty()
}

// ---------------------------------------------------------------------------------------------
// idle HTTP streams: RSS per connection

async fn idle_http(args: &Args) -> bool {
    let port: u16 = args.get("port", 9000);
    let conns: u32 = args.get("conns", 5000);
    let chunk: usize = args.get("chunk", 64);
    let source = source_of(args);
    let settle = Duration::from_secs_f64(args.get("settle", 2.0));
    let Some(pid) = args.0.get("pid").cloned() else { die("idlehttp needs --pid") };
    let pattern = compare::pattern(chunk.max(1));

    let rss0 = rss_kib(&pid);
    let Some((mut streams, open_secs)) =
        open_all("idlehttp", conns, |i| open_idle_stream(port, source(i), &pattern, chunk)).await
    else {
        return false;
    };
    let mut errors: Vec<String> = Vec::new();
    tokio::time::sleep(settle).await;
    let rss1 = rss_kib(&pid);

    // Every stream still open, and nothing more than its first chunk received.
    let mut buf = [0u8; 1024];
    for (i, (tcp, body)) in streams.iter_mut().enumerate() {
        loop {
            let result = match tcp.try_read(&mut buf) {
                Ok(0) => Err("closed by the server while idle".to_owned()),
                Ok(n) => idle_feed(body, &buf[..n], chunk),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => Err(format!("read: {e}")),
            };
            if let Err(e) = result {
                errors.push(format!("connection {i}: {e}"));
                break;
            }
        }
    }
    drop(streams);

    print_errors(&errors);
    let per = |a, b| kib_per_conn(a, b, conns);
    report(&[
        ("scenario", "idlehttp".into()),
        ("conns", conns.to_string()),
        ("chunk", chunk.to_string()),
        ("open_secs", format!("{open_secs:.2}")),
        ("rss_before_kib", show_kib(rss0)),
        ("rss_idle_kib", show_kib(rss1)),
        ("idle_kib_per_conn", per(rss1, rss0)),
        ("errors", errors.len().to_string()),
    ]);
    errors.is_empty()
}

/// GET / and read the head and a first chunk of exactly `chunk` bytes of `pattern`.
async fn open_idle_stream(
    port: u16,
    source: u8,
    pattern: &[u8],
    chunk: usize,
) -> Res<(TcpStream, Body<'_>)> {
    let mut tcp = connect(port, source).await?;
    let request = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
    let (head, rest) = read_head(&mut tcp, Vec::new()).await?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("response: {}", head.lines().next().unwrap_or("")));
    }
    if !header(&head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return Err("the response of a never-ending stream is not chunked".into());
    }
    let mut body = Body { pattern, verify: true, offset: 0, state: St::Size(0, false) };
    idle_feed(&mut body, &rest, chunk)?;
    let mut buf = [0u8; 1024];
    while body.offset < chunk as u64 {
        let n = tcp.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!("closed after {} of the first {chunk} body bytes", body.offset));
        }
        idle_feed(&mut body, &buf[..n], chunk)?;
    }
    Ok((tcp, body))
}

/// Body bytes of an idle stream: the first `chunk` bytes, then nothing; the body must not end.
fn idle_feed(body: &mut Body<'_>, data: &[u8], chunk: usize) -> Res<()> {
    let used = body.feed(data)?;
    if matches!(body.state, St::Done) || used < data.len() {
        return Err(format!("the body ended after {} bytes", body.offset));
    }
    if body.offset > chunk as u64 {
        return Err(format!("{} body bytes, expected {chunk} and then nothing", body.offset));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// HTTP streams

async fn stream(args: &Args) -> bool {
    let port: u16 = args.get("port", 9000);
    let conns: u32 = args.get("conns", 16);
    let mut chunk: usize = args.get("chunk", 1024);
    let mut total: u64 = args.get("total", 16 << 20);
    let duration = Duration::from_secs_f64(args.get("duration", 5.0));
    let pid: Option<String> = args.0.get("pid").cloned();
    let verify = args.get("verify", 1u8) != 0;
    let file: Option<String> = args.0.get("file").cloned();
    // The expected body: `total` bytes of the pattern repeated with period `chunk`, or the
    // file's content (one period, the whole body).
    let (pattern, target) = match &file {
        Some(path) => {
            let content = std::fs::read(path).unwrap_or_else(|e| die(&format!("{path}: {e}")));
            if content.is_empty() {
                die(&format!("{path} is empty"));
            }
            total = content.len() as u64;
            // For the per-chunk figures: the size webchan and hyper-file read a file in.
            chunk = args.get("chunk", 16384);
            let query = args.0.get("query").map_or(String::new(), |q| format!("?{q}"));
            (content, format!("/{query}"))
        }
        None => (compare::pattern(chunk), format!("/?chunk={chunk}&total={total}")),
    };

    let mut streams = Vec::new();
    for _ in 0..conns {
        match connect(port, 1).await {
            Ok(tcp) => streams.push(tcp),
            Err(e) => {
                eprintln!("load: {e}");
                report(&[("scenario", "stream".into()), ("errors", "1".into())]);
                return false;
            }
        }
    }
    let shared = Arc::new(Shared { stop: AtomicBool::new(false), messages: AtomicU64::new(0) });
    let pattern = Arc::new(pattern);
    let target = Arc::new(target);
    let rss_before = pid.as_deref().and_then(rss_kib);
    let window = Window::start(pid.clone());
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|tcp| {
            let shared = Arc::clone(&shared);
            let pattern = Arc::clone(&pattern);
            let target = Arc::clone(&target);
            tokio::spawn(async move {
                let run = stream_conn(tcp, port, &target, total, &pattern, verify, &shared);
                match tokio::time::timeout(duration + Duration::from_secs(30), run).await {
                    Ok(r) => r,
                    Err(_) => Err("timed out".into()),
                }
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    let measured = window.stop();
    let bytes = shared.messages.load(Relaxed);
    let rss = pid.as_deref().and_then(rss_kib);
    let hwm = pid.as_deref().and_then(hwm_kib);
    shared.stop.store(true, Relaxed);
    let mut errors = Vec::new();
    let mut bodies = 0;
    for (id, task) in tasks.into_iter().enumerate() {
        match task.await {
            Ok(Ok(n)) => bodies += n,
            Ok(Err(e)) => errors.push(format!("connection {id}: {e}")),
            Err(e) => errors.push(format!("connection {id}: task failed: {e}")),
        }
    }
    print_errors(&errors);
    // The whole run, bodies finished after the window included.
    let hwm_end = pid.as_deref().and_then(hwm_kib);
    let chunks = bytes as f64 / chunk as f64;
    let mib = bytes as f64 / (1u64 << 20) as f64;
    report(&[
        ("scenario", "stream".into()),
        ("file", file.is_some().to_string()),
        ("query", args.0.get("query").cloned().unwrap_or_else(|| "-".into())),
        ("conns", conns.to_string()),
        ("chunk", chunk.to_string()),
        ("total", total.to_string()),
        ("secs", format!("{:.3}", measured.secs)),
        ("bytes", bytes.to_string()),
        ("bodies", bodies.to_string()),
        ("gbps", format!("{:.3}", bytes as f64 / measured.secs / 1e9)),
        ("rate", format!("{:.0}", chunks / measured.secs)),
        ("server_cpu_s", opt(measured.server_cpu, 1.0, 3)),
        ("server_cpu_pct", opt(measured.server_cpu.map(|c| c / measured.secs), 100.0, 1)),
        ("cpu_us_per_msg", opt(measured.server_cpu.map(|c| c / chunks.max(1.0)), 1e6, 3)),
        ("cpu_us_per_mib", opt(measured.server_cpu.map(|c| c / mib.max(1e-9)), 1e6, 1)),
        ("client_cpu_pct", opt(measured.client_cpu.map(|c| c / measured.secs), 100.0, 1)),
        ("rss_before_kib", rss_before.map_or("NA".into(), |r| r.to_string())),
        ("rss_kib", rss.map_or("NA".into(), |r| r.to_string())),
        ("hwm_kib", hwm.map_or("NA".into(), |r| r.to_string())),
        ("hwm_end_kib", hwm_end.map_or("NA".into(), |r| r.to_string())),
        ("errors", errors.len().to_string()),
    ]);
    errors.is_empty() && bytes > 0
}

/// GETs bodies until told to stop; returns how many whole bodies were received.
async fn stream_conn(
    mut tcp: TcpStream,
    port: u16,
    target: &str,
    total: u64,
    pattern: &[u8],
    verify: bool,
    shared: &Shared,
) -> Res<u64> {
    let request = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let mut buf = vec![0u8; 256 << 10];
    let mut bodies = 0;
    let mut leftover = Vec::new();
    while !shared.stop.load(Relaxed) {
        tcp.write_all(request.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
        let (head, rest) = read_head(&mut tcp, std::mem::take(&mut leftover)).await?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!("response: {}", head.lines().next().unwrap_or("")));
        }
        let chunked =
            header(&head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let length: Option<u64> = header(&head, "content-length").and_then(|v| v.parse().ok());
        let mut body = Body {
            pattern,
            verify,
            offset: 0,
            state: if chunked {
                St::Size(0, false)
            } else {
                St::Raw(length.ok_or("neither chunked nor Content-Length")?)
            },
        };
        let mut data: &[u8] = &rest;
        loop {
            let before = body.offset;
            let used = body.feed(data)?;
            shared.messages.fetch_add(body.offset - before, Relaxed);
            if matches!(body.state, St::Done) {
                leftover = data[used..].to_vec();
                break;
            }
            let n = tcp.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err(format!(
                    "connection closed after {} of {total} body bytes",
                    body.offset
                ));
            }
            data = &buf[..n];
        }
        if body.offset != total {
            return Err(format!("body of {} bytes, expected {total}", body.offset));
        }
        if !leftover.is_empty() {
            return Err("bytes after the response".into());
        }
        bodies += 1;
    }
    Ok(bodies)
}

enum St {
    /// Chunk size so far, and whether in a chunk extension.
    Size(u64, bool),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    /// Trailer section: at the start of a line?
    Trailer(bool),
    TrailerLf(bool),
    /// Content-Length body: bytes left.
    Raw(u64),
    Done,
}

struct Body<'a> {
    pattern: &'a [u8],
    verify: bool,
    offset: u64,
    state: St,
}

impl Body<'_> {
    /// Body bytes must be the pattern repeated.
    fn data(&mut self, mut bytes: &[u8]) -> Res<()> {
        if !self.verify {
            self.offset += bytes.len() as u64;
            return Ok(());
        }
        let period = self.pattern.len();
        while !bytes.is_empty() {
            let phase = (self.offset % period as u64) as usize;
            let n = bytes.len().min(period - phase);
            if bytes[..n] != self.pattern[phase..phase + n] {
                return Err(format!("wrong body bytes near offset {}", self.offset));
            }
            self.offset += n as u64;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Consumes bytes of the body; returns how many belonged to it.
    fn feed(&mut self, input: &[u8]) -> Res<usize> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                St::Raw(left) => {
                    let n = (left as usize).min(input.len() - i);
                    self.data(&input[i..i + n])?;
                    i += n;
                    self.state = if left == n as u64 { St::Done } else { St::Raw(left - n as u64) };
                    continue;
                }
                St::Data(left) => {
                    let n = (left as usize).min(input.len() - i);
                    self.data(&input[i..i + n])?;
                    i += n;
                    self.state =
                        if left == n as u64 { St::DataCr } else { St::Data(left - n as u64) };
                    continue;
                }
                St::Done => return Ok(i),
                _ => {}
            }
            let b = input[i];
            i += 1;
            self.state = match (&self.state, b) {
                (St::Size(v, false), b'0'..=b'9') => St::Size(v * 16 + u64::from(b - b'0'), false),
                (St::Size(v, false), b'a'..=b'f') => {
                    St::Size(v * 16 + u64::from(b - b'a' + 10), false)
                }
                (St::Size(v, false), b'A'..=b'F') => {
                    St::Size(v * 16 + u64::from(b - b'A' + 10), false)
                }
                (St::Size(v, _), b';') => St::Size(*v, true),
                (St::Size(v, _), b'\r') => St::SizeLf(*v),
                (St::Size(v, true), _) => St::Size(*v, true),
                (St::SizeLf(0), b'\n') => St::Trailer(true),
                (St::SizeLf(v), b'\n') => St::Data(*v),
                (St::DataCr, b'\r') => St::DataLf,
                (St::DataLf, b'\n') => St::Size(0, false),
                (St::Trailer(true), b'\r') => St::TrailerLf(true),
                (St::Trailer(_), b'\r') => St::TrailerLf(false),
                (St::Trailer(_), _) => St::Trailer(false),
                (St::TrailerLf(true), b'\n') => St::Done,
                (St::TrailerLf(false), b'\n') => St::Trailer(true),
                _ => return Err(format!("bad chunked encoding near body offset {}", self.offset)),
            };
            if let St::Size(v, _) = self.state {
                if v > 1 << 40 {
                    return Err("chunk size too large".into());
                }
            }
        }
        Ok(i)
    }
}
