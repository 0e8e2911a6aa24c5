/* Reads [offset, offset + length) of a model file the way a program might, and prints
 * "hash <FNV-1a 64 hex> nonzero <count> bytes <n>", so that a test can compare what the
 * program saw with the plain model's bytes (live) or with zeros (dead material).
 *
 * Usage: prog_sealed_read FILE OFFSET LENGTH MODE
 *   mmap         mmap(PROT_READ, MAP_SHARED) of the whole file (llama.cpp's way)
 *   mmap-fork    the same map, then fork before any page is touched: the child hashes and
 *                prints first ("child hash ..."), then the parent
 *   read         open, lseek, read in chunks of 100000 bytes
 *   pread        pread in chunks of 77777 bytes
 *   fread        fopen "rb", fseek, fread in chunks of 1000 bytes (gguf's way), then checks feof
 *   map-write    mmap(PROT_READ | PROT_WRITE, MAP_SHARED) of an O_RDWR descriptor; prints
 *                "map-error <errno>" or "mapped"
 *   mmap-hold    as mmap, then prints "ready <pid> 0x0" and waits for the end of stdin
 *                before the hash line, so that a test can scan its memory meanwhile
 *   mmap-twice-hold  as mmap, then reads the map a second time (under a small budget:
 *                every page evicted and brought back), fails with "second-pass-differs"
 *                (exit 4) unless it saw the same bytes, then prints "ready <pid> <hash>"
 *                and waits for the end of stdin
 *   map-hold-read  maps as mmap, prints "ready <pid> 0x0" before touching a page, and
 *                reads the map once stdin has ended
 *   private-write  mmap(PROT_READ, MAP_PRIVATE) read once, then mprotect'ed writable, byte
 *                17 of every page of the range XORed with 0x5a, and read twice (it fails
 *                with "second-pass-differs" unless both saw the same): the hash line is
 *                of the written bytes
 * A read error prints "read-error <errno>" and exits 3. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static uint64_t hash = 0xcbf29ce484222325ULL;
static long long nonzero, total;

static void feed(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        hash = (hash ^ p[i]) * 0x100000001b3ULL;
        nonzero += p[i] != 0;
    }
    total += (long long)n;
}

static int fail(const char *what)
{
    printf("read-error %d\n", errno);
    fprintf(stderr, "prog_sealed_read: %s: %s\n", what, strerror(errno));
    return 3;
}

/* The whole file mapped read-only and shared, as llama.cpp maps a model; NULL (after
 * fail() said why) if it cannot be. */
