/*
 * An LD_PRELOAD shim that counts malloc-family calls by thread name, once armed, so a
 * test can prove that the engine's handler thread ("tibet-uffd") never calls malloc
 * while it serves faults and evicts. This must be C: it replaces libc's allocator
 * symbols in a process, below anything managed code can see.
 *   tibet_probe_arm()            resets the counters and starts counting
 *   tibet_probe_count(which)     0: calls on "tibet-uffd"; 1: calls on "probe-control"
 */
#define _GNU_SOURCE
#include <stddef.h>
#include <string.h>
#include <sys/prctl.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);

static volatile int armed;
static long counts[2];

static void note(void)
{
    if (!armed)
        return;
    char name[16] = {0};
    if (prctl(PR_GET_NAME, name, 0, 0, 0) != 0)
        return;
    if (strcmp(name, "tibet-uffd") == 0)
        __atomic_add_fetch(&counts[0], 1, __ATOMIC_RELAXED);
    else if (strcmp(name, "probe-control") == 0)
        __atomic_add_fetch(&counts[1], 1, __ATOMIC_RELAXED);
}

void *malloc(size_t n) { note(); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { note(); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { note(); return __libc_realloc(p, n); }
void free(void *p) { if (p) note(); __libc_free(p); }
void *memalign(size_t a, size_t n) { note(); return __libc_memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) { note(); return __libc_memalign(a, n); }
int posix_memalign(void **out, size_t a, size_t n)
{
    note();
    void *p = __libc_memalign(a, n);
    if (!p) return 12;
    *out = p;
    return 0;
}

void tibet_probe_arm(void)
{
    counts[0] = counts[1] = 0;
    __atomic_store_n(&armed, 1, __ATOMIC_SEQ_CST);
}

long tibet_probe_count(int which) { return __atomic_load_n(&counts[which], __ATOMIC_SEQ_CST); }
