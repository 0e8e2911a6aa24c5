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
#include <fcntl.h>
#include <link.h>
#include <stdarg.h>
#include <stddef.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
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
extern void *tibet_managed_map_file(size_t length, int prot, int flags, int fd, off_t offset, int *error);
extern int tibet_managed_file_opened(int fd); /* 1: a sealed model, reads go through tibet */
extern void tibet_managed_file_closed(int fd);
extern ssize_t tibet_managed_read(int fd, void *buffer, size_t count, off_t offset, int at_position); /* or -errno */
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
    if (redirectable_mapping(addr, length, prot, flags, fd) && may_redirect(ret)) {
        in_tibet = 1;
        void *p = tibet_managed_mmap(length);
        in_tibet = 0;
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

EXPORT FILE *fopen(const char *path, const char *mode)
{
    if (UNLIKELY(!real_fopen))
        resolve();
    return do_fopen(real_fopen, path, mode, __builtin_return_address(0));
}

EXPORT FILE *fopen64(const char *path, const char *mode)
{
    if (UNLIKELY(!real_fopen64))
        resolve();
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
