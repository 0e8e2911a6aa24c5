/* A program whose memory is served by two engines under one budget, as llama.cpp's is
 * under tibet-run --serve custodian: a read-only GGUF map larger than the budget (served
 * by the program's own engine, which scans it every round and so always wants more) and a
 * malloc'd working buffer that fits in half the budget (served by the custodian's engine),
 * written and checked every round.
 * Usage: prog_shared_budget FILE MODEL-BYTES BUFFER-BYTES ROUNDS.
 * Prints "shared-budget: OK model-hash H" (the same natively and under tibet-run). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define FAIL(...) do { printf("FAIL "); printf(__VA_ARGS__); printf("\n"); exit(1); } while (0)

int main(int argc, char **argv)
{
    if (argc != 5) FAIL("usage: prog_shared_budget FILE MODEL-BYTES BUFFER-BYTES ROUNDS");
    size_t model_size = strtoull(argv[2], NULL, 10), buffer_size = strtoull(argv[3], NULL, 10);
    int rounds = atoi(argv[4]);

    /* The model file: the magic, then seeded pseudo-random bytes, written through a small
     * buffer (the program's own memory stays the working buffer alone). */
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) FAIL("open %s", argv[1]);
    uint64_t x = 88172645463325252ull;
    unsigned char chunk[65536];
    for (size_t done = 0; done < model_size;) {
        size_t n = model_size - done < sizeof chunk ? model_size - done : sizeof chunk;
        for (size_t i = 0; i < n; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; chunk[i] = (unsigned char)x; }
        if (done == 0) memcpy(chunk, "GGUF", 4);
        if (write(fd, chunk, n) != (ssize_t)n) FAIL("write %s", argv[1]);
        done += n;
    }
    fsync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);

    const unsigned char *model = mmap(NULL, model_size, PROT_READ, MAP_SHARED, fd, 0);
    if (model == MAP_FAILED) FAIL("mmap");
    uint64_t *buffer = malloc(buffer_size);
    if (!buffer) FAIL("malloc");
    size_t words = buffer_size / sizeof *buffer;

    uint64_t model_hash = 14695981039346656037ull;
    for (int round = 0; round < rounds; round++) {
        for (size_t i = 0; i < words; i++) buffer[i] = i * 0x9e3779b97f4a7c15ull + (uint64_t)round;
        uint64_t h = 14695981039346656037ull;
        for (size_t i = 0; i < model_size; i += 64) h = (h ^ model[i]) * 1099511628211ull;
        if (round == 0) model_hash = h;
        else if (h != model_hash) FAIL("round %d read the model as %016llx, round 0 as %016llx", round, (unsigned long long)h, (unsigned long long)model_hash);
        for (size_t i = 0; i < words; i++)
            if (buffer[i] != i * 0x9e3779b97f4a7c15ull + (uint64_t)round) FAIL("round %d: buffer word %zu changed", round, i);
    }
    printf("shared-budget: OK model-hash %016llx\n", (unsigned long long)model_hash);
    return 0;
}
