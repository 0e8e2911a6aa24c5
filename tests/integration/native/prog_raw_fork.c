/* Children that libc's fork() did not make: a raw fork system call copies its parent's
 * state, and tibet's too, without telling tibet. Such a child must never use what it
 * copied (the parent's connection to the custodian, its userfaultfd): its large
 * allocations run in plaintext and it says so once. The program's child (made by libc's
 * fork, served by the custodian) allocates, then makes a grandchild by a raw fork; the
 * grandchild allocates and checks its block; then the child allocates again and checks
 * its first block: both must still be right. Prints "raw_fork: OK" when all are. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int fill_and_check(unsigned char *p, size_t size, unsigned char seed)
{
    for (size_t i = 0; i < size; i += 4096)
        p[i] = (unsigned char)(seed + i / 4096);
    for (size_t i = 0; i < size; i += 4096)
        if (p[i] != (unsigned char)(seed + i / 4096))
            return 1;
    return 0;
}

static int raw_fork(void) { return (int)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0); }

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    const size_t size = 4 << 20;
    pid_t child = fork();
    if (child == 0) {
        unsigned char *first = malloc(size);
        if (!first || fill_and_check(first, size, 1)) { printf("FAIL child first\n"); _exit(1); }
        int grandchild = raw_fork();
        if (grandchild == 0) {
            unsigned char *own = malloc(size);
            _exit(!own || fill_and_check(own, size, 2) || fill_and_check(first, size, 3) ? 1 : 0);
        }
        int status;
        if (grandchild < 0 || waitpid(grandchild, &status, 0) != grandchild || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            printf("FAIL grandchild %d\n", status);
            _exit(1);
        }
        unsigned char *second = malloc(size);
        if (!second || fill_and_check(second, size, 4)) { printf("FAIL child second\n"); _exit(1); }
        for (size_t i = 0; i < size; i += 4096)
            if (first[i] != (unsigned char)(1 + i / 4096)) { printf("FAIL child first again\n"); _exit(1); }
        _exit(0);
    }
    int status;
    if (child < 0 || waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        printf("FAIL child %d\n", status);
        return 1;
    }
    printf("raw_fork: OK\n");
    return 0;
}
