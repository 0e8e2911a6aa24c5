/* A forked child that moves and grows an inherited allocation with mremap, most of whose
 * pages were sealed in the parent (the test's budget is far below it), then checks every
 * byte at the new address, reads zeros in the grown part, and reads zeros after
 * MADV_DONTNEED on a moved page. Before the child service followed mremap, the first read
 * at the new address faulted for ever. Usage: prog_child_mremap MIB; prints "mremap: OK". */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    size_t size = (argc > 1 ? strtoul(argv[1], NULL, 10) : 8) << 20;
    uint64_t *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); return 2; }
    for (size_t i = 0; i < size / 8; i++) p[i] = i * 0x9E3779B97F4A7C15ULL + 1;
    pid_t child = fork();
    if (child < 0) { perror("fork"); return 2; }
    if (child == 0) {
        uint64_t *q = mremap(p, size, 2 * size, MREMAP_MAYMOVE);
        if (q == MAP_FAILED) { perror("mremap"); _exit(2); }
        for (size_t i = 0; i < size / 8; i++)
            if (q[i] != i * 0x9E3779B97F4A7C15ULL + 1) { printf("mremap: word %zu wrong at the new address\n", i); _exit(1); }
        for (size_t i = size / 8; i < 2 * size / 8; i += 512)
            if (q[i] != 0) { printf("mremap: grown word %zu is not zero\n", i); _exit(1); }
        madvise(q, 4096, MADV_DONTNEED);
        for (size_t i = 0; i < 512; i++)
            if (q[i] != 0) { printf("mremap: word %zu came back after MADV_DONTNEED\n", i); _exit(1); }
        q[size / 8 + 7] = 42;
        if (q[size / 8 + 7] != 42) { printf("mremap: a write to the grown part was lost\n"); _exit(1); }
        _exit(0);
    }
    int status;
    waitpid(child, &status, 0);
    for (size_t i = 0; i < size / 8; i++)
        if (p[i] != i * 0x9E3779B97F4A7C15ULL + 1) { printf("mremap: parent word %zu wrong\n", i); return 1; }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) { printf("mremap: OK\n"); return 0; }
    printf("mremap: the child failed (status %d)\n", status);
    return 1;
}
