// custodian_probe: what serving a process's page faults from another process costs, the
// question issue 12 (the custodian) is designed around. Measured, in one run:
//
//   1. serve:  first touch of every page, answered with UFFDIO_COPY by the handler
//              in-process (a thread) and by a custodian process that received the
//              userfaultfd over a unix socket (SCM_RIGHTS);
//   2. evict:  taking every page out again, in batches. In-process: UFFDIO_MOVE into a
//              scratch area (what the engine does today). Cross-process, UFFDIO_MOVE fails
//              (EINVAL on Linux 6.18, checked here), so the custodian write-protects the
//              batch (UFFDIO_WRITEPROTECT works across processes), copies it out with
//              process_vm_readv, and asks an agent thread inside the served process to
//              zap it with MADV_DONTNEED; the zap's REMOVE event is read by the custodian;
//   3. refault: every page read back and checked, proving nothing was lost.
//
// No cipher: this measures the mechanism only. The page contents are a pattern of the
// page index, so a wrong or lost page is caught. Must run as root (or with
// vm.unprivileged_userfaultfd=1). Prints one JSON object.
//
// Why C: the served side must be what a forked child of an unmodified program can run
// (no managed runtime after fork), which is exactly the agent this probes.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
static size_t BATCH = 64; // pages per eviction step (argv[2])

static void die(const char *what) { fprintf(stderr, "custodian_probe: %s: %s\n", what, strerror(errno)); exit(2); }

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

static void fill_pattern(unsigned char *page, size_t index)
{
    uint64_t *words = (uint64_t *)page;
    for (size_t i = 0; i < PAGE / 8; i++) words[i] = index * 0x9E3779B97F4A7C15ULL + i;
}

static int check_pattern(const unsigned char *page, size_t index)
{
    const uint64_t *words = (const uint64_t *)page;
    for (size_t i = 0; i < PAGE / 8; i++) if (words[i] != index * 0x9E3779B97F4A7C15ULL + i) return 0;
    return 1;
}

static int open_uffd(uint64_t features)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) die("userfaultfd");
    struct uffdio_api api = { .api = UFFD_API, .features = features };
    if (ioctl(fd, UFFDIO_API, &api)) die("UFFDIO_API");
    return fd;
}

static void register_range(int fd, void *base, size_t len, uint64_t mode)
{
    struct uffdio_register reg = { .range = { (uintptr_t)base, len }, .mode = mode };
    if (ioctl(fd, UFFDIO_REGISTER, &reg)) die("UFFDIO_REGISTER");
}

// ---- the fault service, shared by the in-process thread and the custodian process ----

struct service {
    int uffd;
    uintptr_t base;
    size_t pages;
    unsigned char *source; // the "plaintext" of every page (stands for the store + cipher)
    long faults, removes;
};

// Serves every message waiting; returns 0 when none was waiting.
static int serve_pending(struct service *s)
{
    struct uffd_msg msgs[16];
    ssize_t n = read(s->uffd, msgs, sizeof msgs);
    if (n <= 0) return 0;
    for (int i = 0; i < n / (ssize_t)sizeof(struct uffd_msg); i++) {
        struct uffd_msg *m = &msgs[i];
        if (m->event == UFFD_EVENT_REMOVE) { s->removes++; continue; }
        if (m->event != UFFD_EVENT_PAGEFAULT) continue;
        uintptr_t addr = m->arg.pagefault.address & ~(PAGE - 1);
        size_t index = (addr - s->base) / PAGE;
        if (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
            // A write to a page being evicted: wait for the zap to finish is the real
            // design; this probe never writes during eviction, so it is unexpected.
            fprintf(stderr, "custodian_probe: unexpected write-protect fault\n");
            exit(2);
        }
        struct uffdio_copy copy = { .dst = addr, .src = (uintptr_t)(s->source + index * PAGE), .len = PAGE };
        if (ioctl(s->uffd, UFFDIO_COPY, &copy) && errno != EEXIST) die("UFFDIO_COPY");
        s->faults++;
    }
    return 1;
}

