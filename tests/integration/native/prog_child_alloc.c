/* A forked child that allocates: the custodian serves its large allocations; without it
 * (TIBET_CUSTODIAN=0) they are plaintext, said in one line per child on tibet's report
 * descriptor, or refused with ENOMEM under --require-encryption. Like a daemon, each child
 * first points its stderr at /dev/null: tibet's line must still arrive. Two children, each
 * making two large mallocs and one large private anonymous mmap. Prints, per child,
 * "child N: malloc served" or "child N: malloc ENOMEM" (and the same for mmap), then
 * "child_alloc: OK". */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static int child(int n)
{
    int null = open("/dev/null", O_WRONLY);
    if (null < 0 || dup2(null, 2) != 2) return 10;
    close(null);
    const size_t size = 1 << 20; /* above the test's 64K threshold */
    for (int i = 0; i < 2; i++) {
        errno = 0;
        char *p = malloc(size);
        if (p == NULL) {
            printf("child %d: malloc %s\n", n, errno == ENOMEM ? "ENOMEM" : "NULL without ENOMEM");
        } else {
            memset(p, 0x5a, size);
            printf("child %d: malloc served\n", n);
            free(p);
        }
    }
    errno = 0;
    char *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        printf("child %d: mmap %s\n", n, errno == ENOMEM ? "ENOMEM" : strerror(errno));
    } else {
        m[0] = 1;
        printf("child %d: mmap served\n", n);
        munmap(m, size);
    }
    return 0;
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    for (int n = 1; n <= 2; n++) {
        pid_t pid = fork();
        if (pid < 0) { printf("FAIL fork\n"); return 1; }
        if (pid == 0) _exit(child(n));
        int status;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            printf("FAIL child %d status %d\n", n, status);
            return 1;
        }
    }
    printf("child_alloc: OK\n");
    return 0;
}
