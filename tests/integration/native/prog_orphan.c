/* A parent that ends right after it forks, as a daemon's does, while the child goes on
 * using memory the parent filled before the fork, much of it sealed by then (the test's
 * budget is far below the 64 MiB), and 8 MiB more the parent never touched. Nothing of the
 * parent serves the child's faults once it is gone.
 * Usage: prog_orphan exit|_exit|exit_group|kill|stay RESULT_FILE. exit and _exit (glibc's
 * daemon(3)) let tibet hand the child its pages first; a raw exit_group system call and
 * SIGKILL let nothing run. stay: the parent waits for the child, which writes
 * RESULT_FILE.ready and waits for RESULT_FILE.go (the test kills the custodian meanwhile).
 * Otherwise the child waits for the parent to be gone. Then it reads every
 * page: a page whose read raises SIGBUS is counted and skipped (a sigsetjmp per page), and
 * every byte read is checked. It writes one line to RESULT_FILE:
 *   orphan: B bad bytes of N, S pages SIGBUS; untouched: Z bad bytes, U pages SIGBUS */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static sigjmp_buf skip_page;

static void on_sigbus(int signal_number)
{
    (void)signal_number;
    siglongjmp(skip_page, 1);
}

static unsigned char expected(size_t i) { return (unsigned char)(i * 7 + (i >> 12) + 1); }

int main(int argc, char **argv)
{
    if (argc != 3) { fprintf(stderr, "usage: prog_orphan exit|_exit|exit_group|kill|stay RESULT_FILE\n"); return 2; }
    int stay = strcmp(argv[1], "stay") == 0;
    char ready[4096], go[4096];
    snprintf(ready, sizeof ready, "%s.ready", argv[2]);
    snprintf(go, sizeof go, "%s.go", argv[2]);
    const size_t filled = 64u << 20, untouched = 8u << 20;
    unsigned char *p = malloc(filled + untouched);
    if (!p) { perror("malloc"); return 1; }
    for (size_t i = 0; i < filled; i++)
        p[i] = expected(i);
    fflush(NULL);
    pid_t parent = getpid();
    pid_t child = fork();
    if (child < 0) { perror("fork"); return 1; }
    if (child > 0 && stay) {
        int status;
        waitpid(child, &status, 0);
        return 0;
    }
    if (child > 0) {
        if (strcmp(argv[1], "_exit") == 0)
            _exit(0);
        if (strcmp(argv[1], "exit_group") == 0)
            syscall(SYS_exit_group, 0);
        if (strcmp(argv[1], "kill") == 0)
            kill(getpid(), SIGKILL);
        exit(0);
    }
    if (stay) {
        FILE *said = fopen(ready, "w");
        if (!said) return 1;
        fclose(said);
        while (access(go, F_OK) != 0)
            usleep(10000);
    }
    while (!stay && getppid() == parent)
        usleep(10000);
    struct sigaction on_bus = { .sa_handler = on_sigbus };
    sigemptyset(&on_bus.sa_mask);
    sigaction(SIGBUS, &on_bus, NULL);
    size_t bad = 0, sigbus = 0, untouched_bad = 0, untouched_sigbus = 0;
    for (size_t page = 0; page < (filled + untouched) / 4096; page++) {
        int in_filled = page * 4096 < filled;
        if (sigsetjmp(skip_page, 1)) {
            if (in_filled) sigbus++; else untouched_sigbus++;
            continue;
        }
        volatile unsigned char *q = p + page * 4096;
        for (size_t j = 0; j < 4096; j++) {
            size_t i = page * 4096 + j;
            if (q[j] != (in_filled ? expected(i) : 0)) {
                if (in_filled) bad++; else untouched_bad++;
            }
        }
    }
    char temporary[4096];
    snprintf(temporary, sizeof temporary, "%s.tmp", argv[2]);
    FILE *out = fopen(temporary, "w");
    if (!out) return 1;
    fprintf(out, "orphan: %zu bad bytes of %zu, %zu pages SIGBUS; untouched: %zu bad bytes, %zu pages SIGBUS\n",
            bad, filled, sigbus, untouched_bad, untouched_sigbus);
    fclose(out);
    rename(temporary, argv[2]); /* the test sees the whole line or nothing */
    return 0;
}