static void serve_until(struct service *s, volatile int *stop)
{
    while (!*stop) {
        struct pollfd p = { .fd = s->uffd, .events = POLLIN };
        if (poll(&p, 1, 10) > 0) serve_pending(s);
    }
}

// ---- the served process's side ----

static double touch_all(unsigned char *base, size_t pages, int check)
{
    double t0 = now();
    volatile unsigned long sum = 0;
    for (size_t i = 0; i < pages; i++) {
        if (check && !check_pattern(base + i * PAGE, i)) {
            fprintf(stderr, "custodian_probe: page %zu read wrong bytes\n", i);
            exit(1);
        }
        sum += base[i * PAGE];
    }
    return now() - t0;
}

struct thread_service { struct service s; volatile int stop; };

static void *service_thread(void *arg)
{
    struct thread_service *t = arg;
    serve_until(&t->s, &t->stop);
    return NULL;
}

// In-process: a handler thread serves, eviction moves pages into a scratch area.
static void run_in_process(size_t pages, unsigned char *source, double *serve_s, double *evict_s, double *refault_s)
{
    size_t len = pages * PAGE;
    unsigned char *base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char *scratch = mmap(NULL, BATCH * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED || scratch == MAP_FAILED) die("mmap");
    madvise(base, len, MADV_NOHUGEPAGE);
    madvise(scratch, BATCH * PAGE, MADV_NOHUGEPAGE);
    int uffd = open_uffd(UFFD_FEATURE_MOVE | UFFD_FEATURE_EVENT_REMOVE);
    register_range(uffd, base, len, UFFDIO_REGISTER_MODE_MISSING);
    // The scratch area needs a userfaultfd of its own for UFFDIO_MOVE's destination.
    int scratch_uffd = open_uffd(UFFD_FEATURE_MOVE);
    register_range(scratch_uffd, scratch, BATCH * PAGE, UFFDIO_REGISTER_MODE_WP);

    struct thread_service t = { .s = { .uffd = uffd, .base = (uintptr_t)base, .pages = pages, .source = source } };
    pthread_t th;
    pthread_create(&th, NULL, service_thread, &t);
    *serve_s = touch_all(base, pages, 0);
    t.stop = 1;
    pthread_join(th, NULL);

    double t0 = now();
    for (size_t i = 0; i < pages; i += BATCH) {
        struct uffdio_move move = { .dst = (uintptr_t)scratch, .src = (uintptr_t)(base + i * PAGE), .len = BATCH * PAGE };
        if (ioctl(scratch_uffd, UFFDIO_MOVE, &move)) die("UFFDIO_MOVE (in-process)");
        memset(scratch, 0, BATCH * PAGE); // the engine wipes what it took out
        madvise(scratch, BATCH * PAGE, MADV_DONTNEED);
    }
    *evict_s = now() - t0;

    t.stop = 0;
    pthread_create(&th, NULL, service_thread, &t);
    *refault_s = touch_all(base, pages, 1);
    t.stop = 1;
    pthread_join(th, NULL);
    close(uffd);
    close(scratch_uffd);
    munmap(base, len);
    munmap(scratch, BATCH * PAGE);
}

static void send_fd(int sock, int fd)
{
    char byte = 'u';
    struct iovec iov = { &byte, 1 };
    char control[CMSG_SPACE(sizeof(int))] = { 0 };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
    if (sendmsg(sock, &msg, 0) != 1) die("sendmsg");
}

static int receive_fd(int sock)
{
    char byte;
    struct iovec iov = { &byte, 1 };
    char control[CMSG_SPACE(sizeof(int))];
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
    if (recvmsg(sock, &msg, 0) != 1) die("recvmsg");
    int fd;
    memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof(int));
    return fd;
}

// The agent: a thread in the served process that zaps what the custodian asks. Requests
// and answers are (offset, length) pairs on its own socket.
struct agent { int sock; unsigned char *base; };

static void *agent_thread(void *arg)
{
    struct agent *a = arg;
    uint64_t request[2];
    while (read(a->sock, request, sizeof request) == sizeof request) {
        if (request[1] == 0) break;
        int rc = madvise(a->base + request[0], request[1], MADV_DONTNEED) ? errno : 0;
        uint64_t answer = (uint64_t)rc;
        if (write(a->sock, &answer, sizeof answer) != sizeof answer) break;
    }
    return NULL;
}

