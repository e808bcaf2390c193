#!/usr/bin/env python3
"""Replays a log of big allocations (scripts/bench/big_alloc_log.c) through models of the
big-block heap of src/heap.rs and prints, for the run (from the first worker's first block on),
the most pages of the heap resident at once and the most bytes live at once.

    python3 scripts/bench/replay_heap.py /tmp/big_alloc.log

Rows: first fit or best fit; one heap shared by all threads, or one part per worker thread (the
main thread's and the others' in one); with or without start-up's free pages released when the
first worker starts. Blocks of 16 MiB or more give their pages back when freed, as in heap.rs.
Two session-8 logs of the 640x480 bench video (build d00510c) gave 91-97 MiB shared against
83-84 per thread with the release, 81-82 MiB live at most."""
import bisect
import sys
from collections import Counter

GRAIN, PAGE, HUGE = 64, 4096, 16 << 20


class Heap:
    def __init__(self, policy):
        self.free, self.top, self.policy, self.touched = [], 0, policy, set()

    def alloc(self, size):
        size = -(-size // GRAIN) * GRAIN
        fits = [i for i, (_, n) in enumerate(self.free) if n >= size]
        if fits:
            i = fits[0] if self.policy == "first" else min(fits, key=lambda i: (self.free[i][1], self.free[i][0]))
            a, n = self.free[i]
            if n == size:
                self.free.pop(i)
            else:
                self.free[i] = (a + size, n - size)
        else:
            a, self.top = self.top, self.top + size
        self.touched.update(range(a // PAGE, (a + size - 1) // PAGE + 1))
        return a, size

    def dealloc(self, a, size):
        if size >= HUGE:
            self.touched.difference_update(range(-(-a // PAGE), (a + size) // PAGE))
        i = bisect.bisect_left(self.free, (a, 0))
        self.free.insert(i, (a, size))
        if i + 1 < len(self.free) and sum(self.free[i]) == self.free[i + 1][0]:
            self.free[i] = (self.free[i][0], self.free[i][1] + self.free.pop(i + 1)[1])
        if i > 0 and sum(self.free[i - 1]) == self.free[i][0]:
            self.free[i - 1] = (self.free[i - 1][0], self.free[i - 1][1] + self.free.pop(i)[1])
        if self.free and sum(self.free[-1]) == self.top:
            self.top = self.free.pop()[0]

    def release(self):
        for a, n in self.free:
            self.touched.difference_update(range(-(-a // PAGE), (a + n) // PAGE))
        self.touched = {p for p in self.touched if p * PAGE < self.top}


def replay(evs, workers, first_worker, policy, per_thread, release):
    heaps, live, cur = {}, {}, 0
    peak_resident = peak_live = 0
    for i, (op, tid, size, ptr) in enumerate(evs):
        if i == first_worker and release:
            for h in heaps.values():
                h.release()
        if op == "a":
            key = tid if per_thread and tid in workers else "shared"
            h = heaps.setdefault(key, Heap(policy))
            a, n = h.alloc(size)
            live[ptr] = (h, a, n)
            cur += n
        elif ptr in live:
            h, a, n = live.pop(ptr)
            h.dealloc(a, n)
            cur -= n
        if i >= first_worker:
            peak_resident = max(peak_resident, sum(len(h.touched) for h in heaps.values()) * PAGE)
            peak_live = max(peak_live, cur)
    return peak_resident >> 20, peak_live >> 20


def main():
    evs = [(op, tid, int(size), ptr) for op, tid, size, ptr in (l.split() for l in open(sys.argv[1]))]
    main_tid = evs[0][1]
    counts = Counter(t for op, t, _, _ in evs if op == "a" and t != main_tid)
    workers = {t for t, _ in counts.most_common(2)}
    first_worker = min(i for i, e in enumerate(evs) if e[1] in workers)
    print("policy  heaps       start-up pages   resident MiB  live MiB")
    for policy in ("first", "best"):
        for per_thread in (False, True):
            for release in (False, True):
                resident, live = replay(evs, workers, first_worker, policy, per_thread, release)
                print(f"{policy:7} {'per thread' if per_thread else 'shared':11} "
                      f"{'released' if release else 'kept':16} {resident:12} {live:9}")


if __name__ == "__main__":
    main()
