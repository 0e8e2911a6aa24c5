/* 8 threads increment owned counters in a big calloc'ed region while churning big
 * blocks; the final sum is exact. Prints "threads: OK <sum>". */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 8
#define SLOTS (2u << 20) /* 16 MiB of uint64 counters */
#define STEPS 60000
static uint64_t *counters;

static void *work(void *arg)
{
    unsigned t = (unsigned)(uintptr_t)arg, seed = t + 1;
    for (int i = 0; i < STEPS; i++) {
        seed = seed * 1103515245u + 12345u;
        size_t slot = ((size_t)(seed >> 4) % (SLOTS / THREADS)) * THREADS + t;
        counters[slot]++;
        if (i % 20000 == 0) {
            unsigned char *b = malloc(4 << 20);
            memset(b, (int)t, 4 << 20);
            for (size_t k = 0; k < (4u << 20); k += 4096) if (b[k] != (unsigned char)t) abort();
            free(b);
        }
    }
    return NULL;
}

int main(void)
{
    counters = calloc(SLOTS, sizeof *counters);
    if (!counters) return 2;
    pthread_t threads[THREADS];
    for (uintptr_t t = 0; t < THREADS; t++) pthread_create(&threads[t], NULL, work, (void *)t);
    for (int t = 0; t < THREADS; t++) pthread_join(threads[t], NULL);
    uint64_t sum = 0;
    for (size_t i = 0; i < SLOTS; i++) sum += counters[i];
    if (sum != (uint64_t)THREADS * STEPS) { printf("FAIL sum %llu\n", (unsigned long long)sum); return 1; }
    printf("threads: OK %llu\n", (unsigned long long)sum);
    return 0;
}
