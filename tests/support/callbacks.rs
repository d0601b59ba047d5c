//! The recording harness of the compat tests (tests/compat.rs, tests/compat_spec.rs): every
//! callback sends what it saw into a channel, in the order it was called.
#![allow(unused_macros, unused_imports)]

use std::time::Duration;

use tokio::sync::mpsc;
use webchan::compat::{Handle, Options, SendOptions};
use webchan::{CloseInfo, Error, Incoming, Kind};

/// What the callbacks saw, in the order they were called.
#[derive(Debug)]
pub enum Ev {
    Open(Kind),
    Msg(Incoming),
    Err(Error),
    /// on_close, with `is_open()` and the result of a send made inside it.
    Close {
        info: CloseInfo,
        open: bool,
        send: Option<bool>,
    },
    /// A send's on_success, by tag.
    Ok(String),
    /// A send's on_error, by tag.
    SendErr(String, Error),
    Note(String),
    Handle(Handle),
}

pub type Tx = mpsc::UnboundedSender<Ev>;
pub type Rx = mpsc::UnboundedReceiver<Ev>;

pub fn evs() -> (Tx, Rx) {
    mpsc::unbounded_channel()
}

/// The next callback; panics after 10 s.
pub async fn ev(rx: &mut Rx) -> Ev {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no callback within 10 s")
        .expect("callback channel ended")
}

/// No callback within `ms` milliseconds.
pub async fn quiet(rx: &mut Rx, ms: u64) {
    if let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(ms), rx.recv()).await {
        panic!("unexpected callback: {e:?}");
    }
}

macro_rules! expect_cb {
    ($rx:expr, $pat:pat $(if $guard:expr)? => $out:expr) => {
        match $crate::support::callbacks::ev($rx).await {
            $pat $(if $guard)? => $out,
            other => panic!("expected {}, got {other:?}", stringify!($pat)),
        }
    };
    ($rx:expr, $pat:pat $(if $guard:expr)?) => {
        $crate::support::callbacks::expect_cb!($rx, $pat $(if $guard)? => ())
    };
}
pub(crate) use expect_cb;

/// Waits for on_close; checks the channel was closed when it ran.
pub async fn expect_close(rx: &mut Rx) -> CloseInfo {
    expect_cb!(rx, Ev::Close { info, open, send } => {
        assert!(!open, "is_open() must be false in on_close");
        assert_eq!(send, Some(false), "a send in on_close must return Ok(false)");
        info
    })
}

/// Options whose callbacks record what they see.
pub fn recording(tx: &Tx) -> Options {
    let (t1, t2, t3, t4) = (tx.clone(), tx.clone(), tx.clone(), tx.clone());
    Options::new()
        .on_open(move |h| {
            let _ = t1.send(Ev::Open(h.kind()));
        })
        .on_message(move |_, m| {
            let _ = t2.send(Ev::Msg(m));
        })
        .on_error(move |_, e| {
            let _ = t3.send(Ev::Err(e));
        })
        .on_close(move |h, info| {
            let send = h.send("too late", SendOptions::new()).ok();
            let _ = t4.send(Ev::Close { info, open: h.is_open(), send });
        })
}

/// Send options that record the outcome under `tag`.
pub fn tracked(tx: &Tx, tag: impl Into<String>) -> SendOptions {
    let tag = tag.into();
    let (a, b, tag2) = (tx.clone(), tx.clone(), tag.clone());
    SendOptions::new()
        .on_success(move || {
            let _ = a.send(Ev::Ok(tag));
        })
        .on_error(move |e| {
            let _ = b.send(Ev::SendErr(tag2, e));
        })
}

/// A note of the test's own, in the same order as the callbacks.
pub fn note(tx: &Tx, s: impl Into<String>) {
    let _ = tx.send(Ev::Note(s.into()));
}
