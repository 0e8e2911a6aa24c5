/* A served child tries to shrink the take-out window it shares with the custodian (a
 * process of the tree could be compromised; a shrunk window would kill the custodian by
 * SIGBUS, and every process it serves with it). Usage: prog_window_shrink
 * The child allocates 32 MiB (served: sealed mostly under the test's 4 MiB budget), finds
 * the window in /proc/self/maps, opens it through /proc/self/map_files (root), and tries
 * ftruncate(0). It prints "shrink: refused (errno N)" or "shrink: done", then writes and
 * checks every page again (evictions go through the window) and prints
 * "window: B bad pages of N". The parent waits and exits with the child's status. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define SIZE (32UL << 20)

int main(void)
{
    fflush(stdout);
    pid_t child = fork();
    if (child < 0) { perror("fork"); return 1; }
    if (child > 0) {
        int status;
        if (waitpid(child, &status, 0) != child) return 1;
        if (WIFSIGNALED(status)) { printf("child killed by signal %d\n", WTERMSIG(status)); return 128 + WTERMSIG(status); }
        return WEXITSTATUS(status);
    }
    unsigned long *p = malloc(SIZE);
    if (!p) { perror("malloc"); return 1; }
    for (size_t i = 0; i < SIZE / 8; i += 512) p[i] = i * 3 + 1;
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[512], range[128] = "";
    while (maps && fgets(line, sizeof line, maps))
        if (strstr(line, "tibet-take-out")) { sscanf(line, "%127s", range); break; }
    if (maps) fclose(maps);
    if (!range[0]) { printf("no window in /proc/self/maps\n"); return 2; }
    char path[256];
    snprintf(path, sizeof path, "/proc/self/map_files/%s", range);
    int fd = open(path, O_RDWR);
    if (fd < 0) { printf("cannot open %s: %s\n", path, strerror(errno)); return 2; }
    if (ftruncate(fd, 0) == 0)
        printf("shrink: done\n");
    else
        printf("shrink: refused (errno %d)\n", errno);
    close(fd);
    fflush(stdout);
    size_t bad = 0;
    for (size_t i = 0; i < SIZE / 8; i += 512) p[i] += 1;
    for (size_t i = 0; i < SIZE / 8; i += 512) bad += p[i] != i * 3 + 2;
    printf("window: %zu bad pages of %lu\n", bad, SIZE / 4096);
    return 0;
}
