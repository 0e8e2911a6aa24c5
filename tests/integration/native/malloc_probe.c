/*
 * An LD_PRELOAD shim that counts malloc-family calls by thread name, once armed, so a
 * test can prove that the engine's handler thread ("tibet-uffd") never calls malloc
 * while it serves faults and evicts. This must be C: it replaces libc's allocator
 * symbols in a process, below anything managed code can see.
 *   tibet_probe_arm()            resets the counters and starts counting
 *   tibet_probe_count(which)     0: calls on "tibet-uffd", "tibet-fill" or "tibet-ahead" (the fault path's
 *                                threads); 1: calls on "probe-control";
 *                                2: calls on "tibet-report" (the reporter may malloc)
 * And the parts of the probe that must not run managed code:
 *   tibet_probe_read_sigbus(p)   reads one byte; returns 1 if that raised SIGBUS (a
 *                                tampered page), 0 if the read returned
 *   tibet_probe_fork_compare(a, b, n)  raw fork(2); the child compares n bytes of a (arena
 *                                memory it inherited) with b and exits 0 if equal, 1 if
 *                                not; returns the child's pid to the parent
 *   tibet_probe_fork_read(p)     raw fork(2); the child reads one byte of p and exits 0
 *                                (the test expects it to die of SIGBUS instead)
 *   tibet_probe_wait(pid)        waits for the child; returns its wait status
 *   tibet_probe_report()         prints where the handler's first calls came from
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <setjmp.h>
#include <stdio.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);

static volatile int armed;
static long counts[3];

/* Where the handler's calls came from (the first few): printed by tibet_probe_report,
 * so that a failing test says which library made them. */
#define SITES 16
static void *sites[SITES];
static size_t site_sizes[SITES];
static char site_threads[SITES][16];
static int site_count;

static void note_site(void *caller, size_t size)
{
    int i = __atomic_fetch_add(&site_count, 1, __ATOMIC_RELAXED);
    if (i < SITES) {
        sites[i] = caller;
        site_sizes[i] = size;
        prctl(PR_GET_NAME, site_threads[i], 0, 0, 0);
    }
}

/* The fault path's threads: the handler, the fill worker, and the range reader. */
static int on_fault_path(const char *name)
{
    return strcmp(name, "tibet-uffd") == 0 || strcmp(name, "tibet-fill") == 0 || strcmp(name, "tibet-ahead") == 0;
}

static int on_handler(void)
{
    char name[16] = {0};
    return armed && prctl(PR_GET_NAME, name, 0, 0, 0) == 0 && on_fault_path(name);
}

static void note(void)
{
    if (!armed)
        return;
    char name[16] = {0};
    if (prctl(PR_GET_NAME, name, 0, 0, 0) != 0)
        return;
    if (on_fault_path(name))
        __atomic_add_fetch(&counts[0], 1, __ATOMIC_RELAXED);
    else if (strcmp(name, "probe-control") == 0)
        __atomic_add_fetch(&counts[1], 1, __ATOMIC_RELAXED);
    else if (strcmp(name, "tibet-report") == 0)
        __atomic_add_fetch(&counts[2], 1, __ATOMIC_RELAXED);
}

void *malloc(size_t n) { if (on_handler()) note_site(__builtin_return_address(0), n); note(); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { if (on_handler()) note_site(__builtin_return_address(0), a * b); note(); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { if (on_handler()) note_site(__builtin_return_address(0), n); note(); return __libc_realloc(p, n); }
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
    counts[0] = counts[1] = counts[2] = 0;
    __atomic_store_n(&armed, 1, __ATOMIC_SEQ_CST);
}

long tibet_probe_count(int which) { return __atomic_load_n(&counts[which], __ATOMIC_SEQ_CST); }

/* Prints, on stdout, the library and offset of each of the first calls made on the handler. */
void tibet_probe_report(void)
{
    int n = site_count < SITES ? site_count : SITES;
    for (int i = 0; i < n; i++) {
        Dl_info info;
        if (dladdr(sites[i], &info) && info.dli_fname)
            printf("handler-malloc %zu bytes on %s from %s+0x%lx (%s)\n", site_sizes[i], site_threads[i], info.dli_fname,
                   (unsigned long)((char *)sites[i] - (char *)info.dli_fbase), info.dli_sname ? info.dli_sname : "?");
        else
            printf("handler-malloc %zu bytes on %s from %p\n", site_sizes[i], site_threads[i], sites[i]);
    }
    fflush(stdout);
}

static sigjmp_buf sigbus_jump;

static void on_sigbus(int sig)
{
    (void)sig;
    siglongjmp(sigbus_jump, 1);
}

int tibet_probe_read_sigbus(const volatile unsigned char *p)
{
    struct sigaction catcher, previous;
    memset(&catcher, 0, sizeof catcher);
    catcher.sa_handler = on_sigbus;
    sigemptyset(&catcher.sa_mask);
    sigaction(SIGBUS, &catcher, &previous);
    int raised = 0;
    if (sigsetjmp(sigbus_jump, 1) == 0)
        (void)*p;
    else
        raised = 1;
    sigaction(SIGBUS, &previous, NULL);
    return raised;
}

/* The child of a multithreaded (managed) process runs only this code, with raw system
 * calls: a raw fork(2) runs no atfork handlers. */
int tibet_probe_fork_compare(const volatile unsigned char *a, const unsigned char *b, size_t n)
{
    long pid = syscall(SYS_fork);
    if (pid == 0) {
        for (size_t i = 0; i < n; i++)
            if (a[i] != b[i]) syscall(SYS_exit_group, 1);
        syscall(SYS_exit_group, 0);
    }
    return (int)pid;
}

int tibet_probe_fork_read(const volatile unsigned char *p)
{
    long pid = syscall(SYS_fork);
    if (pid == 0) {
        (void)*p;
        syscall(SYS_exit_group, 0);
    }
    return (int)pid;
}

int tibet_probe_wait(int pid)
{
    int status = -1;
    if (syscall(SYS_wait4, pid, &status, 0, NULL) < 0) return -1;
    return status;
}
