//! The WebSocket transport: one task per connection drives tungstenite over hyper's upgraded
//! IO, so pings are answered and closes noticed whatever the application is doing.
//!
//! Each wake-up reads every frame that is ready (up to a budget), takes every queued message,
//! feeds them all, and flushes once: one `write` for a whole batch.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use futures_sink::Sink;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;

use crate::event::Text;
use crate::message::{Piece, Pump};
use crate::shared::{Item, Queued, Shared};
use crate::{CloseInfo, Error, Event, Incoming};

/// Messages read per wake-up before the task lets others run.
const READ_BUDGET: usize = 64;

#[derive(Debug)]
struct NoUpgrade;

impl std::fmt::Display for NoUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request carries no hyper upgrade handle (was it served by hyper?)")
    }
}

impl std::error::Error for NoUpgrade {}

/// Waits for hyper's upgrade, then runs the connection until it is closed.
pub(crate) async fn drive(shared: Arc<Shared>, on_upgrade: Option<OnUpgrade>) {
    let upgraded = match on_upgrade {
        None => Err(Error::Upgrade(Arc::new(NoUpgrade))),
        Some(on_upgrade) => on_upgrade.await.map_err(|e| Error::Upgrade(Arc::new(e))),
    };
    let upgraded = match upgraded {
        // The handler refused the upgrade (the channel is closed already).
        Ok(_) if shared.is_closed() => return,
        Ok(upgraded) => upgraded,
        Err(error) => {
            tracing::debug!(%error, "websocket upgrade failed");
            shared.finish(CloseInfo::websocket(1006, ""), Some(error));
            return;
        }
    };
    let config = &shared.config;
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(config.read_buffer_size)
        .write_buffer_size(64 * 1024)
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.max_frame_size));
    let ws =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(ws_config))
            .await;
    shared.open();
    let timeout = shared.config.timeout;
    let mut conn = Conn {
        ws,
        batch: VecDeque::new(),
        current: None,
        fed_upto: 0,
        fed_bytes: 0,
        reported: 0,
        failures: Vec::new(),
        events: Vec::new(),
        needs_flush: false,
        paused: false,
        read_done: false,
        close_sent: None,
        peer_close: None,
        fatal: None,
        abnormal: false,
        terminate: false,
        close_timer: None,
        finished: false,
        idle: (!timeout.is_zero()).then(|| Idle {
            timeout,
            last: Instant::now(),
            sleep: Box::pin(tokio::time::sleep(timeout)),
        }),
        shared,
    };
    poll_fn(|cx| conn.poll(cx)).await;
}

struct Idle {
    timeout: Duration,
    last: Instant,
    sleep: Pin<Box<Sleep>>,
}

struct Conn {
    shared: Arc<Shared>,
    ws: WebSocketStream<TokioIo<Upgraded>>,
    /// Items taken from the shared queue, not yet started.
    batch: VecDeque<Queued>,
    /// The item being sent (sequence number, queued size, its pieces).
    current: Option<(u64, usize, Pump)>,
    /// Every item up to this one was fed to tungstenite; done once the flush completes.
    fed_upto: u64,
    fed_bytes: usize,
    reported: u64,
    failures: Vec<(u64, Error)>,
    /// Received events not yet handed to the stream.
    events: Vec<Event>,
    needs_flush: bool,
    /// The application has too much unread: stop reading until it catches up.
    paused: bool,
    /// tungstenite reported the end of the connection.
    read_done: bool,
    /// We sent a close frame with this code and reason.
    close_sent: Option<CloseInfo>,
    /// The peer sent a close frame with this code and reason.
    peer_close: Option<CloseInfo>,
    /// The error that made us fail the connection.
    fatal: Option<Error>,
    /// The connection broke without a closing handshake (1006).
    abnormal: bool,
    /// Stop as soon as the close frame we queued is flushed.
    terminate: bool,
    close_timer: Option<Pin<Box<Sleep>>>,
    idle: Option<Idle>,
    /// `Closed` was reported.
    finished: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if !self.finished {
            // The task was cancelled (runtime shutting down) or a panic unwinds through it:
            // still give the channel its `Closed` and fail what is queued.
            self.abnormal = true;
            self.finish();
        }
    }
}

