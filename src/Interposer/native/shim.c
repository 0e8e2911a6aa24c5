/*
 * The C part of libtibet.so: the libc allocator and mapping symbols a program calls.
 *
 * Why this is C and not C#:
 *  - These symbols are called before the .NET runtime exists (the runtime's own start-up
 *    calls mmap and malloc, and would re-enter a managed export half-initialised), and
 *    after fork() in a child where the runtime's threads are gone and managed code must
 *    never run.
 *  - The forwarded fast path must cost a compare and a jump, not a reverse P/Invoke.
 *
 * What stays here is only: resolving the next definitions (dlsym RTLD_NEXT), guards
 * against re-entry, ownership tests on the two address regions tibet reserves, and the
 * child-safe answers (free, malloc_usable_size) that need no managed code. Every policy
 * decision, all userfaultfd work, cryptography and bookkeeping live in C# (Exports.cs),
 * reached through the tibet_managed_* functions.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <stdarg.h>
#include <stddef.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Managed side (Exports.cs). Each returns 0/NULL to mean "not handled: forward". */
extern int tibet_managed_init(void);
extern void *tibet_managed_alloc(size_t size, size_t alignment);
extern void tibet_managed_free(void *p);
extern void *tibet_managed_realloc(void *p, size_t size);
extern void *tibet_managed_mmap(size_t length);
extern void *tibet_managed_map_file(size_t length, int fd, off_t offset);
extern int tibet_managed_unmap(void *addr, size_t length); /* 0 or an errno */
extern void *tibet_managed_mremap(void *old, size_t old_size, size_t new_size, int flags, int *error);
extern void tibet_managed_forked(int pid);
extern void tibet_managed_exit(void);

typedef void *(*malloc_fn)(size_t);
typedef void *(*calloc_fn)(size_t, size_t);
typedef void *(*realloc_fn)(void *, size_t);
typedef void (*free_fn)(void *);
typedef int (*posix_memalign_fn)(void **, size_t, size_t);
typedef void *(*aligned_alloc_fn)(size_t, size_t);
typedef size_t (*usable_size_fn)(void *);
typedef void *(*mmap_fn)(void *, size_t, int, int, int, off_t);
typedef int (*munmap_fn)(void *, size_t);
typedef void *(*mremap_fn)(void *, size_t, size_t, int, ...);
typedef pid_t (*fork_fn)(void);

static malloc_fn real_malloc;
static calloc_fn real_calloc;
static realloc_fn real_realloc;
static free_fn real_free;
static posix_memalign_fn real_posix_memalign;
static aligned_alloc_fn real_aligned_alloc;
static aligned_alloc_fn real_memalign;
static malloc_fn real_valloc;
static malloc_fn real_pvalloc;
static usable_size_fn real_usable_size;
static mmap_fn real_mmap;
static munmap_fn real_munmap;
static mremap_fn real_mremap;
static fork_fn real_fork;

/* dlsym itself may call calloc before real_calloc is known: serve it from here. */
static char bootstrap_heap[64 * 1024] __attribute__((aligned(64)));
static size_t bootstrap_used;
static int resolving;

/* Set while this thread runs tibet code: everything it allocates is forwarded. Initial-exec
 * TLS, so reading it never allocates (a dynamic TLS block would, on first touch). */
static __thread int in_tibet __attribute__((tls_model("initial-exec")));

/* Configured by tibet_shim_configure once the engine runs; until then nothing redirects. */
static volatile int shim_ready;
static pid_t owner_pid;
static size_t malloc_threshold = SIZE_MAX;
static size_t mmap_threshold = SIZE_MAX;
static uintptr_t malloc_base, malloc_limit; /* blocks handed out by our malloc family */
static uintptr_t mmap_base, mmap_limit;     /* mappings handed out by our mmap */
static const size_t *block_sizes;          /* usable size of a malloc block, per unit */
static unsigned unit_shift;

