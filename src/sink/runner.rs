//! The per-sink thread: takes events from the sink's queue in order, delivers each with retries
//! and exponential backoff, counts what happened, and on shutdown drains, flushes and stops. The
//! shutdown deadline is shared with [`super::Sinks::close`] so a backoff sleep ends the moment the
//! deadline passes instead of holding shutdown for minutes.

use super::{EventSink, SinkError, WarnLimiter};
use crate::event::TrackEvent;
use crate::stats::StageStats;
use crossbeam_channel::Receiver;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// An event on its way to one sink, with the time it was published (for the latency histogram).
#[derive(Clone)]
pub(super) struct Queued {
    pub(super) event: Arc<TrackEvent>,
    pub(super) at: Instant,
}

/// Retries after a transient failure: `retries` more attempts, sleeping `backoff`, doubling up to
/// `max_backoff`.
#[derive(Debug, Clone, Copy)]
pub(super) struct RetryPolicy {
    pub(super) retries: u32,
    pub(super) backoff: Duration,
    pub(super) max_backoff: Duration,
}

/// The shutdown deadline every runner watches; unset until [`super::Sinks::close`].
#[derive(Default)]
pub(super) struct Shutdown {
    deadline: Mutex<Option<Instant>>,
    changed: Condvar,
}

impl Shutdown {
    /// Sets the deadline and wakes every runner sleeping in a backoff.
    pub(super) fn set_deadline(&self, at: Instant) {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
        self.changed.notify_all();
    }

    /// Whether the deadline is set and has passed.
    pub(super) fn expired(&self) -> bool {
        self.deadline.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|d| Instant::now() >= d)
    }

    /// Sleeps for `d`, or less when the deadline passes first. Returns false when it did.
    pub(super) fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        let mut guard = self.deadline.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let now = Instant::now();
            if guard.is_some_and(|dl| now >= dl) {
                return false;
            }
            if now >= end {
                return true;
            }
            let until = guard.map_or(end, |dl| dl.min(end));
            guard = self.changed.wait_timeout(guard, until - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

/// The runner thread's body. Returns the sink's [`EventSink::undelivered`] count after `flush`.
pub(super) fn run(
    mut sink: Box<dyn EventSink>,
    rx: Receiver<Queued>,
    stats: &StageStats,
    shutdown: &Shutdown,
    policy: RetryPolicy,
) -> u64 {
    let name = sink.name().to_owned();
    let mut warn = WarnLimiter::new(Duration::from_secs(10));
    let mut past_deadline = 0u64;
    for queued in rx.iter() {
        if shutdown.expired() {
            past_deadline += 1;
            stats.count_dropped();
            continue;
        }
        deliver(sink.as_mut(), &queued, stats, shutdown, policy, &mut warn);
    }
    if past_deadline > 0 {
        log::warn!("sink {name}: {past_deadline} queued events dropped at the shutdown deadline");
    }
    if let Err(e) = sink.flush() {
        log::warn!("sink {name}: flush at shutdown: {e}");
    }
    let undelivered = sink.undelivered();
    for _ in 0..undelivered {
        stats.count_dropped();
    }
    undelivered
}

/// Delivers one event, retrying transient failures; counts it out or dropped.
fn deliver(
    sink: &mut dyn EventSink,
    queued: &Queued,
    stats: &StageStats,
    shutdown: &Shutdown,
    policy: RetryPolicy,
    warn: &mut WarnLimiter,
) {
    let mut backoff = policy.backoff;
    let mut attempt = 0u32;
    loop {
        let error = match sink.deliver(&queued.event) {
            Ok(()) => {
                stats.count_out();
                stats.record(queued.at.elapsed());
                return;
            }
            Err(e) => e,
        };
        stats.count_error();
        let retry = matches!(error, SinkError::Transient { .. }) && attempt < policy.retries;
        if !retry {
            stats.count_dropped();
            let tries = attempt + 1;
            warn.warn(sink.name(), &format_args!("event dropped after {tries} attempt(s): {error}"));
            return;
        }
        attempt += 1;
        if !shutdown.sleep(backoff) {
            stats.count_dropped();
            warn.warn(sink.name(), &format_args!("event dropped: shutdown deadline passed while retrying ({error})"));
            return;
        }
        backoff = (backoff * 2).min(policy.max_backoff);
    }
}
