//! Heartbeats: every camera thread and recognition worker stamps its slot whenever it makes
//! progress or waits idle (at least every second or so); the tracker thread reads them for the
//! systemd watchdog ([`crate::service::Notifier`]). A slot not stamped for `stall_after` belongs to
//! a stage stuck inside a source or a model run, and stops the keep-alives.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Heartbeats {
    epoch: Instant,
    slots: Vec<(String, AtomicU64)>,
}

impl Heartbeats {
    /// One slot per name, all stamped now.
    pub fn new(names: Vec<String>) -> Self {
        Self { epoch: Instant::now(), slots: names.into_iter().map(|n| (n, AtomicU64::new(0))).collect() }
    }

    /// Stamps slot `i` (an index out of range is ignored).
    pub fn beat(&self, i: usize) {
        if let Some((_, at)) = self.slots.get(i) {
            at.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// The slots not stamped for longer than `limit`, with how long ago they last were.
    pub fn stalled(&self, limit: Duration) -> Vec<(String, Duration)> {
        let now = self.epoch.elapsed();
        self.slots
            .iter()
            .filter_map(|(name, at)| {
                let ago = now.saturating_sub(Duration::from_millis(at.load(Ordering::Relaxed)));
                (ago > limit).then(|| (name.clone(), ago))
            })
            .collect()
    }
}

/// A thread's handle on its own slot.
#[derive(Debug, Clone)]
pub struct Pulse {
    beats: Arc<Heartbeats>,
    slot: usize,
}

impl Pulse {
    pub fn new(beats: &Arc<Heartbeats>, slot: usize) -> Self {
        Self { beats: beats.clone(), slot }
    }

    pub fn beat(&self) {
        self.beats.beat(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_not_stamped_for_the_limit_is_stalled() {
        let h = Heartbeats::new(vec!["cam-a".into(), "recognize-0".into()]);
        std::thread::sleep(Duration::from_millis(60));
        h.beat(0);
        let stalled = h.stalled(Duration::from_millis(40));
        assert_eq!(stalled.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["recognize-0"]);
        assert!(stalled[0].1 >= Duration::from_millis(60));
        h.beat(1);
        assert!(h.stalled(Duration::from_millis(40)).is_empty());
    }
}