/* Our own text, so calls made by the runtime inside this .so are forwarded. */
static uintptr_t self_start, self_end;

static void *bootstrap_alloc(size_t size)
{
    size_t offset = (bootstrap_used + 15) & ~(size_t)15;
    if (offset + size > sizeof bootstrap_heap)
        return NULL;
    bootstrap_used = offset + size;
    return bootstrap_heap + offset; /* zeroed: static storage, never reused */
}

static int is_bootstrap(const void *p)
{
    return (const char *)p >= bootstrap_heap && (const char *)p < bootstrap_heap + sizeof bootstrap_heap;
}

static int find_self(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    uintptr_t probe = (uintptr_t)data;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        uintptr_t start = info->dlpi_addr + ph->p_vaddr;
        if (probe >= start && probe < start + ph->p_memsz) {
            uintptr_t lo = UINTPTR_MAX, hi = 0;
            for (int j = 0; j < info->dlpi_phnum; j++) {
                const ElfW(Phdr) *q = &info->dlpi_phdr[j];
                if (q->p_type != PT_LOAD)
                    continue;
                uintptr_t s = info->dlpi_addr + q->p_vaddr;
                if (s < lo) lo = s;
                if (s + q->p_memsz > hi) hi = s + q->p_memsz;
            }
            self_start = lo;
            self_end = hi;
            return 1;
        }
    }
    return 0;
}

static void resolve(void)
{
    if (real_malloc || resolving)
        return;
    resolving = 1;
    real_calloc = (calloc_fn)dlsym(RTLD_NEXT, "calloc");
    real_malloc = (malloc_fn)dlsym(RTLD_NEXT, "malloc");
    real_realloc = (realloc_fn)dlsym(RTLD_NEXT, "realloc");
    real_free = (free_fn)dlsym(RTLD_NEXT, "free");
    real_posix_memalign = (posix_memalign_fn)dlsym(RTLD_NEXT, "posix_memalign");
    real_aligned_alloc = (aligned_alloc_fn)dlsym(RTLD_NEXT, "aligned_alloc");
    real_memalign = (aligned_alloc_fn)dlsym(RTLD_NEXT, "memalign");
    real_valloc = (malloc_fn)dlsym(RTLD_NEXT, "valloc");
    real_pvalloc = (malloc_fn)dlsym(RTLD_NEXT, "pvalloc");
    real_usable_size = (usable_size_fn)dlsym(RTLD_NEXT, "malloc_usable_size");
    real_mmap = (mmap_fn)dlsym(RTLD_NEXT, "mmap");
    real_munmap = (munmap_fn)dlsym(RTLD_NEXT, "munmap");
    real_mremap = (mremap_fn)dlsym(RTLD_NEXT, "mremap");
    real_fork = (fork_fn)dlsym(RTLD_NEXT, "fork");
    dl_iterate_phdr(find_self, (void *)(uintptr_t)&resolve);
    resolving = 0;
}

static inline int ours_malloc(const void *p) { return (uintptr_t)p - malloc_base < malloc_limit - malloc_base; }
static inline int ours_mmap(const void *p) { return (uintptr_t)p - mmap_base < mmap_limit - mmap_base; }
static inline int overlaps_mmap(const void *p, size_t n)
{
    uintptr_t a = (uintptr_t)p;
    return shim_ready && a < mmap_limit && a + n > mmap_base;
}
static inline int from_self(const void *ret) { return (uintptr_t)ret - self_start < self_end - self_start; }

/* May this call be redirected? Not from tibet itself, not before the engine runs, and never
 * in a forked child (its runtime threads are gone; it keeps what it inherited). */
static inline int may_redirect(const void *ret)
{
    return shim_ready && !in_tibet && !from_self(ret) && (pid_t)syscall(SYS_getpid) == owner_pid;
}

static inline int in_child(void) { return (pid_t)syscall(SYS_getpid) != owner_pid; }

