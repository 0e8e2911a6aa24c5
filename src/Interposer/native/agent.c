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
 *   engine -> agent: struct agent_request { start, pages, kind } (at most 64 pages)
 *   agent -> engine: struct agent_answer { moved, absent } (bit i: page i of the request)
 * Two more requests are not answered: AGENT_CUSTODY carries (SCM_RIGHTS) a duplicate of
 * the userfaultfd through which the engine serves this child, and a map of which
 * inherited pages have contents only the engine can give back (sealed, taken out, a
 * model's); AGENT_RELEASE ends that custody (the engine handed the child its pages, or
 * stops serving it, and the registration may go with the engine's descriptor).
 *
 * Why custody: when the engine's process ends without handing the child over (killed,
 * or a raw exit_group, where nothing of it runs), its descriptor closes and the kernel
 * drops the registration, so every missing page reads zeros: wrong bytes, silently. With
 * the duplicate held here the registration stays, and when the connection ends without
 * AGENT_RELEASE this thread serves the child's faults itself (orphan_serve): a page the
 * map says has contents gets UFFDIO_POISON (SIGBUS for the thread that touches it: the
 * contents are gone with the engine's keys), any other zeros, as it would have read.
 * Only the engine closes its end without AGENT_RELEASE by dying or exec'ing (all its
 * paths that let a child go send it first), so nothing else reads the descriptor then.
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
#include <poll.h>
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
    uint32_t kind; /* AGENT_TAKE_OUT, AGENT_CUSTODY, AGENT_RELEASE */
};

#define AGENT_TAKE_OUT 0
#define AGENT_CUSTODY 1
#define AGENT_RELEASE 2

/* The contents map AGENT_CUSTODY brings: a memfd the engine keeps up to date while it
 * serves (shared), a header, a table of the inherited ranges, and a bitmap for each (bit
 * set: the page has contents only the engine could give). */
struct agent_contents_header {
    uint64_t magic;
    uint32_t regions;
    uint32_t reserved;
};

struct agent_contents_region {
    uint64_t start;
    uint64_t pages;
    uint64_t bitmap; /* byte offset of its bitmap in the map, 8-aligned */
};

#define AGENT_CONTENTS_MAGIC 0x31746e65746e6f63ULL /* "contents1" */
#define AGENT_MAX_SERVED 16 /* this child and the children it forks once orphaned */

struct agent_answer {
    uint64_t moved;  /* taken out */
    uint64_t absent; /* not there to take (absent, not write-protected, or refused) */
};

_Static_assert(sizeof(struct agent_request) == 16, "the engine's AgentRequest mirrors this");
_Static_assert(sizeof(struct agent_answer) == 16, "the engine's AgentAnswer mirrors this");
_Static_assert(sizeof(struct agent_contents_header) == 16, "the engine's ContentsHeader mirrors this");
_Static_assert(sizeof(struct agent_contents_region) == 24, "the engine's ContentsRegion mirrors this");


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
    /* Custody (AGENT_CUSTODY): the engine's userfaultfd for this child, and the contents map. */
    int custody_uffd;
    dev_t custody_dev;
    ino_t custody_ino;
    unsigned char *contents;
    size_t contents_bytes;
};

static struct agent the_agent; /* one per process: this child's */

static int still_ours(int fd, dev_t dev, ino_t ino)
{
    struct stat now;
    return fstat(fd, &now) == 0 && now.st_dev == dev && now.st_ino == ino;
}


static void custody_release(struct agent *a, int close_descriptor)
{
    if (a->contents)
        syscall(SYS_munmap, a->contents, a->contents_bytes);
    if (close_descriptor && a->custody_uffd >= 0 && still_ours(a->custody_uffd, a->custody_dev, a->custody_ino))
        close(a->custody_uffd);
    a->contents = NULL;
    a->contents_bytes = 0;
    a->custody_uffd = -1;
}

