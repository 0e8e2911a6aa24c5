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
 * against re-entry, ownership tests on the address regions tibet reserves, the child-safe
 * answers (free, malloc_usable_size, a forked child's large allocations) that need no
 * managed code, a small private heap for tibet's own allocations (it serves the dynamic
 * linker and the runtime's start-up, before managed code exists), keeping tibet's own
 * stdio out of the way of fork(), and the report descriptor. Every policy decision, all
 * userfaultfd work, cryptography and bookkeeping live in C# (Exports.cs), reached through
 * the tibet_managed_* functions.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "served.h"

#define EXPORT __attribute__((visibility("default")))
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Managed side (Exports.cs). Each returns 0/NULL to mean "not handled: forward". */
extern int tibet_managed_init(void);
extern void *tibet_managed_alloc(size_t size, size_t alignment);
extern void tibet_managed_free(void *p);
extern void *tibet_managed_realloc(void *p, size_t size);
extern void *tibet_managed_mmap(size_t length, int prot); /* prot: PROT_READ|PROT_WRITE or PROT_NONE */
extern void *tibet_managed_fixed_map(size_t length);
extern void *tibet_managed_map_file(size_t length, int prot, int flags, int fd, off_t offset, int *error);
extern int tibet_managed_file_opened(int fd); /* 1: a sealed model, reads go through tibet */
extern void tibet_managed_file_closed(int fd);
extern ssize_t tibet_managed_read(int fd, void *buffer, size_t count, off_t offset, int at_position); /* or -errno */
extern int tibet_managed_unmap(void *addr, size_t length); /* 0 or an errno */
extern void tibet_managed_protect(void *addr, size_t length, int prot);
extern int tibet_managed_covers(void *addr, size_t length); /* 1: inside one anonymous arena */
extern void *tibet_managed_mremap(void *old, size_t old_size, size_t new_size, int flags, int *error);
extern void tibet_managed_forked(int pid, int agent);
extern int tibet_agent_wanted(void);
extern void tibet_agent_forget_in_grandchild(void);
extern void tibet_agent_start_in_child(int connection, int (*create_thread)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *));
extern void tibet_managed_exit(void);
extern void tibet_managed_hand_over(void);

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
typedef int (*pthread_create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef FILE *(*fopen_fn)(const char *, const char *);
typedef int (*fclose_fn)(FILE *);
typedef int (*close_fn)(int);
typedef ssize_t (*read_fn)(int, void *, size_t);
typedef ssize_t (*pread_fn)(int, void *, size_t, off_t);
typedef size_t (*fread_fn)(void *, size_t, size_t, FILE *);
typedef off_t (*ftello_fn)(FILE *);
typedef int (*fseeko_fn)(FILE *, off_t, int);

/* The first calls resolve everything (see resolve), so the fast paths need no test. */
static void *first_malloc(size_t size);
static void *first_calloc(size_t count, size_t size);
static void *first_realloc(void *p, size_t size);
static void first_free(void *p);
static malloc_fn real_malloc = first_malloc;
static calloc_fn real_calloc = first_calloc;
static realloc_fn real_realloc = first_realloc;
static free_fn real_free = first_free;
static posix_memalign_fn real_posix_memalign;
static aligned_alloc_fn real_aligned_alloc;
static aligned_alloc_fn real_memalign;
static malloc_fn real_valloc;
static malloc_fn real_pvalloc;
static usable_size_fn real_usable_size;
static mmap_fn real_mmap;
static munmap_fn real_munmap;
typedef int (*mprotect_fn)(void *, size_t, int);
static mprotect_fn real_mprotect;
typedef int (*madvise_fn)(void *, size_t, int);
static madvise_fn real_madvise;
static mremap_fn real_mremap;
static fork_fn real_fork;
typedef void (*exit_fn)(int);
static exit_fn real__exit, real__Exit;
static volatile int has_forked; /* this process forked a child tibet serves */
static pthread_create_fn real_pthread_create;
static open_fn real_open, real_open64;
static openat_fn real_openat, real_openat64;
static fopen_fn real_fopen, real_fopen64;
static fclose_fn real_fclose;
static close_fn real_close;
static read_fn real_read;
static pread_fn real_pread, real_pread64;
static fread_fn real_fread, real_fread_unlocked;
static ftello_fn real_ftello;
static fseeko_fn real_fseeko;

/* Set while this thread runs tibet code: everything it allocates comes from tibet's own
 * heap, and nothing it does is redirected. Threads tibet creates keep it set for life
 * (see pthread_create below). Initial-exec TLS, so reading it never allocates (a dynamic
 * TLS block would, on first touch). */
static __thread int in_tibet __attribute__((tls_model("initial-exec")));

/* Configured by tibet_shim_configure once the engine runs; until then nothing redirects.
 * Until then the threshold is PTRDIFF_MAX + 1, so that hostile sizes still leave the fast
 * path and are answered by the shim itself (see hostile_size). */
static volatile int shim_ready;
static pid_t owner_pid; /* the process tibet runs in; any other pid is a forked child */
static size_t malloc_threshold = (size_t)PTRDIFF_MAX + 1;
static size_t mmap_threshold = (size_t)PTRDIFF_MAX + 1;
/* Reservations (PROT_NONE) are taken from a lower size: V8 reserves each 256 KiB page of
 * its heap on its own (508 KiB, trimmed to alignment), and a reservation costs no memory
 * until the program commits it. The threshold or 256 KiB, whichever is lower. */
#define RESERVATION_THRESHOLD_MOST ((size_t)256 << 10)
static size_t reservation_threshold = (size_t)PTRDIFF_MAX + 1;
static uintptr_t malloc_base, malloc_limit; /* blocks handed out by our malloc family */
static uintptr_t mmap_base, mmap_limit;     /* mappings handed out by our mmap */
static const size_t *block_sizes;          /* usable size of a malloc block, per unit */
static unsigned unit_shift;
static int require_encryption;             /* tibet_shim_set_policy */

/* Our own text, so calls made by the runtime inside this .so are tibet's own. */
static uintptr_t self_start, self_end;

/* The managed side's third answer to tibet_managed_alloc, _realloc and _mmap: besides a
 * pointer (served) and 0 (not taken: forward to libc; the managed side has already counted
 * and announced it if that leaves memory unencrypted), (void *)-1 means REFUSED, and the
 * shim fails the call with ENOMEM (--require-encryption, or a size no arena can hold).
 * -1 can never be a block: it is not even aligned. */
#define TIBET_REFUSED ((void *)-1)

static inline int from_self(const void *ret) { return (uintptr_t)ret - self_start < self_end - self_start; }

/* Is tibet the caller? Its runtime calls malloc from inside this .so; libc functions it
 * calls (pthread_getattr_np when the runtime attaches a thread) call malloc with in_tibet
 * set; threads tibet created have in_tibet set for life. */
static inline int tibet_caller(const void *ret) { return in_tibet || from_self(ret); }

static inline int in_child(void) { return owner_pid != 0 && (pid_t)syscall(SYS_getpid) != owner_pid; }

/* TIBET_SERVE=custodian (tibet-run --serve custodian): the process tibet runs in sends its
 * own large anonymous allocations to the custodian too (native/served.c), as its forked
 * children do, so that their keys never enter it. Set once at start. */
static int serve_self;

/* Whether this process's large anonymous allocations are the custodian's: a forked child's
 * always (when there is one), the program's with TIBET_SERVE=custodian. */
static inline int served_by_custodian(void) { return in_child() || serve_self; }

static inline int ours_malloc(const void *p) { return (uintptr_t)p - malloc_base < malloc_limit - malloc_base; }
static inline int ours_mmap(const void *p) { return (uintptr_t)p - mmap_base < mmap_limit - mmap_base; }
static inline int overlaps_mmap(const void *p, size_t n)
{
    uintptr_t a = (uintptr_t)p;
    return shim_ready && a < mmap_limit && a + n > mmap_base;
}

/* May this call be redirected? Not from tibet itself, not before the engine runs, and never
 * in a forked child (its runtime threads are gone; it keeps what it inherited). */
static inline int may_redirect(const void *ret)
{
    return shim_ready && !tibet_caller(ret) && !in_child();
}

static size_t block_size(const void *p)
{
    return block_sizes[((uintptr_t)p - malloc_base) >> unit_shift];
}

/* ---- tibet's private heap ------------------------------------------------------------
 *
 * Why tibet never allocates from the program's allocator: the program's allocator calls
 * our mmap hook while holding its own locks (jemalloc grows its extents under a mutex),
 * and the runtime then mallocs (attaching a thread calls pthread_getattr_np, which
 * reallocs). Served by the host allocator, that call waits for the lock its own thread
 * holds, and a fork()'s prefork handler, which takes every allocator lock, waits behind it:
 * Redis hung exactly so. So every allocation tibet makes in the program's process comes
 * from here, which takes no lock but its own and calls nothing but system calls. It must be
 * C: it serves the dynamic linker's first calloc and the runtime's start-up, before any
 * managed code exists.
 *
 * Shape: one reserved region; power-of-two size classes of 16 B .. 4 GiB, each block
 * aligned to its size. Blocks below 64 KiB are carved from 64 KiB chunks, larger ones from
 * the bump pointer; a table holds the class of each 64 KiB chunk, so a pointer's block size
 * is found from its address alone. Freed blocks go on a per-class list (large ones give
 * their pages back first). One futex lock. Ownership is decided by ADDRESS everywhere: a
 * block of this heap may be freed by anyone (libc frees what it allocated for tibet).
 *
 * Fork: a forked child never takes this lock (a thread that held it is gone in the child).
 * Tibet code does not run there; what little might allocate as tibet (an atfork handler)
 * is served by the program's allocator, which its own fork handlers keep usable, and the
 * child's frees of heap blocks are left as they are (the copy dies with the child). */
#define HEAP_RESERVE ((size_t)16 << 30) /* address space only, committed as it is used */
#define HEAP_COMMIT_STEP ((size_t)1 << 20)
#define CHUNK_SHIFT 16
#define MIN_CLASS 4   /* 16 bytes */
#define MAX_CLASS 32  /* 4 GiB */

/* Until the region is reserved, an origin no user address can be within HEAP_RESERVE of,
 * so that is_private is false for every pointer without a second variable to read. */
static uintptr_t heap_origin = (uintptr_t)1 << 63;
static const size_t heap_span = HEAP_RESERVE;
static uintptr_t heap_bump, heap_committed;
static void *heap_free_lists[MAX_CLASS + 1];
static unsigned char heap_chunk_class[HEAP_RESERVE >> CHUNK_SHIFT];
static int heap_lock_word;                  /* 0 free, 1 locked, 2 locked with waiters */

static inline int is_private(const void *p) { return (uintptr_t)p - heap_origin < heap_span; }

static void heap_lock(void)
{
    int c = 0;
    if (__atomic_compare_exchange_n(&heap_lock_word, &c, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        return;
    if (c != 2)
        c = __atomic_exchange_n(&heap_lock_word, 2, __ATOMIC_ACQUIRE);
    while (c != 0) {
        syscall(SYS_futex, &heap_lock_word, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
        c = __atomic_exchange_n(&heap_lock_word, 2, __ATOMIC_ACQUIRE);
    }
}

static void heap_unlock(void)
{
    if (__atomic_exchange_n(&heap_lock_word, 0, __ATOMIC_RELEASE) == 2)
        syscall(SYS_futex, &heap_lock_word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static unsigned size_class(size_t n)
{
    return n <= ((size_t)1 << MIN_CLASS) ? MIN_CLASS : 64 - (unsigned)__builtin_clzll(n - 1);
}

static inline unsigned class_of_block(const void *p)
{
    return heap_chunk_class[((uintptr_t)p - heap_origin) >> CHUNK_SHIFT];
}

/* Under the lock: reserve the region (raw system calls: our own mmap hook and libc's
 * resolution may not exist yet). */
static int heap_reserve(void)
{
    long r = syscall(SYS_mmap, NULL, HEAP_RESERVE + ((size_t)1 << CHUNK_SHIFT), PROT_NONE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (r == -1)
        return 0;
    uintptr_t origin = ((uintptr_t)r + ((uintptr_t)1 << CHUNK_SHIFT) - 1) & ~(((uintptr_t)1 << CHUNK_SHIFT) - 1);
    heap_bump = heap_committed = origin;
    __atomic_store_n(&heap_origin, origin, __ATOMIC_RELEASE);
    return 1;
}

/* Under the lock: `size` bytes at the bump pointer aligned to `alignment`, committed. */
static void *heap_take(size_t size, size_t alignment)
{
    uintptr_t start = (heap_bump + alignment - 1) & ~(uintptr_t)(alignment - 1);
    if (start + size > heap_origin + heap_span || start + size < start)
        return NULL;
    if (start + size > heap_committed) {
        uintptr_t end = (start + size + HEAP_COMMIT_STEP - 1) & ~(uintptr_t)(HEAP_COMMIT_STEP - 1);
        if (end > heap_origin + heap_span)
            end = heap_origin + heap_span;
        if (syscall(SYS_mprotect, heap_committed, end - heap_committed, PROT_READ | PROT_WRITE) != 0)
            return NULL;
        heap_committed = end;
    }
    heap_bump = start + size;
    return (void *)start;
}

/* A block of at least `size` bytes aligned to `alignment` (a power of two), or NULL with
 * errno ENOMEM. Never touches errno on success. */
static void *heap_alloc(size_t size, size_t alignment, int zero)
{
    size_t need = size > alignment ? size : alignment;
    if (need > ((size_t)1 << MAX_CLASS)) {
        errno = ENOMEM;
        return NULL;
    }
    int saved = errno;
    unsigned k = size_class(need);
    size_t block = (size_t)1 << k;
    void *p;
    heap_lock();
    if (heap_origin == (uintptr_t)1 << 63 && !heap_reserve()) {
        p = NULL;
    } else if ((p = heap_free_lists[k]) != NULL) {
        heap_free_lists[k] = *(void **)p;
    } else if (k < CHUNK_SHIFT) {
        /* A fresh chunk of this class: the first block is the answer, the rest wait. */
        char *chunk = heap_take((size_t)1 << CHUNK_SHIFT, (size_t)1 << CHUNK_SHIFT);
        if (chunk) {
            heap_chunk_class[((uintptr_t)chunk - heap_origin) >> CHUNK_SHIFT] = (unsigned char)k;
            for (size_t off = ((size_t)1 << CHUNK_SHIFT) - block; off > 0; off -= block) {
                *(void **)(chunk + off) = heap_free_lists[k];
                heap_free_lists[k] = chunk + off;
            }
        }
        p = chunk;
    } else {
        p = heap_take(block, block);
        if (p)
            heap_chunk_class[((uintptr_t)p - heap_origin) >> CHUNK_SHIFT] = (unsigned char)k;
    }
    heap_unlock();
    if (!p) {
        errno = ENOMEM;
        return NULL;
    }
    if (zero)
        memset(p, 0, size); /* a reused block holds its last owner's bytes */
    errno = saved;
    return p;
}

__attribute__((noinline)) static void heap_free(void *p)
{
    if (in_child())
        return; /* see "Fork" above: never the lock in a child */
    unsigned k = class_of_block(p);
    int saved = errno;
    if (k >= CHUNK_SHIFT)
        syscall(SYS_madvise, p, (size_t)1 << k, MADV_DONTNEED); /* give the pages back */
    heap_lock();
    *(void **)p = heap_free_lists[k];
    heap_free_lists[k] = p;
    heap_unlock();
    errno = saved;
}

static inline size_t heap_usable_size(const void *p) { return (size_t)1 << class_of_block(p); }

/* ---- resolving the next definitions --------------------------------------------------
 * Each real_* starts as a stub that resolves them all; the dynamic linker's own callocs
 * during that resolution are served by the private heap. */
static int resolving;

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

static void resolve(void);

static void *first_malloc(size_t size)
{
    resolve();
    return resolving ? heap_alloc(size, 16, 0) : real_malloc(size);
}

static void *first_calloc(size_t count, size_t size)
{
    resolve();
    return resolving ? heap_alloc(count * size, 16, 1) : real_calloc(count, size); /* product checked by calloc */
}

static void *first_realloc(void *p, size_t size)
{
    resolve();
    return resolving ? NULL : real_realloc(p, size); /* the dynamic linker never reallocs */
}

static void first_free(void *p)
{
    resolve();
    if (!resolving)
        real_free(p);
}

#define RESOLVE(var, type, name) do { void *f = dlsym(RTLD_NEXT, name); if (f) var = (type)f; } while (0)

static void resolve(void)
{
    if (real_usable_size || resolving)
        return;
    resolving = 1;
    RESOLVE(real_calloc, calloc_fn, "calloc");
    RESOLVE(real_malloc, malloc_fn, "malloc");
    RESOLVE(real_realloc, realloc_fn, "realloc");
    RESOLVE(real_free, free_fn, "free");
    real_posix_memalign = (posix_memalign_fn)dlsym(RTLD_NEXT, "posix_memalign");
    real_aligned_alloc = (aligned_alloc_fn)dlsym(RTLD_NEXT, "aligned_alloc");
    real_memalign = (aligned_alloc_fn)dlsym(RTLD_NEXT, "memalign");
    real_valloc = (malloc_fn)dlsym(RTLD_NEXT, "valloc");
    real_pvalloc = (malloc_fn)dlsym(RTLD_NEXT, "pvalloc");
    real_mmap = (mmap_fn)dlsym(RTLD_NEXT, "mmap");
    real_munmap = (munmap_fn)dlsym(RTLD_NEXT, "munmap");
    real_mprotect = (mprotect_fn)dlsym(RTLD_NEXT, "mprotect");
    real_madvise = (madvise_fn)dlsym(RTLD_NEXT, "madvise");
    real_mremap = (mremap_fn)dlsym(RTLD_NEXT, "mremap");
    real_fork = (fork_fn)dlsym(RTLD_NEXT, "fork");
    real__exit = (exit_fn)dlsym(RTLD_NEXT, "_exit");
    real__Exit = (exit_fn)dlsym(RTLD_NEXT, "_Exit");
    real_pthread_create = (pthread_create_fn)dlsym(RTLD_NEXT, "pthread_create");
    real_open = (open_fn)dlsym(RTLD_NEXT, "open");
    real_open64 = (open_fn)dlsym(RTLD_NEXT, "open64");
    real_openat = (openat_fn)dlsym(RTLD_NEXT, "openat");
    real_openat64 = (openat_fn)dlsym(RTLD_NEXT, "openat64");
    real_fopen = (fopen_fn)dlsym(RTLD_NEXT, "fopen");
    real_fopen64 = (fopen_fn)dlsym(RTLD_NEXT, "fopen64");
    real_fclose = (fclose_fn)dlsym(RTLD_NEXT, "fclose");
    real_close = (close_fn)dlsym(RTLD_NEXT, "close");
    real_read = (read_fn)dlsym(RTLD_NEXT, "read");
    real_pread = (pread_fn)dlsym(RTLD_NEXT, "pread");
    real_pread64 = (pread_fn)dlsym(RTLD_NEXT, "pread64");
    real_fread = (fread_fn)dlsym(RTLD_NEXT, "fread");
    real_fread_unlocked = (fread_fn)dlsym(RTLD_NEXT, "fread_unlocked");
    real_ftello = (ftello_fn)dlsym(RTLD_NEXT, "ftello");
    real_fseeko = (fseeko_fn)dlsym(RTLD_NEXT, "fseeko");
    dl_iterate_phdr(find_self, (void *)(uintptr_t)&resolve);
    /* Last: it is the "resolved" flag the other entry points test. */
    real_usable_size = (usable_size_fn)dlsym(RTLD_NEXT, "malloc_usable_size");
    resolving = 0;
}

/* ---- the report descriptor, and what forked children allocate ------------------------ */

/* tibet's lines go to a duplicate of the stderr the program was started with, kept above
 * the descriptors programs use: a daemon points fd 2 at /dev/null after it forks, and
 * tibet's lines must still reach the user. Its identity is remembered, so that a program
 * that closed it and reused the number never receives tibet's lines in its own file.
 * (So a daemon holds that stderr for as long as it runs: a pipe's reader sees its end only
 * then. The README says so.) */
static int report_fd = 2;
static dev_t report_dev;
static ino_t report_ino;

static int high_duplicate(int fd)
{
    struct rlimit limit;
    int top = getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < (rlim_t)INT_MAX ? (int)limit.rlim_cur : INT_MAX;
    if (top > 1000) {
        int dup = fcntl(fd, F_DUPFD_CLOEXEC, 1000);
        if (dup >= 0)
            return dup;
    }
    /* A low limit: the highest free descriptor below it. */
    for (int candidate = top - 1; candidate > 2 && candidate >= top - 64; candidate--)
        if (fcntl(candidate, F_GETFD) == -1 && errno == EBADF)
            return fcntl(fd, F_DUPFD_CLOEXEC, candidate);
    return -1;
}

static void open_report_descriptor(void)
{
    int saved = errno;
    struct stat st;
    int fd = fstat(2, &st) == 0 ? high_duplicate(2) : -1;
    if (fd >= 0) {
        report_fd = fd;
        report_dev = st.st_dev;
        report_ino = st.st_ino;
    }
    errno = saved;
}

/* Writes one line (with its newline) where tibet reports. Allocates nothing: safe in a
 * forked child, inside the allocator, on the fault path. */
EXPORT void tibet_shim_report(const char *line, size_t length)
{
    int saved = errno;
    int fd = report_fd;
    struct stat st;
    if (fd != 2 && (fstat(fd, &st) != 0 || st.st_dev != report_dev || st.st_ino != report_ino))
        fd = 2; /* the program closed ours (and may have reused the number) */
    while (length > 0) {
        ssize_t n = write(fd, line, length);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        line += n;
        length -= (size_t)n;
    }
    errno = saved;
}

/* Counts of a forked child's large allocations, in a MAP_SHARED page created at
 * configuration, so the parent (and its statistics) see what every descendant did. */
struct child_tally {
    uint64_t count, bytes; /* forwarded to libc: not encrypted */
    uint64_t refused;      /* failed with ENOMEM (--require-encryption) */
};
/* Indexed by the kinds tibet_shim_child_tally names. */
enum { CHILD_ALLOCATIONS = 0, CHILD_FIXED_MAPS = 1, CHILD_KINDS = 2 };
struct child_counts {
    struct child_tally kinds[CHILD_KINDS];
};
static struct child_counts *child_counts;
static pid_t child_announced[CHILD_KINDS]; /* per kind, the last pid that said its line */

/* Counts memory of a forked child's that would not be encrypted (or, under
 * --require-encryption, is refused) into the page its parent's statistics read; true when
 * this child has not said so yet for this kind, and should. */
static int child_unencrypted(int kind, size_t size)
{
    if (child_counts) {
        struct child_tally *t = &child_counts->kinds[kind];
        if (require_encryption)
            __atomic_fetch_add(&t->refused, 1, __ATOMIC_RELAXED);
        else {
            __atomic_fetch_add(&t->count, 1, __ATOMIC_RELAXED);
            __atomic_fetch_add(&t->bytes, size, __ATOMIC_RELAXED);
        }
    }
    pid_t self = (pid_t)syscall(SYS_getpid);
    return __atomic_exchange_n(&child_announced[kind], self, __ATOMIC_RELAXED) != self;
}

static char *append(char *at, const char *text)
{
    while (*text)
        *at++ = *text++;
    return at;
}

static char *append_number(char *at, uint64_t n)
{
    char digits[24];
    int i = 0;
    do digits[i++] = (char)('0' + n % 10); while ((n /= 10) != 0);
    while (i > 0)
        *at++ = digits[--i];
    return at;
}

/* "tibet: pid P, a forked child of pid O": how a child's lines begin. O is the process
 * tibet runs in, not getppid(): a daemon's parent has usually exited by now, and the
 * child was re-parented to init. Returns where the line goes on. */
static char *child_line(char *at)
{
    at = append(at, "tibet: pid ");
    at = append_number(at, (uint64_t)syscall(SYS_getpid));
    at = append(at, ", a forked child of pid ");
    return append_number(at, (uint64_t)owner_pid);
}

/* A forked child's allocation of `size` bytes at or above the threshold that the
 * custodian did not take on (native/served.c; tibet_served_why_not says why), so it is
 * plaintext: counted and said once per child, or under --require-encryption refused
 * (TIBET_REFUSED) with its own line. Returns NULL (forward to libc) or TIBET_REFUSED. */
static void *child_large_allocation(size_t size)
{
    if (child_unencrypted(CHILD_ALLOCATIONS, size)) {
        char line[512], *at = child_line(line);
        if (require_encryption) {
            at = append(at, ", was refused ");
            at = append_number(at, size);
            at = append(at, " bytes (ENOMEM): ");
            at = append(at, tibet_served_why_not());
            at = append(at, ", and --require-encryption refuses memory that would not be encrypted\n");
        } else {
            at = append(at, ", allocated ");
            at = append_number(at, size);
            at = append(at, " bytes that are not encrypted (");
            at = append(at, tibet_served_why_not());
            at = append(at, "; this child's further such allocations are counted, not reported); --require-encryption refuses them\n");
        }
        tibet_shim_report(line, (size_t)(at - line));
    }
    return require_encryption ? TIBET_REFUSED : NULL;
}

/* A forked child's writable anonymous MAP_FIXED map at or above the threshold: the
 * kernel's, plaintext (see fixed_anonymous_allocation). The process tibet runs in counts
 * its own in managed code; a forked child runs none, so it counts here, and says so once
 * per child; or it is refused under --require-encryption. Returns NULL (let the kernel
 * map it) or TIBET_REFUSED. */
static void *child_fixed_map(size_t size)
{
    if (child_unencrypted(CHILD_FIXED_MAPS, size)) {
        char line[512], *at = child_line(line);
        at = append(at, require_encryption ? ", was refused (ENOMEM) a map of " : ", mapped ");
        at = append_number(at, size);
        at = append(at, require_encryption
            ? " bytes at an address of its own choosing (MAP_FIXED), which would not be encrypted\n"
            : " bytes at an address of its own choosing (MAP_FIXED), outside tibet's arenas or executable, where no encrypted arena can be put: not encrypted (this child's further such maps are counted, not reported); --require-encryption refuses them\n");
        tibet_shim_report(line, (size_t)(at - line));
    }
    return require_encryption ? TIBET_REFUSED : NULL;
}

/* With TIBET_SERVE=custodian, an allocation of the program's that the custodian did not
 * take on: the program's own engine serves it (encrypted, with its key in this process).
 * Said once per process, since the user asked for the keys to stay out. */
static pid_t self_fallback_announced;
static void self_fallback(size_t size)
{
    pid_t self = (pid_t)syscall(SYS_getpid);
    if (__atomic_exchange_n(&self_fallback_announced, self, __ATOMIC_RELAXED) == self)
        return;
    char line[512], *at = line;
    at = append(at, "tibet: pid ");
    at = append_number(at, (uint64_t)self);
    at = append(at, ": the custodian did not take on an allocation of ");
    at = append_number(at, size);
    at = append(at, " bytes (");
    at = append(at, tibet_served_why_not());
    at = append(at, "); this process's own engine encrypts it, with its key in this process (later such allocations are not reported)\n");
    tibet_shim_report(line, (size_t)(at - line));
}

/* ---- the malloc family ----------------------------------------------------------------
 * The fast path (the program's call, below the threshold) is a compare and a jump into the
 * next allocator; everything else is decided in the *_slow functions. */

/* Sizes no allocator can give: glibc answers NULL/ENOMEM for anything above PTRDIFF_MAX,
 * and so does the shim, before any managed call. */
static inline int hostile_size(size_t size) { return size > (size_t)PTRDIFF_MAX; }

/* An allocation of `tibet`'s own: the private heap in the process tibet runs in; in a
 * forked child (see "Fork" above), the program's allocator. */
static void *tibet_alloc(size_t size, size_t alignment, int zero)
{
    if (UNLIKELY(in_child()) && !resolving) {
        if (alignment > 16) {
            void *p = NULL;
            int error = real_posix_memalign(&p, alignment, size);
            if (error)
                errno = error;
            return error ? NULL : p;
        }
        return zero ? real_calloc(1, size) : real_malloc(size);
    }
    return heap_alloc(size, alignment, zero);
}

/* A program's allocation at or above the threshold: a block from tibet, NULL to forward it
 * to libc, or TIBET_REFUSED. zeroed: it must read as zeros (calloc). */
static void *program_large_alloc(size_t size, size_t alignment, int zeroed)
{
    if (hostile_size(size))
        return TIBET_REFUSED;
    if (!shim_ready)
        return NULL;
    if (in_child()) {
        void *served = tibet_served_alloc(size, alignment, zeroed);
        return served ? served : child_large_allocation(size);
    }
    if (serve_self) {
        void *served = tibet_served_alloc(size, alignment, zeroed);
        if (served)
            return served;
        self_fallback(size);
    }
    in_tibet = 1;
    void *p = tibet_managed_alloc(size, alignment);
    in_tibet = 0;
    return p;
}

__attribute__((noinline)) static void *malloc_slow(size_t size, const void *ret)
{
    if (tibet_caller(ret))
        return hostile_size(size) ? (errno = ENOMEM, NULL) : tibet_alloc(size, 16, 0);
    void *p = program_large_alloc(size, 16, 0);
    if (p == TIBET_REFUSED) {
        errno = ENOMEM;
        return NULL;
    }
    return p ? p : real_malloc(size);
}

EXPORT void *malloc(size_t size)
{
    const void *ret = __builtin_return_address(0);
    if (LIKELY(size < malloc_threshold) && LIKELY(!tibet_caller(ret)))
        return real_malloc(size);
    return malloc_slow(size, ret);
}

__attribute__((noinline)) static void *calloc_slow(size_t count, size_t size, size_t total, const void *ret)
{
    if (tibet_caller(ret))
        return hostile_size(total) ? (errno = ENOMEM, NULL) : tibet_alloc(total, 16, 1);
    /* A new arena block has never been touched: it reads as zeros without a memset. */
    void *p = program_large_alloc(total, 16, 1);
    if (p == TIBET_REFUSED) {
        errno = ENOMEM;
        return NULL;
    }
    return p ? p : real_calloc(count, size);
}

EXPORT void *calloc(size_t count, size_t size)
{
    const void *ret = __builtin_return_address(0);
    size_t total;
    if (UNLIKELY(__builtin_mul_overflow(count, size, &total))) {
        errno = ENOMEM;
        return NULL;
    }
    if (LIKELY(total < malloc_threshold) && LIKELY(!tibet_caller(ret)))
        return real_calloc(count, size);
    return calloc_slow(count, size, total, ret);
}

/* A block handed out by the managed side (an encrypted arena). */
__attribute__((noinline)) static void free_arena_block(void *p)
{
    if (in_child())
        return; /* the child's copy dies with the child */
    in_tibet = 1;
    tibet_managed_free(p);
    in_tibet = 0;
}

EXPORT void free(void *p)
{
    if (UNLIKELY(is_private(p))) {
        heap_free(p);
        return;
    }
    if (UNLIKELY(ours_malloc(p))) {
        free_arena_block(p);
        return;
    }
    if (UNLIKELY(tibet_served_owns(p))) {
        tibet_served_free(p); /* a forked child's block, served by the custodian */
        return;
    }
    real_free(p);
}

EXPORT size_t malloc_usable_size(void *p)
{
    if (p == NULL)
        return 0;
    if (ours_malloc(p))
        return block_size(p);
    if (is_private(p))
        return heap_usable_size(p);
    if (tibet_served_owns(p))
        return tibet_served_usable_size(p);
    if (UNLIKELY(!real_usable_size))
        resolve();
    return real_usable_size(p);
}

/* The program's allocation of `size` from inside the shim (whose own return address would
 * make it tibet's): below the threshold the next allocator, else the slow path. */
static void *program_alloc(size_t size)
{
    return size < malloc_threshold ? real_malloc(size) : malloc_slow(size, NULL);
}

/* realloc of a block of tibet's private heap. tibet keeps it there; when the program
 * reallocs one (libc handed it a string it allocated for tibet, say), it moves to the
 * program's allocator. */
static void *realloc_private(void *p, size_t size, const void *ret)
{
    size_t old = heap_usable_size(p);
    if (size == 0) {
        heap_free(p);
        return NULL;
    }
    if (tibet_caller(ret) && size <= old)
        return p;
    void *q = tibet_caller(ret) ? tibet_alloc(size, 16, 0) : program_alloc(size);
    if (!q)
        return NULL; /* the old block stays as it was */
    memcpy(q, p, old < size ? old : size);
    heap_free(p);
    return q;
}

/* realloc of an arena block: grown or shrunk by the managed side, or moved out of it when
 * tibet asks, when it falls below the threshold, or in a forked child (no managed code). */
static void *realloc_arena(void *p, size_t size, const void *ret)
{
    size_t old = block_size(p);
    void *q;
    if (tibet_caller(ret)) {
        q = tibet_alloc(size, 16, 0);
    } else if (size < malloc_threshold) {
        q = real_malloc(size);
    } else if (in_child()) {
        if (child_large_allocation(size) == TIBET_REFUSED) {
            errno = ENOMEM;
            return NULL;
        }
        q = real_malloc(size);
    } else {
        in_tibet = 1;
        q = tibet_managed_realloc(p, size);
        in_tibet = 0;
        if (q == TIBET_REFUSED) {
            errno = ENOMEM;
            return NULL; /* the old block stays as it was */
        }
        if (q)
            return q;
        /* Not taken: forward, as an ordinary block (already announced if unencrypted). */
        q = real_malloc(size);
    }
    if (!q)
        return NULL;
    memcpy(q, p, old < size ? old : size);
    free_arena_block(p);
    return q;
}

/* realloc of a forked child's block served by the custodian (native/served.c): moved to
 * a new block, served again at or above the threshold. */
static void *realloc_served(void *p, size_t size)
{
    if (size == 0) {
        tibet_served_free(p);
        return NULL;
    }
    size_t old = tibet_served_usable_size(p);
    if (size <= old && size >= malloc_threshold)
        return p;
    void *q = size < malloc_threshold ? real_malloc(size) : program_large_alloc(size, 16, 0);
    if (q == TIBET_REFUSED) {
        errno = ENOMEM;
        return NULL; /* the old block stays as it was */
    }
    if (q == NULL && size >= malloc_threshold)
        q = real_malloc(size);
    if (!q)
        return NULL;
    memcpy(q, p, old < size ? old : size);
    tibet_served_free(p);
    return q;
}

__attribute__((noinline)) static void *realloc_slow(void *p, size_t size, const void *ret)
{
    if (p == NULL)
        return size < malloc_threshold && !tibet_caller(ret) ? real_malloc(size) : malloc_slow(size, ret);
    if (hostile_size(size)) {
        errno = ENOMEM;
        return NULL; /* the old block stays as it was */
    }
    if (is_private(p))
        return realloc_private(p, size, ret);
    if (size == 0 && ours_malloc(p)) {
        free_arena_block(p);
        return NULL;
    }
    if (ours_malloc(p))
        return realloc_arena(p, size, ret);
    if (tibet_served_owns(p))
        return realloc_served(p, size);
    if (tibet_caller(ret))
        return real_realloc(p, size); /* a block of the program's that tibet resizes (rare) */
    /* A program's block growing across the threshold: move it into an arena. */
    void *q = program_large_alloc(size, 16, 0);
    if (q == TIBET_REFUSED) {
        errno = ENOMEM;
        return NULL;
    }
    if (q == NULL)
        return real_realloc(p, size);
    size_t old = real_usable_size(p);
    memcpy(q, p, old < size ? old : size);
    real_free(p);
    return q;
}

EXPORT void *realloc(void *p, size_t size)
{
    const void *ret = __builtin_return_address(0);
    if (LIKELY(size < malloc_threshold) && LIKELY(!tibet_caller(ret)) && LIKELY(!is_private(p) && !ours_malloc(p) && !tibet_served_owns(p)))
        return real_realloc(p, size);
    return realloc_slow(p, size, ret);
}

static int power_of_two(size_t n) { return n != 0 && (n & (n - 1)) == 0; }

/* The aligned family, for tibet or for the program: `next` answers whatever the shim does
 * not (alignments libc rejects or rounds, sizes below the threshold), so the program sees
 * its own allocator's answers to its own arguments. Returns the block, NULL with errno set,
 * or FORWARD. */
#define FORWARD ((void *)1)
static void *aligned_slow(size_t alignment, size_t size, const void *ret)
{
    if (tibet_caller(ret)) {
        if (!power_of_two(alignment))
            return FORWARD; /* the next allocator's answer to a strange alignment */
        if (hostile_size(size)) {
            errno = ENOMEM;
            return NULL;
        }
        return tibet_alloc(size, alignment < 16 ? 16 : alignment, 0);
    }
    if (size < malloc_threshold || !power_of_two(alignment))
        return FORWARD;
    void *p = program_large_alloc(size, alignment < 16 ? 16 : alignment, 0);
    if (p == TIBET_REFUSED) {
        errno = ENOMEM;
        return NULL;
    }
    return p ? p : FORWARD;
}

EXPORT int posix_memalign(void **out, size_t alignment, size_t size)
{
    if (UNLIKELY(!real_usable_size))
        resolve();
    if (!power_of_two(alignment) || alignment % sizeof(void *) != 0)
        return EINVAL;
    void *p = aligned_slow(alignment, size, __builtin_return_address(0));
    if (p == FORWARD)
        return real_posix_memalign(out, alignment, size);
    if (p == NULL)
        return errno; /* ENOMEM, which glibc also leaves in errno */
    *out = p;
    return 0;
}

EXPORT void *aligned_alloc(size_t alignment, size_t size)
{
    if (UNLIKELY(!real_usable_size))
        resolve();
    void *p = aligned_slow(alignment, size, __builtin_return_address(0));
    return p == FORWARD ? real_aligned_alloc(alignment, size) : p;
}

EXPORT void *memalign(size_t alignment, size_t size)
{
    if (UNLIKELY(!real_usable_size))
        resolve();
    void *p = aligned_slow(alignment, size, __builtin_return_address(0));
    return p == FORWARD ? real_memalign(alignment, size) : p;
}

EXPORT void *valloc(size_t size)
{
    if (UNLIKELY(!real_usable_size))
        resolve();
    void *p = aligned_slow(4096, size, __builtin_return_address(0));
    return p == FORWARD ? real_valloc(size) : p;
}

EXPORT void *pvalloc(size_t size)
{
    if (UNLIKELY(!real_usable_size))
        resolve();
    if (hostile_size(size)) {
        errno = ENOMEM; /* glibc's answer, also where rounding up to a page would wrap */
        return NULL;
    }
    size_t rounded = (size + 4095) & ~(size_t)4095;
    void *p = aligned_slow(4096, rounded == 0 ? 4096 : rounded, __builtin_return_address(0));
    return p == FORWARD ? real_pvalloc(size) : p;
}

/* ---- threads tibet creates ------------------------------------------------------------
 * The runtime's own threads (the page-fault handler, the finalizer) are tibet's for life:
 * all they allocate, including what libc allocates for them, comes from the private heap.
 * This definition is hidden (-fvisibility=hidden, and absent from the export list): the
 * linker binds the runtime's calls inside libtibet.so to it, while the program's
 * pthread_create stays libc's, untouched. */
struct tibet_thread {
    void *(*start)(void *);
    void *arg;
};

static void *tibet_thread_start(void *p)
{
    struct tibet_thread thread = *(struct tibet_thread *)p;
    in_tibet = 1;
    heap_free(p);
    return thread.start(thread.arg);
}

int pthread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*start)(void *), void *arg)
{
    if (UNLIKELY(!real_usable_size))
        resolve();
    struct tibet_thread *t = heap_alloc(sizeof *t, 16, 0);
    if (!t)
        return EAGAIN;
    t->start = start;
    t->arg = arg;
    int error = real_pthread_create(thread, attr, tibet_thread_start, t);
    if (error)
        heap_free(t);
    return error;
}


/* ---- mappings --------------------------------------------------------------------- */

/* A large anonymous private map the kernel may place: with no address, or with an address
 * as a hint, which the kernel too may pass over (V8 asks for every reservation at a random
 * address of its own, HotSpot for its heap below 32 GiB, and both take what they get;
 * MAP_32BIT is a demand, not a hint). Two kinds become arenas:
 * - writable memory;
 * - a reservation (PROT_NONE) that the program commits piece by piece later, with mprotect
 *   or with MAP_FIXED maps inside it (V8's and HotSpot's heaps, jemalloc where the system
 *   does not overcommit). It is an arena mapped inaccessible (charged no commit, as the
 *   program's own reservation), so that what the program makes accessible in it is
 *   served, sealed and evicted like any arena page, not left to the kernel in plaintext
 *   (see commit_in_arena). */
static int redirectable_mapping(size_t length, int prot, int flags, int fd)
{
    const int refused = MAP_FIXED | MAP_FIXED_NOREPLACE | MAP_GROWSDOWN | MAP_STACK | MAP_HUGETLB | MAP_LOCKED | MAP_32BIT;
    return fd == -1 && (flags & MAP_ANONYMOUS) && (flags & MAP_TYPE) == MAP_PRIVATE
        && !(flags & refused)
        && ((prot == (PROT_READ | PROT_WRITE) && length >= mmap_threshold) || (prot == PROT_NONE && length >= reservation_threshold));
}

/* Is [addr, addr+length) wholly inside one anonymous arena of this process's (a served
 * mapping, or the program's own engine's)? */
static int inside_anonymous_arena(void *addr, size_t length)
{
    if (served_by_custodian() && tibet_served_covers(addr, length))
        return 1;
    if (!overlaps_mmap(addr, length) || in_child())
        return 0;
    in_tibet = 1;
    int covered = tibet_managed_covers(addr, length);
    in_tibet = 0;
    return covered;
}

/* A MAP_FIXED anonymous private map inside an arena of ours: a runtime committing (or,
 * with PROT_NONE, decommitting) part of a reservation it made. The kernel would replace
 * the arena's pages with fresh plaintext ones; the same meaning is given inside the arena
 * instead: the pages are discarded (MADV_DONTNEED, which the engine hears as a REMOVE
 * event and drops their sealed copies for, so they read as zeros) and the protection is
 * changed. Executable maps are left to the kernel (JIT code is no secret; an executable
 * page could not be moved out by eviction), and said if writable. 1 when done. */
static int commit_in_arena(void *addr, size_t length, int prot, int flags, int fd)
{
    const int refused = MAP_FIXED_NOREPLACE | MAP_GROWSDOWN | MAP_STACK | MAP_HUGETLB | MAP_LOCKED;
    if (addr == NULL || !(flags & MAP_FIXED) || (flags & refused) || fd != -1 || !(flags & MAP_ANONYMOUS)
        || (flags & MAP_TYPE) != MAP_PRIVATE || (prot & ~(PROT_READ | PROT_WRITE)) || ((uintptr_t)addr & 4095)
        || length == 0 || hostile_size(length) || !shim_ready)
        return 0;
    size_t rounded = (length + 4095) & ~(size_t)4095;
    if (!inside_anonymous_arena(addr, rounded))
        return 0;
    return syscall(SYS_madvise, addr, rounded, MADV_DONTNEED) == 0 && syscall(SYS_mprotect, addr, rounded, prot) == 0;
}

/* A writable anonymous private map at an address the program chose: memory the kernel
 * serves in plaintext (it replaces what was there, an arena of ours included), so it is
 * counted and said, or refused under --require-encryption. jemalloc commits reserved
 * memory so when the system does not overcommit; runtimes place their heaps so. */
static int fixed_anonymous_allocation(void *addr, size_t length, int prot, int flags, int fd)
{
    return addr != NULL && (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) && fd == -1 && (flags & MAP_ANONYMOUS)
        && (flags & MAP_TYPE) == MAP_PRIVATE && (prot & PROT_WRITE) && !(flags & (MAP_STACK | MAP_GROWSDOWN))
        && length >= mmap_threshold;
}

/* Whether the file open as fd may be a GGUF model: it starts with the GGUF magic. Only
 * such files are the managed side's business; the test costs an fstat and a 4-byte read,
 * and happens on opens and maps of files, never on the allocation paths. A descriptor
 * opened with O_DIRECT (llama.cpp's direct I/O load mode) refuses so small a read: then
 * the managed side looks, through a descriptor of its own. */
static int starts_with_gguf_magic(int fd)
{
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 4)
        return 0;
    if (UNLIKELY(!real_pread))
        resolve();
    unsigned char magic[4];
    ssize_t n = real_pread(fd, magic, sizeof magic, 0);
    if (n < 0 && errno == EINVAL)
        return 1;
    return n == 4 && memcmp(magic, "GGUF", 4) == 0;
}

/* A map of a file that may be a model: llama.cpp maps GGUF files PROT_READ, MAP_SHARED.
 * The managed side serves it from an encrypted arena, refuses it (a writable shared map of
 * a sealed model), or declines and the kernel maps the file as usual. Every size is
 * considered: a small sealed model must not be mapped as raw ciphertext. */
static int candidate_file_mapping(int flags, int fd)
{
    return fd >= 0 && !(flags & MAP_ANONYMOUS) && starts_with_gguf_magic(fd);
}

static void *do_mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset, const void *ret)
{
    if (UNLIKELY(!real_mmap))
        resolve();
    if (redirectable_mapping(length, prot, flags, fd) && !hostile_size(length) && !tibet_caller(ret)) {
        void *p = NULL;
        if (may_redirect(ret)) {
            if (serve_self && !(p = tibet_served_map(length, prot)))
                self_fallback(length);
            if (!p) {
                in_tibet = 1;
                p = tibet_managed_mmap(length, prot);
                in_tibet = 0;
            }
        } else if (shim_ready && in_child()) {
            p = tibet_served_map(length, prot);
            if (!p)
                p = child_large_allocation(length);
        }
        if (p == TIBET_REFUSED) {
            errno = ENOMEM;
            return MAP_FAILED;
        }
        if (p)
            return p;
    } else if (addr == NULL && may_redirect(ret) && candidate_file_mapping(flags, fd)) {
        int error = 0;
        in_tibet = 1;
        void *p = tibet_managed_map_file(length, prot, flags, fd, offset, &error);
        in_tibet = 0;
        if (p)
            return p;
        if (error) {
            errno = error;
            return MAP_FAILED;
        }
    }
    if (!tibet_caller(ret) && commit_in_arena(addr, length, prot, flags, fd))
        return addr;
    if (fixed_anonymous_allocation(addr, length, prot, flags, fd) && !hostile_size(length) && !tibet_caller(ret) && shim_ready) {
        void *answer;
        if (in_child()) {
            answer = child_fixed_map(length);
        } else {
            in_tibet = 1;
            answer = tibet_managed_fixed_map(length);
            in_tibet = 0;
        }
        if (answer == TIBET_REFUSED) {
            errno = ENOMEM;
            return MAP_FAILED;
        }
    }
    /* MAP_FIXED over pages we serve needs nothing here: the kernel reports the
     * replacement to the engine as an UNMAP event, and the program's eventual munmap of
     * its own mapping puts the range back into our reservation. */
    void *mapped = real_mmap(addr, length, prot, flags, fd, offset);
    /* A mapping placed over a served one replaces it: it is not served any more. */
    if (mapped != MAP_FAILED && (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) && shim_ready && served_by_custodian())
        tibet_served_unmapped(mapped, length);
    return mapped;
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
    /* Served mappings live only in the mappings' pool (tibet_served_map): a range outside
     * it holds none, and is the kernel's. */
    if (shim_ready && served_by_custodian() && tibet_served_release(addr, length))
        return 0; /* served mappings reserved again */
    return real_munmap(addr, length);
}

/* mprotect of a model map the program mapped read-only, to make it writable: the engine
 * learns it first (tibet_managed_protect), because it lifts such a map's write protection
 * for a moment to collapse it into huge pages, trusting that the program writes no
 * read-only map (RangeCollapser). Told before the kernel changes anything, so that no
 * write can follow the change before the engine knows. */
EXPORT int mprotect(void *addr, size_t length, int prot)
{
    if (UNLIKELY(!real_mprotect))
        resolve();
    if ((prot & PROT_WRITE) && overlaps_mmap(addr, length) && !in_tibet && !in_child() && !from_self(__builtin_return_address(0))) {
        in_tibet = 1;
        tibet_managed_protect(addr, length, prot);
        in_tibet = 0;
    }
    return real_mprotect(addr, length, prot);
}

/* Is [addr, addr+length) wholly anonymous memory tibet serves: malloc blocks (the region
 * the program's engine hands them out from, or the custodian's pool: nothing else is
 * mapped there), or one anonymous mapping of the program's engine or of the custodian
 * (inside_anonymous_arena: not a model map, nor a file the program mapped over part of
 * one, where MADV_FREE natively fails with EINVAL, and DONTNEED would drop what the
 * program wrote to its private copy). */
static int served_anonymous_memory(void *addr, size_t length)
{
    uintptr_t a = (uintptr_t)addr;
    if (!shim_ready || in_tibet || length == 0 || hostile_size(length) || a + length < a)
        return 0;
    if (a >= malloc_base && a + length <= malloc_limit)
        return 1;
    if (tibet_served_owns(addr) && tibet_served_owns((char *)addr + length - 1))
        return 1;
    return inside_anonymous_arena(addr, length);
}

/* madvise(MADV_FREE) of memory tibet serves is MADV_DONTNEED. After MADV_FREE a page
 * reads as it was, or as zeros once the kernel has freed it, until it is written again;
 * MADV_DONTNEED is the second at once, which MADV_FREE allows (madvise(2)). Left as FREE,
 * the kernel keeps the page mapped until it needs the memory, and the engine, which cannot
 * tell when that is, takes it off its books at once (sealing it could bring back bytes
 * given up, where the program may expect zeros): its plaintext would stay in RAM, outside
 * the budget, until reclaimed. DONTNEED zaps it before madvise returns. Runtimes release
 * their garbage-collected heaps so (.NET, V8), and so do jemalloc and mimalloc. A raw
 * madvise system call is not seen here: threat-model.md says what it leaves. */
EXPORT int madvise(void *addr, size_t length, int advice)
{
    if (UNLIKELY(!real_madvise))
        resolve();
    if (advice == MADV_FREE && served_anonymous_memory(addr, length))
        advice = MADV_DONTNEED;
    return real_madvise(addr, length, advice);
}

/* Copies length bytes from `from` to `to` (both this process's), or returns 0 where a
 * page of `from` cannot be read (the program made it PROT_NONE or write-only): a memcpy
 * would die of SIGSEGV inside tibet there, where the kernel's mremap would have moved
 * the pages. process_vm_readv on this process answers EFAULT instead, and its reads of
 * sealed pages fault to their engine as the program's own would. */
static int copy_mapped(void *to, const void *from, size_t length)
{
    struct iovec local = { to, length }, remote = { (void *)from, length };
    return syscall(SYS_process_vm_readv, (pid_t)syscall(SYS_getpid), &local, 1UL, &remote, 1UL, 0UL) == (long)length;
}

/* mremap of a served mapping (tibet_served_map: a forked child's, or the program's with
 * TIBET_SERVE=custodian), or of part of one. The kernel would move or grow it with its
 * registration, and the grown part would be registered but unknown to the custodian: a
 * fault there gets SIGBUS.
 * So a move or a resize is a new mapping (served again, or plaintext as any large one the
 * custodian cannot take, said), a copy, and a release of the old, which the custodian
 * follows (its UNMAP event); growing in place is refused (ENOMEM, which mremap without
 * MREMAP_MAYMOVE may always answer), and shrinking in place releases the tail. Costs a
 * copy where the kernel would move page tables. */
static void *remap_served(void *old, size_t old_size, size_t new_size, int flags, int reservation, const void *ret)
{
    size_t page = 4096, old_rounded = (old_size + page - 1) & ~(page - 1), new_rounded = (new_size + page - 1) & ~(page - 1);
    if (flags & (MREMAP_FIXED | MREMAP_DONTUNMAP) || new_size == 0 || hostile_size(new_size)) {
        errno = EINVAL; /* a size that wraps when rounded would read as a shrink to nothing */
        return MAP_FAILED;
    }
    if (new_rounded == old_rounded)
        return old;
    /* A reservation's contents cannot be copied (parts of it may be inaccessible): it only
     * shrinks in place, and does not move (ENOMEM, as for a move that finds no room). */
    if (!(flags & MREMAP_MAYMOVE) || reservation) {
        if (new_rounded > old_rounded) {
            errno = ENOMEM;
            return MAP_FAILED;
        }
        tibet_served_release((char *)old + new_rounded, old_rounded - new_rounded); /* in the pool, as every served mapping */
        return old;
    }
    /* Served again whatever its size (a part may be below the threshold): what was
     * encrypted stays so. do_mmap, which says what it cannot serve, only if that fails. */
    void *moved = tibet_served_map(new_size, PROT_READ | PROT_WRITE);
    int served_again = moved != NULL;
    if (!served_again)
        moved = do_mmap(NULL, new_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0, ret);
    if (moved == MAP_FAILED)
        return MAP_FAILED;
    if (!copy_mapped(moved, old, old_rounded < new_rounded ? old_rounded : new_rounded)) {
        /* A part the program made inaccessible: refused, nothing moved. */
        if (served_again) {
            tibet_served_release(moved, new_rounded);
        } else if (overlaps_mmap(moved, new_rounded) && !in_child()) {
            in_tibet = 1; /* the program's engine took it (do_mmap): its books let it go */
            tibet_managed_unmap(moved, new_rounded);
            in_tibet = 0;
        } else {
            real_munmap(moved, new_rounded);
        }
        errno = EFAULT;
        return MAP_FAILED;
    }
    tibet_served_release(old, old_rounded);
    return moved;
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
    if (shim_ready && !in_tibet && served_by_custodian()) {
        int reservation;
        if (((uintptr_t)old & 4095) == 0 && old_size != 0 && !hostile_size(old_size)) {
            size_t rounded = (old_size + 4095) & ~(size_t)4095;
            if (tibet_served_part(old, rounded, &reservation))
                return remap_served(old, old_size, new_size, flags, reservation, __builtin_return_address(0));
            if (tibet_served_overlaps(old, rounded)) {
                errno = EFAULT; /* across served mappings, or past one's end */
                return MAP_FAILED;
            }
        }
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
    void *moved = real_mremap(old, old_size, new_size, flags, new_address);
    /* MREMAP_FIXED replaces whatever was at the target, a served mapping included. */
    if (moved != MAP_FAILED && (flags & MREMAP_FIXED) && shim_ready && served_by_custodian())
        tibet_served_unmapped(moved, new_size);
    return moved;
}

/* ---- reads of sealed model files -------------------------------------------------- */

/* Descriptors of sealed models the program opened. Their reads go through tibet, which
 * hands out the decrypted bytes (or zeros, without a valid identity); the file's ciphertext
 * is never handed to the program as if it were the model. The table is read on every read,
 * so it is a plain array of flags, and an empty table costs one compare. */
#define SEALED_FD_LIMIT 65536
static unsigned char sealed_fds[SEALED_FD_LIMIT];
static int sealed_fd_count;

static inline int is_sealed_fd(int fd)
{
    return UNLIKELY(__atomic_load_n(&sealed_fd_count, __ATOMIC_ACQUIRE) != 0)
        && fd >= 0 && fd < SEALED_FD_LIMIT && __atomic_load_n(&sealed_fds[fd], __ATOMIC_ACQUIRE);
}

static void forget_sealed_fd(int fd)
{
    if (is_sealed_fd(fd)) {
        __atomic_store_n(&sealed_fds[fd], 0, __ATOMIC_RELEASE);
        __atomic_fetch_sub(&sealed_fd_count, 1, __ATOMIC_ACQ_REL);
        if (!in_child()) {
            in_tibet = 1;
            tibet_managed_file_closed(fd);
            in_tibet = 0;
        }
    }
}

/* After a successful open for reading: is it a sealed model? Returns fd, or -1 (errno set)
 * when a sealed model cannot be tracked and must not be read raw. */
static int track_if_sealed(int fd, const void *ret)
{
    if (fd < 0 || !may_redirect(ret) || !starts_with_gguf_magic(fd))
        return fd;
    in_tibet = 1;
    int sealed = tibet_managed_file_opened(fd);
    in_tibet = 0;
    if (!sealed)
        return fd;
    if (fd >= SEALED_FD_LIMIT) {
        real_close(fd);
        errno = EMFILE;
        return -1;
    }
    if (!__atomic_exchange_n(&sealed_fds[fd], 1, __ATOMIC_ACQ_REL))
        __atomic_fetch_add(&sealed_fd_count, 1, __ATOMIC_ACQ_REL);
    return fd;
}

/* Any descriptor that can read: O_RDONLY or O_RDWR (writes pass through untouched). */
static inline int readable(int flags) { return (flags & O_ACCMODE) != O_WRONLY && !(flags & O_PATH); }

static int do_open(open_fn next, const char *path, int flags, mode_t mode, const void *ret)
{
    if (UNLIKELY(!next))
        resolve();
    int fd = (flags & (O_CREAT | O_TMPFILE)) ? next(path, flags, mode) : next(path, flags);
    return readable(flags) ? track_if_sealed(fd, ret) : fd;
}

static int do_openat(openat_fn next, int dirfd, const char *path, int flags, mode_t mode, const void *ret)
{
    if (UNLIKELY(!next))
        resolve();
    int fd = (flags & (O_CREAT | O_TMPFILE)) ? next(dirfd, path, flags, mode) : next(dirfd, path, flags);
    return readable(flags) ? track_if_sealed(fd, ret) : fd;
}

static mode_t mode_argument(int flags, va_list ap)
{
    return (flags & (O_CREAT | O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
}

EXPORT int open(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_argument(flags, ap);
    va_end(ap);
    if (UNLIKELY(!real_open))
        resolve();
    return do_open(real_open, path, flags, mode, __builtin_return_address(0));
}

EXPORT int open64(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_argument(flags, ap);
    va_end(ap);
    if (UNLIKELY(!real_open64))
        resolve();
    return do_open(real_open64, path, flags, mode, __builtin_return_address(0));
}

EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_argument(flags, ap);
    va_end(ap);
    if (UNLIKELY(!real_openat))
        resolve();
    return do_openat(real_openat, dirfd, path, flags, mode, __builtin_return_address(0));
}

EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_argument(flags, ap);
    va_end(ap);
    if (UNLIKELY(!real_openat64))
        resolve();
    return do_openat(real_openat64, dirfd, path, flags, mode, __builtin_return_address(0));
}

/* The _FORTIFY_SOURCE forms of open, for programs built with it. */
EXPORT int __open_2(const char *path, int flags)
{
    if (UNLIKELY(!real_open))
        resolve();
    return do_open(real_open, path, flags, 0, __builtin_return_address(0));
}

EXPORT int __open64_2(const char *path, int flags)
{
    if (UNLIKELY(!real_open64))
        resolve();
    return do_open(real_open64, path, flags, 0, __builtin_return_address(0));
}

static FILE *do_fopen(fopen_fn next, const char *path, const char *mode, const void *ret)
{
    FILE *stream = next(path, mode);
    /* Streams that read an existing file: "r", "rb", "r+"... ("w+" truncates it, "a+" is rare). */
    if (stream == NULL || mode[0] != 'r')
        return stream;
    if (track_if_sealed(fileno(stream), ret) < 0) {
        int error = errno;
        real_fclose(stream);
        errno = error;
        return NULL;
    }
    return stream;
}

/* ---- tibet's own streams while a fork is under way -------------------------------------
 *
 * glibc's fork() holds the stdio list lock (and its malloc locks) from before the fork
 * system call until after it, and with userfaultfd's fork events that system call waits
 * until tibet's handler thread has read the event. The handler is managed code: while a
 * garbage collection runs it waits. And the collector reads /proc/meminfo (or cgroup files)
 * with fopen, which waits for the stdio list lock: fork -> handler -> GC -> fopen -> fork,
 * a deadlock the fork stress test produced. So tibet's own fopen and fclose (the runtime's,
 * never the program's) keep out of glibc's stdio while a fork is under way: a fopen fails
 * (EAGAIN; the runtime then falls back to sysinfo-based figures), and a fclose is done
 * after the fork. fork() waits, before it locks anything, until no such call is inside
 * glibc: a Dekker handshake on two counters. */
static int forks_under_way;
static int tibet_streams_busy;
#define DEFERRED_CLOSES 64
static FILE *deferred_closes[DEFERRED_CLOSES];

static int enter_tibet_stdio(void)
{
    __atomic_add_fetch(&tibet_streams_busy, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&forks_under_way, __ATOMIC_SEQ_CST) == 0)
        return 1;
    __atomic_sub_fetch(&tibet_streams_busy, 1, __ATOMIC_SEQ_CST);
    return 0;
}

static void leave_tibet_stdio(void) { __atomic_sub_fetch(&tibet_streams_busy, 1, __ATOMIC_SEQ_CST); }

/* Inside enter/leave: the closes that waited for a fork. */
static void close_deferred(void)
{
    for (int i = 0; i < DEFERRED_CLOSES; i++) {
        FILE *stream = __atomic_exchange_n(&deferred_closes[i], NULL, __ATOMIC_ACQ_REL);
        if (stream)
            real_fclose(stream);
    }
}

static FILE *tibet_fopen(fopen_fn next, const char *path, const char *mode)
{
    if (!enter_tibet_stdio()) {
        errno = EAGAIN;
        return NULL;
    }
    close_deferred();
    FILE *stream = next(path, mode);
    leave_tibet_stdio();
    return stream;
}

static int tibet_fclose(FILE *stream)
{
    if (enter_tibet_stdio()) {
        close_deferred();
        int result = real_fclose(stream);
        leave_tibet_stdio();
        return result;
    }
    for (int i = 0; i < DEFERRED_CLOSES; i++) {
        FILE *none = NULL;
        if (__atomic_compare_exchange_n(&deferred_closes[i], &none, stream, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            return 0;
    }
    return 0; /* 64 closes waiting for forks: this stream (a /proc file of the runtime) stays open */
}

EXPORT FILE *fopen(const char *path, const char *mode)
{
    if (UNLIKELY(!real_fopen))
        resolve();
    if (tibet_caller(__builtin_return_address(0)))
        return tibet_fopen(real_fopen, path, mode);
    return do_fopen(real_fopen, path, mode, __builtin_return_address(0));
}

EXPORT FILE *fopen64(const char *path, const char *mode)
{
    if (UNLIKELY(!real_fopen64))
        resolve();
    if (tibet_caller(__builtin_return_address(0)))
        return tibet_fopen(real_fopen64, path, mode);
    return do_fopen(real_fopen64, path, mode, __builtin_return_address(0));
}

EXPORT int close(int fd)
{
    if (UNLIKELY(!real_close))
        resolve();
    forget_sealed_fd(fd);
    return real_close(fd);
}

EXPORT int fclose(FILE *stream)
{
    if (UNLIKELY(!real_fclose))
        resolve();
    if (stream != NULL && tibet_caller(__builtin_return_address(0)))
        return tibet_fclose(stream);
    if (stream != NULL)
        forget_sealed_fd(fileno(stream));
    return real_fclose(stream);
}

/* A read of a sealed descriptor: the managed side's answer, or in a forked child (where
 * managed code never runs) an I/O error rather than ciphertext. at_position: read at the
 * file position and advance it. Returns the bytes read, or -1 with errno set. */
static ssize_t sealed_read(int fd, void *buffer, size_t count, off_t offset, int at_position)
{
    if (in_child()) {
        errno = EIO;
        return -1;
    }
    in_tibet = 1;
    ssize_t n = tibet_managed_read(fd, buffer, count, offset, at_position);
    in_tibet = 0;
    if (n < 0) {
        errno = (int)-n;
        return -1;
    }
    return n;
}

EXPORT ssize_t read(int fd, void *buffer, size_t count)
{
    if (UNLIKELY(!real_read))
        resolve();
    if (is_sealed_fd(fd) && !in_tibet)
        return sealed_read(fd, buffer, count, 0, 1);
    return real_read(fd, buffer, count);
}

EXPORT ssize_t pread(int fd, void *buffer, size_t count, off_t offset)
{
    if (UNLIKELY(!real_pread))
        resolve();
    if (is_sealed_fd(fd) && !in_tibet)
        return sealed_read(fd, buffer, count, offset, 0);
    return real_pread(fd, buffer, count, offset);
}

EXPORT ssize_t pread64(int fd, void *buffer, size_t count, off_t offset)
{
    if (UNLIKELY(!real_pread64))
        resolve();
    if (is_sealed_fd(fd) && !in_tibet)
        return sealed_read(fd, buffer, count, offset, 0);
    return real_pread64(fd, buffer, count, offset);
}

EXPORT ssize_t __read_chk(int fd, void *buffer, size_t count, size_t buffer_size)
{
    if (count > buffer_size)
        abort(); /* what glibc's __chk_fail does, minus its message */
    return read(fd, buffer, count);
}

EXPORT ssize_t __pread64_chk(int fd, void *buffer, size_t count, off_t offset, size_t buffer_size)
{
    if (count > buffer_size)
        abort();
    return pread64(fd, buffer, count, offset);
}

EXPORT ssize_t __pread_chk(int fd, void *buffer, size_t count, off_t offset, size_t buffer_size)
{
    if (count > buffer_size)
        abort();
    return pread(fd, buffer, count, offset);
}

/* fread of a sealed stream: glibc's own reads happen inside libc and cannot be interposed,
 * so the stream's buffer is bypassed. The bytes come from tibet at the stream's position,
 * which is then moved past them with fseeko; at the end of the file a zero-byte fread
 * sets the stream's end-of-file flag, and an error sets its error flag, so that feof and
 * ferror answer as they would natively. */
static size_t sealed_fread(fread_fn next, void *buffer, size_t size, size_t count, FILE *stream)
{
    size_t total;
    if (size == 0 || count == 0)
        return 0;
    if (__builtin_mul_overflow(size, count, &total)) {
        errno = EOVERFLOW;
        stream->_flags |= _IO_ERR_SEEN;
        return 0;
    }
    off_t position = real_ftello(stream);
    if (position < 0) {
        stream->_flags |= _IO_ERR_SEEN;
        return 0;
    }
    size_t done = 0;
    while (done < total) {
        ssize_t n = sealed_read(fileno(stream), (char *)buffer + done, total - done, position + (off_t)done, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            stream->_flags |= _IO_ERR_SEEN;
            break;
        }
        if (n == 0) {
            real_fseeko(stream, position + (off_t)done, SEEK_SET);
            unsigned char none;
            next(&none, 1, 1, stream); /* at the end: sets the EOF flag, reads nothing */
            return done / size;
        }
        done += (size_t)n;
    }
    real_fseeko(stream, position + (off_t)done, SEEK_SET);
    return done / size;
}

EXPORT size_t fread(void *buffer, size_t size, size_t count, FILE *stream)
{
    if (UNLIKELY(!real_fread))
        resolve();
    if (stream != NULL && is_sealed_fd(fileno(stream)) && !in_tibet)
        return sealed_fread(real_fread, buffer, size, count, stream);
    return real_fread(buffer, size, count, stream);
}

#undef fread_unlocked /* a macro in <bits/stdio.h> when optimising */
EXPORT size_t fread_unlocked(void *buffer, size_t size, size_t count, FILE *stream)
{
    if (UNLIKELY(!real_fread_unlocked))
        resolve();
    if (stream != NULL && is_sealed_fd(fileno(stream)) && !in_tibet)
        return sealed_fread(real_fread_unlocked, buffer, size, count, stream);
    return real_fread_unlocked(buffer, size, count, stream);
}

EXPORT size_t __fread_chk(void *buffer, size_t buffer_size, size_t size, size_t count, FILE *stream)
{
    size_t total;
    if (__builtin_mul_overflow(size, count, &total) || total > buffer_size)
        abort();
    return fread(buffer, size, count, stream);
}

/* ---- fork ------------------------------------------------------------------------- */

EXPORT pid_t fork(void)
{
    if (UNLIKELY(!real_fork))
        resolve();
    /* See "tibet's own streams while a fork is under way". */
    __atomic_add_fetch(&forks_under_way, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&tibet_streams_busy, __ATOMIC_SEQ_CST) != 0)
        sched_yield();
    /* The child's agent (native/agent.c) and the engine that serves what the child
     * inherits talk over this pair: made here, so that nothing but the two of them can
     * reach it. That engine is the custodian's when it serves this process's memory (a
     * forked child's, or the program's with TIBET_SERVE=custodian): the parent passes its
     * end on (tibet_served_forked). Otherwise the program's own engine's, in the process
     * it runs in. A child has one agent: with TIBET_SERVE=custodian it is the custodian's,
     * and what the child inherits of the program's model maps stays resident in it. */
    int agent[2] = { -1, -1 };
    int to_custodian = shim_ready && tibet_served_serving();
    int to_engine = !to_custodian && shim_ready && !in_child() && tibet_agent_wanted();
    if ((to_custodian || to_engine) && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, agent) != 0)
        agent[0] = agent[1] = -1;
    pid_t pid = real_fork();
    if (pid == 0) {
        forks_under_way = 0; /* the child's own counts: no fork of its own is under way */
        tibet_streams_busy = 0;
        tibet_agent_forget_in_grandchild(); /* a child's child: its parent's agent stays its parent's */
        if (agent[0] >= 0) {
            close(agent[0]);
            tibet_agent_start_in_child(agent[1], real_pthread_create); /* libc's: see agent.c */
        }
        /* This child's own large allocations, served by the custodian (native/served.c). */
        if (shim_ready && tibet_served_active())
            tibet_served_start_in_child(real_pthread_create);
    } else {
        __atomic_sub_fetch(&forks_under_way, 1, __ATOMIC_SEQ_CST);
        if (agent[1] >= 0)
            close(agent[1]);
    }
    if (pid > 0 && to_custodian && agent[0] >= 0) {
        tibet_served_forked(pid, agent[0]); /* and closes it */
        agent[0] = -1;
    }
    if (pid > 0 && shim_ready && !in_child()) {
        has_forked = 1;
        in_tibet = 1;
        tibet_managed_forked(pid, agent[0]); /* the engine owns that end now */
        in_tibet = 0;
    } else if (pid < 0 && agent[0] >= 0) {
        close(agent[0]);
    }
    return pid;
}

/* _exit and _Exit skip atexit handlers, and glibc's daemon(3) leaves the parent through
 * _exit right after its fork. The child's sealed pages are served by this process's
 * handler, and would read as zeros once it is gone; so before a process that has forked
 * ends, the children get those pages (InterposerRuntime.HandOver). Only after a fork:
 * _exit is also called from signal handlers, where managed code is best not entered. A raw
 * exit_group system call cannot be seen. */
static void hand_over_before_exit(void)
{
    if (has_forked && shim_ready && !in_child() && !in_tibet) {
        in_tibet = 1;
        tibet_managed_hand_over();
        in_tibet = 0;
    }
}

EXPORT void _exit(int status)
{
    hand_over_before_exit();
    if (real__exit)
        real__exit(status);
    syscall(SYS_exit_group, status);
    __builtin_unreachable();
}

EXPORT void _Exit(int status)
{
    hand_over_before_exit();
    if (real__Exit)
        real__Exit(status);
    syscall(SYS_exit_group, status);
    __builtin_unreachable();
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
    /* Shared with every forked descendant, which count into it (see child_counts). */
    long page = syscall(SYS_mmap, NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (page != -1)
        child_counts = (struct child_counts *)page;
    const size_t most = (size_t)PTRDIFF_MAX + 1; /* larger sizes must still take the slow path */
    malloc_threshold = malloc_min < most ? malloc_min : most;
    mmap_threshold = mmap_min < most ? mmap_min : most;
    reservation_threshold = mmap_threshold < RESERVATION_THRESHOLD_MOST ? mmap_threshold : RESERVATION_THRESHOLD_MOST;
    __atomic_store_n(&shim_ready, 1, __ATOMIC_RELEASE);
}

/* require_encryption: a forked child's large allocation, which tibet cannot serve, fails
 * with ENOMEM instead of running in plaintext. */
EXPORT void tibet_shim_set_policy(int require)
{
    require_encryption = require != 0;
}

/* What forked children (and their descendants) did since configuration that runs
 * unencrypted, of one kind: 0, allocations at or above the threshold no custodian took on;
 * 1, writable MAP_FIXED maps at or above it. Forwarded as plaintext (count, bytes), and
 * refused. Any pointer may be NULL. */
EXPORT void tibet_shim_child_tally(int kind, uint64_t *count, uint64_t *bytes, uint64_t *refused)
{
    struct child_tally *t = child_counts && kind >= 0 && kind < CHILD_KINDS ? &child_counts->kinds[kind] : NULL;
    if (count) *count = t ? __atomic_load_n(&t->count, __ATOMIC_RELAXED) : 0;
    if (bytes) *bytes = t ? __atomic_load_n(&t->bytes, __ATOMIC_RELAXED) : 0;
    if (refused) *refused = t ? __atomic_load_n(&t->refused, __ATOMIC_RELAXED) : 0;
}

/* Whether the custodian serves this process's own large anonymous allocations
 * (TIBET_SERVE=custodian, and its thread started): its statistics then include the
 * custodian's engine's. */
EXPORT int tibet_shim_serves_self(void)
{
    return serve_self && !in_child();
}

/* The resident count the program's engine shares with the custodian's (served.h,
 * tibet_served_share); NULL until the custodian serves. */
EXPORT int64_t *tibet_shim_served_share(void)
{
    return tibet_served_share(); /* managed code runs in the program only, never in a child */
}

/* TIBET_CUSTODIAN_SOCKET: the name of the socket tibet-run's custodian listens on
 * (native/served.c), and TIBET_USERFAULTFD_FD, an inherited /dev/userfaultfd (tibet-run
 * --user). Not in secure-execution mode, where the environment belongs to a less
 * privileged caller. A malformed name is said and ignored: forked children then run their
 * large allocations in plaintext, each saying so. */
static int descriptor_variable(const char *name)
{
    const char *text = getenv(name);
    if (!text || !*text)
        return -2;
    long fd = 0;
    const char *c = text;
    for (; *c >= '0' && *c <= '9' && fd < INT_MAX; c++)
        fd = fd * 10 + (*c - '0');
    return *c != '\0' || fd > INT_MAX ? -1 : (int)fd;
}

static int serve_self_wanted; /* TIBET_SERVE=custodian, with a custodian configured */

static void configure_custodian(void)
{
    if (getauxval(AT_SECURE))
        return;
    int device = descriptor_variable("TIBET_USERFAULTFD_FD");
    if (device >= 0)
        tibet_served_set_device(device);
    const char *name = getenv("TIBET_CUSTODIAN_SOCKET");
    if (!name || !*name)
        return;
    int uid = descriptor_variable("TIBET_CUSTODIAN_UID"); /* a number like a descriptor's */
    if (tibet_served_configure(name, uid >= 0 ? uid : -1) != 0) {
        static const char line[] = "tibet: TIBET_CUSTODIAN_SOCKET is not a custodian's name; forked children's large allocations will not be encrypted\n";
        tibet_shim_report(line, sizeof line - 1);
        return;
    }
    tibet_served_hold_custodian();
    const char *serve = getenv("TIBET_SERVE");
    serve_self_wanted = serve && strcmp(serve, "custodian") == 0;
}

/* Also when the engine did not start (the process runs unencrypted): the statistics then
 * say why. The runtime is up either way; a failed start that must not run has _exit()ed. */
static void at_exit(void)
{
    if (!in_child()) {
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
    owner_pid = (pid_t)syscall(SYS_getpid);
    open_report_descriptor();
    configure_custodian();
    /* The runtime sets SIGPIPE to ignored; the program must keep the disposition it was
     * started with (a pipeline's writer dies on a closed pipe). */
    struct sigaction sigpipe;
    sigaction(SIGPIPE, NULL, &sigpipe);
    in_tibet = 1;
    /* Redirection is on only if the engine started (the managed side configures the shim);
     * the exit report runs either way. */
    (void)tibet_managed_init();
    in_tibet = 0;
    /* After the engine configured the shim (no redirection without it: the thresholds and
     * the policy are the engine's). The program's model maps stay its engine's. */
    if (serve_self_wanted && shim_ready)
        serve_self = tibet_served_start_self(real_pthread_create) == 0;
    sigaction(SIGPIPE, &sigpipe, NULL);
    atexit(at_exit);
}
