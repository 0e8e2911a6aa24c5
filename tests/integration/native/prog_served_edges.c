/* What a served child may do to its own served memory's plumbing, and must not lose data
 * over. Usage: prog_served_edges closerange|daemonize RESULT_FILE
 *   closerange: the child fills 64 MiB (sealed mostly: the test's budget is 8 MiB), closes
 *     every descriptor from 3 up (as daemons and workers do, the custodian's connections
 *     with them), then checks every page.
 *   daemonize: the child fills 64 MiB, forks a grandchild and exits at once (a double
 *     fork); the grandchild waits for it to be gone, then checks every page it inherited.
 * The checker writes "edges: B bad pages of N" to RESULT_FILE. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define SIZE (64UL << 20)

static void report(const char *path, const uint64_t *p)
{
    size_t bad = 0;
    for (size_t i = 0; i < SIZE / 8; i += 512)
        if (p[i] != i * 7 + 1)
            bad++;
    FILE *out = fopen(path, "w");
    if (!out) _exit(3);
    fprintf(out, "edges: %zu bad pages of %lu\n", bad, SIZE / 4096);
    fclose(out);
}

int main(int argc, char **argv)
{
    if (argc != 3) { fprintf(stderr, "usage: prog_served_edges closerange|daemonize RESULT_FILE\n"); return 2; }
    pid_t child = fork();
    if (child == 0) {
        uint64_t *p = malloc(SIZE);
        if (!p) _exit(1);
        for (size_t i = 0; i < SIZE / 8; i += 512)
            p[i] = i * 7 + 1;
        if (strcmp(argv[1], "closerange") == 0) {
            syscall(SYS_close_range, 3U, ~0U, 0U);
            usleep(200000);
            report(argv[2], p);
            _exit(0);
        }
        pid_t self = getpid();
        if (fork() != 0)
            _exit(0); /* the daemon's first child leaves */
        while (getppid() == self)
            usleep(10000);
        report(argv[2], p);
        _exit(0);
    }
    int status;
    waitpid(child, &status, 0);
    return 0;
}
