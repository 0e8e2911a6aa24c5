/* Every allocator function with sizes no allocator can hold (near 2^62, 2^63, 2^64) and
 * with calloc products that overflow. Prints one line per call: the result (NULL or a
 * pointer) and, on failure, errno (or the returned error of posix_memalign). Run natively
 * and under tibet-run: the lines must be identical, since glibc's answers are the ones a
 * program must get. Lines starting with "uffd" say whether a block lies in memory
 * registered with userfaultfd (VmFlags "um" in /proc/self/smaps), which under tibet-run
 * means an encrypted arena, and natively never: they are compared separately.
 *
 * Results that are not NULL are printed and never freed: for these sizes such a result
 * is the bug under test, and it may not be a pointer free() accepts. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POW2(n) ((size_t)1 << (n))

static const struct { const char *name; size_t size; } sizes[] = {
    { "2^40+1", POW2(40) + 1 },  /* just over tibet's 1 TiB region */
    { "2^44", POW2(44) },
    { "2^62-1", POW2(62) - 1 },
    { "2^62", POW2(62) },
    { "2^62+4096", POW2(62) + 4096 },
    { "2^63-4096", POW2(63) - 4096 },
    { "2^63-1", POW2(63) - 1 },    /* PTRDIFF_MAX */
    { "2^63", POW2(63) },          /* SIZE_MAX/2+1 */
    { "2^63+4096", POW2(63) + 4096 },
    { "2^64-4096", SIZE_MAX - 4095 },
    { "2^64-1", SIZE_MAX },
};

static const struct { const char *name; size_t count, size; } products[] = {
    { "2^32 x 2^32", POW2(32), POW2(32) },     /* 2^64: overflows to 0 */
    { "2^32+1 x 2^32", POW2(32) + 1, POW2(32) }, /* overflows to 2^32, a size anyone could hold */
    { "2^63 x 2", POW2(63), 2 },               /* overflows to 0 */
    { "SIZE_MAX x 2", SIZE_MAX, 2 },
    { "2^62 x 4", POW2(62), 4 },
    { "2^31 x 2^31", POW2(31), POW2(31) },     /* 2^62, no overflow */
    { "2^20 x 2^43", POW2(20), POW2(43) },     /* 2^63, no overflow */
    { "1 x 2^63", 1, POW2(63) },
    { "2^63 x 1", POW2(63), 1 },
    { "2^64-1 x 2^64-1", SIZE_MAX, SIZE_MAX },
};

/* Whether the mapping holding p is registered with userfaultfd for missing pages. */
static const char *uffd_state(const void *p)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return "unknown (no /proc/self/smaps)";
    char line[512];
    int inside = 0;
    const char *state = "unmapped";
    while (fgets(line, sizeof line, f)) {
        unsigned long start, end;
        if (sscanf(line, "%lx-%lx ", &start, &end) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            inside = (uintptr_t)p >= start && (uintptr_t)p < end;
            continue;
        }
        if (inside && strncmp(line, "VmFlags:", 8) == 0) {
            state = strstr(line, " um") ? "yes" : "no";
            break;
        }
    }
    fclose(f);
    return state;
}

static void answer(const char *call, const char *name, const void *p, int error)
{
    if (p)
        printf("%s(%s) = pointer\n", call, name);
    else
        printf("%s(%s) = NULL errno %d\n", call, name, error);
    fflush(stdout);
}

/* The old blocks are used after realloc only when it failed, which gcc's use-after-free
 * analysis cannot see: realloc is called through this pointer. */
static void *(*volatile resize)(void *, size_t) = realloc;

static void fill(unsigned char *p, size_t n) { for (size_t i = 0; i < n; i += 4096) p[i] = (unsigned char)(i >> 12); }
static int intact(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i += 4096) if (p[i] != (unsigned char)(i >> 12)) return 0;
    return 1;
}

int main(void)
{
    const size_t big = 8 << 20;
    /* Blocks to realloc: one the interposer redirects (8 MiB), one it never sees (100 B). */
    unsigned char *large = malloc(big);
    unsigned char *small = malloc(100);
    if (!large || !small) {
        printf("FAIL setup allocations\n");
        return 1;
    }
    fill(large, big);
    memset(small, 0x5A, 100);
    printf("uffd large block before: %s\n", uffd_state(large));

    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        const char *name = sizes[i].name;
        size_t size = sizes[i].size;
        void *p;
        int rc;

        errno = 0; p = malloc(size); answer("malloc", name, p, errno);
        errno = 0; p = calloc(1, size); answer("calloc 1 x", name, p, errno);
        errno = 0; p = realloc(NULL, size); answer("realloc NULL", name, p, errno);
        /* A failed realloc leaves the old block as it was: its contents and its size. */
        errno = 0; p = resize(small, size); rc = errno;
        if (p)
            printf("realloc small(%s) = pointer\n", name);
        else
            printf("realloc small(%s) = NULL errno %d, old block %s\n", name, rc,
                   small[0] == 0x5A && small[99] == 0x5A ? "intact" : "CHANGED");
        errno = 0; p = resize(large, size); rc = errno;
        if (p)
            printf("realloc large(%s) = pointer\n", name);
        else
            printf("realloc large(%s) = NULL errno %d, old block %s, usable size %s\n", name, rc,
                   intact(large, big) ? "intact" : "CHANGED", malloc_usable_size(large) >= big ? "kept" : "SHRUNK");
        fflush(stdout);
        for (size_t align = 64; align <= 2 << 20; align <<= 15) {
            char what[64];
            void *q = NULL;
            snprintf(what, sizeof what, "posix_memalign %zu", align);
            errno = 0; rc = posix_memalign(&q, align, size);
            printf("%s(%s) = %d%s\n", what, name, rc, rc == 0 ? " pointer" : "");
            snprintf(what, sizeof what, "aligned_alloc %zu", align);
            errno = 0; p = aligned_alloc(align, size); answer(what, name, p, errno);
            snprintf(what, sizeof what, "memalign %zu", align);
            errno = 0; p = memalign(align, size); answer(what, name, p, errno);
        }
        errno = 0; p = valloc(size); answer("valloc", name, p, errno);
        errno = 0; p = pvalloc(size); answer("pvalloc", name, p, errno);
    }
    for (size_t i = 0; i < sizeof products / sizeof products[0]; i++) {
        errno = 0;
        void *p = calloc(products[i].count, products[i].size);
        answer("calloc", products[i].name, p, errno);
    }

    /* The blocks the hostile calls left alone are still whole, and the next ordinary
     * large allocation is served as usual (under tibet-run: from an arena). */
    printf("large block intact: %s\n", intact(large, big) ? "yes" : "NO");
    printf("uffd large block after: %s\n", uffd_state(large));
    unsigned char *after = malloc(big);
    if (!after) {
        printf("FAIL malloc(8 MiB) after the hostile calls\n");
        return 1;
    }
    memset(after, 0x33, big);
    printf("uffd next 8 MiB block: %s\n", uffd_state(after));
    free(after);
    free(large);
    free(small);
    printf("edges: done\n");
    return 0;
}