static size_t block_size(const void *p)
{
    return block_sizes[((uintptr_t)p - malloc_base) >> unit_shift];
}

static void *redirect_alloc(size_t size, size_t alignment)
{
    in_tibet = 1;
    void *p = tibet_managed_alloc(size, alignment);
    in_tibet = 0;
    return p;
}

/* ---- the malloc family ------------------------------------------------------------ */

EXPORT void *malloc(size_t size)
{
    if (UNLIKELY(!real_malloc)) {
        resolve();
        if (!real_malloc)
            return bootstrap_alloc(size);
    }
    if (LIKELY(size < malloc_threshold) || !may_redirect(__builtin_return_address(0)))
        return real_malloc(size);
    void *p = redirect_alloc(size, 16);
    return p ? p : real_malloc(size);
}

EXPORT void *calloc(size_t count, size_t size)
{
    if (UNLIKELY(!real_calloc)) {
        resolve();
        if (!real_calloc)
            return bootstrap_alloc(count * size);
    }
    size_t total;
    if (__builtin_mul_overflow(count, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    if (LIKELY(total < malloc_threshold) || !may_redirect(__builtin_return_address(0)))
        return real_calloc(count, size);
    /* A new arena block has never been touched: it reads as zeros without a memset. */
    void *p = redirect_alloc(total, 16);
    return p ? p : real_calloc(count, size);
}

EXPORT void free(void *p)
{
    if (UNLIKELY(p == NULL || is_bootstrap(p)))
        return;
    if (UNLIKELY(ours_malloc(p))) {
        if (in_child())
            return; /* the child's copy dies with the child */
        in_tibet = 1;
        tibet_managed_free(p);
        in_tibet = 0;
        return;
    }
    if (UNLIKELY(!real_free))
        resolve();
    real_free(p);
}

EXPORT size_t malloc_usable_size(void *p)
{
    if (p == NULL)
        return 0;
    if (ours_malloc(p))
        return block_size(p);
    if (is_bootstrap(p))
        return 0;
    if (UNLIKELY(!real_usable_size))
        resolve();
    return real_usable_size(p);
}

EXPORT void *realloc(void *p, size_t size)
{
    if (UNLIKELY(!real_realloc))
        resolve();
    if (p == NULL)
        return malloc(size);
    if (UNLIKELY(is_bootstrap(p))) {
        void *q = malloc(size);
        if (q)
            memcpy(q, p, size); /* the bootstrap heap is zero-filled past any block */
        return q;
    }
    if (UNLIKELY(ours_malloc(p))) {
        size_t old = block_size(p);
        if (size == 0) {
            free(p);
            return NULL;
        }
        if (size < malloc_threshold || in_child() || in_tibet) {
            /* Back below the threshold (or in a child): an ordinary block holds it. */
            void *q = real_malloc(size);
            if (!q)
                return NULL;
            memcpy(q, p, old < size ? old : size);
            free(p);
            return q;
        }
        in_tibet = 1;
        void *q = tibet_managed_realloc(p, size);
        in_tibet = 0;
        if (!q)
            errno = ENOMEM;
        return q;
    }
    if (size >= malloc_threshold && may_redirect(__builtin_return_address(0))) {
        /* Growing across the threshold: move into an arena. */
        void *q = redirect_alloc(size, 16);
        if (q) {
            size_t old = real_usable_size(p);
            memcpy(q, p, old < size ? old : size);
            real_free(p);
            return q;
        }
    }
    return real_realloc(p, size);
}

static int valid_alignment(size_t alignment)
{
    return alignment != 0 && (alignment & (alignment - 1)) == 0;
}

EXPORT int posix_memalign(void **out, size_t alignment, size_t size)
{
    if (UNLIKELY(!real_posix_memalign))
        resolve();
    if (!valid_alignment(alignment) || alignment % sizeof(void *) != 0)
        return EINVAL;
    if (size >= malloc_threshold && may_redirect(__builtin_return_address(0))) {
        void *p = redirect_alloc(size, alignment);
        if (p) {
            *out = p;
            return 0;
        }
    }
    return real_posix_memalign(out, alignment, size);
}

static void *aligned(aligned_alloc_fn next, size_t alignment, size_t size, const void *ret)
{
    if (!valid_alignment(alignment)) {
        errno = EINVAL;
        return NULL;
    }
    if (size >= malloc_threshold && may_redirect(ret)) {
        void *p = redirect_alloc(size, alignment);
        if (p)
            return p;
    }
    return next(alignment, size);
}

EXPORT void *aligned_alloc(size_t alignment, size_t size)
{
    if (UNLIKELY(!real_aligned_alloc))
        resolve();
    return aligned(real_aligned_alloc, alignment, size, __builtin_return_address(0));
}

EXPORT void *memalign(size_t alignment, size_t size)
{
    if (UNLIKELY(!real_memalign))
        resolve();
    return aligned(real_memalign, alignment, size, __builtin_return_address(0));
}

EXPORT void *valloc(size_t size)
{
    if (UNLIKELY(!real_valloc))
        resolve();
    if (size >= malloc_threshold && may_redirect(__builtin_return_address(0))) {
        void *p = redirect_alloc(size, 4096);
        if (p)
            return p;
    }
    return real_valloc(size);
}

EXPORT void *pvalloc(size_t size)
{
    if (UNLIKELY(!real_pvalloc))
        resolve();
    size_t rounded = (size + 4095) & ~(size_t)4095;
    if (rounded >= malloc_threshold && may_redirect(__builtin_return_address(0))) {
        void *p = redirect_alloc(rounded, 4096);
        if (p)
            return p;
    }
    return real_pvalloc(size);
}

/* ---- mappings --------------------------------------------------------------------- */

static int redirectable_mapping(void *addr, size_t length, int prot, int flags, int fd)
{
    const int refused = MAP_FIXED | MAP_FIXED_NOREPLACE | MAP_GROWSDOWN | MAP_STACK | MAP_HUGETLB | MAP_LOCKED;
    return addr == NULL && fd == -1 && (flags & MAP_ANONYMOUS) && (flags & MAP_TYPE) == MAP_PRIVATE
        && !(flags & refused) && prot == (PROT_READ | PROT_WRITE) && length >= mmap_threshold;
}

/* A large read-only map of a file may be a model (llama.cpp maps GGUF files PROT_READ,
 * MAP_SHARED); the managed side reads its magic and either serves it from an encrypted
 * arena or declines. Writable file maps are never taken: their writes must reach the file. */
static int candidate_file_mapping(void *addr, size_t length, int prot, int flags, int fd)
{
    const int refused = MAP_FIXED | MAP_FIXED_NOREPLACE | MAP_GROWSDOWN | MAP_STACK | MAP_HUGETLB | MAP_LOCKED;
    int type = flags & MAP_TYPE;
    return addr == NULL && fd >= 0 && !(flags & MAP_ANONYMOUS) && (type == MAP_SHARED || type == MAP_PRIVATE)
        && !(flags & refused) && prot == PROT_READ && length >= mmap_threshold;
}

static void *do_mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset, const void *ret)
{
    if (UNLIKELY(!real_mmap))
        resolve();
    if (redirectable_mapping(addr, length, prot, flags, fd) && may_redirect(ret)) {
        in_tibet = 1;
        void *p = tibet_managed_mmap(length);
        in_tibet = 0;
        if (p)
            return p;
    } else if (candidate_file_mapping(addr, length, prot, flags, fd) && may_redirect(ret)) {
        in_tibet = 1;
        void *p = tibet_managed_map_file(length, fd, offset);
        in_tibet = 0;
        if (p)
            return p;
    }
    /* MAP_FIXED over pages we serve needs nothing here: the kernel reports the
     * replacement to the engine as an UNMAP event, and the program's eventual munmap of
     * its own mapping puts the range back into our reservation. */
    return real_mmap(addr, length, prot, flags, fd, offset);
}

EXPORT void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset)
{
    return do_mmap(addr, length, prot, flags, fd, offset, __builtin_return_address(0));
}

