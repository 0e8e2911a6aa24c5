/* A forked child's own large allocations, served by the custodian (native/served.c).
 *
 * Usage: prog_served_child wait|parent-exits|late|grandchild MiB DIR
 * The parent forks one child and, with "parent-exits" or "late", exits at once (a daemon's
 * first parent); else it waits for the child and exits with its status. With "late" the
 * child waits for DIR/allocate first (its first large allocation comes after its parent
 * is gone, as a daemon's does once it starts working). The child mallocs MiB
 * (half of it, and maps the other half with mmap), writes a marked line into every page,
 * checks them all, writes its pid to DIR/child.pid and DIR/ready, and waits for DIR/go.
 * Then it checks every page again (most were sealed meanwhile: the test's budget is far
 * below MiB), and with "grandchild" forks a child of its own that checks them too (its
 * copies come from the custodian through the fork event). It writes
 * "served: B bad pages of N" to DIR/result (B counts the grandchild's bad pages too). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[4096];

static void mark(char *page, size_t index)
{
    snprintf(page, 64, "tibet-served-canary:%zu:", index);
}

static size_t check(char *const *halves, size_t pages_per_half)
{
    size_t bad = 0;
    char expected[64];
    for (int h = 0; h < 2; h++)
        for (size_t i = 0; i < pages_per_half; i++) {
            mark(expected, h * pages_per_half + i);
            if (strcmp(halves[h] + i * 4096, expected) != 0)
                bad++;
        }
    return bad;
}

static void write_file(const char *name, const char *text)
{
    char path[8192], temporary[8300];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(temporary, sizeof temporary, "%s.tmp", path);
    FILE *out = fopen(temporary, "w");
    if (!out) { perror(temporary); exit(1); }
    fputs(text, out);
    fclose(out);
    rename(temporary, path);
}

static int exists(const char *name)
{
    char path[8192];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0;
}

int main(int argc, char **argv)
{
    if (argc != 4) { fprintf(stderr, "usage: prog_served_child wait|parent-exits|late|grandchild MiB DIR\n"); return 2; }
    const char *mode = argv[1];
    size_t half = (size_t)atoi(argv[2]) << 19, pages_per_half = half / 4096;
    snprintf(dir, sizeof dir, "%s", argv[3]);
    pid_t child = fork();
    if (child < 0) { perror("fork"); return 1; }
    if (child > 0) {
        if (strcmp(mode, "parent-exits") == 0 || strcmp(mode, "late") == 0)
            return 0;
        int status;
        if (waitpid(child, &status, 0) != child) return 1;
        if (WIFSIGNALED(status)) { printf("child killed by signal %d\n", WTERMSIG(status)); return 128 + WTERMSIG(status); }
        return WEXITSTATUS(status);
    }

    if (strcmp(mode, "late") == 0)
        while (!exists("allocate"))
            usleep(10000);
    char *halves[2];
    halves[0] = malloc(half);
    halves[1] = mmap(NULL, half, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!halves[0] || halves[1] == MAP_FAILED) { perror("allocation"); return 1; }
    for (int h = 0; h < 2; h++)
        for (size_t i = 0; i < pages_per_half; i++)
            mark(halves[h] + i * 4096, h * pages_per_half + i);
    size_t bad = check(halves, pages_per_half);
    char line[256];
    snprintf(line, sizeof line, "%d\n", getpid());
    write_file("child.pid", line);
    write_file("ready", "ready\n");
    while (!exists("go"))
        usleep(10000);
    bad += check(halves, pages_per_half);
    if (strcmp(mode, "grandchild") == 0) {
        pid_t grandchild = fork();
        if (grandchild < 0) { perror("fork"); return 1; }
        if (grandchild == 0)
            _exit(check(halves, pages_per_half) == 0 ? 0 : 1);
        int status;
        if (waitpid(grandchild, &status, 0) != grandchild || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            bad += 1000000;
    }
    snprintf(line, sizeof line, "served: %zu bad pages of %zu\n", bad, 2 * pages_per_half);
    write_file("result", line);
    free(halves[0]);
    munmap(halves[1], half);
    return 0;
}
