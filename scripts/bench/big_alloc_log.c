/* Logs every allocation and free of 256 KiB or more of a process, for scripts/bench/replay_heap.py:
 * LD_PRELOAD it into a build whose allocator is glibc's (one before `heap::Segregated`, e.g.
 * d00510c; the current binary's big blocks never reach malloc). At exit it writes one line per
 * event to $BIG_ALLOC_LOG (default /tmp/big_alloc.log): `a|f THREAD_ID BYTES ADDRESS`.
 *
 *   gcc -O2 -shared -fPIC -o /tmp/big_alloc_log.so scripts/bench/big_alloc_log.c -lpthread
 *   LD_PRELOAD=/tmp/big_alloc_log.so /tmp/farsight-before -q run --gallery G --source V > /dev/null
 *
 * Events go to a static array (no malloc inside malloc); a realloc is logged as a free and an
 * allocation. */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_memalign(size_t, size_t);

#define BIG 262144
#define N 4000000
static struct ev { char op; int tid; size_t size; void *p; } evs[N];
static atomic_long n_evs;

static void rec(char op, size_t size, void *p) {
  long i = atomic_fetch_add(&n_evs, 1);
  if (i < N) evs[i] = (struct ev){op, (int)syscall(SYS_gettid), size, p};
}

void *malloc(size_t s) { void *p = __libc_malloc(s); if (s >= BIG) rec('a', s, p); return p; }
void *calloc(size_t a, size_t b) { void *p = __libc_calloc(a, b); if (a * b >= BIG) rec('a', a * b, p); return p; }
void free(void *p) { if (p && malloc_usable_size(p) >= BIG) rec('f', malloc_usable_size(p), p); __libc_free(p); }
void *realloc(void *o, size_t s) {
  size_t old = o ? malloc_usable_size(o) : 0;
  void *p = __libc_realloc(o, s);
  if (old >= BIG) rec('f', old, o);
  if (s >= BIG) rec('a', s, p);
  return p;
}
int posix_memalign(void **r, size_t al, size_t s) {
  void *p = __libc_memalign(al, s);
  if (!p) return 12;
  *r = p;
  if (s >= BIG) rec('a', s, p);
  return 0;
}
void *aligned_alloc(size_t al, size_t s) { void *p = __libc_memalign(al, s); if (s >= BIG) rec('a', s, p); return p; }
void *memalign(size_t al, size_t s) { void *p = __libc_memalign(al, s); if (s >= BIG) rec('a', s, p); return p; }

__attribute__((destructor)) static void dump(void) {
  const char *path = getenv("BIG_ALLOC_LOG");
  FILE *f = fopen(path ? path : "/tmp/big_alloc.log", "w");
  if (!f) return;
  long n = n_evs < N ? n_evs : N;
  for (long i = 0; i < n; i++) fprintf(f, "%c %d %zu %p\n", evs[i].op, evs[i].tid, evs[i].size, evs[i].p);
  fclose(f);
}