EXPORT void *mmap64(void *addr, size_t length, int prot, int flags, int fd, off_t offset)
{
    return do_mmap(addr, length, prot, flags, fd, offset, __builtin_return_address(0));
}

EXPORT int munmap(void *addr, size_t length)
{
    if (UNLIKELY(!real_munmap))
        resolve();
    if (overlaps_mmap(addr, length) && !in_tibet && !in_child() && !from_self(__builtin_return_address(0))) {
        in_tibet = 1;
        int error = tibet_managed_unmap(addr, length);
        in_tibet = 0;
        if (error) {
            errno = error;
            return -1;
        }
        return 0;
    }
    return real_munmap(addr, length);
}

EXPORT void *mremap(void *old, size_t old_size, size_t new_size, int flags, ...)
{
    if (UNLIKELY(!real_mremap))
        resolve();
    void *new_address = NULL;
    if (flags & MREMAP_FIXED) {
        va_list ap;
        va_start(ap, flags);
        new_address = va_arg(ap, void *);
        va_end(ap);
    }
    if (shim_ready && ours_mmap(old) && !in_tibet && !in_child()) {
        if (flags & (MREMAP_FIXED | MREMAP_DONTUNMAP)) {
            /* Moving an encrypted mapping to an address of the program's choosing would take
             * it out of the region tibet owns; refuse rather than silently decrypt it. */
            errno = EINVAL;
            return MAP_FAILED;
        }
        int error = 0;
        in_tibet = 1;
        void *p = tibet_managed_mremap(old, old_size, new_size, flags, &error);
        in_tibet = 0;
        if (p == MAP_FAILED)
            errno = error;
        return p;
    }
    return real_mremap(old, old_size, new_size, flags, new_address);
}

