/* fork and raw fork(2) after most of a 64 MiB block was evicted: the child must see the
 * fork-time contents while the parent overwrites its own copy. The child uses only raw
 * system calls. Prints "fork: OK" or names the failure. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int verify(const unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) if (p[i] != (unsigned char)(i * seed + (i >> 12))) return 1;
    return 0;
}

int main(void)
{
    const size_t n = 64 << 20;
    unsigned char *p = malloc(n);
    if (!p) return 2;
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 7 + (i >> 12));
    for (int raw = 0; raw < 2; raw++) {
        unsigned seed = raw ? 11 : 7;
        pid_t pid = raw ? (pid_t)syscall(SYS_fork) : fork();
        if (pid < 0) { printf("FAIL fork\n"); return 1; }
        if (pid == 0)
            syscall(SYS_exit_group, verify(p, n, seed));
        for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * (raw ? 13 : 11) + (i >> 12));
        int status;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            printf("FAIL %s child saw wrong data (status %d)\n", raw ? "raw-fork" : "fork", status);
            return 1;
        }
        if (verify(p, n, raw ? 13 : 11)) { printf("FAIL parent after %s\n", raw ? "raw-fork" : "fork"); return 1; }
    }
    printf("fork: OK\n");
    return 0;
}
