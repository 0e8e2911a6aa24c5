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
 * The connection: the shim's fork() makes a socketpair (SOCK_SEQPACKET) just before the
 * fork; the parent hands its end to the engine, the child keeps the other. Nothing else
 * can reach either end, so no name, no lookup and no impersonation. The child first
 * sends its pid (the engine matches it to the child it serves), then answers requests:
 *   engine -> agent: struct agent_request { start, pages } (at most 64 pages)
 *   agent -> engine: struct agent_answer { moved, absent } (bit i: page i of the request)
 * A page is moved only if it is present and write-protected by userfaultfd (pagemap bit
 * 57): the engine asks only for pages it installed write-protected and the child has not
 * written, and a page that is not so any more (discarded and written again, or a new
 * mapping at a reused address) must never be taken. The move is atomic against writers:
 * a write either faults (the page is write-protected) or comes after the move and faults
 * on the missing page, which the engine serves again from the page's sealed copy. A page
 * moved out lands in the agent's scratch area, is wiped there and dropped. A page the
 * child shares with a child of its own copy-on-write cannot be moved (EBUSY) and stays.
 *
 * Everything here until the thread runs is a raw system call or async-signal-safe, except
 * pthread_create, which is libc's own (passed in by the shim: the shim's interposed one
 * takes its heap lock, which a forked child must never take). The thread allocates
 * nothing. If anything fails, the child has no agent: its pages stay resident, as
 * without this file.
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
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "child_support.h"
#include "served.h"

#include "uffd_compat.h"

#define AGENT_PAGE 4096UL
#define AGENT_MAX_PAGES 64
#define AGENT_STACK (64 * 1024) /* below any redirection threshold */
#define PAGEMAP_PRESENT (1ULL << 63)
#define PAGEMAP_UFFD_WP (1ULL << 57)

struct agent_request {
    uint64_t start;
    uint32_t pages;
    uint32_t reserved;
};

struct agent_answer {
    uint64_t moved;  /* taken out */
    uint64_t absent; /* not there to take (absent, not write-protected, or refused) */
};

_Static_assert(sizeof(struct agent_request) == 16, "the engine's AgentRequest mirrors this");
_Static_assert(sizeof(struct agent_answer) == 16, "the engine's AgentAnswer mirrors this");


static volatile int agent_enabled; /* set once the engine can serve children's agents */

void tibet_agent_enable(void);
int tibet_agent_wanted(void);
void tibet_agent_start_in_child(int connection, tibet_pthread_create_fn create_thread);

void tibet_agent_enable(void) { __atomic_store_n(&agent_enabled, 1, __ATOMIC_RELEASE); }

int tibet_agent_wanted(void) { return __atomic_load_n(&agent_enabled, __ATOMIC_ACQUIRE); }

struct agent {
    int started; /* this process's parent (or this process) started an agent: the fields below mean something */
    int connection;
    int scratch_uffd;
    int pagemap;
    unsigned char *scratch;
    /* The descriptors' identities: a child that closes every descriptor and opens others
     * under the same numbers must not have this thread read, write or close them. */
    dev_t connection_dev, pagemap_dev, scratch_dev;
    ino_t connection_ino, pagemap_ino, scratch_ino;
};

static struct agent the_agent; /* one per process: this child's */

static int still_ours(int fd, dev_t dev, ino_t ino)
{
    struct stat now;
    return fstat(fd, &now) == 0 && now.st_dev == dev && now.st_ino == ino;
}


static void agent_release(struct agent *a, int close_descriptors)
{
    if (a->scratch)
        syscall(SYS_munmap, a->scratch, AGENT_MAX_PAGES * AGENT_PAGE); /* every page moved in was wiped already */
    if (close_descriptors) {
        if (a->scratch_uffd >= 0)
            close(a->scratch_uffd);
        if (a->pagemap >= 0)
            close(a->pagemap);
        if (a->connection >= 0)
            close(a->connection);
    }
    a->scratch = NULL;
    a->scratch_uffd = a->pagemap = a->connection = -1;
}

static void move_out(struct agent *a, const struct agent_request *request, struct agent_answer *answer)
{
    uint32_t pages = request->pages > AGENT_MAX_PAGES ? AGENT_MAX_PAGES : request->pages;
    uint64_t entries[AGENT_MAX_PAGES];
    answer->moved = 0;
    answer->absent = pages == AGENT_MAX_PAGES ? ~0ULL : (1ULL << pages) - 1;
    off_t at = (off_t)(request->start / AGENT_PAGE * sizeof(uint64_t));
    if (pread(a->pagemap, entries, pages * sizeof(uint64_t), at) != (ssize_t)(pages * sizeof(uint64_t)))
        return; /* nothing is taken that cannot be checked */
    for (uint32_t i = 0; i < pages; i++) {
        if ((entries[i] & (PAGEMAP_PRESENT | PAGEMAP_UFFD_WP)) != (PAGEMAP_PRESENT | PAGEMAP_UFFD_WP))
            continue;
        /* Again, right before the move: the batch read above may be a few microseconds old
         * (another of the child's threads may have unmapped and reused the address). */
        uint64_t now;
        if (pread(a->pagemap, &now, sizeof now, at + (off_t)(i * sizeof(uint64_t))) != (ssize_t)sizeof now
            || (now & (PAGEMAP_PRESENT | PAGEMAP_UFFD_WP)) != (PAGEMAP_PRESENT | PAGEMAP_UFFD_WP))
            continue;
        struct uffdio_move move = {
            .dst = (uint64_t)(uintptr_t)(a->scratch + i * AGENT_PAGE),
            .src = request->start + i * AGENT_PAGE,
            .len = AGENT_PAGE,
        };
        if (ioctl(a->scratch_uffd, UFFDIO_MOVE, &move) == 0) {
            answer->moved |= 1ULL << i;
            answer->absent &= ~(1ULL << i);
        }
    }
    for (uint32_t i = 0; i < pages; i++)
        if (answer->moved & (1ULL << i))
            memset(a->scratch + i * AGENT_PAGE, 0, AGENT_PAGE); /* plaintext: wiped, then dropped */
    if (answer->moved)
        madvise(a->scratch, AGENT_MAX_PAGES * AGENT_PAGE, MADV_DONTNEED);
}