static void agent_release(struct agent *a, int close_descriptors)
{
    custody_release(a, close_descriptors);
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

/* Takes custody (AGENT_CUSTODY): `uffd` and `map` as received. The map is checked whole
 * before anything in it is used: a malformed one is refused (no custody, as before). */
static void custody_take(struct agent *a, int uffd, int map)
{
    struct stat st;
    custody_release(a, 1); /* a second custody replaces the first */
    uffd = tibet_move_high(uffd);
    if (uffd < 0 || map < 0 || fstat(uffd, &st) != 0)
        goto refuse;
    a->custody_dev = st.st_dev;
    a->custody_ino = st.st_ino;
    struct stat mst;
    if (fstat(map, &mst) != 0 || mst.st_size < (off_t)sizeof(struct agent_contents_header) || mst.st_size > ((off_t)1 << 40))
        goto refuse;
    void *mapped = mmap(NULL, (size_t)mst.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, map, 0);
    if (mapped == MAP_FAILED)
        goto refuse;
    close(map);
    map = -1;
    madvise(mapped, (size_t)mst.st_size, MADV_DONTFORK); /* this child's, not its children's */
    const struct agent_contents_header *header = mapped;
    size_t bytes = (size_t)mst.st_size;
    size_t table = sizeof *header + (size_t)header->regions * sizeof(struct agent_contents_region);
    int valid = header->magic == AGENT_CONTENTS_MAGIC && header->regions <= (1u << 20) && table <= bytes;
    const struct agent_contents_region *regions = (const void *)(header + 1);
    for (uint32_t i = 0; valid && i < header->regions; i++) {
        uint64_t words = (regions[i].pages + 63) / 64;
        valid = regions[i].start % AGENT_PAGE == 0 && regions[i].pages <= (1ULL << 36) && regions[i].bitmap % 8 == 0
                && regions[i].bitmap >= table && regions[i].bitmap <= bytes && words * 8 <= bytes - regions[i].bitmap;
    }
    if (!valid) {
        syscall(SYS_munmap, mapped, bytes);
        goto refuse;
    }
    a->custody_uffd = uffd;
    a->contents = mapped;
    a->contents_bytes = bytes;
    return;
refuse:
    if (uffd >= 0)
        close(uffd);
    if (map >= 0)
        close(map);
    a->custody_uffd = -1;
}

/* The region of `contents` that holds `address`, and its page index there; NULL outside all. */
static uint64_t *contents_word(unsigned char *contents, uint64_t address, uint64_t *bit)
{
    const struct agent_contents_header *header = (const void *)contents;
    struct agent_contents_region *regions = (void *)(contents + sizeof *header);
    for (uint32_t i = 0; i < header->regions; i++) {
        if (address < regions[i].start || address >= regions[i].start + regions[i].pages * AGENT_PAGE)
            continue;
        uint64_t page = (address - regions[i].start) / AGENT_PAGE;
        *bit = 1ULL << (page % 64);
        return (uint64_t *)(contents + regions[i].bitmap) + page / 64;
    }
    return NULL;
}

/* Whether a missing page at `address` had contents only the engine could give; outside the
 * inherited ranges (a range the child moved there with mremap) nobody knows: yes. */
static int has_contents(unsigned char *contents, uint64_t address)
{
    uint64_t bit;
    uint64_t *word = contents_word(contents, address, &bit);
    return word == NULL || (*word & bit) != 0;
}

static void set_contents(unsigned char *contents, uint64_t address, int value)
{
    uint64_t bit;
    uint64_t *word = contents_word(contents, address, &bit);
    if (word)
        *word = value ? *word | bit : *word & ~bit;
}

/* One line on stderr, without stdio (this thread allocates nothing). */
static void say_orphaned(void)
{
    char line[320];
    const char *head = "tibet: pid ";
    const char *tail = ": the engine that served memory this process inherited ended without handing it over "
                       "(killed, or a raw exit_group); pages only it held raise SIGBUS when touched, instead of reading as zeros\n";
    size_t n = 0;
    for (const char *c = head; *c; c++) line[n++] = *c;
    char digits[16];
    int d = 0;
    for (unsigned long pid = (unsigned long)syscall(SYS_getpid); d == 0 || pid; pid /= 10) digits[d++] = (char)('0' + pid % 10);
    while (d) line[n++] = digits[--d];
    for (const char *c = tail; *c && n < sizeof line; c++) line[n++] = *c;
    ssize_t ignored = write(2, line, n);
    (void)ignored;
}

struct orphan {
    int uffd;
    unsigned char *contents; /* this process's shared map, or a private copy for a child */
    size_t bytes;
};

/* A missing page: SIGBUS if it had contents, zeros if not. A write to a page installed
 * write-protected: let it through (the page is there). */
static void orphan_fault(const struct orphan *o, const struct uffd_msg *msg)
{
    uint64_t address = msg->arg.pagefault.address & ~(AGENT_PAGE - 1);
    if (msg->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
        struct uffdio_writeprotect unprotect = { .range = { address, AGENT_PAGE }, .mode = 0 };
        ioctl(o->uffd, UFFDIO_WRITEPROTECT, &unprotect);
        return;
    }
    int rc;
    if (has_contents(o->contents, address)) {
        struct uffdio_poison poison = { .range = { address, AGENT_PAGE }, .mode = 0 };
        rc = ioctl(o->uffd, UFFDIO_POISON, &poison);
    } else {
        struct uffdio_zeropage zero = { .range = { address, AGENT_PAGE }, .mode = 0 };
        rc = ioctl(o->uffd, UFFDIO_ZEROPAGE, &zero);
    }
    if (rc != 0 && errno != EEXIST) {
        /* Neither could be installed: the thread must not read zeros nor fault forever. */
        pid_t tid = (pid_t)msg->arg.pagefault.feat.ptid;
        if (tid > 0)
            syscall(SYS_tgkill, (pid_t)syscall(SYS_getpid), tid, SIGBUS);
        else
            syscall(SYS_kill, (pid_t)syscall(SYS_getpid), SIGBUS);
    }
    struct uffdio_range wake = { address, AGENT_PAGE };
    ioctl(o->uffd, UFFDIO_WAKE, &wake);
}

/* The engine is gone and never handed this child over: from now on this thread serves
 * the child's registered memory, and that of children it forks (with a copy of the map as
 * it was at their fork), until the process ends. */
static void orphan_serve(struct agent *a)
{
    struct orphan served[AGENT_MAX_SERVED];
    struct pollfd polled[AGENT_MAX_SERVED];
    int count = 1;
    served[0] = (struct orphan){ a->custody_uffd, a->contents, a->contents_bytes };
    say_orphaned();
    /* Faults the engine read and never answered wait on no message now: wake every waiter
     * of the address space, and each faults again, to be served here. */
    struct uffdio_range everything = { AGENT_PAGE, 0x7ffffffff000ULL - AGENT_PAGE };
    ioctl(a->custody_uffd, UFFDIO_WAKE, &everything);
    for (;;) {
        for (int i = 0; i < count; i++)
            polled[i] = (struct pollfd){ .fd = served[i].uffd, .events = POLLIN };
        if (poll(polled, (nfds_t)count, -1) < 0) {
            if (errno == EINTR)
                continue;
            return; /* nothing serves the child now: its faults wait (never zeros) */
        }
        for (int i = 0; i < count; i++) {
            if (!(polled[i].revents & POLLIN))
                continue;
            struct uffd_msg msgs[16];
            ssize_t got = read(served[i].uffd, msgs, sizeof msgs);
            for (ssize_t m = 0; m < got / (ssize_t)sizeof msgs[0]; m++) {
                const struct uffd_msg *msg = &msgs[m];
                struct orphan *o = &served[i];
                switch (msg->event) {
                case UFFD_EVENT_PAGEFAULT:
                    orphan_fault(o, msg);
                    break;
                case UFFD_EVENT_REMOVE:
                case UFFD_EVENT_UNMAP:
                    /* Discarded: such a page reads zeros from now on. */
                    for (uint64_t at = msg->arg.remove.start; at < msg->arg.remove.end; at += AGENT_PAGE)
                        set_contents(o->contents, at, 0);
                    if (msg->event == UFFD_EVENT_UNMAP) {
                        struct uffdio_range range = { msg->arg.remove.start, msg->arg.remove.end - msg->arg.remove.start };
                        ioctl(o->uffd, UFFDIO_WAKE, &range);
                    }
                    break;
                case UFFD_EVENT_REMAP:
                    /* Moved: the pages' marks go with them (outside the ranges, nobody knows). */
                    for (uint64_t off = 0; off < msg->arg.remap.len; off += AGENT_PAGE) {
                        int had = has_contents(o->contents, msg->arg.remap.from + off);
                        set_contents(o->contents, msg->arg.remap.to + off, had);
                        set_contents(o->contents, msg->arg.remap.from + off, 0);
                    }
                    break;
                case UFFD_EVENT_FORK: {
                    int ufd = tibet_move_high((int)msg->arg.fork.ufd);
                    void *copy = count < AGENT_MAX_SERVED
                        ? mmap(NULL, o->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) : MAP_FAILED;
                    if (ufd >= 0 && copy != MAP_FAILED) {
                        memcpy(copy, o->contents, o->bytes);
                        served[count++] = (struct orphan){ ufd, copy, o->bytes };
                    } else {
                        /* No room: the grandchild's registration goes, and it reads zeros
                         * where this child had pages only the engine could give. */
                        if (copy != MAP_FAILED)
                            syscall(SYS_munmap, copy, o->bytes);
                        if (ufd >= 0)
                            close(ufd);
                    }
                    break;
                }
                default:
                    break;
                }
            }
        }
    }
}

static void *agent_loop(void *arg)
{
    struct agent *a = arg;
    int ours = 1;
    ssize_t n;
    for (;;) {
        struct agent_request request;
        struct iovec data = { &request, sizeof request };
        union {
            struct cmsghdr header;
            char space[CMSG_SPACE(2 * sizeof(int))];
        } control;
        struct msghdr message = { .msg_iov = &data, .msg_iovlen = 1, .msg_control = control.space, .msg_controllen = sizeof control.space };
        n = recvmsg(a->connection, &message, MSG_CMSG_CLOEXEC);
        /* ECONNRESET: the engine's end closed with the hello or an answer unread. It comes
         * before what is still queued here (a custody, a release), then the end (0). */
        if (n < 0 && (errno == EINTR || errno == ECONNRESET))
            continue;
        int received[2] = { -1, -1 };
        for (struct cmsghdr *c = n > 0 ? CMSG_FIRSTHDR(&message) : NULL; c; c = CMSG_NXTHDR(&message, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
                for (size_t k = 0; k < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); k++) {
                    int fd;
                    memcpy(&fd, CMSG_DATA(c) + k * sizeof(int), sizeof fd);
                    if (k < 2 && received[k] < 0)
                        received[k] = fd;
                    else
                        close(fd);
                }
        ours = still_ours(a->connection, a->connection_dev, a->connection_ino);
        if (ours && n == (ssize_t)sizeof request && request.kind == AGENT_CUSTODY && received[0] >= 0 && received[1] >= 0) {
            custody_take(a, received[0], received[1]);
            continue;
        }
        for (int k = 0; k < 2; k++)
            if (received[k] >= 0)
                close(received[k]);
        if (!ours || n != (ssize_t)sizeof request)
            break; /* the engine is gone (0), spoke nonsense, or the number is not ours any more */
        if (request.kind == AGENT_RELEASE) {
            custody_release(a, 1);
            continue;
        }
        if (request.kind != AGENT_TAKE_OUT)
            break;
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
    if (n == 0 && ours && a->custody_uffd >= 0 && still_ours(a->custody_uffd, a->custody_dev, a->custody_ino)) {
        /* The engine's end closed without AGENT_RELEASE: it died, or exec'd. */
        int connection = a->connection;
        a->connection = -1;
        close(connection);
        orphan_serve(a);
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
    /* The parent's custody is the parent's: its map stays mapped (shared, harmless), its
     * descriptor is closed here. */
    if (a->custody_uffd >= 0 && still_ours(a->custody_uffd, a->custody_dev, a->custody_ino))
        close(a->custody_uffd);
    a->custody_uffd = -1;
    a->contents = NULL;
    a->connection = a->pagemap = a->scratch_uffd = -1;
    a->scratch = NULL; /* MADV_WIPEONFORK: the copy here is zeros; the mapping stays */
}

/* In a forked child, right after fork() returned 0 (from the shim's fork), with the
 * child's end of the socketpair the shim made before the fork. */
void tibet_agent_start_in_child(int connection, tibet_pthread_create_fn create_thread)
{
    struct agent *a = &the_agent;
    struct stat st;
    a->scratch_uffd = a->pagemap = a->custody_uffd = -1;
    a->scratch = NULL;
    a->contents = NULL;
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
