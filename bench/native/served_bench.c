/* The same memory work in the process tibet-run started (its own engine) and in a forked
 * child of it (served by the custodian), for bench/scripts/custodian.sh.
 *
 * Usage: served_bench self|child MiB RANDOM-TOUCHES
 * Allocates MiB with malloc, then: writes every page (sequential write), reads every
 * page back and checks it (sequential read), then touches RANDOM-TOUCHES random pages,
 * timing each touch (a load of one word) with the monotonic clock. Prints one JSON object:
 * MB/s of both sequential passes, p50/p99/max of the touches in µs, and the bad pages.
 * "child" does all of this in a forked child; the parent only waits. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int compare(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int work(size_t mib, size_t touches)
{
    size_t size = mib << 20, pages = size / 4096;
    uint64_t *p = malloc(size);
    if (!p) { perror("malloc"); return 1; }
    double t0 = now();
    for (size_t i = 0; i < pages; i++)
        for (size_t w = 0; w < 512; w += 64)
            p[i * 512 + w] = i * 0x9E3779B97F4A7C15ULL + w;
    double t1 = now();
    size_t bad = 0;
    for (size_t i = 0; i < pages; i++)
        for (size_t w = 0; w < 512; w += 64)
            if (p[i * 512 + w] != i * 0x9E3779B97F4A7C15ULL + w)
                bad++;
    double t2 = now();
    double *lat = malloc(touches * sizeof *lat);
    uint64_t seed = 88172645463325252ULL, sink = 0;
    for (size_t k = 0; k < touches; k++) {
        seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
        size_t i = seed % pages;
        double a = now();
        sink += *(volatile uint64_t *)&p[i * 512];
        lat[k] = (now() - a) * 1e6;
        if (p[i * 512] != i * 0x9E3779B97F4A7C15ULL)
            bad++;
    }
    qsort(lat, touches, sizeof *lat, compare);
    printf("{\"mib\": %zu, \"writeMBps\": %.1f, \"readMBps\": %.1f, \"touchP50Us\": %.2f, \"touchP99Us\": %.2f, \"touchMaxUs\": %.1f, \"badPages\": %zu, \"sink\": %llu}\n",
           mib, size / 1e6 / (t1 - t0), size / 1e6 / (t2 - t1), lat[touches / 2], lat[touches * 99 / 100], lat[touches - 1], bad, (unsigned long long)(sink & 1));
    fflush(stdout);
    return bad != 0;
}

int main(int argc, char **argv)
{
    if (argc != 4) { fprintf(stderr, "usage: served_bench self|child MiB RANDOM-TOUCHES\n"); return 2; }
    size_t mib = strtoul(argv[2], NULL, 10), touches = strtoul(argv[3], NULL, 10);
    if (strcmp(argv[1], "self") == 0)
        return work(mib, touches);
    pid_t pid = fork();
    if (pid == 0)
        _exit(work(mib, touches));
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
