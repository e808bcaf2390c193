//! Event sinks: every consumer of [`TrackEvent`]s is an [`EventSink`] (stdout JSON lines, the
//! SQLite events table, MQTT, an HTTP webhook). Each sink runs on its own thread behind a bounded
//! queue ([`SinkRunner`]): the tracker hands events over with `try_send`, so a slow or failing sink
//! never blocks capture; a full queue drops the event and counts it. A failed delivery is retried
//! with backoff; an event that still fails is dropped and counted.

use crate::event::TrackEvent;

/// A consumer of track events.
pub trait EventSink: Send {
    /// Short name for logs and counters (`stdout`, `sqlite`, `mqtt`, `webhook`).
    fn name(&self) -> &str;
    /// Delivers one event. A [`SinkError::Transient`] is retried with backoff; a
    /// [`SinkError::Permanent`] drops the event at once.
    fn deliver(&mut self, event: &TrackEvent) -> Result<(), SinkError>;
    /// Called once after the last event, before the sink is dropped: write out anything buffered.
    fn flush(&mut self) -> Result<(), SinkError>;
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying: a broker or server down, a timeout, a 5xx.
    #[error("{sink}: {message}")]
    Transient { sink: &'static str, message: String },
    /// Retrying cannot help: a 4xx answer, an event the receiver refuses, a closed stdout.
    #[error("{sink}: {message} (not retried)")]
    Permanent { sink: &'static str, message: String },
    /// The sink could not be built from its configuration (checked at start).
    #[error("{sink}: {message}")]
    Config { sink: &'static str, message: String },
}
