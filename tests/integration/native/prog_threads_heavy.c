/* The long stress behind scripts/stress.sh (not part of the test suite: one run takes
 * about ten minutes on 2 vCPUs). 8 threads increment owned counters in 64 MiB of
 * calloc'ed memory while churning 4 MiB blocks; under a 4 MiB budget nearly every
 * increment faults, evicts and decrypts (about 3 million faults). At the end every
 * thread's sequence is replayed into memory tibet never sees (a raw mmap) and every
 * counter is compared, so a lost write is named by slot and page, not just summed.
 * This is how the EEXIST-after-move loss fixed in PageEngine.MovedDespiteError was
 * found. Prints "OK bad slots 0" or "FAIL bad slots N". Usage: prog_threads_heavy [churn 0|1] */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define THREADS 8
#define SLOTS (8u << 20)
#define STEPS 400000
static uint64_t *counters;
static int churn = 1;

static void *work(void *arg)
{
    unsigned t = (unsigned)(uintptr_t)arg, seed = t + 1;
    for (int i = 0; i < STEPS; i++) {
        seed = seed * 1103515245u + 12345u;
        size_t slot = ((size_t)(seed >> 4) % (SLOTS / THREADS)) * THREADS + t;
        counters[slot]++;
        if (churn && i % 20000 == 0) {
            unsigned char *b = malloc(4 << 20);
            memset(b, (int)t, 4 << 20);
            for (size_t k = 0; k < (4u << 20); k += 4096) if (b[k] != (unsigned char)t) abort();
            free(b);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1) churn = atoi(argv[1]);
    counters = calloc(SLOTS, sizeof *counters);
    if (!counters) return 2;
    pthread_t threads[THREADS];
    for (uintptr_t t = 0; t < THREADS; t++) pthread_create(&threads[t], NULL, work, (void *)t);
    for (int t = 0; t < THREADS; t++) pthread_join(threads[t], NULL);

    /* The raw system call keeps the expected values out of tibet's arenas. */
    uint64_t *expect = (uint64_t *)syscall(SYS_mmap, NULL, SLOTS * sizeof(uint64_t), PROT_READ | PROT_WRITE,
                                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (expect == MAP_FAILED) return 2;
    for (unsigned t = 0; t < THREADS; t++) {
        unsigned seed = t + 1;
        for (int i = 0; i < STEPS; i++) {
            seed = seed * 1103515245u + 12345u;
            expect[((size_t)(seed >> 4) % (SLOTS / THREADS)) * THREADS + t]++;
        }
    }
    long bad = 0;
    for (size_t i = 0; i < SLOTS; i++)
        if (counters[i] != expect[i]) {
            if (bad < 20)
                printf("slot %zu page %zu got %llu want %llu\n", i, i * 8 / 4096,
                       (unsigned long long)counters[i], (unsigned long long)expect[i]);
            bad++;
        }
    printf("%s bad slots %ld\n", bad ? "FAIL" : "OK", bad);
    return bad != 0;
}
