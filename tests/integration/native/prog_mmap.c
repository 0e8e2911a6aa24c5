/* Large anonymous mappings: partial munmap, mremap grow and shrink, MAP_FIXED over part,
 * mprotect, madvise. Exits 1 naming the failing check; prints "mmap: OK" otherwise. */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#define CHECK(cond, what) do { if (!(cond)) { printf("FAIL %s\n", what); return 1; } } while (0)
#define MB (1UL << 20)

static void fill(unsigned char *p, size_t n, unsigned seed) { for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 31 + seed + (i >> 12)); }
static int same(const unsigned char *p, size_t n, unsigned seed) { for (size_t i = 0; i < n; i++) if (p[i] != (unsigned char)(i * 31 + seed + (i >> 12))) return 0; return 1; }

int main(void)
{
    const int rw = PROT_READ | PROT_WRITE, anon = MAP_PRIVATE | MAP_ANONYMOUS;
    unsigned char *m = mmap(NULL, 64 * MB, rw, anon, -1, 0);
    CHECK(m != MAP_FAILED, "mmap 64M");
    fill(m, 64 * MB, 1);

    /* Partial munmap: head, middle, tail; the rest stays. */
    CHECK(munmap(m, 4 * MB) == 0, "munmap head");
    CHECK(munmap(m + 30 * MB, 4 * MB) == 0, "munmap middle");
    CHECK(munmap(m + 60 * MB, 4 * MB) == 0, "munmap tail");
    for (size_t off = 4 * MB; off < 30 * MB; off += 4096) CHECK(m[off] == (unsigned char)(off * 31 + 1 + (off >> 12)), "head remainder");
    for (size_t off = 34 * MB; off < 60 * MB; off += 4096) CHECK(m[off] == (unsigned char)(off * 31 + 1 + (off >> 12)), "tail remainder");

    /* mremap grow (may move) and shrink keep content. */
    unsigned char *g = mmap(NULL, 16 * MB, rw, anon, -1, 0);
    CHECK(g != MAP_FAILED, "mmap 16M");
    fill(g, 16 * MB, 2);
    unsigned char *g2 = mremap(g, 16 * MB, 48 * MB, MREMAP_MAYMOVE);
    CHECK(g2 != MAP_FAILED, "mremap grow");
    CHECK(same(g2, 16 * MB, 2), "mremap grow content");
    for (size_t off = 16 * MB; off < 48 * MB; off += 4096) CHECK(g2[off] == 0, "mremap grown part is zero");
    unsigned char *g3 = mremap(g2, 48 * MB, 8 * MB, 0);
    CHECK(g3 == g2 && same(g3, 8 * MB, 2), "mremap shrink in place");

    /* MAP_FIXED over part of a big mapping: new, independent, zero pages. */
    unsigned char *f = mmap(NULL, 16 * MB, rw, anon, -1, 0);
    CHECK(f != MAP_FAILED, "mmap for MAP_FIXED");
    fill(f, 16 * MB, 3);
    unsigned char *fx = mmap(f + 4 * MB, 2 * MB, rw, anon | MAP_FIXED, -1, 0);
    CHECK(fx == f + 4 * MB, "MAP_FIXED placed");
    for (size_t off = 0; off < 2 * MB; off += 512) CHECK(fx[off] == 0, "MAP_FIXED pages are zero");
    memset(fx, 0x77, 2 * MB);
    CHECK(same(f, 4 * MB, 3), "before MAP_FIXED intact");
    for (size_t off = 6 * MB; off < 16 * MB; off += 4096) CHECK(f[off] == (unsigned char)(off * 31 + 3 + (off >> 12)), "after MAP_FIXED intact");
    CHECK(munmap(f, 16 * MB) == 0, "munmap over a MAP_FIXED hole");

    /* mprotect part read-only, then read it. */
    unsigned char *p = mmap(NULL, 8 * MB, rw, anon, -1, 0);
    CHECK(p != MAP_FAILED, "mmap for mprotect");
    fill(p, 8 * MB, 4);
    CHECK(mprotect(p, 4 * MB, PROT_READ) == 0, "mprotect");
    CHECK(same(p, 8 * MB, 4), "content after mprotect");

    /* madvise: DONTNEED reads zeros; FREE then write reads the new data. */
    unsigned char *d = mmap(NULL, 8 * MB, rw, anon, -1, 0);
    CHECK(d != MAP_FAILED, "mmap for madvise");
    fill(d, 8 * MB, 5);
    CHECK(madvise(d, 2 * MB, MADV_DONTNEED) == 0, "madvise DONTNEED");
    for (size_t off = 0; off < 2 * MB; off += 256) CHECK(d[off] == 0, "DONTNEED reads zeros");
    for (size_t off = 2 * MB; off < 4 * MB; off += 4096) CHECK(d[off] == (unsigned char)(off * 31 + 5 + (off >> 12)), "next to DONTNEED intact");
    CHECK(madvise(d + 4 * MB, 2 * MB, MADV_FREE) == 0, "madvise FREE");
    memset(d + 4 * MB, 0x42, 2 * MB);
    for (size_t off = 4 * MB; off < 6 * MB; off += 256) CHECK(d[off] == 0x42, "FREE then write");

    CHECK(munmap(m + 4 * MB, 26 * MB) == 0 && munmap(m + 34 * MB, 26 * MB) == 0, "munmap rest");
    CHECK(munmap(g3, 8 * MB) == 0 && munmap(p, 8 * MB) == 0 && munmap(d, 8 * MB) == 0, "munmap all");
    printf("mmap: OK\n");
    return 0;
}
