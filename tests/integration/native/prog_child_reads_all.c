/* A forked child that reads all of a large allocation the parent filled before the fork
 * (most of it sealed by then, under the test's budget), checks every word, writes one word
 * in every 16th page, and reads everything again. Each page starts with a marker and its
 * index, so a scan of the child's memory from outside counts the pages it holds in
 * plaintext. The child then says "CHILD <pid> READY" and waits for a line on stdin, so
 * that the test can scan it, and ends with "child: OK" or the first wrong word.
 * Usage: prog_child_reads_all MIB */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MARKER "tibet-child-page-7c31:"

static uint64_t word(size_t i) { return i * 0x9E3779B97F4A7C15ULL; }

static void fill_page(unsigned char *page, size_t index)
{
    uint64_t *w = (uint64_t *)page;
    for (size_t k = 0; k < 512; k++) w[k] = word(index * 512 + k);
    memcpy(page, MARKER, sizeof MARKER - 1);
}

static int check_page(const unsigned char *page, size_t index)
{
    unsigned char expected[4096];
    fill_page(expected, index);
    return memcmp(page + 64, expected + 64, 4096 - 64) == 0 && memcmp(page, MARKER, sizeof MARKER - 1) == 0;
}

int main(int argc, char **argv)
{
    size_t pages = (argc > 1 ? strtoul(argv[1], NULL, 10) : 64) * 256;
    unsigned char *data = malloc(pages * 4096 + 4096);
    unsigned char *base = (unsigned char *)(((uintptr_t)data + 4095) & ~(uintptr_t)4095);
    for (size_t i = 0; i < pages; i++) fill_page(base + i * 4096, i);
    fflush(stdout);
    pid_t child = fork();
    if (child < 0) { perror("fork"); return 1; }
    if (child == 0) {
        for (int round = 0; round < 2; round++) {
            for (size_t i = 0; i < pages; i++)
                if (!check_page(base + i * 4096, i)) { printf("child: page %zu wrong in round %d\n", i, round); fflush(stdout); _exit(1); }
            if (round == 0)
                for (size_t i = 0; i < pages; i += 16) base[i * 4096 + 32] ^= 0xff, base[i * 4096 + 32] ^= 0xff; /* a write that keeps the bytes */
        }
        printf("CHILD %d READY\n", (int)getpid());
        fflush(stdout);
        char line[16];
        if (!fgets(line, sizeof line, stdin)) { /* the test closed stdin: go on */ }
        printf("child: OK\n");
        fflush(stdout);
        _exit(0);
    }
    int status;
    waitpid(child, &status, 0);
    for (size_t i = 0; i < pages; i++)
        if (!check_page(base + i * 4096, i)) { printf("parent: page %zu wrong\n", i); return 1; }
    printf("parent: OK\n");
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
