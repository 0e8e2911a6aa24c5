/* A parent that exits right after it forks, as a daemon's does, while the child goes on
 * using memory the parent filled before the fork, much of it sealed by then (the test's
 * budget is far below the 64 MiB). Nothing serves the child's faults once the parent is
 * gone, so tibet must hand the child its pages before the parent ends; else the child
 * reads zeros. Usage: prog_orphan exit|_exit RESULT_FILE. The child waits for the parent
 * to be gone, checks every byte, and writes "orphan: N bad bytes of M" to RESULT_FILE. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 3) { fprintf(stderr, "usage: prog_orphan exit|_exit RESULT_FILE\n"); return 2; }
    const size_t size = 64u << 20;
    unsigned char *p = malloc(size);
    if (!p) { perror("malloc"); return 1; }
    for (size_t i = 0; i < size; i++)
        p[i] = (unsigned char)(i * 7 + (i >> 12) + 1);
    fflush(NULL);
    pid_t parent = getpid();
    pid_t child = fork();
    if (child < 0) { perror("fork"); return 1; }
    if (child > 0) {
        if (strcmp(argv[1], "_exit") == 0)
            _exit(0);
        exit(0);
    }
    while (getppid() == parent)
        usleep(10000);
    size_t bad = 0;
    for (size_t i = 0; i < size; i++)
        if (p[i] != (unsigned char)(i * 7 + (i >> 12) + 1))
            bad++;
    char temporary[4096];
    snprintf(temporary, sizeof temporary, "%s.tmp", argv[2]);
    FILE *out = fopen(temporary, "w");
    if (!out) return 1;
    fprintf(out, "orphan: %zu bad bytes of %zu\n", bad, size);
    fclose(out);
    rename(temporary, argv[2]); /* the test sees the whole line or nothing */
    return 0;
}
