//! The binary's memory allocator: blocks of [`BIG`] bytes or more get a heap of their own, and
//! everything smaller stays with the system allocator (glibc's malloc).
//!
//! Why: tract allocates every operation's output and packed input afresh on each run (a 640x480
//! YuNet run makes dozens of blocks of 0.25-9 MB, each worker ~8,000 over the 20 s bench video),
//! the embedders' weights are blocks of the same sizes that live for the whole run, and the small
//! long-lived allocations of every other thread (GStreamer, sqlite, tracks) land in the holes those
//! big blocks leave in glibc's one arena. At the peak of a 640x480 `run` the arena held 144-158 MiB
//! with only 57-62 MiB in use, and a `malloc_trim` every 100 ms did not lower the peak (the churn
//! touches the whole arena between two trims). jemalloc, mimalloc, glibc's tunables and a size-
//! class cache of mapped blocks were measured and did no better (scripts/bench/README.md,
//! "Memory").
//!
//! [`BigHeap`] keeps big blocks apart, address-ordered first fit over one reserved stretch of
//! address space: a freed block's space is reused by the next block that fits, lowest address
//! first, and neighbours coalesce. The stretch is cut into [`SLOTS`] parts and each thread takes
//! one at its first big block (the main thread, which loads the models, the first; each worker
//! the next): one worker's per-run buffers are then not spread through the holes another left,
//! and the holes start-up leaves are not touched again by the run. Pages are committed
//! (`mprotect`) as a part's top grows and are kept when blocks are freed, so reuse costs no page
//! faults; only a block of [`HUGE`] bytes or more (the embedders' f32 matrices while they are
//! quantised at start-up) gives its pages back when freed. [`release_free_pages`] gives back
//! every free page once a command has started (`run` after loading its models) and then once a
//! minute ([`RELEASE_EVERY`]), so what a burst left behind does not stay resident.
//!
//! `FARSIGHT_BIG_HEAP=off` in the environment leaves every block to glibc: heaptrack, valgrind
//! and `LD_PRELOAD`ed malloc wrappers see only what goes through malloc.
//!
//! If the address space cannot be reserved, or the reservation is full, a big block comes from
//! the system allocator instead; `dealloc` tells the two apart by address.

mod big;

pub use big::{BigHeap, HUGE, SLOTS};

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, Ordering};

/// Blocks of this many bytes or more go to the big-block heap.
pub const BIG: usize = 256 << 10;
/// How often a long-running command (`run`'s tracker, `serve`) calls [`release_free_pages`], so
/// that what a burst left behind (a big photo over HTTP, a thread gone) does not stay resident.
/// The workers' per-run buffers then fault their pages back in: at 640x480 about 35 MiB, ~9k
/// page faults, 12.7 ms on the dev VM (best of 20, touching 35 MiB after `MADV_DONTNEED`), so
/// about 0.02% of a core.
pub const RELEASE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// The process's big-block heap (what [`Segregated`] uses).
static PROCESS: BigHeap = BigHeap::new(PROCESS_RESERVE);
/// Address space the process heap asks for (none of it committed until used).
#[cfg(target_pointer_width = "64")]
const PROCESS_RESERVE: usize = 64 << 30;
#[cfg(not(target_pointer_width = "64"))]
const PROCESS_RESERVE: usize = 1 << 30;

/// The global allocator of the `farsight` binary: [`BigHeap`] for blocks of [`BIG`] bytes or
/// more, [`System`] for the rest.
pub struct Segregated;

// SAFETY: every block comes from System or from PROCESS, and is returned to the one that gave it
// (decided by address, which a block keeps for its whole life).
unsafe impl GlobalAlloc for Segregated {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= BIG && enabled() {
            if let Some(p) = PROCESS.alloc(layout) {
                return p;
            }
        }
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= BIG && enabled() {
            if let Some(p) = PROCESS.alloc(layout) {
                p.write_bytes(0, layout.size());
                return p;
            }
        }
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if PROCESS.contains(ptr) {
            PROCESS.dealloc(ptr, layout.size());
        } else {
            System.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if PROCESS.contains(ptr) {
            if PROCESS.resize_in_place(ptr, layout.size(), new_size) {
                return ptr;
            }
        } else if new_size < BIG || !enabled() {
            return System.realloc(ptr, layout, new_size);
        }
        // SAFETY: the caller guarantees new_size is a valid size for this alignment.
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        let new = self.alloc(new_layout);
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new
    }
}

/// Whether [`Segregated`] uses the big-block heap: yes unless `FARSIGHT_BIG_HEAP=off` (then
/// every block is glibc's, which is what heaptrack and valgrind see). Read once, with `getenv`
/// (no allocation inside the allocator).
fn enabled() -> bool {
    static MODE: AtomicU8 = AtomicU8::new(0);
    match MODE.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            // SAFETY: getenv returns null or a NUL-terminated string that stays valid while
            // nothing changes the environment, and farsight never does.
            let off = unsafe {
                let v = libc::getenv(c"FARSIGHT_BIG_HEAP".as_ptr());
                !v.is_null() && std::ffi::CStr::from_ptr(v).to_bytes() == b"off"
            };
            MODE.store(if off { 2 } else { 1 }, Ordering::Relaxed);
            !off
        }
    }
}

/// What the process's big-block heap holds, for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes of address space reserved (0 until the first big block, or if reserving failed).
    pub reserved: usize,
    /// Bytes in big blocks now.
    pub live: usize,
    /// The highest each slot's top has been, bytes above its start, summed: what the heap's
    /// pages can cost.
    pub high_water: usize,
    /// Free spans now recorded.
    pub free_spans: usize,
    /// Bytes freed that could not be recorded for reuse.
    pub lost: usize,
}

/// The process heap's figures; all zero when the binary's allocator is not [`Segregated`].
pub fn stats() -> HeapStats {
    PROCESS.stats()
}

/// Gives every whole free page of the process's big-block heap back to the kernel, and glibc's
/// free pages too (`malloc_trim`): for a command that has just dropped what it needed only to
/// start.
pub fn release_free_pages() {
    PROCESS.release_free_pages();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages of the allocator's own heap.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    /// The global allocator's paths between glibc and the big-block heap: a Vec that grows from
    /// small to big and shrinks back keeps its bytes, and each block goes back where it came from.
    #[test]
    fn a_block_keeps_its_bytes_growing_into_the_big_heap_and_shrinking_out_of_it() {
        let a = Segregated;
        let small = layout(1000, 8);
        // SAFETY: each pointer is used with the layout it was last given.
        unsafe {
            let p = a.alloc(small);
            assert!(!PROCESS.contains(p));
            (0..1000).for_each(|i| *p.add(i) = i as u8);
            let q = a.realloc(p, small, BIG * 2);
            assert!(PROCESS.contains(q), "grown past BIG, it moved to the big heap");
            assert!((0..1000).all(|i| *q.add(i) == i as u8));
            let r = a.realloc(q, layout(BIG * 2, 8), BIG * 3);
            assert!(PROCESS.contains(r));
            assert!((0..1000).all(|i| *r.add(i) == i as u8));
            let s = a.realloc(r, layout(BIG * 3, 8), 500);
            assert_eq!(s, r, "shrunk in place");
            a.dealloc(s, layout(500, 8));
            let z = a.alloc_zeroed(layout(BIG, 64));
            assert!(PROCESS.contains(z) && (z as usize).is_multiple_of(64));
            assert!(std::slice::from_raw_parts(z, BIG).iter().all(|&b| b == 0));
            a.dealloc(z, layout(BIG, 64));
        }
    }
}
