/*
 * Holds MIB MiB of incompressible data in one large malloc, for a test that looks at its
 * memory, and at its custodian's, from outside (tests/integration/Programs/ServeSelfTests.cs).
 *
 *   prog_serve_self MIB
 *
 * Every page starts with "tibet-self-canary:" and its index, then bytes of a xorshift
 * stream seeded by that index (ciphertext of them cannot be smaller). Prints
 * "ready PID" once all are written, reads standard input to its end, checks every page
 * in a scattered order (a stride of 7919 pages: no read-ahead helps, so each evicted
 * page is one fault), and prints "self: N bad pages of M".
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PAGE 4096

static void fill(unsigned char *page, uint64_t index)
{
    int n = snprintf((char *)page, 64, "tibet-self-canary:%08llu:", (unsigned long long)index);
    uint64_t x = index * 0x9E3779B97F4A7C15ULL + 1;
    for (int i = n; i < PAGE; i += 8) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        memcpy(page + i, &x, PAGE - i < 8 ? (size_t)(PAGE - i) : 8);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) { fprintf(stderr, "usage: prog_serve_self MIB\n"); return 2; }
    uint64_t pages = (uint64_t)atol(argv[1]) * 256;
    unsigned char *data = malloc(pages * PAGE);
    if (!data) { perror("malloc"); return 3; }
    for (uint64_t i = 0; i < pages; i++)
        fill(data + i * PAGE, i);
    printf("ready %d\n", getpid());
    fflush(stdout);
    char buffer[256];
    while (read(0, buffer, sizeof buffer) > 0) {
    }
    unsigned char expected[PAGE];
    uint64_t bad = 0;
    for (uint64_t k = 0; k < pages; k++) {
        uint64_t i = k * 7919 % pages; /* a permutation while pages is no multiple of 7919 */
        fill(expected, i);
        bad += memcmp(expected, data + i * PAGE, PAGE) != 0;
    }
    printf("self: %llu bad pages of %llu\n", (unsigned long long)bad, (unsigned long long)pages);
    free(data);
    return bad != 0;
}
