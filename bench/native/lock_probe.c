/* How long a program thread's large malloc + free waits while another thread touches a
 * model map, or writes anonymous memory (issue 11: no engine lock held across I/O or
 * cryptography).
 * Usage: lock_probe MODEL.gguf [PASSES]
 *        lock_probe --anon MIB [PASSES]
 * With --anon, the other thread mallocs MIB MiB and writes every page of it, PASSES times,
 * each pass different bytes: under a budget below MIB every eviction seals written pages
 * (the encryption the engine does on eviction), where a model's pages are sealed once.
 * One thread touches every page of a read-only shared map of MODEL, PASSES times (default
 * 1: the first touch, which under tibet-run the engine serves from the file, 2 MiB ranges
 * at a time; later passes under a budget below the model come from the sealed copies of
 * the pages evicted, decrypted by the engine); meanwhile the main thread
 * mallocs and frees 2 MiB (above tibet's threshold: an arena each time, which takes the
 * engine's lock) every 200 µs and times each pair. Prints one JSON line:
 * {"pairs": N, "p50Us": .., "p99Us": .., "maxUs": .., "touchMs": .., "checksum": ..}. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const unsigned char *model;
static size_t model_size;
static volatile int touching = 1;
static unsigned long checksum;
static double touch_ms;
static int passes = 1;
static unsigned char *anon; /* --anon: written, not read */

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static void *touch(void *unused)
{
    (void)unused;
    double start = now_us();
    unsigned long sum = 0;
    for (int pass = 0; pass < passes; pass++)
        for (size_t i = 0; i < model_size; i += 4096) {
            if (anon) {
                /* a page's worth of bytes that differ by page and pass (compress poorly) */
                unsigned long x = (i / 4096 + 1) * 0x9E3779B97F4A7C15ul + (unsigned long)pass;
                for (size_t j = 0; j < 4096; j += 8) {
                    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                    memcpy(anon + i + j, &x, 8);
                }
                sum += anon[i];
            } else {
                sum += model[i];
            }
        }
    checksum = sum;
    touch_ms = (now_us() - start) / 1e3;
    touching = 0;
    return NULL;
}

static int compare(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int anon_mode = argc >= 3 && strcmp(argv[1], "--anon") == 0;
    int first = anon_mode ? 2 : 1;
    if (argc < first + 1 || argc > first + 2 || (argc == first + 2 && (passes = atoi(argv[first + 1])) < 1)) {
        fprintf(stderr, "usage: lock_probe MODEL.gguf [PASSES]\n       lock_probe --anon MIB [PASSES]\n");
        return 2;
    }
    if (anon_mode) {
        long mib = atol(argv[2]);
        if (mib < 1 || mib > 1 << 20) { fprintf(stderr, "lock_probe: --anon wants 1 to 1048576 MiB, not %s\n", argv[2]); return 2; }
        model_size = (size_t)mib << 20;
        anon = malloc(model_size);
        if (!anon) { perror("malloc"); return 1; }
    } else {
        int fd = open(argv[1], O_RDONLY);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0) { perror(argv[1]); return 1; }
        model_size = (size_t)st.st_size;
        model = mmap(NULL, model_size, PROT_READ, MAP_SHARED, fd, 0);
        if (model == MAP_FAILED) { perror("mmap"); return 1; }
    }
    static double latencies[1 << 20];
    size_t pairs = 0;
    pthread_t toucher;
    pthread_create(&toucher, NULL, touch, NULL);
    while (touching && pairs < sizeof latencies / sizeof latencies[0]) {
        double start = now_us();
        char *p = malloc(2 << 20);
        if (!p) { perror("malloc"); return 1; }
        p[0] = 1;
        free(p);
        latencies[pairs++] = now_us() - start;
        usleep(200);
    }
    pthread_join(toucher, NULL);
    qsort(latencies, pairs, sizeof latencies[0], compare);
    double p50 = pairs ? latencies[pairs / 2] : 0, p99 = pairs ? latencies[pairs * 99 / 100] : 0, max = pairs ? latencies[pairs - 1] : 0;
    printf("{\"pairs\": %zu, \"p50Us\": %.1f, \"p99Us\": %.1f, \"maxUs\": %.1f, \"touchMs\": %.1f, \"checksum\": %lu}\n",
           pairs, p50, p99, max, touch_ms, checksum);
    return 0;
}
