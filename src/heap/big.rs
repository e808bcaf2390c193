//! The big-block heap itself ([`BigHeap`]): address-ordered first fit over one reserved stretch
//! of address space cut into [`SLOTS`] parts, one per thread in turn (`super` says why).

use super::HeapStats;
use std::alloc::Layout;
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Blocks of this many bytes or more give their pages back to the kernel when freed.
pub const HUGE: usize = 16 << 20;
/// Every big block starts on, and is sized in, multiples of this.
const GRAIN: usize = 64;
/// Pages are made writable this many bytes at a time as the heap's top grows.
const COMMIT_STEP: usize = 8 << 20;
/// Free spans a slot can record; a span freed beyond this (never seen: a run has about 20) is not
/// reused and is counted in [`HeapStats::lost`].
const MAX_SPANS: usize = 1024;
/// Parts of the reservation, each with its own lock, free spans and top (fewer where address
/// space is scarce, so each stays big enough for start-up's peak).
pub const SLOTS: usize = if cfg!(target_pointer_width = "64") { 8 } else { 4 };
/// Pages are given back in whole aligned stretches of this: the largest page size of the kernels
/// farsight runs on (arm64 kernels may use 16 or 64 KiB pages), a multiple of the others.
const RELEASE_GRAIN: usize = 64 << 10;

#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: usize,
    len: usize,
}

impl Span {
    fn end(&self) -> usize {
        self.start + self.len
    }
}

struct State {
    /// This slot's part of the reservation, `[start, limit)`; empty until it is reserved.
    start: usize,
    limit: usize,
    /// Everything at or above `top` is free; `[start, committed)` is writable.
    top: usize,
    committed: usize,
    /// Free spans below `top`, sorted by address, never adjacent (they coalesce).
    free: [Span; MAX_SPANS],
    spans: usize,
    live: usize,
    high_water: usize,
    lost: usize,
}

impl State {
    const EMPTY: State = State {
        start: 0,
        limit: 0,
        top: 0,
        committed: 0,
        free: [Span { start: 0, len: 0 }; MAX_SPANS],
        spans: 0,
        live: 0,
        high_water: 0,
        lost: 0,
    };
}

/// Address-ordered first fit over one reserved stretch of address space, in [`SLOTS`] parts
/// that threads take in turn (see the module).
pub struct BigHeap {
    reserve: usize,
    /// The reservation, `[base, end)`, read without a lock by [`BigHeap::contains`]; 0 until
    /// reserved.
    base: AtomicUsize,
    end: AtomicUsize,
    /// Whether reserving has been tried (it is tried once).
    tried: Mutex<bool>,
    slots: [Mutex<State>; SLOTS],
}

fn round_up(v: usize, to: usize) -> usize {
    v.div_ceil(to) * to
}

