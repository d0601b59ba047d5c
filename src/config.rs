//! Settings of a channel.

use std::time::Duration;

/// `put!(self.field = value)`: sets a setting, unless it has that value already (then the
/// settings, maybe shared, are not copied: see `Config::set`).
macro_rules! put {
    ($config:ident . $field:ident = $value:expr) => {{
        let value = $value;
        if $config.get().$field != value {
            $config.set().$field = value;
        }
    }};
}

/// The largest [`Config::read_buffer_size`].
const READ_BUFFER_MAX: usize = 16 << 20;

/// Settings of a channel: timeouts, limits and queue sizes. One value can serve every request.
///
/// Setters take and return the value, so settings chain:
///
/// ```
/// use std::time::Duration;
///
/// let config = webchan::Config::default()
///     .timeout(Duration::from_secs(30))
///     .max_message_size(1 << 20)
///     .queue_limit(256 * 1024);
/// assert_eq!(config.timeout_duration(), Duration::from_secs(30));
/// ```
///
/// A `Config` is a shared, reference-counted value: every channel made with it holds a
/// pointer to the same settings, not a copy of them. `Config::default()` is one value for the
/// whole process, so a handler that calls it for each request allocates nothing for it.
#[derive(Debug, Clone)]
#[must_use]
pub struct Config(std::sync::Arc<Settings>);

/// One value shared by every default `Config`: each channel keeps its `Config`, and a
/// `Config::default()` per request allocated 160 bytes that every idle HTTP stream kept
/// (before 2026-12-06; `scripts/bench.sh idlehttp`).
impl Default for Config {
    fn default() -> Self {
        static DEFAULT: std::sync::OnceLock<Config> = std::sync::OnceLock::new();
        DEFAULT.get_or_init(|| Self(std::sync::Arc::new(Settings::default()))).clone()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) timeout: Duration,
    pub(crate) close_timeout: Duration,
    pub(crate) queue_limit: usize,
    pub(crate) max_message_size: usize,
    pub(crate) max_frame_size: usize,
    pub(crate) read_buffer_size: usize,
    pub(crate) allowed_origins: Option<std::sync::Arc<[String]>>,
    pub(crate) protocols: Option<std::sync::Arc<[String]>>,
    pub(crate) keepalive: Option<(Duration, Duration)>,
    pub(crate) sse: crate::sse::Mode,
    pub(crate) sse_keepalive: Option<Duration>,
    pub(crate) shutdown: Option<crate::Shutdown>,
    pub(crate) permessage_deflate: bool,
    pub(crate) deflate_client_context: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            timeout: Duration::ZERO,
            close_timeout: Duration::from_secs(5),
            queue_limit: 1024 * 1024,
            max_message_size: 64 << 20,
            max_frame_size: 16 << 20,
            read_buffer_size: 4096,
            allowed_origins: None,
            protocols: None,
            keepalive: Some((Duration::from_secs(25), Duration::from_secs(20))),
            sse: crate::sse::Mode::Auto,
            sse_keepalive: Some(Duration::from_secs(15)),
            shutdown: None,
            permessage_deflate: false,
            deflate_client_context: true,
        }
    }
}

/// The longest duration a setting holds: longer ones are cut to this (30 years), so that a
/// deadline computed from one cannot overflow (`Duration::MAX` as "never" panicked in
/// `Instant + Duration` before 2026-12-05).
const LONGEST: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

pub(crate) fn bounded(duration: Duration) -> Duration {
    duration.min(LONGEST)
}

impl Config {
    /// The settings, to change them: copied first if other `Config`s share them. (Each setter
    /// changes nothing, and so copies nothing, when it is given the value already there.)
    fn set(&mut self) -> &mut Settings {
        std::sync::Arc::make_mut(&mut self.0)
    }

    /// Do both share one value of the settings?
    #[cfg(test)]
    pub(crate) fn shares_settings_with(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }

    /// The settings, for the crate's own use.
    pub(crate) fn get(&self) -> &Settings {
        &self.0
    }

