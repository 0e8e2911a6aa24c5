/*
 * Holds still so that a test can look at it from outside, for the tests in
 * tests/integration/Hardening.
 *
 *   prog_hold [FILE]
 *
 * With FILE, first reads its first 4 KiB (for a sealed model, tibet decides on access
 * then). Prints "ready PID ADDRESS" (ADDRESS: where the 31-byte canary
 * "tibet-dumpable-canary-0123456789" sits in its memory), then reads standard input to
 * its end and exits 0.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

static volatile char canary[32] = "tibet-dumpable-canary-012345678";

int main(int argc, char **argv)
{
    if (argc == 2) {
        int fd = open(argv[1], O_RDONLY);
        if (fd < 0) { perror(argv[1]); return 3; }
        char head[4096];
        if (read(fd, head, sizeof head) < 0) { perror("read"); return 3; }
        close(fd);
    }
    printf("ready %d %p\n", getpid(), (void *)canary);
    fflush(stdout);
    char buffer[256];
    while (read(0, buffer, sizeof buffer) > 0) {
    }
    return canary[0] == 't' ? 0 : 1;
}
