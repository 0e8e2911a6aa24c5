/* A forked child whose threads read, write and discard the pages it inherited, all at
 * once, while the engine takes its clean pages out through the child's agent (the test's
 * budget is far below the data). Each page's first word says what it must hold: the
 * parent's pattern, a value the child wrote, or zero after MADV_DONTNEED. Any lost write,
 * wrong byte or page that came back after a discard is reported. Usage:
 * prog_child_churn MIB THREADS ROUNDS; prints "churn: OK" and exits 0, or names the page. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static unsigned char *base;
static size_t pages;
static int threads, rounds;
static uint32_t *expected; /* first word of each page; 0: discarded (the page reads zeros) */
static volatile int failed;

static uint32_t pattern(size_t page) { return (uint32_t)(page * 2654435761u) | 1; }

static int check(size_t page)
{
    const uint32_t *w = (const uint32_t *)(base + page * 4096);
    if (w[0] != expected[page]) return 0;
    for (size_t i = 1; i < 1024; i++)
        if (w[i] != (expected[page] == 0 ? 0 : pattern(page) + (uint32_t)i)) return 0;
    return 1;
}

static void *worker(void *arg)
{
    size_t t = (size_t)arg;
    unsigned seed = (unsigned)(t * 7919 + 1);
    for (int r = 0; r < rounds && !failed; r++)
        for (size_t page = t; page < pages && !failed; page += (size_t)threads) {
            if (!check(page)) {
                printf("churn: page %zu wrong in round %d (first word %u, expected %u)\n", page, r, ((uint32_t *)(base + page * 4096))[0], expected[page]);
                fflush(stdout);
                failed = 1;
                break;
            }
            int what = rand_r(&seed) % 16;
            uint32_t *w = (uint32_t *)(base + page * 4096);
            if (what == 0) {
                madvise(base + page * 4096, 4096, MADV_DONTNEED);
                expected[page] = 0;
            } else if (what <= 2) {
                if (expected[page] == 0) /* a discarded page gets its pattern back, by writes */
                    for (size_t i = 1; i < 1024; i++) w[i] = pattern(page) + (uint32_t)i;
                uint32_t value = (uint32_t)rand_r(&seed) | 1;
                w[0] = value;
                expected[page] = value;
            }
        }
    return NULL;
}

int main(int argc, char **argv)
{
    pages = (argc > 1 ? strtoul(argv[1], NULL, 10) : 32) * 256;
    threads = argc > 2 ? atoi(argv[2]) : 4;
    rounds = argc > 3 ? atoi(argv[3]) : 4;
    if (threads < 1 || threads > 64 || rounds < 1) { fprintf(stderr, "usage: prog_child_churn MIB THREADS ROUNDS\n"); return 2; }
    base = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    expected = calloc(pages, sizeof *expected);
    if (base == MAP_FAILED || !expected) { perror("memory"); return 2; }
    for (size_t page = 0; page < pages; page++) {
        uint32_t *w = (uint32_t *)(base + page * 4096);
        expected[page] = w[0] = pattern(page);
        for (size_t i = 1; i < 1024; i++) w[i] = pattern(page) + (uint32_t)i;
    }
    fflush(stdout);
    pid_t child = fork();
    if (child < 0) { perror("fork"); return 2; }
    if (child == 0) {
        pthread_t tid[64];
        for (int t = 0; t < threads; t++) pthread_create(&tid[t], NULL, worker, (void *)(size_t)t);
        for (int t = 0; t < threads; t++) pthread_join(tid[t], NULL);
        for (size_t page = 0; page < pages && !failed; page++)
            if (!check(page)) { printf("churn: page %zu wrong at the end\n", page); failed = 1; }
        fflush(stdout);
        _exit(failed ? 1 : 0);
    }
    int status;
    waitpid(child, &status, 0);
    /* The parent's own pages are untouched by the child's churn. */
    for (size_t page = 0; page < pages; page++) {
        const uint32_t *w = (const uint32_t *)(base + page * 4096);
        if (w[0] != pattern(page) || w[1023] != pattern(page) + 1023) { printf("churn: parent page %zu wrong\n", page); return 1; }
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) { printf("churn: OK\n"); return 0; }
    printf("churn: the child failed (status %d)\n", status);
    return 1;
}
