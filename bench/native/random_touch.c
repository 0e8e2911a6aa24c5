/* Random single-page reads of a 64 MiB anonymous map, each timed in the program's own
 * thread: under tibet-run with a budget far below 64 MiB nearly every read is a fault on
 * a sealed page, so this measures a fault as the program sees it (p50, p90, p99) and
 * how many the program gets through per second. The map is written first (every page
 * holds its index), and the sum of the bytes read is checked against what was written.
 * Usage: random_touch [READS]   (default 40000) */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(int argc, char **argv)
{
    const size_t pages = 16384;
    size_t reads = argc > 1 ? strtoul(argv[1], NULL, 10) : 40000;
    if (reads == 0 || reads > 10000000) {
        fprintf(stderr, "random_touch: READS must be 1 to 10000000\n");
        return 2;
    }
    unsigned char *map = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    double *took = malloc(reads * sizeof *took);
    if (map == MAP_FAILED || took == NULL) {
        perror("random_touch");
        return 1;
    }
    for (size_t i = 0; i < pages; i++)
        memset(map + i * 4096, (int)(i & 0xff), 64);
    unsigned seed = 12345;
    unsigned long sum = 0, expected = 0;
    double start = now_us();
    for (size_t k = 0; k < reads; k++) {
        seed = seed * 1103515245 + 12345;
        size_t page = (seed >> 8) % pages;
        double before = now_us();
        sum += *(volatile unsigned char *)(map + page * 4096 + 7);
        took[k] = now_us() - before;
        expected += page & 0xff;
    }
    double total = now_us() - start;
    if (sum != expected) {
        fprintf(stderr, "random_touch: read %lu, expected %lu: wrong bytes\n", sum, expected);
        return 1;
    }
    qsort(took, reads, sizeof *took, by_value);
    printf("{\"p50Us\": %.2f, \"p90Us\": %.2f, \"p99Us\": %.2f, \"touchesPerSecond\": %.0f}\n",
           took[reads / 2], took[reads * 9 / 10], took[reads * 99 / 100], reads / total * 1e6);
    return 0;
}