thread_local! {
    /// The slot this thread allocates big blocks from, taken at its first big block.
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

/// This thread's slot: the main thread (which loads the models) takes the first, each worker
/// the next, so one worker's per-run buffers are not spread through another's holes.
fn my_slot() -> usize {
    SLOT.try_with(|s| {
        if s.get() == usize::MAX {
            s.set(NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SLOTS);
        }
        s.get()
    })
    .unwrap_or(0)
}

impl BigHeap {
    /// A heap that reserves `reserve` bytes of address space at its first block (halving the
    /// request down to 64 MiB when the system refuses).
    pub const fn new(reserve: usize) -> Self {
        BigHeap {
            reserve,
            base: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            tried: Mutex::new(false),
            slots: [const { Mutex::new(State::EMPTY) }; SLOTS],
        }
    }

    /// Nothing panics while holding a lock; if something ever did, the state is still
    /// consistent between the statements that change it.
    fn lock(&self, slot: usize) -> std::sync::MutexGuard<'_, State> {
        self.slots[slot].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The slot holding `ptr`, which must be [`BigHeap::contains`]'d.
    fn slot_of(&self, ptr: usize) -> usize {
        let (base, end) = (self.base.load(Ordering::Acquire), self.end.load(Ordering::Acquire));
        ((ptr - base) / ((end - base) / SLOTS)).min(SLOTS - 1)
    }

    /// Whether `ptr` was allocated by this heap.
    pub fn contains(&self, ptr: *const u8) -> bool {
        // `end` is stored before `base`: a non-zero base means end is the one that goes with it.
        let (p, base) = (ptr as usize, self.base.load(Ordering::Acquire));
        base != 0 && p >= base && p < self.end.load(Ordering::Acquire)
    }

    /// Reserves the address space on the first call; false when there is none.
    fn reserved(&self) -> bool {
        if self.base.load(Ordering::Acquire) != 0 {
            return true;
        }
        let mut tried = self.tried.lock().unwrap_or_else(|e| e.into_inner());
        if !*tried {
            *tried = true;
            if let Some((at, len)) = reserve(self.reserve) {
                // Parts start on COMMIT_STEP boundaries, so every mprotect is page-aligned
                // whatever the kernel's page size.
                let base = round_up(at, COMMIT_STEP);
                let part = (len - (base - at)) / SLOTS / COMMIT_STEP * COMMIT_STEP;
                for i in 0..SLOTS {
                    let mut s = self.lock(i);
                    let start = base + i * part;
                    (s.start, s.limit, s.top, s.committed) = (start, start + part, start, start);
                }
                self.end.store(base + part * SLOTS, Ordering::Release);
                self.base.store(base, Ordering::Release);
            }
        }
        self.base.load(Ordering::Acquire) != 0
    }

    /// A block for `layout` from the calling thread's slot, or `None` when that slot has no room
    /// (or there is no address space).
    pub fn alloc(&self, layout: Layout) -> Option<*mut u8> {
        if !self.reserved() {
            return None;
        }
        let size = round_up(layout.size().max(1), GRAIN);
        let align = layout.align().max(GRAIN);
        let mut s = self.lock(my_slot());
        let p = s.take_free(size, align).or_else(|| s.take_top(size, align))?;
        s.live += size;
        Some(p as *mut u8)
    }

    /// Returns the block at `ptr` of `size` bytes (the size it was allocated or last resized
    /// with), from whichever thread.
    pub fn dealloc(&self, ptr: *mut u8, size: usize) {
        let len = round_up(size.max(1), GRAIN);
        let start = ptr as usize;
        if len >= HUGE {
            release(start, start + len);
        }
        let mut s = self.lock(self.slot_of(start));
        s.live -= len;
        s.give_back(Span { start, len });
    }

    /// Shrinks the block at `ptr` from `old` to `new` bytes, or grows it into the free space
    /// right after it; false when it cannot grow there.
    pub fn resize_in_place(&self, ptr: *mut u8, old: usize, new: usize) -> bool {
        let (old, new) = (round_up(old.max(1), GRAIN), round_up(new.max(1), GRAIN));
        let start = ptr as usize;
        let mut s = self.lock(self.slot_of(start));
        if new <= old {
            if new < old {
                s.live -= old - new;
                s.give_back(Span { start: start + new, len: old - new });
            }
            return true;
        }
        let (end, need) = (start + old, new - old);
        if end == s.top {
            if s.take_top(need, GRAIN) == Some(end) {
                s.live += need;
                return true;
            }
            return false;
        }
        let i = s.free[..s.spans].partition_point(|f| f.start < end);
        if i < s.spans && s.free[i].start == end && s.free[i].len >= need {
            if s.free[i].len == need {
                s.remove(i);
            } else {
                s.free[i].start += need;
                s.free[i].len -= need;
            }
            s.live += need;
            return true;
        }
        false
    }

    /// See [`super::release_free_pages`].
    pub fn release_free_pages(&self) {
        for i in 0..SLOTS {
            let s = self.lock(i);
            for f in &s.free[..s.spans] {
                release(f.start, f.end());
            }
            release(s.top, s.committed);
        }
    }

    pub fn stats(&self) -> HeapStats {
        let mut h = HeapStats {
            reserved: self.end.load(Ordering::Acquire) - self.base.load(Ordering::Acquire),
            ..HeapStats::default()
        };
        for i in 0..SLOTS {
            let s = self.lock(i);
            h.live += s.live;
            h.high_water += s.high_water;
            h.free_spans += s.spans;
            h.lost += s.lost;
        }
        h
    }
}

impl State {
    /// The lowest free span that holds `size` bytes at `align`, split around the block.
    fn take_free(&mut self, size: usize, align: usize) -> Option<usize> {
        for i in 0..self.spans {
            let f = self.free[i];
            let p = round_up(f.start, align);
            if p + size > f.end() {
                continue;
            }
            let (before, after) =
                (Span { start: f.start, len: p - f.start }, Span { start: p + size, len: f.end() - p - size });
            match (before.len > 0, after.len > 0) {
                (false, false) => self.remove(i),
                (true, false) => self.free[i] = before,
                (false, true) => self.free[i] = after,
                (true, true) => {
                    if self.spans == MAX_SPANS {
                        continue;
                    }
                    self.free[i] = before;
                    self.insert(i + 1, after);
                }
            }
            return Some(p);
        }
        None
    }

    /// A block at the top, making pages writable as needed.
    fn take_top(&mut self, size: usize, align: usize) -> Option<usize> {
        let p = round_up(self.top, align);
        let end = p.checked_add(size).filter(|&e| e <= self.limit)?;
        if p > self.top && self.spans == MAX_SPANS {
            return None;
        }
        if end > self.committed {
            let to = round_up(end, COMMIT_STEP).min(self.limit);
            if !commit(self.committed, to) {
                return None;
            }
            self.committed = to;
        }
        if p > self.top {
            let gap = Span { start: self.top, len: p - self.top };
            self.insert(self.spans, gap);
        }
        self.top = end;
        self.high_water = self.high_water.max(end - self.start);
        Some(p)
    }

    /// Records `span` as free: coalesced with its neighbours, and with the top when it reaches it.
    fn give_back(&mut self, span: Span) {
        let i = self.free[..self.spans].partition_point(|f| f.start < span.start);
        let joins_prev = i > 0 && self.free[i - 1].end() == span.start;
        let joins_next = i < self.spans && span.end() == self.free[i].start;
        let at = match (joins_prev, joins_next) {
            (true, true) => {
                self.free[i - 1].len += span.len + self.free[i].len;
                self.remove(i);
                i - 1
            }
            (true, false) => {
                self.free[i - 1].len += span.len;
                i - 1
            }
            (false, true) => {
                self.free[i] = Span { start: span.start, len: span.len + self.free[i].len };
                i
            }
            (false, false) if span.end() == self.top => {
                self.top = span.start;
                return;
            }
            (false, false) => {
                if self.spans == MAX_SPANS {
                    self.lost += span.len;
                    return;
                }
                self.insert(i, span);
                i
            }
        };
        if self.free[at].end() == self.top {
            self.top = self.free[at].start;
            self.remove(at);
        }
    }

    fn insert(&mut self, i: usize, span: Span) {
        self.free.copy_within(i..self.spans, i + 1);
        self.free[i] = span;
        self.spans += 1;
    }

    fn remove(&mut self, i: usize) {
        self.free.copy_within(i + 1..self.spans, i);
        self.spans -= 1;
    }
}

/// Reserves `len` bytes of address space (no memory committed), halving down to 64 MiB.
fn reserve(mut len: usize) -> Option<(usize, usize)> {
    #[cfg(unix)]
    while len >= 64 << 20 {
        // SAFETY: a new private mapping with no access; nothing else refers to it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            return Some((p as usize, len));
        }
        len /= 2;
    }
    let _ = &mut len;
    None
}

