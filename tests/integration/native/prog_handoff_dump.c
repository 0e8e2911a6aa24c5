/*
 * Prints, in hexadecimal, the identity hand-off tibet-run gave this program: the
 * memfd_secret named by TIBET_IDENTITY_FD (kept open by the interposer only with
 * --inherit-identity), which can only be mapped, not read. For
 * tests/integration/Hardening/HandOffTests.cs.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>

int main(void)
{
    const char *name = getenv("TIBET_IDENTITY_FD");
    if (!name) { printf("no-descriptor\n"); return 3; }
    int fd = atoi(name);
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size <= 0) { perror("fstat"); return 3; }
    const unsigned char *map = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) { perror("mmap"); return 3; }
    printf("fd %d handoff ", fd);
    for (off_t i = 0; i < st.st_size; i++)
        printf("%02x", map[i]);
    printf("\n");
    return 0;
}
