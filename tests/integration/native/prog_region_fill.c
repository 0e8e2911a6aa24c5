/* Under tibet-run only: fills the interposer's 1 TiB malloc region with blocks that are
 * never touched (an arena costs address space, not memory, until its pages are used),
 * from 48 GiB halving down to 12 MiB, until an 8 MiB malloc no longer lands in the
 * region. (Not larger: releasing an arena walks its page table, 8 bytes per KiB, so the
 * blocks are left to exit and only the smallest, a few MiB, is freed. Sizes of three
 * times a power of two leave ever smaller remainders, whatever the region's exact size.) That allocation is then served unencrypted by glibc (or refused under
 * --require-encryption), which tibet must announce. Then one region block is freed, and
 * the next 8 MiB malloc must be encrypted again: a region that was full is not spoiled.
 *
 * Whether a block is tibet's is read from /proc/self/smaps: arenas are registered with
 * userfaultfd for missing pages (VmFlags "um"). Prints "fill: OK ..." lines, or "FAIL". */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int in_uffd(const void *p)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return -1;
    char line[512];
    int inside = 0, found = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long start, end;
        if (sscanf(line, "%lx-%lx ", &start, &end) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            inside = (uintptr_t)p >= start && (uintptr_t)p < end;
            continue;
        }
        if (inside && strncmp(line, "VmFlags:", 8) == 0) {
            found = strstr(line, " um") != NULL;
            break;
        }
    }
    fclose(f);
    return found;
}

int main(void)
{
    const size_t small = 8 << 20;
    enum { Max = 256 };
    void *kept[Max];
    size_t kept_size[Max];
    int n = 0;

    unsigned char *probe = malloc(small);
    if (!probe || in_uffd(probe) != 1) {
        printf("FAIL an 8 MiB malloc is not served by tibet to begin with (run under tibet-run --threshold 64K)\n");
        return 1;
    }
    free(probe);

    for (size_t size = (size_t)3 << 34; size >= small && n < Max; size >>= 1) {
        while (n < Max) {
            void *p = malloc(size);
            if (p && in_uffd(p) == 1) {
                kept[n] = p;
                kept_size[n++] = size;
                continue;
            }
            free(p); /* glibc's block (never touched), or NULL */
            break;
        }
    }
    if (n == Max) {
        printf("FAIL the region never filled: %d blocks\n", n);
        return 1;
    }

    /* The region is full: an 8 MiB malloc is tibet's no longer. */
    errno = 0;
    unsigned char *plain = malloc(small);
    int error = errno;
    if (plain) {
        memset(plain, 0x44, small);
        printf("fill: OK region full after %d blocks; malloc(8 MiB) %s\n", n,
               in_uffd(plain) == 1 ? "still encrypted (WRONG)" : "served unencrypted");
        free(plain);
    } else {
        printf("fill: OK region full after %d blocks; malloc(8 MiB) NULL errno %d\n", n, error);
    }
    fflush(stdout);

    /* Free the smallest region block: the next 8 MiB malloc must be encrypted again. */
    free(kept[n - 1]);
    unsigned char *again = malloc(small);
    if (!again) {
        printf("FAIL malloc(8 MiB) after a free returned NULL\n");
        return 1;
    }
    memset(again, 0x55, small);
    printf("fill: OK after freeing a %zu-byte block, malloc(8 MiB) %s\n", kept_size[n - 1],
           in_uffd(again) == 1 ? "is encrypted" : "is NOT encrypted");
    free(again);
    /* The remaining blocks are left to exit: releasing an arena walks its page table. */
    return 0;
}