static unsigned char *map_whole(const char *path)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) { fail("open"); return NULL; }
    unsigned char *map = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) { fail("mmap"); return NULL; }
    return map;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s FILE OFFSET LENGTH mmap|read|pread|fread|map-write\n", argv[0]);
        return 2;
    }
    const char *path = argv[1], *mode = argv[4];
    off_t offset = strtoll(argv[2], NULL, 10);
    size_t length = strtoull(argv[3], NULL, 10);
    static unsigned char buffer[100000];

    if (strcmp(mode, "mmap") == 0 || strcmp(mode, "mmap-hold") == 0 || strcmp(mode, "map-hold-read") == 0) {
        unsigned char *map = map_whole(path);
        if (map == NULL) return 3;
        int read_first = strcmp(mode, "map-hold-read") != 0;
        if (read_first)
            feed(map + offset, length);
        if (strcmp(mode, "mmap") != 0) {
            printf("ready %d 0x0\n", (int)getpid());
            fflush(stdout);
            while (read(0, buffer, sizeof buffer) > 0) {
            }
        }
        if (!read_first)
            feed(map + offset, length);
    } else if (strcmp(mode, "mmap-twice-hold") == 0) {
        unsigned char *map = map_whole(path);
        if (map == NULL) return 3;
        feed(map + offset, length);
        uint64_t first = hash;
        hash = 0xcbf29ce484222325ULL;
        feed(map + offset, length);
        if (hash != first) {
            printf("second-pass-differs %016llx %016llx\n", (unsigned long long)first, (unsigned long long)hash);
            return 4;
        }
        printf("ready %d %016llx\n", (int)getpid(), (unsigned long long)hash);
        fflush(stdout);
        while (read(0, buffer, sizeof buffer) > 0) {
        }
    } else if (strcmp(mode, "private-write") == 0) {
        int fd = open(path, O_RDONLY);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0) return fail("open");
        unsigned char *map = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) return fail("mmap");
        feed(map + offset, length);
        if (mprotect(map, st.st_size, PROT_READ | PROT_WRITE) != 0) return fail("mprotect");
        /* The first 16 pages of every 32: evicted, the written ones are sealed and the
         * others dropped, so a fault on an untouched page has sealed ones in its run. */
        for (size_t at = 17; at < length; at += 4096)
            if (at / 4096 % 32 < 16)
                map[offset + at] ^= 0x5a;
        hash = 0xcbf29ce484222325ULL;
        nonzero = total = 0;
        feed(map + offset, length);
        uint64_t first = hash;
        hash = 0xcbf29ce484222325ULL;
        nonzero = total = 0;
        feed(map + offset, length);
        if (hash != first) {
            printf("second-pass-differs %016llx %016llx\n", (unsigned long long)first, (unsigned long long)hash);
            return 4;
        }
    } else if (strcmp(mode, "mmap-fork") == 0) {
        unsigned char *map = map_whole(path);
        if (map == NULL) return 3;
        fflush(stdout);
        pid_t child = fork();
        if (child < 0) return fail("fork");
        if (child == 0) {
            feed(map + offset, length);
            printf("child hash %016llx nonzero %lld bytes %lld\n", (unsigned long long)hash, nonzero, total);
            fflush(stdout);
            _exit(0);
        }
        int status;
        if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "prog_sealed_read: the child failed (status %d)\n", status);
            return 5;
        }
        feed(map + offset, length);
    } else if (strcmp(mode, "read") == 0) {
        int fd = open(path, O_RDONLY);
        if (fd < 0 || lseek(fd, offset, SEEK_SET) != offset) return fail("open");
        while ((size_t)total < length) {
            size_t want = length - total < sizeof buffer ? length - total : sizeof buffer;
            ssize_t n = read(fd, buffer, want);
            if (n < 0) return fail("read");
            if (n == 0) break;
            feed(buffer, n);
        }
        close(fd);
    } else if (strcmp(mode, "pread") == 0) {
        int fd = open(path, O_RDONLY);
        if (fd < 0) return fail("open");
        while ((size_t)total < length) {
            size_t want = length - total < 77777 ? length - total : 77777;
            ssize_t n = pread(fd, buffer, want, offset + total);
            if (n < 0) return fail("pread");
            if (n == 0) break;
            feed(buffer, n);
        }
        close(fd);
    } else if (strcmp(mode, "fread") == 0) {
        FILE *f = fopen(path, "rb");
        if (!f || fseeko(f, offset, SEEK_SET) != 0) return fail("fopen");
        while ((size_t)total < length) {
            size_t want = length - total < 1000 ? length - total : 1000;
            size_t n = fread(buffer, 1, want, f);
            if (n == 0) {
                if (ferror(f)) return fail("fread");
                break;
            }
            feed(buffer, n);
        }
        /* Past the end: fread must return 0 and set EOF, as natively. */
        if (fseeko(f, 0, SEEK_END) != 0 || fread(buffer, 1, 1, f) != 0 || !feof(f)) {
            fprintf(stderr, "prog_sealed_read: no EOF at the end of the stream\n");
            return 4;
        }
        fclose(f);
    } else if (strcmp(mode, "map-write") == 0) {
        int fd = open(path, O_RDWR);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0) return fail("open");
        void *map = mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (map == MAP_FAILED)
            printf("map-error %d\n", errno);
        else
            printf("mapped\n");
        return 0;
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    printf("hash %016llx nonzero %lld bytes %lld\n", (unsigned long long)hash, nonzero, total);
    return 0;
}
