/*
 * Tries to read another process's memory through /proc/PID/mem, as any process of the
 * same user might, for tests/integration/Hardening/DumpabilityTests.cs.
 *
 *   prog_peek PID ADDRESS LENGTH
 *
 * Prints "read TEXT" (the LENGTH bytes at hexadecimal ADDRESS), or "open-error ERRNO" /
 * "read-error ERRNO".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 4) { fprintf(stderr, "usage: prog_peek PID ADDRESS LENGTH\n"); return 2; }
    char path[64];
    snprintf(path, sizeof path, "/proc/%s/mem", argv[1]);
    int fd = open(path, O_RDONLY);
    if (fd < 0) { printf("open-error %d\n", errno); return 0; }
    char buffer[256];
    size_t length = (size_t)atoi(argv[3]);
    if (length > sizeof buffer) length = sizeof buffer;
    ssize_t n = pread(fd, buffer, length, (off_t)strtoull(argv[2], NULL, 16));
    if (n < 0) { printf("read-error %d\n", errno); return 0; }
    printf("read %.*s\n", (int)n, buffer);
    return 0;
}
