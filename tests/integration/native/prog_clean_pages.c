/* Pages that come back from their sealed copy and are not written keep that copy (tibet
 * evicts them without encryption); written ones must be sealed anew. This program reads a
 * 16 MiB block back twice (clean evictions), forks a child that writes every page of its
 * copy (its inherited write-protected pages must become writable), then writes half of
 * its own pages and checks every byte, twice. Prints "clean-pages: OK" or names the
 * first wrong page. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGES 4096
#define PAGE 4096

static unsigned char expected(size_t page, size_t i, unsigned generation)
{
    return (unsigned char)(page * 31 + i * 7 + generation * 101 + (i >> 9));
}

static void fill(unsigned char *p, size_t page, unsigned generation)
{
    for (size_t i = 0; i < PAGE; i++) p[page * PAGE + i] = expected(page, i, generation);
}

static long first_wrong(const unsigned char *p, const unsigned *generations)
{
    for (size_t page = 0; page < PAGES; page++)
        for (size_t i = 0; i < PAGE; i++)
            if (p[page * PAGE + i] != expected(page, i, generations[page])) return (long)page;
    return -1;
}

int main(void)
{
    unsigned char *p = malloc((size_t)PAGES * PAGE);
    unsigned *generations = calloc(PAGES, sizeof(unsigned));
    if (!p || !generations) return 2;
    for (size_t page = 0; page < PAGES; page++) fill(p, page, 0);
    for (int pass = 0; pass < 2; pass++) {
        long wrong = first_wrong(p, generations);
        if (wrong >= 0) { printf("FAIL read pass %d page %ld\n", pass, wrong); return 1; }
    }

    pid_t pid = fork();
    if (pid < 0) { printf("FAIL fork\n"); return 1; }
    if (pid == 0) {
        for (size_t page = 0; page < PAGES; page++) { fill(p, page, 1); generations[page] = 1; }
        _exit(first_wrong(p, generations) >= 0 ? 3 : 0);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        printf("FAIL child status 0x%x\n", status);
        return 1;
    }
    for (int pass = 0; pass < 2; pass++) {
        for (size_t page = pass; page < PAGES; page += 2) { fill(p, page, 2 + pass); generations[page] = 2 + pass; }
        long wrong = first_wrong(p, generations);
        if (wrong >= 0) { printf("FAIL parent pass %d page %ld\n", pass, wrong); return 1; }
    }
    printf("clean-pages: OK\n");
    return 0;
}
