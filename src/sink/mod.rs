//! Event sinks: every consumer of [`TrackEvent`]s is an [`EventSink`] (stdout JSON lines, the
//! SQLite events table, MQTT, an HTTP webhook). [`Sinks`] fans each event out to every sink; each
//! sink runs on its own named thread (`sink-<name>`) behind a bounded queue: the tracker hands
//! events over with `try_send`, so a slow or failing sink never blocks capture; a full queue drops
//! the event for that sink and counts it. A failed delivery is retried with backoff; an event that
//! still fails is dropped and counted. [`Sinks::close`] drains the queues within a deadline.

pub mod hass;
pub mod mqtt;
mod runner;
pub mod sqlite;
pub mod stdout;
pub mod webhook;

use crate::config::SinksConfig;
use crate::event::TrackEvent;
use crate::stats::StageStats;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use runner::{Queued, RetryPolicy, Shutdown};
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use mqtt::{MqttLink, MqttSink};
pub use sqlite::SqliteSink;
pub use stdout::StdoutSink;
pub use webhook::WebhookSink;

/// A consumer of track events.
pub trait EventSink: Send {
    /// Short name for logs and counters (`stdout`, `sqlite`, `mqtt`, `webhook`).
    fn name(&self) -> &str;
    /// Delivers one event. A [`SinkError::Transient`] is retried with backoff; a
    /// [`SinkError::Permanent`] drops the event at once.
    fn deliver(&mut self, event: &TrackEvent) -> Result<(), SinkError>;
    /// Called once after the last event, before the sink is dropped: write out anything buffered.
    fn flush(&mut self) -> Result<(), SinkError>;
    /// Events that [`deliver`](EventSink::deliver) accepted but that had still not reached their
    /// destination when [`flush`](EventSink::flush) returned (MQTT messages the broker never
    /// acknowledged). Read once after `flush`; they are counted as dropped.
    fn undelivered(&self) -> u64 {
        0
    }
}

/// Why a sink could not be built or could not deliver an event.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying: a broker or server down, a timeout, a 5xx.
    #[error("{sink}: {message}")]
    Transient {
        /// The sink's name.
        sink: &'static str,
        /// What went wrong, for the log.
        message: String,
    },
    /// Retrying cannot help: a 4xx answer, an event the receiver refuses, a closed stdout.
    #[error("{sink}: {message} (not retried)")]
    Permanent {
        /// The sink's name.
        sink: &'static str,
        /// What went wrong, for the log.
        message: String,
    },
    /// The sink could not be built from its configuration (checked at start).
    #[error("{sink}: {message}")]
    Config {
        /// The sink's name.
        sink: &'static str,
        /// What went wrong, for the log.
        message: String,
    },
}

/// How many events one sink delivered and dropped, from [`Sinks::close`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SinkSummary {
    /// The sink's name (`mqtt`, ...).
    pub name: String,
    /// Events that reached their destination.
    pub delivered: u64,
    /// Events lost: a full queue, failed deliveries, the shutdown deadline, unacknowledged at close.
    pub dropped: u64,
    /// False when the sink's thread was still busy (a blocked delivery) at the deadline and was
    /// left behind; the event it was delivering is in neither count.
    pub finished: bool,
}

/// One sink's end of the fan-out: its queue, its counters and its thread.
struct Lane {
    name: String,
    tx: Sender<Queued>,
    /// A second handle on the queue, so [`Sinks::close`] can count what a stuck runner left.
    rx: Receiver<Queued>,
    stats: Arc<StageStats>,
    thread: JoinHandle<u64>,
}

/// Every configured sink, each behind its own bounded queue and thread.
pub struct Sinks {
    lanes: Vec<Lane>,
    shutdown: Arc<Shutdown>,
}

/// How long [`Sinks::close`] waits past its deadline for sinks to finish `flush`.
const FLUSH_GRACE: Duration = Duration::from_secs(3);

impl Sinks {
    /// Builds every enabled sink (stdout when `config.stdout`, then sqlite, mqtt and webhook when
    /// configured) and starts their threads. `gallery` is the gallery database the SQLite sink
    /// writes its `events` table into (created, mode 0600, when missing).
    pub fn start(config: &SinksConfig, gallery: &Path) -> Result<Self, SinkError> {
        Self::start_announcing(config, gallery, &[])
    }