/* ---- fork ------------------------------------------------------------------------- */

EXPORT pid_t fork(void)
{
    if (UNLIKELY(!real_fork))
        resolve();
    pid_t pid = real_fork();
    if (pid > 0 && shim_ready && !in_child()) {
        in_tibet = 1;
        tibet_managed_forked(pid);
        in_tibet = 0;
    }
    return pid;
}

/* ---- configuration, start and exit ------------------------------------------------ */

EXPORT void tibet_shim_configure(size_t malloc_min, size_t mmap_min, uintptr_t mb, uintptr_t ml,
                                 uintptr_t pb, uintptr_t pl, const size_t *sizes, unsigned shift)
{
    malloc_base = mb;
    malloc_limit = ml;
    mmap_base = pb;
    mmap_limit = pl;
    block_sizes = sizes;
    unit_shift = shift;
    owner_pid = (pid_t)syscall(SYS_getpid);
    malloc_threshold = malloc_min;
    mmap_threshold = mmap_min;
    __atomic_store_n(&shim_ready, 1, __ATOMIC_RELEASE);
}

static void at_exit(void)
{
    if (shim_ready && !in_child()) {
        in_tibet = 1;
        tibet_managed_exit();
        in_tibet = 0;
    }
}

/* Runs after the runtime's own constructors (the archive is linked after them), before
 * the program's main. */
__attribute__((constructor(65535))) static void tibet_start(void)
{
    resolve();
    /* The runtime sets SIGPIPE to ignored; the program must keep the disposition it was
     * started with (a pipeline's writer dies on a closed pipe). */
    struct sigaction sigpipe;
    sigaction(SIGPIPE, NULL, &sigpipe);
    in_tibet = 1;
    int ok = tibet_managed_init();
    in_tibet = 0;
    sigaction(SIGPIPE, &sigpipe, NULL);
    if (ok)
        atexit(at_exit);
}
