/* Forked children reading inherited pages that the parent had evicted: each child must
 * see exactly the fork-time contents while the parent overwrites its own copy. Children
 * use raw system calls only (plus pthreads in "stress").
 *   many K          K children alive at once (K above 64 is the point), each reading every
 *                   page of the block; prints "fork-many: OK K"
 *   stress R C T    R rounds of C children at once; in each child T threads read disjoint
 *                   pages while one more thread keeps discarding a page of the block with
 *                   madvise(MADV_DONTNEED), so that serving a fault meets the child's
 *                   events (UFFDIO_COPY answers EAGAIN until they are read) while many
 *                   faults are pending; prints "fork-stress: OK R C T"
 * Any mismatch, lost fault (a hang: the test's timeout) or crash names itself. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096
#define BLOCK (4u << 20)               /* 1024 pages, far above the test's 1 MiB budget */
#define DISCARD_PAGES 16               /* the tail pages the discarding thread uses */
#define CHECKED (BLOCK - DISCARD_PAGES * PAGE)

static unsigned char pattern(size_t i, unsigned seed) { return (unsigned char)(i * seed + (i >> 12) + seed); }

static void fill(unsigned char *p, unsigned seed)
{
    for (size_t i = 0; i < BLOCK; i++) p[i] = pattern(i, seed);
}

/* Number of wrong pages among pages first, first+step, ... below CHECKED. */
static long verify_pages(const volatile unsigned char *p, unsigned seed, size_t first, size_t step)
{
    long bad = 0;
    for (size_t page = first; page * PAGE < CHECKED; page += step) {
        for (size_t i = page * PAGE; i < (page + 1) * PAGE; i++)
            if (p[i] != pattern(i, seed)) { bad++; break; }
    }
    return bad;
}

static long many(unsigned char *p, int children)
{
    int go[2];
    if (pipe(go) != 0) { printf("FAIL pipe\n"); return 1; }
    pid_t *pids = calloc((size_t)children, sizeof *pids);
    fill(p, 7);
    for (int k = 0; k < children; k++) {
        pid_t pid = fork();
        if (pid < 0) { printf("FAIL fork %d\n", k); return 1; }
        if (pid == 0) {
            char c;
            syscall(SYS_close, go[1]);
            syscall(SYS_read, go[0], &c, 1); /* EOF once every child exists */
            syscall(SYS_exit_group, verify_pages(p, 7, 0, 1) == 0 ? 0 : 1);
        }
        pids[k] = pid;
    }
    fill(p, 11); /* the parent's copy moves on; the children keep the fork-time one */
    close(go[1]);
    long failed = 0;
    for (int k = 0; k < children; k++) {
        int status;
        waitpid(pids[k], &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            if (failed++ == 0) printf("FAIL child %d of %d saw wrong data (status 0x%x)\n", k, children, status);
        }
    }
    if (verify_pages(p, 11, 0, 1) != 0) { printf("FAIL parent lost its own pages\n"); failed++; }
    if (failed == 0) printf("fork-many: OK %d\n", children);
    return failed;
}

struct reader { unsigned char *p; unsigned seed; size_t first, step; long bad; };
static volatile int readers_done;

static void *read_part(void *arg)
{
    struct reader *r = arg;
    r->bad = verify_pages(r->p, r->seed, r->first, r->step);
    return NULL;
}

static void *discard(void *arg)
{
    unsigned char *tail = (unsigned char *)arg + CHECKED;
    for (unsigned n = 0; !readers_done; n++) {
        unsigned char *page = tail + (n % DISCARD_PAGES) * PAGE;
        syscall(SYS_madvise, page, PAGE, MADV_DONTNEED);
        (void)*(volatile unsigned char *)page; /* and fault it back in */
    }
    return NULL;
}

static int stress_child(unsigned char *p, unsigned seed, int threads)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 << 10);
    pthread_t discarder, ids[64];
    struct reader readers[64];
    if (pthread_create(&discarder, &attr, discard, p) != 0) return 3;
    for (int t = 0; t < threads; t++) {
        readers[t] = (struct reader){ p, seed, (size_t)t, (size_t)threads, 0 };
        if (pthread_create(&ids[t], &attr, read_part, &readers[t]) != 0) return 3;
    }
    long bad = 0;
    for (int t = 0; t < threads; t++) { pthread_join(ids[t], NULL); bad += readers[t].bad; }
    readers_done = 1;
    pthread_join(discarder, NULL);
    return bad == 0 ? 0 : 1;
}

static long stress(unsigned char *p, int rounds, int children, int threads)
{
    pid_t pids[64];
    for (int r = 0; r < rounds; r++) {
        unsigned seed = 13 + 2 * (unsigned)r;
        fill(p, seed);
        for (int k = 0; k < children; k++) {
            pid_t pid = fork();
            if (pid < 0) { printf("FAIL fork\n"); return 1; }
            if (pid == 0) syscall(SYS_exit_group, stress_child(p, seed, threads));
            pids[k] = pid;
        }
        fill(p, seed + 100);
        for (int k = 0; k < children; k++) {
            int status;
            waitpid(pids[k], &status, 0);
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                printf("FAIL round %d child %d saw wrong data or could not run (status 0x%x)\n", r, k, status);
                return 1;
            }
        }
    }
    printf("fork-stress: OK %d %d %d\n", rounds, children, threads);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    unsigned char *p = malloc(BLOCK);
    if (!p) { printf("FAIL malloc\n"); return 2; }
    if (argc == 3 && strcmp(argv[1], "many") == 0)
        return many(p, atoi(argv[2])) == 0 ? 0 : 1;
    if (argc == 5 && strcmp(argv[1], "stress") == 0) {
        int children = atoi(argv[3]), threads = atoi(argv[4]);
        if (children < 1 || children > 64 || threads < 1 || threads > 64) return 2;
        return stress(p, atoi(argv[2]), children, threads) == 0 ? 0 : 1;
    }
    fprintf(stderr, "usage: %s many K | stress ROUNDS CHILDREN THREADS\n", argv[0]);
    return 2;
}
