/*
 * Lists the process's open descriptors, then those a freshly executed child finds open,
 * for tests/integration/Hardening/DescriptorHygieneTests.cs.
 *
 *   prog_fd_list [FILE]
 *
 * With FILE, first maps it (read-only, private) and reads its first and last page, as
 * llama.cpp maps a model, so that tibet opens its own descriptors for the file; the
 * program's own descriptor of FILE is closed after the map, as llama.cpp does.
 * Prints "self FD TARGET" for each descriptor of this process (except the one reading
 * /proc/self/fd), then executes itself as "prog_fd_list --child" with an EMPTY environment
 * (so no LD_PRELOAD: the child is never interposed), which prints "child FD TARGET".
 * Anything tibet leaves open across exec shows up in the child's list.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void list(const char *who)
{
    DIR *dir = opendir("/proc/self/fd");
    if (!dir) { perror("opendir /proc/self/fd"); exit(3); }
    int own = dirfd(dir);
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.') continue;
        int fd = atoi(entry->d_name);
        if (fd == own) continue;
        char path[64], target[512];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(path, target, sizeof target - 1);
        target[n > 0 ? n : 0] = 0;
        printf("%s %d %s\n", who, fd, target);
    }
    closedir(dir);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--child") == 0) {
        list("child");
        return 0;
    }
    if (argc == 2) {
        int fd = open(argv[1], O_RDONLY);
        if (fd < 0) { perror(argv[1]); return 3; }
        struct stat st;
        if (fstat(fd, &st) != 0 || st.st_size == 0) { perror("fstat"); return 3; }
        const volatile unsigned char *map = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) { perror("mmap"); return 3; }
        close(fd);
        printf("mapped %u %u\n", map[0], map[st.st_size - 1]);
    }
    list("self");
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 3; }
    if (pid == 0) {
        char *child_argv[] = { argv[0], "--child", NULL };
        char *empty_env[] = { NULL };
        execve("/proc/self/exe", child_argv, empty_env);
        perror("execve");
        _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "the child failed (status 0x%x)\n", status);
        return 4;
    }
    return 0;
}
