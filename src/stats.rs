//! Per-stage counters: items in, out, dropped and failed, and a latency histogram (p50/p99).
//! Lock-free to update from any thread; [`StageStats::snapshot`] reads them for the periodic log
//! line, the status file (`farsight status`) and the end-of-run summary.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Latency buckets: bucket `i` holds samples below `2^(i/4)` ms, roughly 19% wide, up to ~18 min.
const BUCKETS: usize = 80;

/// Counters of one stage (a camera, the recognition workers, the tracker, a sink).
#[derive(Debug)]
pub struct StageStats {
    name: String,
    input: AtomicU64,
    output: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU64; BUCKETS],
    /// Sum of every latency sample in microseconds (a Prometheus histogram's `_sum`).
    latency_sum_us: AtomicU64,
}

/// A point-in-time copy of a stage's counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSnapshot {
    pub name: String,
    #[serde(rename = "in")]
    pub input: u64,
    #[serde(rename = "out")]
    pub output: u64,
    pub dropped: u64,
    pub errors: u64,
    /// Median latency in milliseconds (upper edge of its histogram bucket); null before any sample.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The latency histogram since start: samples per bucket, bucket `i` holding latencies up to
    /// 2^(i/4) ms (bucket 0: up to 1 ms). Two snapshots' difference gives the quantiles of the
    /// time between them (what `scripts/soak/soak.py` plots: p50/p99 must not creep up).
    #[serde(default)]
    pub latency_counts: Vec<u64>,
}

impl StageStats {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            input: AtomicU64::new(0),
            output: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_sum_us: AtomicU64::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn count_in(&self) {
        self.input.fetch_add(1, Relaxed);
    }

    pub fn count_out(&self) {
        self.output.fetch_add(1, Relaxed);
    }

    pub fn count_dropped(&self) {
        self.dropped.fetch_add(1, Relaxed);
    }

    pub fn count_error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }

    /// Records one latency sample.
    pub fn record(&self, latency: Duration) {
        self.latency[bucket(latency)].fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    /// The latency histogram as it stands: each bucket's upper edge in seconds with the number of
    /// samples at or below it (cumulative, the Prometheus convention), and the sum of every sample
    /// in seconds.
    pub fn latency_histogram(&self) -> (Vec<(f64, u64)>, f64) {
        let mut seen = 0;
        let buckets = self
            .latency
            .iter()
            .enumerate()
            .map(|(i, c)| {
                seen += c.load(Relaxed);
                (upper_edge_ms(i) / 1000.0, seen)
            })
            .collect();
        (buckets, self.latency_sum_us.load(Relaxed) as f64 / 1e6)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    pub fn snapshot(&self) -> StageSnapshot {
        let counts: Vec<u64> = self.latency.iter().map(|c| c.load(Relaxed)).collect();
        StageSnapshot {
            name: self.name.clone(),
            input: self.input.load(Relaxed),
            output: self.output.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            errors: self.errors.load(Relaxed),
            p50_ms: quantile(&counts, 0.50),
            p99_ms: quantile(&counts, 0.99),
            latency_counts: counts,
        }
    }
}

fn bucket(latency: Duration) -> usize {
    let ms = latency.as_secs_f64() * 1000.0;
    if ms <= 1.0 {
        return 0;
    }
    ((ms.log2() * 4.0).ceil() as usize).min(BUCKETS - 1)
}

fn upper_edge_ms(bucket: usize) -> f64 {
    2f64.powf(bucket as f64 / 4.0)
}

/// The upper edge of the bucket holding quantile `q`, in ms.
fn quantile(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, &c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some((upper_edge_ms(i) * 100.0).round() / 100.0);
        }
    }
    None
}

/// CPU time (user + system) this process has used so far, from `getrusage`.
pub fn cpu_time() -> std::time::Duration {
    // SAFETY: getrusage fills the zeroed struct it is given; RUSAGE_SELF is always valid.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return std::time::Duration::ZERO;
    }
    let tv = |t: libc::timeval| std::time::Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Peak resident set size of this process in KiB (`VmHWM`), where the OS reports it.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resident set size of this process now, in KiB (`VmRSS`), where the OS reports it.
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// What a running daemon shows its observers besides systemd (the HTTP server's `/readyz` and
/// `/metrics`): every stage's counters, once the pipeline has made them, and whether it is ready
/// (the same truth as systemd's READY: models loaded, every camera delivered or the grace period
/// passed). Shared between the pipeline's tracker thread, which updates it, and readers.
#[derive(Debug, Default)]
pub struct LiveState {
    stages: std::sync::RwLock<Vec<std::sync::Arc<StageStats>>>,
    ready: std::sync::atomic::AtomicBool,
}

impl LiveState {
    /// Publishes the pipeline's stages (cameras first, then recognition, tracking and sinks).
    pub fn set_stages(&self, stages: Vec<std::sync::Arc<StageStats>>) {
        *self.stages.write().unwrap_or_else(|e| e.into_inner()) = stages;
    }

    /// The stages published so far (empty before the pipeline starts, and without cameras).
    pub fn stages(&self) -> Vec<std::sync::Arc<StageStats>> {
        self.stages.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Relaxed);
    }

    /// Whether the daemon said (or would say) READY to systemd.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_land_in_the_right_bucket() {
        let s = StageStats::new("t");
        assert_eq!(s.snapshot().p50_ms, None);
        for _ in 0..98 {
            s.record(Duration::from_millis(10));
        }
        s.record(Duration::from_millis(500));
        s.record(Duration::from_millis(500));
        let snap = s.snapshot();
        let p50 = snap.p50_ms.unwrap();
        let p99 = snap.p99_ms.unwrap();
        assert!((10.0..=12.0).contains(&p50), "{p50}");
        assert!((500.0..=600.0).contains(&p99), "{p99}");
        let (buckets, sum) = s.latency_histogram();
        assert_eq!(buckets.last().unwrap().1, 100, "cumulative counts end at the sample count");
        assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert!((sum - 1.98).abs() < 1e-6, "{sum}");
    }

    #[test]
    fn counters_count() {
        let s = StageStats::new("cam");
        s.count_in();
        s.count_in();
        s.count_out();
        s.count_dropped();
        s.count_error();
        let snap = s.snapshot();
        assert_eq!((snap.input, snap.output, snap.dropped, snap.errors), (2, 1, 1, 1));
        assert!(peak_rss_kib().unwrap() > 0);
    }
}
