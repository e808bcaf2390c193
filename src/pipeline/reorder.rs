//! Puts each camera's messages back in ticket order after several workers finished them out of
//! order: a message is released once every earlier ticket of its camera has been. Frames a live
//! camera dropped never got a ticket, so they leave no gap.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub(super) struct Reorder<T> {
    next: HashMap<Arc<str>, u64>,
    early: BTreeMap<(Arc<str>, u64), T>,
}

impl<T> Default for Reorder<T> {
    fn default() -> Self {
        Self { next: HashMap::new(), early: BTreeMap::new() }
    }
}

impl<T> Reorder<T> {
    /// Accepts one message and returns those of its camera now in order (possibly none).
    pub fn push(&mut self, camera: &Arc<str>, ticket: u64, item: T) -> Vec<T> {
        self.early.insert((camera.clone(), ticket), item);
        let next = self.next.entry(camera.clone()).or_default();
        let mut ready = Vec::new();
        while let Some(item) = self.early.remove(&(camera.clone(), *next)) {
            ready.push(item);
            *next += 1;
        }
        ready
    }

    /// Everything still held, in ticket order per camera (for the end of a run, when no earlier
    /// ticket can arrive any more).
    pub fn drain(&mut self) -> impl Iterator<Item = (Arc<str>, T)> {
        std::mem::take(&mut self.early).into_iter().map(|((camera, _), item)| (camera, item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reorder_releases_each_camera_in_ticket_order() {
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let mut r = Reorder::default();
        assert!(r.push(&a, 1, "a1").is_empty(), "ticket 0 of camera a has not arrived");
        assert_eq!(r.push(&b, 0, "b0"), ["b0"], "cameras do not wait for each other");
        assert!(r.push(&a, 2, "a2").is_empty());
        assert_eq!(r.push(&a, 0, "a0"), ["a0", "a1", "a2"]);
        assert_eq!(r.push(&a, 3, "a3"), ["a3"]);
        assert!(r.push(&b, 2, "b2").is_empty());
        assert_eq!(r.drain().collect::<Vec<_>>(), [(b.clone(), "b2")]);
    }
}