    /// [`Sinks::start`], telling the sinks which cameras will send events (the MQTT sink's Home
    /// Assistant discovery announces their entities before their first event; the gallery's
    /// identities are read from `gallery`).
    pub fn start_announcing(config: &SinksConfig, gallery: &Path, cameras: &[String]) -> Result<Self, SinkError> {
        let mut sinks: Vec<Box<dyn EventSink>> = Vec::new();
        if config.stdout {
            sinks.push(Box::new(StdoutSink::new()));
        }
        if let Some(c) = &config.sqlite {
            sinks.push(Box::new(SqliteSink::open(gallery, c)?));
        }
        if let Some(c) = &config.mqtt {
            let identities: Vec<String> = if c.discovery && gallery.exists() {
                crate::gallery::Gallery::open(gallery, crate::gallery::OpenMode::MustExist, None)
                    .and_then(|g| g.list())
                    .map(|list| list.into_iter().map(|i| i.name).collect())
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            sinks.push(Box::new(MqttSink::connect_announcing(c, cameras, &identities)?));
        }
        if let Some(c) = &config.webhook {
            sinks.push(Box::new(WebhookSink::new(c)?));
        }
        Self::from_sinks(sinks, config)
    }

    /// Starts one thread per already built sink, with the queue size and retry policy of `config`
    /// (its per-sink sections are ignored).
    pub fn from_sinks(sinks: Vec<Box<dyn EventSink>>, config: &SinksConfig) -> Result<Self, SinkError> {
        let shutdown = Arc::new(Shutdown::default());
        let policy = RetryPolicy {
            retries: config.retries,
            backoff: Duration::from_millis(config.retry_backoff_ms.max(1)),
            max_backoff: Duration::from_secs(30),
        };
        let mut lanes = Vec::with_capacity(sinks.len());
        for sink in sinks {
            let name = sink.name().to_owned();
            let stats = Arc::new(StageStats::new(format!("sink-{name}")));
            let (tx, rx) = crossbeam_channel::bounded(config.queue.max(1));
            let thread = {
                let (rx, stats, shutdown) = (rx.clone(), stats.clone(), shutdown.clone());
                std::thread::Builder::new()
                    .name(format!("sink-{name}"))
                    .spawn(move || runner::run(sink, rx, &stats, &shutdown, policy))
                    .map_err(|e| SinkError::Config { sink: "sinks", message: format!("cannot start a thread: {e}") })?
            };
            lanes.push(Lane { name, tx, rx, stats, thread });
        }
        Ok(Self { lanes, shutdown })
    }

    /// Hands `event` to every sink without ever blocking: a sink whose queue is full drops it
    /// (counted in that sink's `dropped`).
    pub fn publish(&self, event: TrackEvent) {
        let queued = Queued { event: Arc::new(event), at: Instant::now() };
        for lane in &self.lanes {
            lane.stats.count_in();
            match lane.tx.try_send(queued.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => lane.stats.count_dropped(),
            }
        }
    }

    /// The counters of every sink (named `sink-<name>`), in start order: `in` events offered by
    /// [`publish`](Sinks::publish), `out` delivered (MQTT: accepted by the client), `dropped`
    /// (full queue, failed, past the deadline, unacknowledged at close), `errors` failed attempts,
    /// and the latency from `publish` to delivery.
    pub fn stats(&self) -> Vec<Arc<StageStats>> {
        self.lanes.iter().map(|l| l.stats.clone()).collect()
    }

    /// The names of the running sinks, in start order.
    pub fn names(&self) -> Vec<&str> {
        self.lanes.iter().map(|l| l.name.as_str()).collect()
    }

    /// Stops accepting events and lets every sink deliver what is queued, flush and stop. Past
    /// `deadline` a sink gives up: a retry in progress ends at once, and events still queued are
    /// dropped and counted. A sink stuck inside a delivery is left behind (`finished: false`).
    pub fn close(self, deadline: Duration) -> Vec<SinkSummary> {
        let at = Instant::now() + deadline;
        self.shutdown.set_deadline(at);
        let mut summaries = Vec::with_capacity(self.lanes.len());
        let lanes: Vec<_> = self
            .lanes
            .into_iter()
            .map(|l| {
                drop(l.tx);
                (l.name, l.rx, l.stats, l.thread)
            })
            .collect();
        for (name, rx, stats, thread) in lanes {
            while !thread.is_finished() && Instant::now() < at + FLUSH_GRACE {
                std::thread::sleep(Duration::from_millis(5));
            }
            let (undelivered, finished) = if thread.is_finished() {
                match thread.join() {
                    Ok(undelivered) => (undelivered, true),
                    Err(_) => {
                        log::error!("sink {name}: its thread panicked");
                        (0, true)
                    }
                }
            } else {
                log::warn!("sink {name}: still busy delivering at the shutdown deadline; left behind");
                (0, false)
            };
            // What a stuck (or panicked) runner never took from its queue.
            while rx.try_recv().is_ok() {
                stats.count_dropped();
            }
            let snap = stats.snapshot();
            summaries.push(SinkSummary {
                name,
                delivered: snap.output.saturating_sub(undelivered),
                dropped: snap.dropped,
                finished,
            });
        }
        summaries
    }
}

/// Logs a sink's warnings at most once per interval, saying how many were held back in between,
/// so a dead broker or a closed pipe cannot flood the journal.
pub(crate) struct WarnLimiter {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl WarnLimiter {
    /// A limiter letting one warning through per `every`.
    pub(crate) fn new(every: Duration) -> Self {
        Self { every, last: None, suppressed: 0 }
    }

    /// Logs `message` for sink `name` unless another warning was logged within the interval.
    pub(crate) fn warn(&mut self, name: &str, message: &dyn std::fmt::Display) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < self.every) {
            self.suppressed += 1;
            return;
        }
        if self.suppressed > 0 {
            log::warn!("sink {name}: {message} ({} similar warnings held back)", self.suppressed);
        } else {
            log::warn!("sink {name}: {message}");
        }
        self.last = Some(now);
        self.suppressed = 0;
    }
}

#[cfg(test)]
pub(crate) mod tests;