    /// A WebSocket closes (with 1000, reason `"idle timeout"`) after this long without a
    /// message (text or binary) in either direction: pings and pongs do not count, so that
    /// keepalive does not hold an idle connection open; nor is it idle while messages wait
    /// unread because the application is behind (see [`queue_limit`](Self::queue_limit)), while
    /// a message comes in pieces (fragments, or a large frame read a slice at a time), or
    /// while a message is being written and the client takes its bytes. The server sees the
    /// client take bytes only as its socket's send buffer drains (writable again once about a
    /// third of it is free): with a timeout of a few seconds, a client that reads slowly can
    /// still be taken for idle. An HTTP stream ends this long after it opened,
    /// whatever the traffic, with a complete response (sends are refused from then on); once
    /// the client has then taken nothing for [`close_timeout`](Self::close_timeout) (a client
    /// that reads, however slowly, is left to finish), the stream is dropped:
    /// an [`Event::Error`](crate::Event::Error) (`TimedOut`), then `Closed`, and the sends not
    /// known to be written fail with [`Error::Closed`](crate::Error::Closed) (some of them may
    /// still sit in hyper's buffer and reach the client later: a conservative failure, never a
    /// false success). The connection itself is hyper's, which does not poll a body while the
    /// client takes nothing (its buffer full, or an HTTP/2 window of 0): it stays open until
    /// the client reads, and the client then gets what hyper holds, the whole response if the
    /// body had ended, else a response cut short. To bound such connections, put a timeout of
    /// your own around `serve_connection`. Zero means no timeout. The
    /// default is zero. Durations here and in the other settings are cut to 30 years, so
    /// `Duration::MAX` also means never.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        put!(self.timeout = bounded(timeout));
        self
    }

    /// The configured [`timeout`](Self::timeout).
    #[must_use]
    pub fn timeout_duration(&self) -> Duration {
        self.0.timeout
    }

    /// How long a WebSocket's closing handshake may last, whoever began it. A WebSocket closed
    /// by the server waits this long for the client's close frame; one that the client closed,
    /// or that the server failed for a protocol violation, waits this long for the client to
    /// take what is still to be written (what was queued before the close, then the close
    /// frame). Then the connection is dropped, and sends still queued fail with
    /// [`Error::Closed`](crate::Error::Closed). The default is 5 seconds.
    ///
    /// A close the application asks for is graceful: it goes out after what was queued before
    /// it, and this timer starts when the close frame joins the output (with at most ~64 KiB
    /// still ahead of it). Sends queued ahead of it that the client does not take wait as any
    /// send does: a client that reads slowly gets them all, and one that reads nothing at all
    /// is found dead by [`keepalive`](Self::keepalive) (by default ~45 s after it last sent
    /// anything), which ends the channel with 1006; with keepalive off, such a close waits
    /// until the client reads or its connection ends. (A timer from the close request would
    /// cut off slow readers: the server sees a client's reading only as its send buffer
    /// drains, in steps of a third of it.)
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        put!(self.close_timeout = bounded(timeout));
        self
    }

    /// The byte limit of each direction's queue (at least 1: 0 counts as 1). Outgoing: the
    /// [`Sink`](futures_sink::Sink) waits while this many bytes or more are queued and not
    /// yet written (a message is always taken by an empty queue), and [`Sender::try_send`](crate::Sender::try_send) fails with
    /// [`Error::QueueFull`](crate::Error::QueueFull). Incoming: a WebSocket stops reading
    /// from the client while the application has more than this many bytes of messages not
    /// yet taken from the stream, each counted with its slot in the queue (48 bytes), so empty
    /// ones count too (TCP then slows the client down); once the server sent its close frame,
    /// twice this (what the client sent before it saw the close, then its answer, still come
    /// in). A read holds at most this more and one message. Past a read's burst of unread
    /// messages (64), each further small one (up to 1 KiB) is copied into storage of its own
    /// size, so that what unread messages hold stays within about twice what they count, plus
    /// the 4 KiB blocks the first 64 may keep (a small received message otherwise shares a
    /// 4 KiB block: see [`Incoming`](crate::Incoming)). Files, readers and
    /// sequences count as one 16 KiB chunk. The default is 1 MiB.
    ///
    /// It is also how far a sender may run ahead of the socket, so it trades memory for
    /// throughput: a bulk HTTP stream of 64 KiB messages ran ~17 % faster with 4 MiB than with
    /// the default (benches/HISTORY.md in the repository), while a stream whose client reads
    /// slowly holds up to the limit.
    pub fn queue_limit(mut self, bytes: usize) -> Self {
        // At least 1: with 0 the queue was never under its limit, and every send after the
        // first waited forever, on an empty queue (before 2026-12-05).
        put!(self.queue_limit = bytes.max(1));
        self
    }

    /// Dead-peer detection for WebSockets: when nothing has been received for `interval`, send
    /// a ping; if nothing at all arrives within `timeout` after it, drop the connection and
    /// report `Closed` with 1006 and the reason `"keepalive timeout"`. Any frame from the peer
    /// counts as life, and so does a write that takes bytes after the socket was full (the
    /// peer's TCP acknowledged data, so the peer reads): a client reading a busy stream slowly,
    /// whose ping waits behind megabytes in the kernel's buffers, is not taken for dead. A
    /// zero `interval` turns keepalive off. While the server does not read because the application is behind (see
    /// [`queue_limit`](Self::queue_limit)), the peer is not held silent: what it sent waits
    /// unread, and a dead peer is found once reading resumes. Pings and pongs do not count as
    /// traffic for the idle [`timeout`](Self::timeout). The default is a ping after 25 s of silence and 20 s to
    /// answer (a peer behind a NAT or a proxy that drops quiet connections after 30-60 s stays
    /// reachable); `None` turns it off.
    ///
    /// The silences are measured by one thread for the whole process (`webchan-keepalive`,
    /// started with the first WebSocket that has keepalive on, asleep while there is none),
    /// not by a timer in your runtime: a timer there would make every park of the runtime a
    /// timed wait, which costs each round trip of a quiet connection. It looks at every
    /// connection every eighth of the shortest interval or timeout in use (at most every 5
    /// ms, at least once a second), so a ping goes out between `interval` and `interval`
    /// plus one such step after the last frame, and the connection is dropped `timeout`
    /// (give or take a step) after the ping was due. If that thread cannot be started,
    /// keepalive is off and a warning is logged. That thread keeps real time: a test that
    /// pauses tokio's clock (`tokio::time::pause`) and advances it fires the timers above (the
    /// idle [`timeout`](Self::timeout), [`close_timeout`](Self::close_timeout), an HTTP
    /// stream's timeout, [`sse_keepalive`](Self::sse_keepalive)) but never a keepalive ping.
    ///
    /// The same thread wakes a connection's task when a receiver that reads large messages
    /// for itself was woken for the socket and has not read (see [`Receiver`](crate::Receiver)):
    /// with keepalive on, the socket's readiness wakes that receiver alone, which saves a wake
    /// and a poll of the connection's task per large message.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let config = webchan::Config::default()
    ///     .keepalive(Some((Duration::from_secs(10), Duration::from_secs(5))));
    /// # let _ = config;
    /// ```
    pub fn keepalive(mut self, keepalive: Option<(Duration, Duration)>) -> Self {
        // A zero interval would ping a quiet peer at every sweep (99 pings a second, before
        // stop 27, 2026-12-05): it means none, as for `timeout` and `sse_keepalive`.
        let keepalive = keepalive.filter(|(every, _)| !every.is_zero());
        put!(self.keepalive = keepalive.map(|(every, wait)| (bounded(every), bounded(wait))));
        self
    }

    /// When an HTTP stream is a Server-Sent Events stream (see [`crate::sse`]). The default is
    /// [`Mode::Auto`](crate::sse::Mode::Auto): when the request accepts `text/event-stream`.
    pub fn sse(mut self, mode: crate::sse::Mode) -> Self {
        put!(self.sse = mode);
        self
    }

    /// On an SSE stream, send a comment line (`:`) after this long without an event, so that
    /// proxies keep the connection. The default is 15 seconds; `None` (or zero) sends none.
    pub fn sse_keepalive(mut self, period: Option<Duration>) -> Self {
        // Zero would be a comment at every tick of the timer (~1,000 a second, before
        // 2026-12-05): it means none, as for `timeout`.
        put!(self.sse_keepalive = period.filter(|p| !p.is_zero()).map(bounded));
        self
    }

    /// Register every channel made with this configuration in `shutdown`, so that
    /// [`Shutdown::shutdown`](crate::Shutdown::shutdown) can close them all. The default is
    /// none.
    pub fn shutdown(mut self, shutdown: &crate::Shutdown) -> Self {
        self.set().shutdown = Some(shutdown.clone());
        self
    }

    /// The configured [`queue_limit`](Self::queue_limit), in bytes.
    #[must_use]
    pub fn queue_limit_bytes(&self) -> usize {
        self.0.queue_limit
    }

    /// The largest WebSocket message accepted from a client; a larger one closes the
    /// connection with 1009, as soon as a frame's header shows it would pass the limit (before
    /// its payload is read). The default is 64 MiB. A compressed message
    /// ([`permessage_deflate`](Self::permessage_deflate)) may take an eighth more (and 64
    /// bytes) on the wire, what DEFLATE adds to data it cannot shrink, and is held to the limit
    /// once inflated.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        put!(self.max_message_size = bytes);
        self
    }

    /// The largest WebSocket data frame accepted from a client; a larger one closes the
    /// connection with 1009, as soon as its header is read. Control frames (pings, pongs,
    /// closes: 125 bytes at most by RFC 6455) are not held to it. The server reads a frame
    /// into room it reserves when the header announces it, at most 16 MiB ahead of the bytes
    /// that came (address space: pages are touched only as the bytes arrive), so a client
    /// announcing a huge frame gets no more. The default is 16 MiB. A frame of a compressed
    /// message may take an eighth more (and 64 bytes), as for
    /// [`max_message_size`](Self::max_message_size).
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        put!(self.max_frame_size = bytes);
        self
    }

    /// The WebSocket read buffer. Small keeps idle connections cheap; larger can speed up
    /// big messages a little. At least 256 bytes and at most 16 MiB (values outside are taken
    /// as those: before stop 28, 2026-12-05, `usize::MAX` made every connection's task panic
    /// and 1 TiB aborted the process). The default is 4 KiB.
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        put!(self.read_buffer_size = bytes.clamp(256, READ_BUFFER_MAX));
        self
    }

    /// Compress WebSocket messages with permessage-deflate (RFC 7692) when the client offers
    /// it, as browsers, Node's `ws` and Python's `websockets` do. The default is off: a
    /// connection that agreed to it may hold an inflater of ~47 KiB while idle (see below and
    /// [`deflate_client_context`](Self::deflate_client_context)), against ~3.5 KiB for an idle
    /// connection without it.
    ///
    /// The server accepts the first offer it can honour and always answers with
    /// `server_no_context_takeover`: each message it sends is compressed on its own, by one
    /// compressor per thread (~390 KiB with its buffers) that every connection shares.
    /// Messages under 128 bytes, and those that compression would not make smaller, go out
    /// uncompressed (a message's compression is its own, RFC 7692 §6). Under 1 KiB, webchan
    /// compresses with an encoder of its own (fixed Huffman codes, no state: ~1.2 µs for 300
    /// bytes of JSON on this project's machine); from 1 KiB on, with zlib (flate2's zlib-rs
    /// backend) at its fastest level, whose reset for each message costs ~3.4 µs whatever the
    /// size (varied JSON: ~4.4 µs for 1 KiB in all, ~19 µs for 16 KiB, compressed to ~32 %).
    /// A client that keeps its own context from message to message (the default of every
    /// client: it did not offer `client_no_context_takeover`) gets an inflater of its own at
    /// its first compressed message, kept while the connection lives, unless
    /// [`deflate_client_context`](Self::deflate_client_context) is off; one that offered
    /// `client_no_context_takeover` shares the thread's. A client that limits the server's
    /// window (`server_max_window_bits` under 15) is answered with its limit and gets every
    /// message uncompressed. Offers with a parameter RFC 7692 does not define, an invalid
    /// value or a parameter twice are declined (the next offer is tried; with none left, the
    /// connection goes on uncompressed); a `Sec-WebSocket-Extensions` header that is no
    /// extension list gets `400 Bad Request`.
    ///
    /// A compressed message counts against [`max_message_size`](Self::max_message_size) as it
    /// comes (its frames, which may take an eighth more: what DEFLATE adds to data it cannot
    /// shrink, so that a message at the limit is not refused because its client compressed it)
    /// and once inflated: a message that inflates past the limit closes the connection with
    /// 1009, as an oversized one does; data that does not inflate (such as a reference back
    /// past what the connection's inflater has seen: before the client's first message, or
    /// into an earlier one when the client is not to keep its context), or does not end
    /// between two DEFLATE blocks as the sync flush leaves it (a message cut short, or sent
    /// with the four bytes RFC 7692 §7.2.1 strips), closes it with 1002; a compressed message
    /// with no bytes at all is taken for an empty one. DEFLATE shrinks a message up to
    /// ~1,000 times: with compression on, a client can make the server inflate (and hold,
    /// until the application has read it) a message of the whole limit, 64 MiB by default, for
    /// ~64 KiB on the wire, and spend the time to inflate it on the task that reads it. Set the
    /// limit to what your messages need. Compression happens when a message is written, on the
    /// task that writes it; the queue limit counts messages as they were sent, uncompressed. HTTP streams are
    /// not affected (leave compression to a layer in front, such as tower-http's).
    ///
    /// # Examples
    ///
    /// ```
    /// let config = webchan::Config::default().permessage_deflate(true);
    /// # let _ = config;
    /// ```
    pub fn permessage_deflate(mut self, on: bool) -> Self {
        put!(self.permessage_deflate = on);
        self
    }

    /// With [`permessage_deflate`](Self::permessage_deflate) on: whether a client may keep its
    /// compression context from message to message ("context takeover", RFC 7692 §7.1.1.2).
    /// The default, `true`, lets it, as every client asks: what a client sends then compresses
    /// better (a JSON key seen in an earlier message costs a few bits), and the connection
    /// holds an inflater of its own (~47 KiB) from the client's first compressed message on,
    /// for as long as it lives.
    ///
    /// `false` answers every offer with `client_no_context_takeover`, which RFC 7692 lets a
    /// server add to any offer and every client must honour: each client compresses each
    /// message on its own, and every connection on a thread shares that thread's inflater, so
    /// that a compressed connection holds no more memory while idle than a plain one's ~4 KiB
    /// (~7.5 KiB measured, against ~54 KiB with the default). The price is the ratio of what
    /// clients send: short messages that resemble each other (chat lines, JSON events) shrink
    /// less, as each carries its own dictionary. What the server sends is unaffected (webchan
    /// compresses each of its messages on its own whatever this says). A client that keeps its
    /// context anyway has its first message that refers back to an earlier one closed with 1002.
    ///
    /// # Examples
    ///
    /// ```
    /// // Many mostly idle connections: compression without ~47 KiB held by each.
    /// let config = webchan::Config::default()
    ///     .permessage_deflate(true)
    ///     .deflate_client_context(false);
    /// # let _ = config;
    /// ```
    pub fn deflate_client_context(mut self, keep: bool) -> Self {
        put!(self.deflate_client_context = keep);
        self
    }

    /// The WebSocket subprotocols this server speaks, in its order of preference: an upgrade
    /// that offers some of them (`Sec-WebSocket-Protocol`, e.g. a browser's `new
    /// WebSocket(url, ["v2.chat", "v1.chat"])`) is answered with the first of this list that it
    /// offered (RFC 6455 §4.2.2; names compared exactly, as RFC 6455 §4.1 makes them tokens), and
    /// the channel's [`protocol`](crate::Channel::protocol) says which. An upgrade that offers
    /// none of them, or none at all, is accepted without a subprotocol (`protocol()` is
    /// `None`): to refuse it, answer with a status of your own instead of the
    /// [`Reply`](crate::Reply) (a client that offered some may refuse a `101` that picks none,
    /// as Node's `ws` does). Unset (the default), webchan picks none: set the header on the
    /// `Reply` yourself if you pick one, not both. HTTP streams are not affected.
    ///
    /// # Panics
    ///
    /// If a name is not a token (RFC 6455 §4.1: visible ASCII, no separators such as
    /// `,;"()/[]{}` or spaces), which no client could offer.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = webchan::Config::default().protocols(["graphql-transport-ws", "graphql-ws"]);
    /// # let _ = config;
    /// ```
    pub fn protocols<I, S>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let protocols: std::sync::Arc<[String]> = protocols.into_iter().map(Into::into).collect();
        for name in &*protocols {
            assert!(
                !name.is_empty() && name.bytes().all(crate::negotiate::is_tchar),
                "webchan::Config::protocols: {name:?} is not a token (RFC 6455 §4.1)"
            );
        }
        self.set().protocols = Some(protocols);
        self
    }

    /// Accept WebSocket upgrades only from pages of these origins (e.g.
    /// `"https://example.com"`, compared case-insensitively with the request's `Origin`
    /// header); others get `403 Forbidden`. This guards against cross-site WebSocket
    /// hijacking: browsers send cookies with a cross-site upgrade request and the same-origin
    /// policy does not apply to WebSockets. Requests without an `Origin` header (non-browser
    /// clients) are accepted; two `Origin` headers, or one that is not visible ASCII, are not.
    /// An entry is compared as a browser writes the header, `scheme://host`, with `:port` only
    /// when it is not the scheme's default (so `https://example.com:443` never matches: write
    /// `https://example.com`); whitespace around an entry and a trailing `/` are dropped. There
    /// are no wildcards: `"*"` matches nothing (leave the list unset to accept every origin).
    /// HTTP streams are not affected (browsers enforce CORS on them).
    /// The default is to accept every origin.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = webchan::Config::default().allowed_origins(["https://chat.example.com"]);
    /// # let _ = config;
    /// ```
    pub fn allowed_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        // Written as an `Origin` header is: no whitespace around it, no path (so no trailing
        // `/`). Before stop 28 (2026-12-05) such entries never matched.
        // An entry left empty is dropped: it would match an empty `Origin`, which is none.
        let normal = |origin: String| origin.trim().trim_end_matches('/').trim().to_owned();
        self.set().allowed_origins =
            Some(origins.into_iter().map(|o| normal(o.into())).filter(|o| !o.is_empty()).collect());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_share_one_value_and_a_setter_copies_it() {
        let (a, b) = (Config::default(), Config::default());
        assert!(std::sync::Arc::ptr_eq(&a.0, &b.0), "each default allocated its own settings");
        let changed = Config::default().queue_limit(7);
        assert!(!std::sync::Arc::ptr_eq(&changed.0, &a.0));
        assert_eq!(changed.get().queue_limit, 7);
        assert_eq!(Config::default().get().queue_limit, 1024 * 1024, "the shared default moved");
        // A setter given the value already there copies nothing.
        let same = Config::default().queue_limit(1024 * 1024).timeout(Duration::ZERO);
        assert!(std::sync::Arc::ptr_eq(&same.0, &a.0), "an unchanged setting copied the settings");
        let again = changed.clone().queue_limit(7).sse(crate::sse::Mode::Auto);
        assert!(std::sync::Arc::ptr_eq(&again.0, &changed.0));
    }
}
