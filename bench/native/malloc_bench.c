/*
 * Forwarded small malloc+free: ns per pair, to compare a run under tibet-run with a
 * native run. Sizes below the redirection threshold go through the shim's fast path
 * (a compare and a jump to the next malloc). Prints one line: "malloc_free_ns <value>".
 * C because it measures the C fast path itself, with nothing else in between.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    long iterations = argc > 1 ? atol(argv[1]) : 20000000;
    void *volatile keep;
    unsigned seed = 1;
    /* Warm the allocator's caches. */
    for (long i = 0; i < 100000; i++) {
        keep = malloc(16 + (i & 255));
        free(keep);
    }
    double best = 1e30;
    for (int round = 0; round < 5; round++) {
        double start = now_ns();
        for (long i = 0; i < iterations; i++) {
            seed = seed * 1103515245 + 12345;
            keep = malloc(16 + ((seed >> 16) & 1023));
            free(keep);
        }
        double per = (now_ns() - start) / iterations;
        if (per < best) best = per;
    }
    printf("malloc_free_ns %.2f\n", best);
    return 0;
}