/// Makes `[from, to)` of the reservation readable and writable.
fn commit(from: usize, to: usize) -> bool {
    #[cfg(unix)]
    // SAFETY: the range lies inside our own reservation.
    unsafe {
        libc::mprotect(from as *mut libc::c_void, to - from, libc::PROT_READ | libc::PROT_WRITE) == 0
    }
    #[cfg(not(unix))]
    {
        let _ = (from, to);
        false
    }
}

/// Gives the whole pages inside `[from, to)` back to the kernel; they read as zero when touched
/// again.
fn release(from: usize, to: usize) {
    let (a, b) = (round_up(from, RELEASE_GRAIN), to / RELEASE_GRAIN * RELEASE_GRAIN);
    #[cfg(unix)]
    if b > a {
        // SAFETY: the pages are free space of our own reservation; nothing reads them.
        unsafe {
            libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_DONTNEED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::{BIG, PROCESS_RESERVE};

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    const PAGE: usize = 4096;

    /// Pages of `[p, p + len)` resident now, from mincore (4 KiB pages, as on the dev machine and
    /// CI).
    fn resident_pages(p: *mut u8, len: usize) -> usize {
        let pages = len / PAGE;
        let mut v = vec![0u8; pages];
        // SAFETY: the range is mapped (inside the reservation, committed).
        let rc = unsafe { libc::mincore(p as *mut libc::c_void, pages * PAGE, v.as_mut_ptr()) };
        assert_eq!(rc, 0);
        v.iter().filter(|&&b| b & 1 == 1).count()
    }

    #[test]
    fn a_freed_block_is_reused_lowest_first_and_neighbours_coalesce() {
        let heap = Box::new(BigHeap::new(256 << 20));
        let mb = 1 << 20;
        let a = heap.alloc(layout(mb, 8)).unwrap();
        let b = heap.alloc(layout(mb, 8)).unwrap();
        let c = heap.alloc(layout(mb, 8)).unwrap();
        let _d = heap.alloc(layout(mb, 8)).unwrap();
        assert_eq!(b as usize - a as usize, mb);
        heap.dealloc(a, mb);
        heap.dealloc(c, mb);
        assert_eq!(heap.stats().free_spans, 2);
        // A smaller block goes into the lowest hole.
        let e = heap.alloc(layout(mb / 2, 8)).unwrap();
        assert_eq!(e, a);
        heap.dealloc(e, mb / 2);
        // Freeing b joins a's hole, b and c's hole into one 3 MiB span that a 3 MiB block fits.
        heap.dealloc(b, mb);
        assert_eq!(heap.stats().free_spans, 1);
        let f = heap.alloc(layout(3 * mb, 8)).unwrap();
        assert_eq!(f, a);
        let stats = heap.stats();
        assert_eq!((stats.live, stats.high_water, stats.lost), (4 * mb, 4 * mb, 0));
    }

    #[test]
    fn freeing_the_highest_block_lowers_the_top_through_free_spans_below_it() {
        let heap = Box::new(BigHeap::new(256 << 20));
        let mb = 1 << 20;
        let blocks: Vec<_> = (0..4).map(|_| heap.alloc(layout(mb, 8)).unwrap()).collect();
        heap.dealloc(blocks[1], mb);
        heap.dealloc(blocks[2], mb);
        heap.dealloc(blocks[3], mb);
        assert_eq!(heap.stats().free_spans, 0, "all three joined the top");
        let again = heap.alloc(layout(2 * mb, 8)).unwrap();
        assert_eq!(again, blocks[1]);
        assert_eq!(heap.stats().high_water, 4 * mb);
    }

    #[test]
    fn alignment_is_kept_and_the_gap_it_leaves_is_reused() {
        let heap = Box::new(BigHeap::new(256 << 20));
        let a = heap.alloc(layout(BIG + 64, 64)).unwrap();
        let b = heap.alloc(layout(BIG, 1 << 16)).unwrap();
        assert_eq!(b as usize % (1 << 16), 0);
        assert!(b as usize >= a as usize + BIG + 64);
        // The gap between a and b (mmap gives page alignment, so there is one) is free, and the
        // next block that fits goes there.
        assert!(b as usize - (a as usize + BIG + 64) >= 64);
        let c = heap.alloc(layout(64, 8)).unwrap();
        assert_eq!(c as usize, a as usize + BIG + 64);
    }

    #[test]
    fn resizing_in_place_shrinks_and_grows_into_the_space_after_a_block() {
        let heap = Box::new(BigHeap::new(256 << 20));
        let mb = 1 << 20;
        let a = heap.alloc(layout(mb, 8)).unwrap();
        assert!(heap.resize_in_place(a, mb, 3 * mb), "at the top it grows");
        let b = heap.alloc(layout(mb, 8)).unwrap();
        assert_eq!(b as usize, a as usize + 3 * mb);
        assert!(heap.resize_in_place(a, 3 * mb, mb));
        assert!(heap.resize_in_place(a, mb, 2 * mb), "into the tail it gave back");
        assert!(!heap.resize_in_place(a, 2 * mb, 4 * mb), "b is in the way");
        assert_eq!(heap.stats().live, 3 * mb);
    }

    #[test]
    fn a_huge_block_gives_its_pages_back_when_freed_and_others_keep_theirs() {
        let heap = Box::new(BigHeap::new(256 << 20));
        let big = heap.alloc(layout(4 << 20, 4096)).unwrap();
        let huge = heap.alloc(layout(HUGE, 4096)).unwrap();
        let _guard = heap.alloc(layout(BIG, 4096)).unwrap();
        // SAFETY: both blocks are ours and this long.
        unsafe {
            big.write_bytes(1, 4 << 20);
            huge.write_bytes(1, HUGE);
        }
        assert_eq!(resident_pages(huge, HUGE), HUGE / PAGE);
        heap.dealloc(big, 4 << 20);
        heap.dealloc(huge, HUGE);
        assert_eq!(resident_pages(big, 4 << 20), (4 << 20) / PAGE, "kept for reuse without faults");
        assert_eq!(resident_pages(huge, HUGE), 0);
        heap.release_free_pages();
        assert_eq!(resident_pages(big, 4 << 20), 0);
    }

    /// Offsets of a block to mark: one byte in every 4,032 (so at least one a page), and its last.
    fn marks(p: *mut u8, size: usize) -> impl Iterator<Item = usize> {
        let first = (64 - p as usize % 64) % 64;
        (first..size).step_by(4096 - 64).chain(std::iter::once(size - 1))
    }

    /// Random blocks of random sizes and alignments, each filled with its own byte and checked
    /// before it is freed: no two live blocks overlap, and the books balance at the end.
    #[test]
    fn random_blocks_never_overlap_and_all_space_comes_back() {
        let heap = Box::new(BigHeap::new(PROCESS_RESERVE));
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut live: Vec<(*mut u8, usize, u8)> = Vec::new();
        for round in 0..4000 {
            if live.len() < 30 && (next() % 3 != 0 || live.is_empty()) {
                let size = BIG + (next() % (6 << 20)) as usize;
                let align = 1 << (next() % 13);
                let p = heap.alloc(layout(size, align)).unwrap();
                assert_eq!(p as usize % align, 0);
                let tag = (round % 251) as u8;
                // SAFETY: the block is ours and `size` long.
                unsafe { marks(p, size).for_each(|i| *p.add(i) = tag) };
                live.push((p, size, tag));
            } else {
                let (p, size, tag) = live.swap_remove((next() as usize) % live.len());
                // SAFETY: as above, still live.
                assert!(marks(p, size).all(|i| unsafe { *p.add(i) } == tag), "a block was overwritten by another");
                heap.dealloc(p, size);
            }
        }
        for (p, size, _) in live.drain(..) {
            heap.dealloc(p, size);
        }
        let stats = heap.stats();
        assert_eq!((stats.live, stats.free_spans, stats.lost), (0, 0, 0));
        assert!(stats.high_water < 30 * (7 << 20), "{stats:?}");
    }
}
