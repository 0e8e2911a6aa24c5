/* Every allocator function, with content checks after memory pressure. Exits 1 with the
 * failing check's name on any mismatch; prints "alloc: OK" otherwise. Run natively and
 * under tibet-run with a small threshold and budget: results must be identical. */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond, what) do { if (!(cond)) { printf("FAIL %s\n", what); return 1; } } while (0)

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 2654435761u + seed);
}

static int same(const unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) if (p[i] != (unsigned char)(i * 2654435761u + seed)) return 0;
    return 1;
}

int main(void)
{
    const size_t big = 8 << 20;
    /* Dirty a block and free it, so that a later calloc of the same size would see
     * garbage if zeroing were skipped. */
    unsigned char *dirty = malloc(big);
    CHECK(dirty, "malloc big");
    memset(dirty, 0xAB, big);
    free(dirty);
    unsigned char *zeros = calloc(big / 16, 16);
    CHECK(zeros, "calloc");
    for (size_t i = 0; i < big; i++) CHECK(zeros[i] == 0, "calloc zeroed");
    volatile size_t huge = SIZE_MAX / 2;
    CHECK(calloc(huge, 4) == NULL, "calloc overflow returns NULL");

    /* Blocks that together exceed the budget, checked after all are written. */
    enum { N = 12 };
    unsigned char *blocks[N];
    for (int i = 0; i < N; i++) {
        blocks[i] = malloc(big + i * 4099);
        CHECK(blocks[i], "malloc");
        CHECK(malloc_usable_size(blocks[i]) >= big + i * 4099, "usable size >= requested");
        fill(blocks[i], big + i * 4099, i);
    }
    for (int i = 0; i < N; i++) CHECK(same(blocks[i], big + i * 4099, i), "content after pressure");

    /* realloc: grow in place or by moving, shrink, and across the threshold both ways. */
    unsigned char *r = realloc(blocks[0], 3 * big);
    CHECK(r && same(r, big, 0), "realloc grow keeps content");
    fill(r, 3 * big, 77);
    r = realloc(r, big / 2);
    CHECK(r && same(r, big / 2, 77), "realloc shrink keeps content");
    r = realloc(r, 1000);
    CHECK(r && same(r, 1000, 77), "realloc below threshold keeps content");
    r = realloc(r, 2 * big);
    CHECK(r && same(r, 1000, 77), "realloc above threshold keeps content");
    size_t usable = malloc_usable_size(r);
    CHECK(usable >= 2 * big, "usable size after realloc");
    memset(r + usable - 4096, 0x11, 4096); /* writable up to the usable size */
    free(r);

    /* Aligned allocators, small and large alignments, large sizes. */
    for (size_t align = 16; align <= (2 << 20); align <<= 1) {
        void *p = NULL;
        CHECK(posix_memalign(&p, align, big) == 0 && p, "posix_memalign");
        CHECK(((uintptr_t)p & (align - 1)) == 0, "posix_memalign alignment");
        fill(p, big, (unsigned)align);
        void *q = aligned_alloc(align, big);
        CHECK(q && ((uintptr_t)q & (align - 1)) == 0, "aligned_alloc alignment");
        void *m = memalign(align, big);
        CHECK(m && ((uintptr_t)m & (align - 1)) == 0, "memalign alignment");
        CHECK(same(p, big, (unsigned)align), "aligned content");
        free(p); free(q); free(m);
    }
    void *bad = NULL;
    CHECK(posix_memalign(&bad, 24, big) != 0, "posix_memalign rejects a bad alignment");
    void *v = valloc(big);
    CHECK(v && ((uintptr_t)v & 4095) == 0, "valloc page aligned");
    void *pv = pvalloc(big + 1);
    CHECK(pv && ((uintptr_t)pv & 4095) == 0 && malloc_usable_size(pv) >= big + 4096, "pvalloc rounds to pages");
    free(v); free(pv);
    free(NULL);

    for (int i = 1; i < N; i++) { CHECK(same(blocks[i], big + i * 4099, i), "content at the end"); free(blocks[i]); }
    free(zeros);
    printf("alloc: OK\n");
    return 0;
}
