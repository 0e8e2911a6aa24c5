/* mremap of part of a large mapping, as the kernel allows it: shrinking a middle part in
 * place, moving and growing a middle part, and moving and growing the tail. Every page
 * holds its own pattern; after each step the program checks every byte it still has, and
 * that the grown parts read zeros and keep what it writes there. It does it in the
 * process itself, then in a forked child on a mapping of the child's own, so that both
 * the program's engine (or the custodian, serving the program) and the custodian serving
 * a child are reached. Then the edges, where only an answer is required, never a crash:
 * a part the program made PROT_NONE, moved and grown (natively moved; tibet may refuse
 * it with EFAULT, it cannot read it), and a range across a hole it unmapped (EFAULT
 * natively; tibet may answer the same). Exit 0; 1 with a line on stderr; a signal if one
 * hit it (SIGBUS from a part the kernel grew and nobody serves, SIGSEGV from a copy). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define MIB (1UL << 20)
#define PAGE 4096UL

static unsigned char value_of(size_t page) { return (unsigned char)(page * 7 + 1); }

/* Pages [first, first + count) of the original mapping, now at p, hold their patterns. */
static int holds(const unsigned char *p, size_t first, size_t count, const char *what)
{
    for (size_t i = 0; i < count; i++)
        for (size_t b = 0; b < PAGE; b += 512)
            if (p[i * PAGE + b] != value_of(first + i)) {
                fprintf(stderr, "%s: page %zu reads %u, expected %u\n", what, first + i, p[i * PAGE + b], value_of(first + i));
                return 0;
            }
    return 1;
}

static int zeros_then_written(unsigned char *p, size_t length, const char *what)
{
    for (size_t b = 0; b < length; b++)
        if (p[b] != 0) { fprintf(stderr, "%s: a grown part reads %u at %zu, not 0\n", what, p[b], b); return 0; }
    memset(p, 0x5a, length);
    for (size_t b = 0; b < length; b++)
        if (p[b] != 0x5a) { fprintf(stderr, "%s: a grown part lost a write at %zu\n", what, b); return 0; }
    return 1;
}

static int exercise(const char *who)
{
    size_t pages = 16 * MIB / PAGE;
    unsigned char *m = mmap(NULL, 16 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) { perror("mmap"); return 0; }
    for (size_t i = 0; i < pages; i++) memset(m + i * PAGE, value_of(i), PAGE);

    /* A middle part shrinks in place: [4, 8) MiB becomes [4, 6) MiB. */
    if (mremap(m + 4 * MIB, 4 * MIB, 2 * MIB, 0) != m + 4 * MIB) { fprintf(stderr, "%s: ", who); perror("mremap shrink of a middle part"); return 0; }
    if (!holds(m, 0, 6 * MIB / PAGE, who) || !holds(m + 8 * MIB, 8 * MIB / PAGE, 8 * MIB / PAGE, who)) return 0;

    /* A middle part moves and grows: [10, 12) MiB to 4 MiB elsewhere. */
    unsigned char *q = mremap(m + 10 * MIB, 2 * MIB, 4 * MIB, MREMAP_MAYMOVE);
    if (q == MAP_FAILED) { fprintf(stderr, "%s: ", who); perror("mremap move of a middle part"); return 0; }
    if (!holds(q, 10 * MIB / PAGE, 2 * MIB / PAGE, who) || !zeros_then_written(q + 2 * MIB, 2 * MIB, who)) return 0;

    /* The tail moves and grows: [14, 16) MiB to 3 MiB elsewhere. */
    unsigned char *r = mremap(m + 14 * MIB, 2 * MIB, 3 * MIB, MREMAP_MAYMOVE);
    if (r == MAP_FAILED) { fprintf(stderr, "%s: ", who); perror("mremap move of the tail"); return 0; }
    if (!holds(r, 14 * MIB / PAGE, 2 * MIB / PAGE, who) || !zeros_then_written(r + 2 * MIB, 1 * MIB, who)) return 0;

    /* What stayed where it was is intact, and the moved data still is. */
    if (!holds(m, 0, 6 * MIB / PAGE, who) || !holds(m + 8 * MIB, 8 * MIB / PAGE, 2 * MIB / PAGE, who)
        || !holds(m + 12 * MIB, 12 * MIB / PAGE, 2 * MIB / PAGE, who)
        || !holds(q, 10 * MIB / PAGE, 2 * MIB / PAGE, who) || !holds(r, 14 * MIB / PAGE, 2 * MIB / PAGE, who))
        return 0;
    /* A small part (16 KiB, below any threshold) moves and grows, its contents kept. */
    unsigned char *s = mremap(m + 1 * MIB, 16384, 32768, MREMAP_MAYMOVE);
    if (s == MAP_FAILED) { fprintf(stderr, "%s: ", who); perror("mremap move of a small part"); return 0; }
    if (!holds(s, 1 * MIB / PAGE, 4, who) || !zeros_then_written(s + 16384, 16384, who)) return 0;

    /* Edges: an answer, never a crash. */
    if (mprotect(m + 2 * MIB, 64 * 1024, PROT_NONE) != 0) { perror("mprotect"); return 0; }
    unsigned char *n = mremap(m + 2 * MIB, 64 * 1024, 128 * 1024, MREMAP_MAYMOVE);
    printf("%s: inaccessible part %s\n", who, n == MAP_FAILED ? (errno == EFAULT ? "refused (EFAULT)" : "refused (other)") : "moved");
    unsigned char *h = mremap(m + 5 * MIB, 2 * MIB, 4 * MIB, MREMAP_MAYMOVE); /* [6, 8) MiB was unmapped above */
    printf("%s: across a hole %s\n", who, h == MAP_FAILED ? (errno == EFAULT ? "refused (EFAULT)" : "refused (other)") : "moved");
    /* A hostile size: refused, and the part keeps its contents. */
    unsigned char *x = mremap(m + 3 * MIB, 16384, (size_t)-1, 0);
    printf("%s: hostile size %s\n", who, x == MAP_FAILED ? "refused" : "accepted");
    if (!holds(m + 3 * MIB, 3 * MIB / PAGE, 4, who)) return 0;
    printf("%s: ok\n", who);
    fflush(stdout);
    return 1;
}

int main(void)
{
    if (!exercise("process")) return 1;
    pid_t child = fork();
    if (child < 0) { perror("fork"); return 1; }
    if (child == 0) _exit(exercise("child") ? 0 : 1);
    int status;
    if (waitpid(child, &status, 0) != child) { perror("waitpid"); return 1; }
    if (WIFSIGNALED(status)) { fprintf(stderr, "child killed by signal %d\n", WTERMSIG(status)); return 1; }
    return WEXITSTATUS(status);
}