// The custodian: receives the userfaultfd, serves the first touch, evicts everything
// (and reports whether UFFDIO_MOVE works across processes), serves the refault.
static void custodian(int control, int agent, pid_t served, uintptr_t base, size_t pages, unsigned char *source)
{
    struct service s = { .uffd = receive_fd(control), .base = base, .pages = pages, .source = source };
    char go;
    volatile int stop = 0;
    // Phase 1: serve until the served process says it is done touching.
    while (1) {
        struct pollfd p[2] = { { .fd = s.uffd, .events = POLLIN }, { .fd = control, .events = POLLIN } };
        poll(p, 2, -1);
        if (p[0].revents & POLLIN) serve_pending(&s);
        if (p[1].revents & POLLIN) { if (read(control, &go, 1) != 1) die("read control"); break; }
    }

    // Phase 2: evict. First, does UFFDIO_MOVE work from here? (Into a scratch area of ours.)
    unsigned char *scratch = mmap(NULL, BATCH * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char *copy = mmap(NULL, BATCH * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct uffdio_move move = { .dst = (uintptr_t)scratch, .src = base, .len = PAGE };
    int move_errno = ioctl(s.uffd, UFFDIO_MOVE, &move) ? errno : 0;

    double t0 = now();
    long wp_ns = 0, read_ns = 0, zap_ns = 0;
    for (size_t i = 0; i < pages; i += BATCH) {
        uintptr_t start = base + i * PAGE;
        double a = now();
        struct uffdio_writeprotect wp = { .range = { start, BATCH * PAGE }, .mode = UFFDIO_WRITEPROTECT_MODE_WP };
        if (ioctl(s.uffd, UFFDIO_WRITEPROTECT, &wp)) die("UFFDIO_WRITEPROTECT (cross-process)");
        double b = now();
        struct iovec local = { copy, BATCH * PAGE }, remote = { (void *)start, BATCH * PAGE };
        if (process_vm_readv(served, &local, 1, &remote, 1, 0) != (ssize_t)(BATCH * PAGE)) die("process_vm_readv");
        for (size_t k = 0; k < BATCH; k++)
            if (!check_pattern(copy + k * PAGE, i + k)) { fprintf(stderr, "custodian_probe: copied-out page %zu is wrong\n", i + k); exit(1); }
        double c = now();
        uint64_t request[2] = { i * PAGE, BATCH * PAGE }, answer = 1;
        if (write(agent, request, sizeof request) != sizeof request) die("write agent");
        // The zap waits until its REMOVE event is read: read events until the agent answers.
        while (1) {
            struct pollfd p[2] = { { .fd = s.uffd, .events = POLLIN }, { .fd = agent, .events = POLLIN } };
            poll(p, 2, -1);
            if (p[0].revents & POLLIN) serve_pending(&s);
            if (p[1].revents & POLLIN) { if (read(agent, &answer, sizeof answer) != sizeof answer) die("read agent"); break; }
        }
        if (answer) { errno = (int)answer; die("agent madvise"); }
        double d = now();
        memset(copy, 0, BATCH * PAGE); // the real custodian seals, then wipes
        wp_ns += (long)((b - a) * 1e9);
        read_ns += (long)((c - b) * 1e9);
        zap_ns += (long)((d - c) * 1e9);
    }
    double evict_s = now() - t0;
    if (write(control, "e", 1) != 1) die("write control");

    // Phase 3: serve the refault until the served process is done.
    while (1) {
        struct pollfd p[2] = { { .fd = s.uffd, .events = POLLIN }, { .fd = control, .events = POLLIN } };
        poll(p, 2, -1);
        if (p[0].revents & POLLIN) serve_pending(&s);
        if (p[1].revents & POLLIN) { if (read(control, &go, 1) != 1) die("read control"); break; }
    }
    (void)stop;
    // Report this side's figures to the served process, which prints the JSON.
    double figures[6] = { evict_s, wp_ns / 1e9, read_ns / 1e9, zap_ns / 1e9, (double)move_errno, (double)s.removes };
    if (write(control, figures, sizeof figures) != sizeof figures) die("write figures");
    exit(0);
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 256;
    BATCH = argc > 2 ? strtoul(argv[2], NULL, 10) : 64;
    if (mib == 0 || mib > 65536 || BATCH == 0 || BATCH > 4096 || mib * 256 < BATCH) {
        fprintf(stderr, "usage: custodian_probe [MiB, 1..65536] [pages per eviction step, 1..4096]\n");
        return 2;
    }
    size_t pages = mib * 256;
    pages -= pages % BATCH;
    size_t len = pages * PAGE;
    unsigned char *source = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (source == MAP_FAILED) die("mmap source");
    for (size_t i = 0; i < pages; i++) fill_pattern(source + i * PAGE, i);

    double in_serve, in_evict, in_refault;
    run_in_process(pages, source, &in_serve, &in_evict, &in_refault);

    // Cross-process: the served side maps and registers, the custodian (a forked child,
    // which keeps the source pattern by fork) serves.
    unsigned char *base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) die("mmap");
    madvise(base, len, MADV_NOHUGEPAGE);
    int control[2], agent[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, control) || socketpair(AF_UNIX, SOCK_STREAM, 0, agent)) die("socketpair");
    pid_t served = getpid();
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        close(control[0]);
        close(agent[0]);
        custodian(control[1], agent[1], served, (uintptr_t)base, pages, source);
    }
    close(control[1]);
    close(agent[1]);
    int uffd = open_uffd(UFFD_FEATURE_EVENT_REMOVE);
    register_range(uffd, base, len, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP);
    send_fd(control[0], uffd);
    close(uffd); // the custodian holds it now
    struct agent a = { .sock = agent[0], .base = base };
    pthread_t agent_th;
    pthread_create(&agent_th, NULL, agent_thread, &a);

    double cross_serve = touch_all(base, pages, 1);
    char e;
    if (write(control[0], "t", 1) != 1 || read(control[0], &e, 1) != 1) die("control");
    double cross_refault = touch_all(base, pages, 1);
    if (write(control[0], "r", 1) != 1) die("control");
    double figures[6];
    if (read(control[0], figures, sizeof figures) != sizeof figures) die("read figures");
    uint64_t done[2] = { 0, 0 };
    if (write(agent[0], done, sizeof done) != sizeof done) die("stop agent");
    pthread_join(agent_th, NULL);
    int status;
    waitpid(pid, &status, 0);

    double mb = len / 1e6;
    printf("{\"pages\": %zu, \"batchPages\": %zu,\n", pages, BATCH);
    printf(" \"inProcess\": {\"serveMBps\": %.0f, \"serveUsPerPage\": %.2f, \"evictMBps\": %.0f, \"evictUsPerPage\": %.2f, \"refaultMBps\": %.0f},\n",
        mb / in_serve, in_serve * 1e6 / pages, mb / in_evict, in_evict * 1e6 / pages, mb / in_refault);
    printf(" \"custodian\": {\"serveMBps\": %.0f, \"serveUsPerPage\": %.2f, \"evictMBps\": %.0f, \"evictUsPerPage\": %.2f, \"refaultMBps\": %.0f,\n",
        mb / cross_serve, cross_serve * 1e6 / pages, mb / figures[0], figures[0] * 1e6 / pages, mb / cross_refault);
    printf("   \"evictSplitUsPerPage\": {\"writeProtect\": %.2f, \"processVmReadv\": %.2f, \"agentZapWithRemoveEvent\": %.2f},\n",
        figures[1] * 1e6 / pages, figures[2] * 1e6 / pages, figures[3] * 1e6 / pages);
    printf("   \"removeEventsRead\": %.0f, \"crossProcessMoveErrno\": \"%s\"},\n", figures[5], figures[4] == 0 ? "none (it worked)" : strerror((int)figures[4]));
    printf(" \"verified\": \"every page read back exact after eviction, in both modes\"}\n");
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
