//! The systemd notify protocol (`Type=notify`, see `systemd/farsight.service`), told the truth by
//! the pipeline's own loop: the tracker thread calls [`Notifier::tick`] about four times a second
//! with what it sees, and nothing else pings. `READY=1` goes out once the models are loaded, the
//! gallery opened (both happen before the pipeline starts) and every camera has delivered a frame
//! (or after `service.ready_grace_s`, with `STATUS=` naming the cameras still missing);
//! `WATCHDOG=1` only while every stage's heartbeat is fresh (a camera stuck inside its source or a
//! recognition worker stuck on a frame for `service.stall_after_s` stops the keep-alives, and
//! systemd restarts the service); `STATUS=` carries the live counters; `STOPPING=1` on shutdown;
//! `RELOADING=1` then `READY=1` around a SIGHUP reload. Without `NOTIFY_SOCKET` every call is a
//! no-op.

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// `[service]`: how farsight talks to systemd.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Say READY this long after start even if a camera has not delivered its first frame (a
    /// camera that is down must not keep the box from starting); STATUS names the missing ones.
    pub ready_grace_s: f32,
    /// A camera or recognition worker that makes no progress for this long is stalled: the
    /// watchdog keep-alives stop (systemd then restarts farsight if `WatchdogSec=` is set).
    /// Must exceed the slowest frame's recognition on the box.
    pub stall_after_s: f32,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self { ready_grace_s: 30.0, stall_after_s: 60.0 }
    }
}

impl ServiceConfig {
    pub fn validate(&self, p: &mut Vec<String>) {
        if !(self.ready_grace_s >= 0.0 && self.ready_grace_s <= 3600.0) {
            p.push(format!("service.ready_grace_s = {} must be between 0 and 3600", self.ready_grace_s));
        }
        if !(self.stall_after_s >= 1.0 && self.stall_after_s <= 86_400.0) {
            p.push(format!("service.stall_after_s = {} must be between 1 and 86400", self.stall_after_s));
        }
    }
}

/// What the pipeline shows the notifier at each tick.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// Each camera and the frames it has delivered so far.
    pub cameras: Vec<(String, u64)>,
    /// Stages whose heartbeat is older than `stall_after_s`, with how long ago they last beat.
    pub stalled: Vec<(String, Duration)>,
    /// The counters, one line (`STATUS=`).
    pub summary: String,
}

/// Sends the notify messages; a no-op outside systemd (no `NOTIFY_SOCKET`).
#[derive(Debug)]
pub struct Notifier {
    enabled: bool,
    watchdog: Option<Duration>,
    grace: Duration,
    started: Instant,
    ready: bool,
    last_ping: Option<Instant>,
    last_status: Option<(Instant, String)>,
    stalled_reported: bool,
}

/// How often `STATUS=` is refreshed with the counters.
const STATUS_EVERY: Duration = Duration::from_secs(5);

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` (and `WATCHDOG_PID`) from the environment.
    pub fn from_env(config: &ServiceConfig) -> Self {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        Self {
            enabled,
            watchdog: sd_notify::watchdog_enabled().filter(|_| enabled),
            grace: Duration::from_secs_f32(config.ready_grace_s),
            started: Instant::now(),
            ready: false,
            last_ping: None,
            last_status: None,
            stalled_reported: false,
        }
    }

    /// Whether a service manager is listening.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether READY=1 has been sent.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    fn send(&self, states: &[sd_notify::NotifyState]) {
        if self.enabled {
            if let Err(e) = sd_notify::notify(states) {
                log::warn!("systemd notify: {e}");
            }
        }
    }

    /// One look at the pipeline: READY when due, STATUS when the counters moved, WATCHDOG while
    /// nothing is stalled.
    pub fn tick(&mut self, health: &Health) {
        use sd_notify::NotifyState::{Ready, Status, Watchdog};
        let missing: Vec<&str> = health.cameras.iter().filter(|(_, n)| *n == 0).map(|(c, _)| c.as_str()).collect();
        if !self.ready && (missing.is_empty() || self.started.elapsed() >= self.grace) {
            self.ready = true;
            let status = if missing.is_empty() {
                format!("ready: every camera delivers ({} cameras)", health.cameras.len())
            } else {
                format!("ready, but no frame yet from camera {} (after {:.0?})", missing.join(", "), self.grace)
            };
            if self.enabled {
                log::info!("systemd: READY ({status})");
            }
            self.send(&[Ready, Status(&status)]);
            self.last_status = Some((Instant::now(), status));
        }
        if !health.stalled.is_empty() {
            if !self.stalled_reported {
                let stalled: Vec<String> =
                    health.stalled.iter().map(|(s, d)| format!("{s} (no progress for {:.0?})", d)).collect();
                let status = format!("stalled: {}; watchdog keep-alives stopped", stalled.join(", "));
                log::error!("{status}");
                self.send(&[Status(&status)]);
                self.stalled_reported = true;
            }
            return;
        }
        self.stalled_reported = false;
        // systemd arms the watchdog once the service is up (READY); keep-alives start with it.
        if let Some(period) = self.watchdog.filter(|_| self.ready) {
            if self.last_ping.is_none_or(|t| t.elapsed() >= period / 2) {
                self.send(&[Watchdog]);
                self.last_ping = Some(Instant::now());
            }
        }
        if self.ready
            && self.last_status.as_ref().is_none_or(|(t, s)| t.elapsed() >= STATUS_EVERY && *s != health.summary)
        {
            self.send(&[Status(&health.summary)]);
            self.last_status = Some((Instant::now(), health.summary.clone()));
        }
    }

    /// `STOPPING=1`: the pipeline is draining.
    pub fn stopping(&self) {
        self.send(&[
            sd_notify::NotifyState::Stopping,
            sd_notify::NotifyState::Status("stopping: draining the pipeline"),
        ]);
    }

    /// `RELOADING=1` with systemd's monotonic timestamp, before a reload is applied.
    pub fn reloading(&self) {
        use sd_notify::NotifyState::{Reloading, Status};
        match sd_notify::NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[Reloading, now, Status("reloading the configuration")]),
            Err(_) => self.send(&[Reloading, Status("reloading the configuration")]),
        }
    }

    /// `READY=1` after a reload, with what happened (a refused config keeps the old one).
    pub fn reloaded(&self, outcome: &str) {
        self.send(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(outcome)]);
    }
}
