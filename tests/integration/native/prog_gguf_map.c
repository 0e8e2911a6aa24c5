/* Maps a file that starts with the GGUF magic the way llama.cpp maps a model
 * (PROT_READ, MAP_SHARED | MAP_POPULATE, then madvise(WILLNEED)), and checks:
 *   - every mapped byte equals what pread returns, including the zeros after the end
 *     of the file in the last page;
 *   - how many of the file's pages sit in the page cache after the map was read
 *     (printed as "cached N", checked by the test: 0 under tibet, > 0 natively);
 *   - llama.cpp's partial munmap of the leading pages, and reading the rest after it.
 * Usage: prog_gguf_map FILE SIZE [readahead]. Prints "gguf-map: OK cached N mapped-hash H".
 *
 * With "readahead", the program first does what makes the page cache hardest to keep
 * clean, whatever the machine's read_ahead_kb: POSIX_FADV_SEQUENTIAL, a buffered fread of
 * the header (as llama.cpp reads it before mapping), and readahead(2) of the whole file,
 * so that the map is made while reads of the file are still in flight. It then prints
 * "cached-before-map N" (what its own reads brought in) and "cached-at-map N" (right after
 * mmap returned), and skips the final pread, so that what is cached at exit can be
 * measured from outside. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define FAIL(...) do { printf("FAIL "); printf(__VA_ARGS__); printf("\n"); exit(1); } while (0)

static uint64_t fnv(const unsigned char *p, size_t n, uint64_t h)
{
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* Counts the file's pages in the page cache. The probe mapping is made with the raw
 * system call so that no interposer can take it over: it must be a real file mapping. */
static long cached_pages(int fd, size_t size)
{
    void *probe = (void *)syscall(SYS_mmap, NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    if (probe == MAP_FAILED) FAIL("probe mmap");
    size_t pages = (size + 4095) / 4096;
    unsigned char *vec = malloc(pages);
    if (mincore(probe, size, vec) != 0) FAIL("mincore");
    long n = 0;
    for (size_t i = 0; i < pages; i++) n += vec[i] & 1;
    free(vec);
    syscall(SYS_munmap, probe, size);
    return n;
}

int main(int argc, char **argv)
{
    if (argc != 3 && !(argc == 4 && strcmp(argv[3], "readahead") == 0)) FAIL("usage: prog_gguf_map FILE SIZE [readahead]");
    const char *path = argv[1];
    size_t size = strtoull(argv[2], NULL, 10);
    int adverse = argc == 4 && strcmp(argv[3], "readahead") == 0;

    /* Write the file: the magic, then seeded pseudo-random bytes. */
    unsigned char *data = malloc(size);
    if (!data) FAIL("malloc");
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < size; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; data[i] = (unsigned char)x; }
    memcpy(data, "GGUF", 4);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size) FAIL("write %s", path);
    fsync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);

    long before_map = -1;
    if (adverse) {
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        FILE *header = fopen(path, "rb");
        unsigned char head[65536];
        if (!header || fread(head, 1, sizeof head, header) != sizeof head) FAIL("buffered header read");
        if (memcmp(head, data, sizeof head) != 0) FAIL("the header read differs from what was written");
        fclose(header);
        if (readahead(fd, 0, size) != 0) FAIL("readahead");
        before_map = cached_pages(fd, size);
    }

    size_t mapped = (size + 4095) & ~(size_t)4095;
    unsigned char *map = mmap(NULL, size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (map == MAP_FAILED) FAIL("mmap");
    long at_map = cached_pages(fd, size);
    madvise(map, size, MADV_WILLNEED);

    uint64_t h = fnv(map, size, 14695981039346656037ull);
    for (size_t i = size; i < mapped; i++) if (map[i] != 0) FAIL("byte %zu past the end of the file is %u, not 0", i, map[i]);
    long cached = cached_pages(fd, size);

    for (size_t i = 0; i < size; i++)
        if (map[i] != data[i]) FAIL("mapped byte %zu is %u, the file has %u", i, map[i], data[i]);
    if (!adverse) {
        unsigned char *check = malloc(size);
        if (pread(fd, check, size, 0) != (ssize_t)size || memcmp(check, data, size) != 0) FAIL("pread differs from what was written");
        free(check);
    }

    /* llama.cpp unmaps the pages before the first tensor, then reads on. */
    size_t head = 3 * 4096;
    if (munmap(map, head) != 0) FAIL("partial munmap");
    for (size_t i = head; i < size; i++)
        if (map[i] != data[i]) FAIL("after the partial munmap, byte %zu is %u, the file has %u", i, map[i], data[i]);
    if (munmap(map + head, size - head) != 0) FAIL("munmap of the rest");

    close(fd);
    if (adverse)
        printf("gguf-map: cached-before-map %ld cached-at-map %ld\n", before_map, at_map);
    printf("gguf-map: OK cached %ld mapped-hash %016llx\n", cached, (unsigned long long)h);
    return 0;
}
