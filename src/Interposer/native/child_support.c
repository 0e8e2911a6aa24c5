/* Helpers of the threads tibet starts in forked children (child_support.h says what).
 * C for the reason agent.c and served.c are: they run in a forked child, where managed
 * code cannot. Raw system calls and async-signal-safe calls only, and libc's
 * pthread_create passed in. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <signal.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "child_support.h"
#include "served.h"
#include "uffd_compat.h"

int tibet_move_high(int fd)
{
    if (fd < 0 || fd >= TIBET_CHILD_FD_FLOOR)
        return fd;
    int high = fcntl(fd, F_DUPFD_CLOEXEC, TIBET_CHILD_FD_FLOOR);
    close(fd);
    return high;
}

int tibet_open_scratch(size_t bytes, void **area)
{
    void *scratch = (void *)syscall(SYS_mmap, NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    *area = scratch == MAP_FAILED ? NULL : scratch;
    if (!*area)
        return -1;
    madvise(scratch, bytes, MADV_NOHUGEPAGE);
    madvise(scratch, bytes, MADV_DONTDUMP);
    madvise(scratch, bytes, MADV_WIPEONFORK);
    int uffd = tibet_move_high(tibet_open_userfaultfd(O_CLOEXEC)); /* served.c: also for another user */
    if (uffd < 0)
        return -1;
    struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_MOVE };
    struct uffdio_register reg = {
        .range = { (uint64_t)(uintptr_t)scratch, bytes },
        .mode = UFFDIO_REGISTER_MODE_WP,
    };
    if (ioctl(uffd, UFFDIO_API, &api) != 0 || ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) {
        close(uffd);
        return -1;
    }
    return uffd;
}

int tibet_start_child_thread(tibet_pthread_create_fn create, size_t stack, void *(*start)(void *), void *arg, const char *name)
{
    sigset_t all, before;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &before);
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setstacksize(&attributes, stack);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    pthread_t thread;
    int created = create(&thread, &attributes, start, arg);
    pthread_attr_destroy(&attributes);
    pthread_sigmask(SIG_SETMASK, &before, NULL);
    if (created == 0)
        pthread_setname_np(thread, name);
    return created;
}