static void *agent_loop(void *arg)
{
    struct agent *a = arg;
    int ours = 1;
    for (;;) {
        struct agent_request request;
        ssize_t n = recv(a->connection, &request, sizeof request, 0);
        if (n < 0 && errno == EINTR)
            continue;
        ours = still_ours(a->connection, a->connection_dev, a->connection_ino);
        if (!ours || n != (ssize_t)sizeof request)
            break; /* the engine is gone (0), spoke nonsense, or the number is not ours any more */
        if (!still_ours(a->pagemap, a->pagemap_dev, a->pagemap_ino)) {
            /* The child reused the pagemap's number: nothing can be checked, so nothing is
             * taken; the engine gets an answer (all absent) and the end of the connection. */
            struct agent_answer none = { 0, request.pages >= AGENT_MAX_PAGES ? ~0ULL : (1ULL << request.pages) - 1 };
            send(a->connection, &none, sizeof none, MSG_NOSIGNAL);
            a->pagemap = -1;
            break;
        }
        struct agent_answer answer;
        move_out(a, &request, &answer);
        if (send(a->connection, &answer, sizeof answer, MSG_NOSIGNAL) != (ssize_t)sizeof answer)
            break;
    }
    agent_release(a, ours);
    return NULL;
}

/* In a child of a child (the shim's fork, in a process that is itself a forked child):
 * the agent's descriptors came along, but its thread did not. Closed here, so that the
 * engine sees the end of the connection when the child's agent goes, not only when every
 * grandchild has gone too. */
void tibet_agent_forget_in_grandchild(void);

void tibet_agent_forget_in_grandchild(void)
{
    struct agent *a = &the_agent;
    if (!a->started)
        return; /* never an agent here: its descriptor fields are not ours to close */
    a->started = 0;
    if (a->connection >= 0 && still_ours(a->connection, a->connection_dev, a->connection_ino))
        close(a->connection);
    if (a->pagemap >= 0 && still_ours(a->pagemap, a->pagemap_dev, a->pagemap_ino))
        close(a->pagemap);
    if (a->scratch_uffd >= 0 && still_ours(a->scratch_uffd, a->scratch_dev, a->scratch_ino))
        close(a->scratch_uffd);
    a->connection = a->pagemap = a->scratch_uffd = -1;
    a->scratch = NULL; /* MADV_WIPEONFORK: the copy here is zeros; the mapping stays */
}

/* In a forked child, right after fork() returned 0 (from the shim's fork), with the
 * child's end of the socketpair the shim made before the fork. */
void tibet_agent_start_in_child(int connection, tibet_pthread_create_fn create_thread)
{
    struct agent *a = &the_agent;
    struct stat st;
    a->scratch_uffd = a->pagemap = -1;
    a->scratch = NULL;
    a->connection = tibet_move_high(connection);
    if (a->connection < 0 || fstat(a->connection, &st) != 0)
        goto fail;
    a->connection_dev = st.st_dev;
    a->connection_ino = st.st_ino;
    pid_t self = (pid_t)syscall(SYS_getpid);
    if (send(a->connection, &self, sizeof self, MSG_NOSIGNAL) != (ssize_t)sizeof self)
        goto fail;

    a->pagemap = tibet_move_high((int)syscall(SYS_openat, AT_FDCWD, "/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
    if (a->pagemap < 0 || fstat(a->pagemap, &st) != 0)
        goto fail;
    a->pagemap_dev = st.st_dev;
    a->pagemap_ino = st.st_ino;

    /* The scratch area the pages are moved into (child_support.h says how it is kept). */
    void *scratch;
    a->scratch_uffd = tibet_open_scratch(AGENT_MAX_PAGES * AGENT_PAGE, &scratch);
    a->scratch = scratch;
    if (a->scratch_uffd < 0 || fstat(a->scratch_uffd, &st) != 0)
        goto fail;
    a->scratch_dev = st.st_dev;
    a->scratch_ino = st.st_ino;

    int created = tibet_start_child_thread(create_thread, AGENT_STACK, agent_loop, a, "tibet-agent");
    if (created == 0) {
        a->started = 1;
        return;
    }
fail:
    agent_release(a, 1);
}
