/* A writable map at an address the program chose, over memory that is not tibet's: 64 MiB
 * mapped read-only (which tibet leaves to the kernel: a read-only anonymous map holds only
 * zeros), then mapped writable at that address with MAP_FIXED, and filled with 'S'.
 * Prints "fixed-map ok" or "fixed-map error ERRNO" (the map refused). With the argument
 * "child" a forked child does it, and the parent waits for it. Under tibet-run the fixed
 * map is plaintext (no arena is there): it must be counted and said, or refused under
 * --require-encryption. (A MAP_FIXED map inside a PROT_NONE reservation is a commit inside
 * an arena: prog_reserve_commit.c.) */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static int fixed_map(void)
{
    size_t length = 64 << 20;
    char *reserved = mmap(NULL, length, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (reserved == MAP_FAILED) {
        printf("reserve error %d\n", errno);
        return 1;
    }
    char *heap = mmap(reserved, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (heap == MAP_FAILED) {
        printf("fixed-map error %d\n", errno);
        return 0;
    }
    memset(heap, 'S', length);
    printf("fixed-map ok\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "child") != 0)
        return fixed_map();
    fflush(stdout);
    pid_t child = fork();
    if (child < 0) {
        printf("fork error %d\n", errno);
        return 1;
    }
    if (child == 0) {
        int rc = fixed_map();
        fflush(stdout);
        _exit(rc);
    }
    int status;
    waitpid(child, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
