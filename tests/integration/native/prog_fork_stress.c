/* Forks in a loop while other threads, each new to tibet, allocate and free through the
 * interposer. This is the shape of Redis's deadlock: a thread whose first call into tibet
 * attaches it to the runtime (which mallocs) while the main thread forks and the host
 * allocator's prefork handler takes all of its locks. Every worker thread is created
 * fresh, makes allocations above the threshold (malloc, calloc, realloc, posix_memalign,
 * and a private anonymous mmap/munmap, which is what jemalloc does under its own locks),
 * and exits. Usage: prog_fork_stress FORKS. Prints "fork_stress: OK FORKS forks". */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static atomic_int stop;
static atomic_long threads_run;

static void *worker(void *arg)
{
    unsigned seed = (unsigned)(size_t)arg;
    for (int round = 0; round < 4; round++) {
        size_t size = (256u << 10) + (rand_r(&seed) % (512u << 10)); /* above a 64K threshold */
        char *a = malloc(size);
        char *b = calloc(1, size);
        if (!a || !b) { printf("FAIL malloc/calloc %zu\n", size); exit(1); }
        a[0] = 1; a[size - 1] = 2;
        if (b[size / 2] != 0) { printf("FAIL calloc not zero\n"); exit(1); }
        char *c = realloc(a, size * 2);
        if (!c || c[0] != 1 || c[size - 1] != 2) { printf("FAIL realloc\n"); exit(1); }
        void *d = NULL;
        if (posix_memalign(&d, 4096, size) != 0) { printf("FAIL posix_memalign\n"); exit(1); }
        char *m = mmap(NULL, 2u << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) { printf("FAIL mmap\n"); exit(1); }
        m[4096] = 3;
        munmap(m, 2u << 20);
        char *small = malloc(64); /* the host allocator's own paths, interleaved */
        free(small);
        free(c);
        free(b);
        free(d);
    }
    atomic_fetch_add(&threads_run, 1);
    return NULL;
}

/* Keeps creating fresh threads: each one is new to tibet when it first allocates. */
static void *spawner(void *arg)
{
    size_t n = (size_t)arg;
    while (!atomic_load(&stop)) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker, (void *)n++) != 0) { printf("FAIL pthread_create\n"); exit(1); }
        pthread_join(t, NULL);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long forks = argc > 1 ? atol(argv[1]) : 1000;
    setvbuf(stdout, NULL, _IONBF, 0);
    pthread_t spawners[3];
    for (size_t i = 0; i < 3; i++)
        pthread_create(&spawners[i], NULL, spawner, (void *)(i * 1000003));
    for (long i = 0; i < forks; i++) {
        pid_t pid = fork();
        if (pid < 0) { printf("FAIL fork %ld\n", i); return 1; }
        if (pid == 0) {
            /* The child allocates through the same allocator before it leaves. */
            void *p = malloc(100);
            free(p);
            _exit(0);
        }
        int status;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            printf("FAIL child %ld status %d\n", i, status);
            return 1;
        }
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 3; i++)
        pthread_join(spawners[i], NULL);
    printf("fork_stress: OK %ld forks, %ld threads\n", forks, atomic_load(&threads_run));
    return 0;
}
