/* Writes a 32-byte random secret into each of 256 pages of a large (redirected) map,
 * then gives the pages up with madvise(MADV_FREE), as a garbage collector or jemalloc
 * does, and writes half of them again. Talks with the test over stdin/stdout, so that
 * it can scan the process's present memory at each step:
 *   prints "SECRET <hex>" and "WRITTEN", waits for a line;
 *   gives the pages up, prints "FREED", waits for a line;
 *   writes pages 0..127 again and checks every page: those read back what was written,
 *   the others read zeros or what they held before (both allowed after MADV_FREE).
 * It keeps the secret only masked, so that the pages are the only places it is in.
 * Usage: prog_madv_free [mmap|malloc]: the pages come from mmap (default), or from a
 * page-aligned malloc block (posix_memalign).
 * Exit 0, or 3 with a line on stderr. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>

#define PAGES 256
#define AT 100

static int wait_line(void)
{
    char line[16];
    return fgets(line, sizeof line, stdin) != NULL;
}

int main(int argc, char **argv)
{
    unsigned char secret[32], masked[32];
    if (getrandom(secret, sizeof secret, 0) != sizeof secret) return 2;
    unsigned char *p;
    if (argc > 1 && strcmp(argv[1], "malloc") == 0) {
        void *block;
        if (posix_memalign(&block, 4096, PAGES * 4096) != 0) return 2;
        p = block;
    } else {
        p = mmap(NULL, PAGES * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return 2;
    }
    for (int i = 0; i < PAGES; i++) memcpy(p + i * 4096 + AT, secret, sizeof secret);
    char hex[65];
    for (int i = 0; i < 32; i++) {
        snprintf(hex + 2 * i, 3, "%02x", secret[i]);
        masked[i] = secret[i] ^ 0xa5;
    }
    explicit_bzero(secret, sizeof secret);
    printf("SECRET %s\nWRITTEN\n", hex);
    fflush(stdout);
    if (!wait_line()) return 2;

    if (madvise(p, PAGES * 4096, MADV_FREE) != 0) { perror("madvise"); return 2; }
    printf("FREED\n");
    fflush(stdout);
    if (!wait_line()) return 2;

    for (int i = 0; i < PAGES / 2; i++) memset(p + i * 4096, 0x40 + (i & 31), 4096);
    static const unsigned char zeros[4096];
    for (int i = 0; i < PAGES; i++) {
        unsigned char *page = p + i * 4096;
        int ok;
        if (i < PAGES / 2) {
            ok = 1;
            for (int b = 0; b < 4096; b++) if (page[b] != 0x40 + (i & 31)) { ok = 0; break; }
        } else {
            int kept = memcmp(page, zeros, AT) == 0 && memcmp(page + AT + 32, zeros, 4096 - AT - 32) == 0;
            for (int b = 0; b < 32 && kept; b++) kept = (page[AT + b] ^ 0xa5) == masked[b];
            ok = memcmp(page, zeros, 4096) == 0 || kept;
        }
        if (!ok) { fprintf(stderr, "page %d reads neither what was written nor what MADV_FREE allows\n", i); return 3; }
    }
    return 0;
}