impl Conn {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let mut again = false;
            if !self.read_done && !self.abnormal && !self.terminate {
                again |= self.poll_read(cx);
            }
            if !self.read_done && !self.abnormal {
                self.poll_write(cx);
            }
            if self.read_done || self.abnormal || (self.terminate && !self.needs_flush) {
                self.finish();
                return Poll::Ready(());
            }
            if let Some(timer) = &mut self.close_timer {
                if timer.as_mut().poll(cx).is_ready() {
                    tracing::debug!("peer did not answer our close frame in time; dropping");
                    self.finish();
                    return Poll::Ready(());
                }
            }
            if let Some(idle) = &mut self.idle {
                if self.close_sent.is_none() && idle.sleep.as_mut().poll(cx).is_ready() {
                    let deadline = idle.last + idle.timeout;
                    if Instant::now() >= deadline {
                        self.start_close(1000, "idle timeout".to_owned(), 0);
                        again = true;
                    } else {
                        idle.sleep.as_mut().reset(deadline);
                        again = true;
                    }
                }
            }
            if !again {
                return Poll::Pending;
            }
        }
    }

    fn touch(&mut self) {
        if let Some(idle) = &mut self.idle {
            idle.last = Instant::now();
        }
    }

    /// Reads what is ready. Returns true when it stopped for the budget (poll again).
    fn poll_read(&mut self, cx: &mut Context<'_>) -> bool {
        if self.paused && self.close_sent.is_none() {
            self.paused = self.shared.read_paused();
            if self.paused {
                return false;
            }
        }
        let mut budget_spent = false;
        let mut count = 0;
        loop {
            match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Ready(Some(Ok(message))) => {
                    count += 1;
                    match message {
                        WsMessage::Text(t) => {
                            self.events.push(Event::Message(Incoming::Text(Text(t))));
                        }
                        WsMessage::Binary(b) => {
                            self.events.push(Event::Message(Incoming::Binary(b)))
                        }
                        // tungstenite queued the pong; the flush below sends it.
                        WsMessage::Ping(_) => self.needs_flush = true,
                        WsMessage::Pong(_) | WsMessage::Frame(_) => {}
                        WsMessage::Close(frame) => {
                            // tungstenite queued the reply (an echo of the code).
                            self.needs_flush = true;
                            let info = match frame {
                                Some(f) => CloseInfo::websocket(f.code.into(), f.reason.as_str()),
                                None => CloseInfo::websocket(1005, ""),
                            };
                            self.peer_close.get_or_insert(info);
                        }
                    }
                    if count >= READ_BUDGET {
                        budget_spent = true;
                        break;
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.on_error(e);
                    break;
                }
                Poll::Ready(None) => {
                    self.read_done = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        if count > 0 {
            self.touch();
        }
        if !self.events.is_empty() {
            self.shared.push_events(&mut self.events);
            self.paused = self.shared.read_paused();
        }
        budget_spent && !self.paused
    }

    fn on_error(&mut self, error: WsError) {
        use tokio_tungstenite::tungstenite::error::ProtocolError;
        match error {
            WsError::ConnectionClosed | WsError::AlreadyClosed => self.read_done = true,
            WsError::Io(e) => {
                tracing::debug!(error = %e, "websocket connection lost");
                self.abnormal = true;
            }
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => self.abnormal = true,
            WsError::Protocol(p) => {
                let text = p.to_string();
                self.fail(1002, "protocol error", Error::Protocol(text));
            }
            WsError::Utf8(_) => self.fail(1007, "invalid utf-8", Error::InvalidUtf8),
            WsError::Capacity(c) => {
                self.fail(1009, "message too big", Error::TooLarge(c.to_string()));
            }
            other => {
                let text = other.to_string();
                self.fail(1011, "internal error", Error::Protocol(text));
            }
        }
    }

    /// Fails the connection (RFC 6455 §7.1.7): a close frame with `code`, then the end.
    fn fail(&mut self, code: u16, reason: &str, error: Error) {
        tracing::debug!(%error, code, "failing websocket connection");
        self.fatal = Some(error);
        self.terminate = true;
        if self.close_sent.is_none() {
            self.send_close(CloseInfo::websocket(code, reason));
        }
    }

    fn send_close(&mut self, info: CloseInfo) {
        let frame = CloseFrame {
            code: CloseCode::from(info.code.unwrap_or(1000)),
            reason: info.reason.clone().unwrap_or_default().into(),
        };
        // `start_send` of a close frame only buffers it (tungstenite's `close`); errors mean
        // the connection is already gone, which the flush reports.
        if let Err(e) = Pin::new(&mut self.ws).start_send(WsMessage::Close(Some(frame))) {
            if !matches!(e, WsError::ConnectionClosed | WsError::AlreadyClosed) {
                self.abnormal = !self.terminate;
            }
        }
        self.needs_flush = true;
        self.close_sent = Some(info);
    }

    fn start_close(&mut self, code: u16, reason: String, seq: u64) {
        if seq != 0 {
            self.fed_upto = seq;
        }
        if self.close_sent.is_some() || self.peer_close.is_some() {
            return;
        }
        self.send_close(CloseInfo::websocket(code, reason));
        self.close_timer = Some(Box::pin(tokio::time::sleep(self.shared.config.close_timeout)));
    }

    fn poll_write(&mut self, cx: &mut Context<'_>) {
        while self.close_sent.is_none() && self.peer_close.is_none() {
            let Some((seq, size, pump)) = &mut self.current else {
                if self.batch.is_empty() {
                    self.report();
                    self.shared.take_queue(&mut self.batch, cx);
                }
                match self.batch.pop_front() {
                    None => break,
                    Some(Queued { seq, item: Item::Close(code, reason), .. }) => {
                        self.start_close(code, reason, seq);
                    }
                    Some(Queued { seq, size, item: Item::Send(message) }) => {
                        match Pump::new(message) {
                            Ok(pump) => self.current = Some((seq, size, pump)),
                            Err(e) => {
                                self.failures.push((seq, e));
                                self.fed_upto = seq;
                                self.fed_bytes += size;
                            }
                        }
                    }
                }
                continue;
            };
            let (seq, size) = (*seq, *size);
            match Pin::new(&mut self.ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return self.on_write_error(e),
                Poll::Pending => break,
            }
            match pump.poll_next(cx) {
                Poll::Ready(Some(Ok(piece))) => {
                    let message = match piece {
                        Piece::Text(s) => WsMessage::Text(s.into()),
                        Piece::Binary(b) => WsMessage::Binary(b),
                    };
                    if let Err(e) = Pin::new(&mut self.ws).start_send(message) {
                        return self.on_write_error(e);
                    }
                    self.needs_flush = true;
                    self.touch();
                }
                Poll::Ready(Some(Err(e))) => {
                    self.failures.push((seq, e));
                    self.current = None;
                    self.fed_upto = seq;
                    self.fed_bytes += size;
                }
                Poll::Ready(None) => {
                    self.current = None;
                    self.fed_upto = seq;
                    self.fed_bytes += size;
                }
                Poll::Pending => break,
            }
        }
        if self.needs_flush {
            match Pin::new(&mut self.ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    self.needs_flush = false;
                    self.report();
                }
                Poll::Ready(Err(e)) => self.on_write_error(e),
                Poll::Pending => {}
            }
        } else {
            self.report();
        }
    }

    fn on_write_error(&mut self, error: WsError) {
        match error {
            WsError::ConnectionClosed | WsError::AlreadyClosed => self.read_done = true,
            other => {
                tracing::debug!(error = %other, "websocket write failed");
                self.abnormal = true;
            }
        }
        self.needs_flush = false;
    }

    /// Tells the senders how far the flushed items got.
    fn report(&mut self) {
        if self.fed_upto > self.reported || !self.failures.is_empty() {
            self.shared.finish_items(self.fed_upto, self.fed_bytes, &mut self.failures);
            self.fed_bytes = 0;
            self.reported = self.fed_upto;
        }
    }

    fn finish(&mut self) {
        self.finished = true;
        if !self.needs_flush && !self.abnormal {
            self.report();
        }
        let info = if self.abnormal && self.fatal.is_none() {
            CloseInfo::websocket(1006, "")
        } else if let Some(ours) = self.close_sent.take().filter(|_| {
            // A close frame we sent in answer to the peer's is not ours to report.
            self.fatal.is_some() || self.peer_close.is_none()
        }) {
            ours
        } else if let Some(theirs) = self.peer_close.take() {
            theirs
        } else {
            CloseInfo::websocket(1006, "")
        };
        tracing::debug!(code = ?info.code, reason = ?info.reason, "websocket closed");
        self.shared.finish(info, self.fatal.take());
    }
}
