/* mremap of a forked child's served mappings (native/served.c, the shim's mremap).
 * Usage: prog_served_remap FILE
 * The child maps 16 MiB (served by the custodian: above the threshold), writes every page,
 * grows it to 64 MiB with MREMAP_MAYMOVE and writes the new part, shrinks it in place to
 * 16 MiB, then maps 32 MiB more (the kernel often places it over the freed tail) and
 * writes it; it checks every byte after each step. It prints
 * "remap: B bad bytes; new map over the old tail: yes|no". Then it maps 16 MiB more
 * (served), maps FILE over exactly that range (MAP_SHARED, MAP_FIXED: no longer served),
 * grows that with mremap and writes both parts, and prints "file: Z Y" when the writes
 * reached the file, as they must. It exits 0, or dies by the signal that hit it (the
 * parent says "child killed by signal N"). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define MIB (1UL << 20)

static size_t check(const unsigned char *p, size_t from, size_t to, unsigned char value)
{
    size_t bad = 0;
    for (size_t i = from; i < to; i++)
        bad += p[i] != value;
    return bad;
}

int main(int argc, char **argv)
{
    if (argc != 2) { fprintf(stderr, "usage: prog_served_remap FILE\n"); return 2; }
    fflush(stdout);
    pid_t child = fork();
    if (child < 0) { perror("fork"); return 1; }
    if (child > 0) {
        int status;
        if (waitpid(child, &status, 0) != child) return 1;
        if (WIFSIGNALED(status)) { printf("child killed by signal %d\n", WTERMSIG(status)); return 128 + WTERMSIG(status); }
        return WEXITSTATUS(status);
    }
    size_t small = 16 * MIB, large = 64 * MIB;
    unsigned char *p = mmap(NULL, small, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); return 1; }
    memset(p, 'a', small);
    size_t bad = check(p, 0, small, 'a');
    unsigned char *q = mremap(p, small, large, MREMAP_MAYMOVE);
    if (q == MAP_FAILED) { perror("mremap grow"); return 1; }
    memset(q + small, 'b', large - small);
    bad += check(q, 0, small, 'a') + check(q, small, large, 'b');
    unsigned char *r = mremap(q, large, small, 0);
    if (r != q) { perror("mremap shrink"); return 1; }
    bad += check(r, 0, small, 'a');
    unsigned char *s = mmap(NULL, 32 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED) { perror("mmap"); return 1; }
    memset(s, 'c', 32 * MIB);
    bad += check(s, 0, 32 * MIB, 'c') + check(r, 0, small, 'a');
    int over_tail = s < r + large && r + small < s + 32 * MIB;
    printf("remap: %zu bad bytes; new map over the old tail: %s\n", bad, over_tail ? "yes" : "no");

    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, 2 * small) != 0) { perror(argv[1]); return 1; }
    unsigned char *a = mmap(NULL, small, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED) { perror("mmap"); return 1; }
    memset(a, 'a', small);
    unsigned char *f = mmap(a, small, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
    if (f != a) { perror("mmap fixed"); return 1; }
    unsigned char *g = mremap(f, small, 2 * small, MREMAP_MAYMOVE);
    if (g == MAP_FAILED) { perror("mremap file"); return 1; }
    g[0] = 'Z';
    g[small] = 'Y';
    msync(g, 2 * small, MS_SYNC);
    unsigned char first = '0', second = '0';
    if (pread(fd, &first, 1, 0) != 1 || pread(fd, &second, 1, (off_t)small) != 1) { perror("pread"); return 1; }
    printf("file: %c %c\n", first ? first : '0', second ? second : '0');
    return 0;
}
