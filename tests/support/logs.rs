//! A `tracing` subscriber that records what is logged, for tests that check it: every event at
//! every level (its target, text and spans), the names of the spans closed, and the text a
//! `fmt` layer writes (ANSI off, as in a log file). Included with `#[path]` by the tests that
//! use it (`logging.rs`, `fix_review_logging.rs`).
#![allow(dead_code, unreachable_pub)]

use std::fmt::Write as _;
use std::io;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::Level;
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::Layer;

/// One event.
#[derive(Clone, Debug)]
pub struct Rec {
    pub level: Level,
    pub target: String,
    /// The message and fields, `name=value`, each value as `fmt` would render it.
    pub text: String,
    /// The names of the spans the event is in, innermost first.
    pub spans: Vec<String>,
}

/// What was logged.
#[derive(Clone, Default)]
pub struct Log {
    events: Arc<Mutex<Vec<Rec>>>,
    closed: Arc<Mutex<Vec<String>>>,
    fmt_out: Arc<Mutex<Vec<u8>>>,
}

impl Log {
    pub fn all(&self) -> Vec<Rec> {
        self.events.lock().unwrap().clone()
    }

    /// webchan's own events.
    pub fn webchan(&self) -> Vec<Rec> {
        self.all().into_iter().filter(|r| r.target.starts_with("webchan")).collect()
    }

    pub fn mark(&self) -> usize {
        self.webchan().len()
    }

    /// webchan's events since `mark`.
    pub fn since(&self, mark: usize) -> Vec<Rec> {
        self.webchan().split_off(mark)
    }

    /// What the `fmt` layer wrote.
    pub fn fmt_text(&self) -> String {
        String::from_utf8_lossy(&self.fmt_out.lock().unwrap()).into_owned()
    }

    /// How many spans of this name were closed.
    pub fn closed(&self, name: &str) -> usize {
        self.closed.lock().unwrap().iter().filter(|n| *n == name).count()
    }
}

struct Recorder(Log);

struct V<'a>(&'a mut String);

impl Visit for V<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl<S> Layer<S> for Recorder
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: LayerContext<'_, S>) {
        let mut text = String::new();
        event.record(&mut V(&mut text));
        let spans = ctx
            .event_scope(event)
            .map(|scope| scope.map(|s| s.name().to_owned()).collect())
            .unwrap_or_default();
        self.0.events.lock().unwrap().push(Rec {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            text,
            spans,
        });
    }

    fn on_close(&self, id: tracing::span::Id, ctx: LayerContext<'_, S>) {
        if let Some(span) = ctx.span(&id) {
            self.0.closed.lock().unwrap().push(span.name().to_owned());
        }
    }
}

#[derive(Clone)]
struct BufWriter(Arc<Mutex<Vec<u8>>>);

impl io::Write for BufWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Installs the recorder for this thread (a current-thread runtime's tasks run under it).
pub fn install() -> (Log, tracing::subscriber::DefaultGuard) {
    let log = Log::default();
    let out = Arc::clone(&log.fmt_out);
    let subscriber = tracing_subscriber::registry().with(Recorder(log.clone())).with(
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || BufWriter(Arc::clone(&out)))
            .with_filter(tracing_subscriber::filter::LevelFilter::TRACE),
    );
    let guard = tracing::subscriber::set_default(subscriber);
    (log, guard)
}

/// The events at `level` or more severe.
pub fn at_least(events: &[Rec], level: Level) -> Vec<Rec> {
    // tracing's Level ordering: TRACE > DEBUG > INFO > WARN > ERROR ("more verbose is greater").
    events.iter().filter(|r| r.level <= level).cloned().collect()
}
