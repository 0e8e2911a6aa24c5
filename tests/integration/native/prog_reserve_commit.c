/* A runtime's heap, placed as V8, jemalloc and the JVM place theirs: one large
 * reservation (PROT_NONE), aligned by trimming its head and tail with munmap, then
 * committed piece by piece, either with mprotect ("mprotect") or with MAP_FIXED maps
 * inside it ("fixed"). Usage: prog_reserve_commit mprotect|fixed [child]
 *
 * 1. Reserves 96 MiB + 2 MiB, trims it to a 2 MiB-aligned 96 MiB.
 * 2. Commits the first 64 MiB in four pieces of 16 MiB and writes a canary into every
 *    page: "TIBET-RESERVED-CANARY:" and the page's index.
 * 3. Prints "ready <pid>" and waits until stdin ends: the test scans the process's
 *    present pages for the canary meanwhile.
 * 4. Checks every page's canary (pages evicted meanwhile come back).
 * 5. Makes piece 1 inaccessible and accessible again (mprotect): its canaries stay.
 * 6. Decommits piece 2 (MAP_FIXED PROT_NONE map, or MADV_DONTNEED and mprotect, as V8
 *    does) and commits it again: it reads as zeros.
 * 7. Maps a file into the middle of the reservation's uncommitted part (as HotSpot maps
 *    archived classes into its heap), then commits the last 16 MiB, after it, and checks
 *    that it reads as zeros and keeps what is written.
 * 8. A second reservation, committed whole (one mapping, as mremap needs) and filled, is
 *    grown with mremap (MREMAP_MAYMOVE:
 *    moved by the kernel; refused with ENOMEM under tibet, whose arena cannot be copied
 *    while parts of it are inaccessible) and then shrunk in place: what was written stays.
 * 9. Prints "reserve-commit ok", or "reserve-commit error <what>".
 * With "child" a forked child does all of it, and the parent waits for it. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define MiB ((size_t)1 << 20)
#define PIECE (16 * MiB)
#define PAGE 4096
static const char canary[] = "TIBET-RESERVED-CANARY:";
static int use_fixed;

static int commit(char *at, size_t length, int prot)
{
    if (use_fixed)
        return mmap(at, length, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == at ? 0 : -1;
    return mprotect(at, length, prot);
}

static int decommit(char *at, size_t length)
{
    if (use_fixed)
        return mmap(at, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) == at ? 0 : -1;
    return madvise(at, length, MADV_DONTNEED) == 0 ? mprotect(at, length, PROT_NONE) : -1;
}

static void write_canary(char *page, size_t index)
{
    memcpy(page, canary, sizeof canary - 1);
    snprintf(page + sizeof canary - 1, 16, "%08zx", index);
}

static size_t wrong_canaries(char *base, size_t first, size_t count)
{
    size_t wrong = 0;
    char expected[64];
    for (size_t i = first; i < first + count; i++) {
        write_canary(expected, i);
        if (memcmp(base + i * PAGE, expected, sizeof canary - 1 + 8) != 0)
            wrong++;
    }
    return wrong;
}

static int fail(const char *what)
{
    printf("reserve-commit error %s (errno %d)\n", what, errno);
    return 1;
}

static int run(void)
{
    size_t length = 96 * MiB, slack = 2 * MiB;
    char *raw = mmap(NULL, length + slack, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED)
        return fail("reserve");
    char *base = (char *)(((uintptr_t)raw + slack - 1) & ~(uintptr_t)(slack - 1));
    if ((base > raw && munmap(raw, base - raw) != 0)
        || (raw + length + slack > base + length && munmap(base + length, raw + length + slack - (base + length)) != 0))
        return fail("trim");

    size_t pages = 4 * PIECE / PAGE, per_piece = PIECE / PAGE;
    for (int piece = 0; piece < 4; piece++)
        if (commit(base + piece * PIECE, PIECE, PROT_READ | PROT_WRITE) != 0)
            return fail("commit");
    for (size_t i = 0; i < pages; i++)
        write_canary(base + i * PAGE, i);

    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    char line[16];
    while (fgets(line, sizeof line, stdin)) {}

    if (wrong_canaries(base, 0, pages) != 0)
        return fail("canaries changed");

    if (mprotect(base + PIECE, PIECE, PROT_NONE) != 0 || mprotect(base + PIECE, PIECE, PROT_READ | PROT_WRITE) != 0)
        return fail("reprotect");
    if (wrong_canaries(base, per_piece, per_piece) != 0)
        return fail("canaries changed by mprotect");

    if (decommit(base + 2 * PIECE, PIECE) != 0 || commit(base + 2 * PIECE, PIECE, PROT_READ | PROT_WRITE) != 0)
        return fail("decommit");
    for (size_t i = 0; i < PIECE; i += 8)
        if (*(uint64_t *)(base + 2 * PIECE + i) != 0)
            return fail("a decommitted page kept its contents");
    if (wrong_canaries(base, 3 * per_piece, per_piece) != 0 || wrong_canaries(base, 0, per_piece) != 0)
        return fail("canaries changed by a decommit elsewhere");
    FILE *file = tmpfile();
    if (!file || fwrite(canary, 1, sizeof canary, file) != sizeof canary || fflush(file) != 0)
        return fail("tmpfile");
    char *mapped = mmap(base + 4 * PIECE, PAGE, PROT_READ, MAP_PRIVATE | MAP_FIXED, fileno(file), 0);
    if (mapped != base + 4 * PIECE || memcmp(mapped, canary, sizeof canary) != 0)
        return fail("file map");
    char *last = base + length - PIECE;
    if (commit(last, PIECE, PROT_READ | PROT_WRITE) != 0)
        return fail("commit after a file map");
    for (size_t i = 0; i < PIECE; i += PAGE) {
        if (*(uint64_t *)(last + i) != 0)
            return fail("a page committed after a file map is not zero");
        last[i] = (char)(i / PAGE) | 1;
    }
    for (size_t i = 0; i < PIECE; i += PAGE)
        if (last[i] != ((char)(i / PAGE) | 1))
            return fail("a page committed after a file map lost what was written");
    fclose(file);
    if (munmap(base, length) != 0)
        return fail("munmap");

    size_t small = 32 * MiB;
    char *second = mmap(NULL, small, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (second == MAP_FAILED || commit(second, small, PROT_READ | PROT_WRITE) != 0)
        return fail("second reservation");
    for (size_t i = 0; i < small; i += PAGE)
        second[i] = (char)(i / PAGE) | 1;
    char *grown = mremap(second, small, 2 * small, MREMAP_MAYMOVE);
    if (grown == MAP_FAILED && errno != ENOMEM)
        return fail("mremap grow");
    if (grown != MAP_FAILED)
        second = grown;
    char *shrunk = mremap(second, grown != MAP_FAILED ? 2 * small : small, small / 4, 0);
    if (shrunk != second)
        return fail("mremap shrink");
    for (size_t i = 0; i < small / 4; i += PAGE)
        if (second[i] != ((char)(i / PAGE) | 1))
            return fail("a reservation's pages changed through mremap");
    if (munmap(second, small / 4) != 0)
        return fail("munmap of the second reservation");
    printf("reserve-commit ok\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "mprotect") != 0 && strcmp(argv[1], "fixed") != 0)) {
        fprintf(stderr, "usage: prog_reserve_commit mprotect|fixed [child]\n");
        return 2;
    }
    use_fixed = strcmp(argv[1], "fixed") == 0;
    if (argc < 3 || strcmp(argv[2], "child") != 0)
        return run();
    fflush(stdout);
    pid_t child = fork();
    if (child < 0)
        return fail("fork");
    if (child == 0) {
        int rc = run();
        fflush(stdout);
        _exit(rc);
    }
    int status;
    waitpid(child, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
