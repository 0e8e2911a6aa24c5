/*
 * The agent: a small thread in each forked child that takes pages out of the child's
 * memory when the engine asks, so that what a child reads of its inherited arenas is
 * evicted under the budget like the program's own pages.
 *
 * Why this must be C: it starts in a forked child, right after fork(), where the
 * runtime's threads are gone and managed code cannot run. And why a thread in the child
 * at all: the engine serves the child's faults through the userfaultfd the fork event
 * handed it, and can install pages from there (UFFDIO_COPY), but not take them out:
 * UFFDIO_MOVE issued on another process's userfaultfd fails with EINVAL (Linux 6.18;
 * bench/scripts/custodian-probe.sh checks it). In the child's own address space it works.
 *
 * Protocol, on a SOCK_SEQPACKET connection to the engine's abstract socket, opened by the
 * child right after fork and checked to lead to the parent (SO_PEERCRED):
 *   engine -> agent: struct agent_request { start, pages } (at most 64 pages)
 *   agent -> engine: a 64-bit mask of the pages moved out (bit i: page i of the request)
 * Each page moved out lands in the agent's scratch area, is wiped there and dropped. The
 * move is atomic against the child's writers: a write lands before it and is wiped with
 * the page (the engine only asks for pages whose sealed copy is still their contents:
 * such a page is write-protected, so a write would have reached the engine first), or it
 * faults after it and the engine serves the page again. A page the child shares with its
 * parent copy-on-write cannot be moved (EBUSY) and stays.
 *
 * Everything here is async-signal-safe until the thread is created (socket, connect,
 * mmap, ioctl as raw system calls), and the thread allocates nothing. If anything fails,
 * the child simply has no agent: its pages stay resident, as without this file.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef UFFD_FEATURE_MOVE
/* Debian bookworm's headers (linux-libc-dev 6.1) predate UFFDIO_MOVE (Linux 6.8);
 * these are the values of include/uapi/linux/userfaultfd.h. */
#define UFFD_FEATURE_MOVE (1 << 16)
#define _UFFDIO_MOVE 0x05
struct uffdio_move {
    uint64_t dst;
    uint64_t src;
    uint64_t len;
    uint64_t mode;
    int64_t move;
};
#define UFFDIO_MOVE _IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)
#endif

#define AGENT_PAGE 4096UL
#define AGENT_MAX_PAGES 64
#define AGENT_STACK (64 * 1024) /* below any redirection threshold */

struct agent_request {
    uint64_t start;
    uint32_t pages;
    uint32_t reserved;
};

_Static_assert(sizeof(struct agent_request) == 16, "the engine's AgentRequest mirrors this");

static char agent_address[sizeof(((struct sockaddr_un *)0)->sun_path)];
static int agent_address_length; /* 0: no engine listens, nothing to do */
static pid_t agent_engine_pid;

/* Called by the engine's process once its socket listens. The name is abstract (it
 * starts with a zero byte) and `length` counts every byte of it. */
void tibet_agent_enable(const char *name, int length);

void tibet_agent_enable(const char *name, int length)
{
    if (length <= 0 || length > (int)sizeof agent_address)
        return;
    memcpy(agent_address, name, (size_t)length);
    agent_engine_pid = (pid_t)syscall(SYS_getpid);
    __atomic_store_n(&agent_address_length, length, __ATOMIC_RELEASE);
}

struct agent {
    int connection;
    int scratch_uffd;
    unsigned char *scratch;
};

static struct agent the_agent; /* one per process: this child's */

static void agent_close(struct agent *a)
{
    if (a->scratch)
        syscall(SYS_munmap, a->scratch, AGENT_MAX_PAGES * AGENT_PAGE);
    if (a->scratch_uffd >= 0)
        close(a->scratch_uffd);
    if (a->connection >= 0)
        close(a->connection);
    a->scratch = NULL;
    a->scratch_uffd = a->connection = -1;
}

