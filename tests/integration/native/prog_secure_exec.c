/*
 * Loads libtibet.so with dlopen, as a set-user-ID program might load a library, and
 * reports what the interposer did: for tests/integration/Hardening/SecureExecutionTests.cs.
 *
 *   prog_secure_exec LIBTIBET
 *
 * Prints "at_secure N euid N uffd yes|no": whether the process runs in secure-execution
 * mode, its effective uid, and whether the interposer's engine holds a userfaultfd
 * (that is, whether it started). The interposer's constructor runs inside dlopen, with
 * this process's environment. LD_PRELOAD cannot be used: in secure-execution mode the
 * dynamic loader ignores preload paths with a slash.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 2) { fprintf(stderr, "usage: prog_secure_exec LIBTIBET\n"); return 2; }
    if (!dlopen(argv[1], RTLD_NOW | RTLD_LOCAL)) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 3; }
    int uffd = 0;
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *entry;
    while (dir && (entry = readdir(dir)) != NULL) {
        char path[300], target[256];
        snprintf(path, sizeof path, "/proc/self/fd/%s", entry->d_name);
        ssize_t n = readlink(path, target, sizeof target - 1);
        target[n > 0 ? n : 0] = 0;
        if (strstr(target, "userfaultfd")) uffd = 1;
    }
    if (dir) closedir(dir);
    printf("at_secure %lu euid %d uffd %s\n", getauxval(AT_SECURE), (int)geteuid(), uffd ? "yes" : "no");
    fflush(stdout);
    return 0;
}
