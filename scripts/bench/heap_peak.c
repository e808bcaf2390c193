/* Where a process's peak RSS is: LD_PRELOAD this into farsight and, at exit, it prints the sample
 * (taken every 20 ms from its own thread) with the largest VmRSS: RssAnon and RssFile from
 * /proc/self/status, and glibc's mallinfo2 at that moment (arena size, in use, free, mmapped).
 *
 *   gcc -O2 -shared -fPIC -o /tmp/heap_peak.so scripts/bench/heap_peak.c -lpthread
 *   LD_PRELOAD=/tmp/heap_peak.so target/release/farsight -q run --gallery G --source V > /dev/null
 *
 * It reads /proc with open/read (no malloc) so it does not disturb what it measures. Since
 * `heap::Segregated`, blocks of 256 KiB or more are not in glibc's arena: mallinfo2 shows the rest
 * (run with FARSIGHT_BIG_HEAP=off for glibc's whole picture; `run` logs the big heap's figures). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static long best_rss, best_anon, best_file;
static struct mallinfo2 best;

static long field(const char *status, const char *name) {
  const char *p = strstr(status, name);
  return p ? atol(p + strlen(name)) : 0;
}

static void *sample(void *unused) {
  static char status[8192];
  (void)unused;
  for (;;) {
    int fd = open("/proc/self/status", O_RDONLY);
    ssize_t n = fd < 0 ? 0 : read(fd, status, sizeof status - 1);
    if (fd >= 0) close(fd);
    status[n > 0 ? n : 0] = 0;
    long rss = field(status, "VmRSS:");
    if (rss > best_rss) {
      best_rss = rss;
      best_anon = field(status, "RssAnon:");
      best_file = field(status, "RssFile:");
      best = mallinfo2();
    }
    usleep(20000);
  }
  return NULL;
}

static void report(void) {
  fprintf(stderr,
          "heap_peak: rss %ld MiB (anon %ld, file %ld) | arena %zu MiB: in use %zu, free %zu; mmapped %zu MiB in %zu blocks\n",
          best_rss / 1024, best_anon / 1024, best_file / 1024, best.arena >> 20, best.uordblks >> 20,
          best.fordblks >> 20, best.hblkhd >> 20, best.hblks);
}

__attribute__((constructor)) static void start(void) {
  pthread_t t;
  if (pthread_create(&t, NULL, sample, NULL) == 0) pthread_detach(t);
  atexit(report);
}