static uint64_t move_out(struct agent *a, const struct agent_request *request)
{
    uint64_t moved = 0;
    uint32_t pages = request->pages > AGENT_MAX_PAGES ? AGENT_MAX_PAGES : request->pages;
    for (uint32_t i = 0; i < pages; i++) {
        struct uffdio_move move = {
            .dst = (uint64_t)(uintptr_t)(a->scratch + i * AGENT_PAGE),
            .src = request->start + i * AGENT_PAGE,
            .len = AGENT_PAGE,
        };
        if (ioctl(a->scratch_uffd, UFFDIO_MOVE, &move) == 0)
            moved |= 1ULL << i;
    }
    for (uint32_t i = 0; i < pages; i++)
        if (moved & (1ULL << i))
            memset(a->scratch + i * AGENT_PAGE, 0, AGENT_PAGE); /* plaintext: wiped, then dropped */
    if (moved)
        madvise(a->scratch, AGENT_MAX_PAGES * AGENT_PAGE, MADV_DONTNEED);
    return moved;
}

static void *agent_loop(void *arg)
{
    struct agent *a = arg;
    for (;;) {
        struct agent_request request;
        ssize_t n = recv(a->connection, &request, sizeof request, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n != (ssize_t)sizeof request)
            break; /* the engine is gone (0), or spoke nonsense */
        uint64_t moved = move_out(a, &request);
        if (send(a->connection, &moved, sizeof moved, MSG_NOSIGNAL) != (ssize_t)sizeof moved)
            break;
    }
    agent_close(a);
    return NULL;
}

void tibet_agent_start_in_child(void);

/* In a forked child, right after fork() returned 0 (from the shim's fork). */
void tibet_agent_start_in_child(void)
{
    struct agent *a = &the_agent;
    a->connection = a->scratch_uffd = -1;
    a->scratch = NULL;
    int length = __atomic_load_n(&agent_address_length, __ATOMIC_ACQUIRE);
    /* Only a child of the engine's own process: a grandchild's parent serves nothing. */
    if (length == 0 || getppid() != agent_engine_pid)
        return;

    a->connection = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (a->connection < 0)
        goto fail;
    struct sockaddr_un address = { .sun_family = AF_UNIX };
    memcpy(address.sun_path, agent_address, (size_t)length);
    if (connect(a->connection, (struct sockaddr *)&address, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + length)) != 0)
        goto fail;
    /* Whoever answers must be the parent: an abstract name can be bound by anyone. */
    struct ucred peer;
    socklen_t peer_length = sizeof peer;
    if (getsockopt(a->connection, SOL_SOCKET, SO_PEERCRED, &peer, &peer_length) != 0 || peer.pid != agent_engine_pid)
        goto fail;

    /* The scratch area the pages are moved into: registered on a userfaultfd of its own,
     * write-protect mode only, so that nothing here ever waits on an event or a fault. */
    void *scratch = (void *)syscall(SYS_mmap, NULL, AGENT_MAX_PAGES * AGENT_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (scratch == MAP_FAILED)
        goto fail;
    a->scratch = scratch;
    madvise(scratch, AGENT_MAX_PAGES * AGENT_PAGE, MADV_NOHUGEPAGE);
    madvise(scratch, AGENT_MAX_PAGES * AGENT_PAGE, MADV_DONTDUMP);
    a->scratch_uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
    if (a->scratch_uffd < 0)
        goto fail;
    struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_MOVE };
    struct uffdio_register reg = {
        .range = { (uint64_t)(uintptr_t)scratch, AGENT_MAX_PAGES * AGENT_PAGE },
        .mode = UFFDIO_REGISTER_MODE_WP,
    };
    if (ioctl(a->scratch_uffd, UFFDIO_API, &api) != 0 || ioctl(a->scratch_uffd, UFFDIO_REGISTER, &reg) != 0)
        goto fail;

    /* The thread takes no signal of the program's: they are blocked while it is created. */
    sigset_t all, before;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &before);
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setstacksize(&attributes, AGENT_STACK);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    pthread_t thread;
    int created = pthread_create(&thread, &attributes, agent_loop, a);
    pthread_attr_destroy(&attributes);
    if (created == 0)
        pthread_setname_np(thread, "tibet-agent");
    pthread_sigmask(SIG_SETMASK, &before, NULL);
    if (created == 0)
        return;
fail:
    agent_close(a);
}
