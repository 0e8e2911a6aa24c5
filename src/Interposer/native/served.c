/*
 * A forked child's own large allocations, served by the custodian (issue 12).
 *
 * The program's engine runs in the program (managed code). A forked child cannot run
 * managed code, so before this file its large allocations ran in plaintext, and a daemon
 * (whose first parent exits) or a prefork server's workers held all their data so. Here,
 * at its first large allocation, a child opens a userfaultfd of its own, hands it to the
 * custodian (a process tibet-run
 * started, see src/Core/Custodian), registers each large allocation on it and tells the
 * custodian, which serves its faults and seals its pages as the program's engine does.
 * The custodian outlives the child's parent: a daemon stays served.
 *
 * Why this must be C: it runs in a forked child, where the runtime's threads are gone and
 * managed code cannot run.
 *
 * Connections. The custodian listens on an abstract SOCK_SEQPACKET socket whose name
 * every process of the tree finds in TIBET_CUSTODIAN_SOCKET (a name, not an inherited
 * descriptor: nothing of tibet's may survive an exec into a program tibet does not
 * interpose, and a daemon that closes every descriptor must still find it). A child
 * connects, makes two socketpairs and sends, in one message, its hello and three
 * descriptors: the custodian's ends of both pairs and the child's userfaultfd; then it
 * closes that connection. The custodian checks who connected (SO_PEERCRED: the pid, and
 * a uid of the tree's). Nothing but the custodian can reach the pairs.
 *   control (child -> custodian, one request at a time, under control_lock):
 *     welcome: custodian -> child first, with the take-out window (a memfd) attached
 *     struct served_arena { start, length } -> struct served_status { status }
 *     struct served_arena { 0, pid } + the child's agent end -> struct served_status (fork)
 *   agent (custodian -> this file's thread), one request per eviction batch:
 *     struct served_take_header { count } + count x struct served_take { start, pages, slot }
 *       -> struct served_taken { moved, gone, again } (bit i: window slot i)
 * A take-out moves pages with UFFDIO_MOVE (atomic against the child's writers; only
 * possible inside the child's own mm) into a private scratch area, copies them into the
 * shared window at `slot` for the custodian to seal, and wipes the scratch.
 *
 * Features. The child sends its userfaultfd before UFFDIO_API, with the features it
 * needs, and the custodian issues UFFDIO_API: fork events need CAP_SYS_PTRACE of whoever
 * asks for them, which a program run as another user (tibet-run --user) lacks and the
 * custodian has. A process of the tree can ask the same for its own engine's userfaultfd
 * (hello kind SERVED_KIND_API, answered with a served_status; see Userfaultfd.Open).
 *
 * Failure. If the custodian goes (its end of the agent connection hangs up), the thread
 * keeps the userfaultfd open, so that the ranges stay registered, and answers every fault
 * with UFFDIO_POISON: the faulting thread gets SIGBUS, never zeros and never a silent
 * hang. New large allocations then run in plaintext, announced (see the shim).
 *
 * Until the thread runs, everything here is a raw system call, except pthread_create,
 * which is libc's own (passed in by the shim). The thread and the allocation paths
 * allocate nothing from malloc.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "child_support.h"
#include "served.h"
#include "served_protocol.h"

#include "uffd_compat.h"

#define SERVED_PAGE 4096UL
#define SERVED_MAX_TAKE 64              /* pages per take-out request (one mask word) */
#define SERVED_STACK (64 * 1024)        /* below any redirection threshold */
#define SERVED_RESERVATION TIBET_SERVED_SPAN /* each of the two pools below */
#define SERVED_EXTENTS 4096             /* freed extents kept for reuse */
#define SERVED_MAPS 4096                /* served anonymous mappings remembered, for mremap */
#define SERVED_RETIRED 64               /* freed blocks kept registered for reuse */
#define SERVED_RETIRED_BYTES (1ULL << 30) /* and at most this much of them */

/* The features the custodian's engine works with (PageEngine): fork events, so that a
 * grandchild's copy of these arenas is served too; discards, unmaps and remaps, so the
 * books follow the program; write-protect faults for clean-page tracking; poison. */
#define SERVED_FEATURES (UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE \
                         | UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_POISON \
                         | UFFD_FEATURE_PAGEFAULT_FLAG_WP)



/* IDLE: the thread waits for the child's first large allocation before it connects, so
 * that a fork that executes another program at once (a shell's commands) costs the
 * custodian nothing. */
enum { SERVED_NONE, SERVED_IDLE, SERVED_STARTING, SERVED_READY, SERVED_FAILED };

/* The header page before each carved block: never registered, so reading it needs the
 * custodian for nothing. */
struct served_block {
    uint64_t magic;
    uint64_t start;   /* where the carved extent starts (before the header for an alignment above a page) */
    uint64_t extent;  /* the carved extent, bytes: padding, header page, data pages */
    uint64_t size;    /* what the program asked for */
    uint64_t data;    /* the data pages registered after the header, bytes: all the program may use */
    uint64_t owner;   /* the served instance that registered it (served.instance; a forked child inherits its parent's) */
};

struct served_identity {
    dev_t dev;
    ino_t ino;
};


static struct {
    int configured;        /* a custodian's name was given */
    struct sockaddr_un address; /* the custodian's abstract address */
    socklen_t address_length;
    int device;            /* an inherited /dev/userfaultfd (tibet-run --user), or -1 */
    int state;             /* SERVED_*, futex word */
    pid_t pid;             /* the process the state below is for (a raw fork copies it) */
    long custodian_uid;    /* TIBET_CUSTODIAN_UID, or -1 */
    struct served_identity control_id, uffd_id, agent_id, scratch_id;
    const char *why;       /* set before the state turns SERVED_FAILED */
    int uffd, control, agent, scratch_uffd;
    unsigned char *scratch, *window;
    uint64_t instance;     /* random, per served process (not its pid, which a descendant may reuse) */
    uint32_t window_pages;
    int register_wp;
    /* Two pools of one PROT_NONE reservation, carved alike: malloc blocks (the first
     * span: free() knows them by one compare, tibet_served_owns) and mappings (the second:
     * a program's own allocator, jemalloc say, carves its small blocks from those, and
     * free() must never take one of them for a block of ours). */
    struct served_pool {
        uintptr_t bump, limit; /* the pool's uncarved space */
        int lock;
        uint32_t count;
        struct { uintptr_t at; uint64_t length; } extents[SERVED_EXTENTS];
    } blocks, maps_pool;
    int control_lock;
    /* Blocks freed by this process, still registered and taken on by the custodian, their
     * contents discarded (MADV_DONTNEED: the custodian drops their pages, which read as
     * zeros again): a malloc of a size one fits takes it back without a round trip to the
     * custodian. Under retired_lock. */
    int retired_lock;
    uint32_t retired_count;
    uint64_t retired_bytes;
    struct served_block *retired[SERVED_RETIRED];
    int maps_lock;
    uint32_t map_count;
    /* A served mapping, or what is left of one: booked_end is where the custodian's books
     * of it end (its end when it was made), so that a release of a part ending there is
     * known to be the mapping's tail (see take_part). */
    struct { uintptr_t start; uint64_t length; uintptr_t booked_end; int reservation; } maps[SERVED_MAPS];
} served = { .device = -1, .uffd = -1, .control = -1, .agent = -1, .scratch_uffd = -1 };

/* See served.h: read by the shim's free() on every call, so one plain variable, set
 * once with a single store. */
uintptr_t tibet_served_base = (uintptr_t)1 << 63;

static void spin_lock(int *lock)
{
    while (__atomic_exchange_n(lock, 1, __ATOMIC_ACQUIRE))
        while (__atomic_load_n(lock, __ATOMIC_RELAXED))
            __builtin_ia32_pause();
}

static void spin_unlock(int *lock) { __atomic_store_n(lock, 0, __ATOMIC_RELEASE); }

static void set_state(int state)
{
    if (state == SERVED_FAILED && !served.why)
        served.why = "the custodian could not be reached";
    __atomic_store_n(&served.state, state, __ATOMIC_RELEASE);
    syscall(SYS_futex, &served.state, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}


int tibet_served_configure(const char *name, long custodian_uid)
{
    served.custodian_uid = custodian_uid;
    size_t length = strlen(name);
    if (length == 0 || length >= sizeof served.address.sun_path - 1)
        return -1;
    for (size_t i = 0; i < length; i++)
        if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') || name[i] == '-'))
            return -1;
    memset(&served.address, 0, sizeof served.address);
    served.address.sun_family = AF_UNIX;
    memcpy(served.address.sun_path + 1, name, length); /* abstract: a zero byte first */
    served.address_length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + length);
    served.configured = 1;
    return 0;
}

int tibet_served_active(void) { return served.configured; }

static int is_the_custodian(int connection);
static uint64_t new_instance(void);

/* The budget share's counts (see tibet_served_share): set once the custodian serves this
 * process (set_up), read by the program's engine on its fault path, so one load and no
 * system call. */
static int64_t *volatile tibet_served_share_counts;

/* The custodian's lifetime: it stays while the program lives, while it serves a process,
 * and while a process holds a connection of this kind. A daemon's child, whose parent
 * exits before the child's first large allocation, would otherwise find the custodian
 * gone (measured: a child that allocates 2 s after its parent exited ran in plaintext).
 * Forked children share this connection; every exec'd program makes its own, since
 * close-on-exec keeps it out of programs tibet does not interpose. Costs one connection
 * per program start. */
void tibet_served_hold_custodian(void)
{
    if (!served.configured)
        return;
    int custodian = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (custodian < 0)
        return;
    struct served_hello hello = { SERVED_MAGIC, SERVED_VERSION, (int32_t)syscall(SYS_getpid), SERVED_KIND_KEEP, 0 };
    if (connect(custodian, (struct sockaddr *)&served.address, served.address_length) != 0 || !is_the_custodian(custodian)
        || send(custodian, &hello, sizeof hello, MSG_NOSIGNAL) != (ssize_t)sizeof hello) {
        close(custodian);
        return; /* no custodian (any more): the allocations say so when they come */
    }
    tibet_move_high(custodian); /* held, never used again */
}

/* Whether this process's served state is its own: a child made by a raw fork system call
 * (or vfork, clone) copied its parent's, connections included, which it must never use. */
static int own_state(void) { return served.pid == (pid_t)syscall(SYS_getpid); }

const char *tibet_served_why_not(void)
{
    if (served.configured && !own_state())
        return "this process was forked by a raw system call, not libc's fork, which tibet does not see";
    switch (__atomic_load_n(&served.state, __ATOMIC_ACQUIRE)) {
    case SERVED_NONE:
        return "this tree has no custodian (tibet-run starts one, unless TIBET_CUSTODIAN=0)";
    case SERVED_READY:
        return "the custodian could not take this allocation on";
    default:
        return served.why ? served.why : "the custodian could not be reached";
    }
}


/* ---- the thread ------------------------------------------------------------------- */

static int send_with_descriptors(int socket, const void *data, size_t length, const int *fds, int count)
{
    char control[CMSG_SPACE(3 * sizeof(int))];
    memset(control, 0, sizeof control);
    struct iovec part = { (void *)data, length };
    struct msghdr message = { .msg_iov = &part, .msg_iovlen = 1, .msg_control = control, .msg_controllen = CMSG_SPACE(count * sizeof(int)) };
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(count * sizeof(int));
    memcpy(CMSG_DATA(header), fds, count * sizeof(int));
    return sendmsg(socket, &message, MSG_NOSIGNAL) == (ssize_t)length ? 0 : -1;
}

/* The welcome, with two descriptors: the take-out window's, put in *window, and the
 * budget share's (a page of two counters, see below), put in *share. 0, or -1 when they
 * did not come, or anything else did. */
static int receive_welcome(int socket, struct served_welcome *welcome, int *window, int *share)
{
    char control[CMSG_SPACE(2 * sizeof(int))];
    struct iovec part = { welcome, sizeof *welcome };
    struct msghdr message = { .msg_iov = &part, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
    ssize_t n;
    do
        n = recvmsg(socket, &message, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    int fds[2] = { -1, -1 };
    struct cmsghdr *header = n > 0 ? CMSG_FIRSTHDR(&message) : NULL;
    if (header && header->cmsg_level == SOL_SOCKET && header->cmsg_type == SCM_RIGHTS) {
        if (header->cmsg_len == CMSG_LEN(2 * sizeof(int)))
            memcpy(fds, CMSG_DATA(header), sizeof fds);
        else if (header->cmsg_len == CMSG_LEN(sizeof(int)))
            memcpy(fds, CMSG_DATA(header), sizeof(int));
    }
    if (n != (ssize_t)sizeof *welcome || welcome->magic != SERVED_MAGIC || welcome->status != 0 || fds[0] < 0 || fds[1] < 0
        || welcome->window_pages == 0 || welcome->window_pages > SERVED_MAX_TAKE) {
        if (fds[0] >= 0)
            close(fds[0]);
        if (fds[1] >= 0)
            close(fds[1]);
        return -1;
    }
    *window = fds[0];
    *share = fds[1];
    return 0;
}

/* The custodian is gone: every fault on the registered ranges is answered with SIGBUS,
 * and events are read so that the threads reporting them go on. Never returns. */
static void poison_forever(void)
{
    struct uffd_msg messages[16];
    for (;;) {
        ssize_t n = read(served.uffd, messages, sizeof messages);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                struct pollfd wait = { served.uffd, POLLIN, 0 };
                poll(&wait, 1, -1);
                continue;
            }
            return; /* the descriptor is unusable: nothing can be answered */
        }
        for (size_t i = 0; i < (size_t)n / sizeof messages[0]; i++) {
            if (messages[i].event == UFFD_EVENT_PAGEFAULT) {
                struct uffdio_poison poison = {
                    .range = { messages[i].arg.pagefault.address & ~(SERVED_PAGE - 1), SERVED_PAGE },
                };
                if (ioctl(served.uffd, UFFDIO_POISON, &poison) != 0 && errno != EEXIST) {
                    /* A write-protect fault on a present page cannot be poisoned: lift the
                     * protection instead, which lets the write land on what is there. */
                    struct uffdio_writeprotect lift = { .range = poison.range, .mode = 0 };
                    ioctl(served.uffd, UFFDIO_WRITEPROTECT, &lift);
                }
            } else if (messages[i].event == UFFD_EVENT_FORK) {
                close((int)messages[i].arg.fork.ufd); /* a grandchild's copy: nobody serves it */
            }
        }
    }
}

/* One run of a request: its pages go to the window from request->slot on; the answer's
 * bits are window slots. */
static void take_out(const struct served_take *request, struct served_taken *answer)
{
    uint32_t pages = request->pages > SERVED_MAX_TAKE ? SERVED_MAX_TAKE : request->pages;
    if (request->slot >= served.window_pages || pages > served.window_pages - request->slot)
        return; /* nonsense: nothing is taken (all refused) */
    uint32_t base = request->slot;
    for (uint32_t i = 0; i < pages;) {
        /* Into the scratch page of the same slot: a move needs an empty destination, and
         * slots are distinct within a request (the scratch is emptied after each). */
        struct uffdio_move move = {
            .dst = (uint64_t)(uintptr_t)(served.scratch + (base + i) * SERVED_PAGE),
            .src = request->start + i * SERVED_PAGE,
            .len = (pages - i) * SERVED_PAGE,
        };
        int rc = ioctl(served.scratch_uffd, UFFDIO_MOVE, &move);
        uint32_t moved = move.move > 0 ? (uint32_t)(move.move / SERVED_PAGE) : 0;
        for (uint32_t k = 0; k < moved; k++) {
            answer->moved |= 1ULL << (base + i + k);
            memcpy(served.window + (base + i + k) * SERVED_PAGE, served.scratch + (base + i + k) * SERVED_PAGE, SERVED_PAGE);
            memset(served.scratch + (base + i + k) * SERVED_PAGE, 0, SERVED_PAGE); /* plaintext: wiped, then dropped */
        }
        i += moved;
        if (rc == 0 || moved > 0)
            continue;
        if (errno == ENOENT)
            answer->gone |= 1ULL << (base + i);
        else if (errno == EAGAIN)
            answer->again |= 1ULL << (base + i);
        i++; /* refused (EBUSY: shared with a child of its own) unless marked above */
    }
}

void tibet_served_set_device(int device) { served.device = device; }

/* The custodian's name is listed in /proc/net/unix, and once the custodian is gone
 * anyone could take it: the process at the other end must run as the uid tibet-run named
 * (TIBET_CUSTODIAN_UID, its own), or as root. */
static int is_the_custodian(int connection)
{
    struct ucred peer;
    socklen_t length = sizeof peer;
    return getsockopt(connection, SOL_SOCKET, SO_PEERCRED, &peer, &length) == 0
        && (peer.uid == 0 || (served.custodian_uid >= 0 && peer.uid == (uid_t)served.custodian_uid));
}

static void remember(int fd, struct served_identity *id)
{
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0) {
        id->dev = st.st_dev;
        id->ino = st.st_ino;
    }
}

/* Whether `fd` is still the descriptor set up here: a program that closed every
 * descriptor (closerange) and opened others may have reused the number. */
static int still_ours(int fd, const struct served_identity *id)
{
    struct stat st;
    return fd >= 0 && fstat(fd, &st) == 0 && st.st_dev == id->dev && st.st_ino == id->ino;
}

/* A userfaultfd for this process, without UFFDIO_API: the custodian issues that (see
 * "Features" above), so that the fork events a process of an unprivileged user may not
 * ask for (they need CAP_SYS_PTRACE, checked against who issues UFFDIO_API) are enabled
 * by the custodian, which has it. */
int tibet_open_userfaultfd(int flags)
{
    int fd = (int)syscall(SYS_userfaultfd, flags);
    /* Not permitted to this user (vm.unprivileged_userfaultfd=0): through the device
     * descriptor tibet-run opened as root, which may create one for this process. */
    if (fd < 0 && errno == EPERM && served.device >= 0)
        fd = ioctl(served.device, USERFAULTFD_IOC_NEW, flags);
    return tibet_move_high(fd);
}

static int open_userfaultfd(void) { return tibet_open_userfaultfd(O_CLOEXEC | O_NONBLOCK); }

static int set_up(void)
{
    int control[2] = { -1, -1 }, agent[2] = { -1, -1 };
    served.uffd = open_userfaultfd();
    if (served.uffd < 0) {
        served.why = "this child cannot open a userfaultfd";
        return -1;
    }
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, control) != 0)
        return -1;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, agent) != 0) {
        close(control[0]);
        close(control[1]);
        return -1;
    }
    served.control = tibet_move_high(control[0]);
    served.agent = tibet_move_high(agent[0]);
    /* A custodian that never answers must not hold the child's allocations for ever:
     * after 30 s they run in plaintext, said. */
    struct timeval patience = { 30, 0 };
    setsockopt(served.control, SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof patience);
    setsockopt(served.control, SOL_SOCKET, SO_SNDTIMEO, &patience, sizeof patience);
    remember(served.control, &served.control_id);
    remember(served.agent, &served.agent_id);
    remember(served.uffd, &served.uffd_id);
    struct served_hello hello = { SERVED_MAGIC, SERVED_VERSION, (int32_t)syscall(SYS_getpid), SERVED_KIND_SERVE, SERVED_FEATURES };
    int theirs[3] = { control[1], agent[1], served.uffd };
    int custodian = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    int sent = custodian >= 0 && connect(custodian, (struct sockaddr *)&served.address, served.address_length) == 0
               && is_the_custodian(custodian)
        ? send_with_descriptors(custodian, &hello, sizeof hello, theirs, 3) : -1;
    if (custodian >= 0)
        close(custodian);
    close(control[1]);
    close(agent[1]);
    if (sent != 0 || served.control < 0 || served.agent < 0)
        return -1;

    struct served_welcome welcome;
    int window, share;
    if (receive_welcome(served.control, &welcome, &window, &share) != 0) {
        served.why = "the custodian refused this process or is gone (see its line on stderr)";
        return -1;
    }
    /* The budget share: this process's resident pages, counted by the custodian's engine
     * and by this process's own (its model maps, with TIBET_SERVE=custodian), against one
     * budget (Tibet.Core.Paging.Eviction.ResidentBudgetShare). */
    void *counters = mmap(NULL, SERVED_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, share, 0);
    close(share);
    if (counters == MAP_FAILED) {
        close(window);
        return -1;
    }
    madvise(counters, SERVED_PAGE, MADV_DONTFORK); /* a child's share is its own */
    tibet_served_share_counts = counters;
    void *mapped = mmap(NULL, welcome.window_pages * SERVED_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, window, 0);
    close(window);
    if (mapped == MAP_FAILED)
        return -1;
    served.window = mapped;
    served.window_pages = welcome.window_pages;
    served.register_wp = welcome.register_wp != 0;
    madvise(mapped, welcome.window_pages * SERVED_PAGE, MADV_DONTDUMP);
    madvise(mapped, welcome.window_pages * SERVED_PAGE, MADV_DONTFORK);

    /* The scratch area pages are moved into (child_support.h says how it is kept). */
    void *scratch;
    served.scratch_uffd = tibet_open_scratch(SERVED_MAX_TAKE * SERVED_PAGE, &scratch);
    served.scratch = scratch;
    if (served.scratch_uffd < 0)
        return -1;
    remember(served.scratch_uffd, &served.scratch_id);

    /* Carved blocks: PROT_NONE until carved, so nothing else is ever mapped there. A
     * grandchild keeps its parent's reservation: the blocks it inherited are in it. */
    if (tibet_served_base != (uintptr_t)1 << 63)
        return 0;
    void *reservation = mmap(NULL, 2 * SERVED_RESERVATION, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (reservation == MAP_FAILED)
        return -1;
    served.blocks.bump = (uintptr_t)reservation;
    served.blocks.limit = served.maps_pool.bump = (uintptr_t)reservation + SERVED_RESERVATION;
    served.maps_pool.limit = (uintptr_t)reservation + 2 * SERVED_RESERVATION;
    __atomic_store_n(&tibet_served_base, (uintptr_t)reservation, __ATOMIC_RELEASE);
    return 0;
}

static void *served_loop(void *unused)
{
    (void)unused;
    while (__atomic_load_n(&served.state, __ATOMIC_ACQUIRE) == SERVED_IDLE)
        syscall(SYS_futex, &served.state, FUTEX_WAIT_PRIVATE, SERVED_IDLE, NULL, NULL, 0);
    if (set_up() != 0) {
        set_state(SERVED_FAILED); /* nothing was registered: large allocations run as without a custodian */
        return NULL;
    }
    set_state(SERVED_READY);
    for (;;) {
        struct {
            struct served_take_header header;
            struct served_take entries[SERVED_MAX_TAKE];
        } request;
        if (!still_ours(served.agent, &served.agent_id))
            break; /* closed by the program (and perhaps reused): never read someone else's */
        ssize_t n = recv(served.agent, &request, sizeof request, 0);
        if (n < 0 && errno == EINTR)
            continue;
        /* No spinning for the next request here: measured, a spinning agent took the CPU
         * the program and the custodian's handler needed (see bench/results, custodian). */
        if (n < (ssize_t)sizeof request.header || request.header.count > SERVED_MAX_TAKE
            || (size_t)n != sizeof request.header + request.header.count * sizeof request.entries[0])
            break; /* the custodian is gone (0), or spoke nonsense */
        struct served_taken answer = { 0, 0, 0, 0 };
        for (uint32_t k = 0; k < request.header.count; k++)
            take_out(&request.entries[k], &answer);
        if (answer.moved)
            madvise(served.scratch, SERVED_MAX_TAKE * SERVED_PAGE, MADV_DONTNEED);
        if (send(served.agent, &answer, sizeof answer, MSG_NOSIGNAL) != (ssize_t)sizeof answer)
            break;
    }
    served.why = "the custodian is gone (faults on this child's served pages now raise SIGBUS)";
    set_state(SERVED_FAILED);
    if (still_ours(served.uffd, &served.uffd_id))
        poison_forever();
    return NULL;
}

/* In a forked child, right after fork() returned 0 (from the shim's fork): forget what
 * the parent had (its connections are the parent's; its reservation's blocks came along
 * as copies, served through the fork event), and start this child's own thread. */
void tibet_served_start_in_child(tibet_pthread_create_fn create_thread)
{
    if (!served.configured)
        return;
    /* Every descriptor here is close-on-exec and was the parent's a moment ago, unless the
     * parent closed it and the number now names one of the program's (closefrom, then
     * open): checked before it is closed. */
    if (still_ours(served.uffd, &served.uffd_id)) close(served.uffd);
    if (still_ours(served.control, &served.control_id)) close(served.control);
    if (still_ours(served.agent, &served.agent_id)) close(served.agent);
    if (still_ours(served.scratch_uffd, &served.scratch_id)) close(served.scratch_uffd);
    /* The window was MADV_DONTFORK: it is not in this child, and its range may already
     * hold something else (measured: the stack of a thread started in the child before
     * this ran, which an munmap here tore away). Never unmapped here. The scratch area was
     * MADV_WIPEONFORK: its copy is this child's, zeros, and is let go. */
    if (served.scratch) munmap(served.scratch, SERVED_MAX_TAKE * SERVED_PAGE);
    served.uffd = served.control = served.agent = served.scratch_uffd = -1;
    served.window = NULL;
    served.scratch = NULL;
    tibet_served_share_counts = NULL; /* MADV_DONTFORK, as the window: not in this child */
    /* Another thread of the parent may have held one at the fork. The served mappings the
     * child inherited stay in the table: they are registered on its userfaultfd too (the
     * fork event), and an mremap of them must not be the kernel's either. */
    /* A table whose lock was held at the fork may be half-updated: another thread of the
     * parent was changing it, and exists no more. Its free extents could overlap live
     * blocks, its map entries name wrong ranges: such a table is dropped (the pools' free
     * space is then never given out again here; a mapping off the table stays mapped until
     * the child ends, and an mremap of it is the kernel's). The locks are not held across the fork instead: a thread of
     * the program's allocator that called mmap under its own lock would deadlock the fork
     * in that allocator's fork handler (jemalloc: prog_fork_stress). */
    if (served.blocks.lock)
        served.blocks.count = 0;
    if (served.maps_pool.lock)
        served.maps_pool.count = 0;
    if (served.maps_lock)
        served.map_count = 0;
    served.blocks.lock = served.maps_pool.lock = served.control_lock = served.maps_lock = served.retired_lock = 0;
    /* The parent's retired blocks are registered on the userfaultfd this child inherited,
     * whose pages the parent's engine serves: never this child's to hand out. */
    served.retired_count = 0;
    served.retired_bytes = 0;
    served.state = SERVED_IDLE;
    served.pid = (pid_t)syscall(SYS_getpid);
    served.instance = new_instance();
    served.why = NULL;

    int created = tibet_start_child_thread(create_thread, SERVED_STACK, served_loop, NULL, "tibet-served");
    if (created != 0) {
        served.why = "its thread could not be created";
        served.state = SERVED_FAILED;
    }
}

/* A value no other served process of the tree has had: the owner of the blocks this one
 * registers (a pid could be a descendant's again, after its ancestor ended). */
static uint64_t new_instance(void)
{
    uint64_t value = 0;
    if (syscall(SYS_getrandom, &value, sizeof value, 0) != (long)sizeof value || value == 0)
        value = ((uint64_t)syscall(SYS_getpid) << 32) ^ (uint64_t)(uintptr_t)&value ^ 1;
    return value;
}

/* In the process tibet runs in, with TIBET_SERVE=custodian (tibet-run --serve custodian):
 * its own large allocations go to the custodian as a forked child's do, so that their
 * keys never enter it. Its thread waits, as a child's does, for the first one. */
int tibet_served_start_self(tibet_pthread_create_fn create_thread)
{
    if (!served.configured)
        return -1;
    served.pid = (pid_t)syscall(SYS_getpid);
    served.instance = new_instance();
    served.state = SERVED_IDLE;
    if (tibet_start_child_thread(create_thread, SERVED_STACK, served_loop, NULL, "tibet-served") != 0) {
        served.why = "its thread could not be created";
        served.state = SERVED_FAILED;
        return -1;
    }
    return 0;
}

/* See served.h. */
int64_t *tibet_served_share(void)
{
    return tibet_served_share_counts;
}

/* ---- forks --------------------------------------------------------------------------- */

int tibet_served_serving(void)
{
    return served.configured && own_state() && __atomic_load_n(&served.state, __ATOMIC_ACQUIRE) == SERVED_READY;
}

/* The request on the control connection: { 0, pid } with the agent's end attached (a
 * range never starts at 0). The answer only keeps the conversation in step. */
void tibet_served_forked(pid_t pid, int agent)
{
    if (tibet_served_serving() && still_ours(served.control, &served.control_id)) {
        struct served_arena forked = { 0, (uint64_t)pid };
        struct served_status status;
        spin_lock(&served.control_lock);
        if (send_with_descriptors(served.control, &forked, sizeof forked, &agent, 1) == 0) {
            ssize_t n;
            do
                n = recv(served.control, &status, sizeof status, 0);
            while (n < 0 && errno == EINTR);
        }
        spin_unlock(&served.control_lock);
    }
    close(agent);
}

/* ---- the allocation paths ------------------------------------------------------------ */

/* Waits until the thread has connected (or failed). */
static int ready(void)
{
    int idle = SERVED_IDLE;
    /* The first large allocation wakes the thread, which connects now. */
    if (__atomic_compare_exchange_n(&served.state, &idle, SERVED_STARTING, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        syscall(SYS_futex, &served.state, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
    int state;
    while ((state = __atomic_load_n(&served.state, __ATOMIC_ACQUIRE)) == SERVED_STARTING)
        syscall(SYS_futex, &served.state, FUTEX_WAIT_PRIVATE, SERVED_STARTING, NULL, NULL, 0);
    return state == SERVED_READY;
}

/* Registers [start, start+length) and has the custodian take it on: 0 or an errno. */
static int announce(uintptr_t start, uint64_t length)
{
    if (!still_ours(served.uffd, &served.uffd_id) || !still_ours(served.control, &served.control_id))
        return EBADF; /* the program closed them (and may have reused the numbers) */
    struct uffdio_register reg = {
        .range = { start, length },
        .mode = UFFDIO_REGISTER_MODE_MISSING | (served.register_wp ? UFFDIO_REGISTER_MODE_WP : 0),
    };
    if (ioctl(served.uffd, UFFDIO_REGISTER, &reg) != 0)
        return errno;
    struct served_arena arena = { start, length };
    struct served_status status = { EIO, 0 };
    spin_lock(&served.control_lock);
    if (send(served.control, &arena, sizeof arena, MSG_NOSIGNAL) == (ssize_t)sizeof arena) {
        ssize_t n;
        do
            n = recv(served.control, &status, sizeof status, 0);
        while (n < 0 && errno == EINTR);
        if (n != (ssize_t)sizeof status)
            status.status = EIO;
    }
    spin_unlock(&served.control_lock);
    if (status.status != 0) {
        struct uffdio_range range = { start, length };
        ioctl(served.uffd, UFFDIO_UNREGISTER, &range);
    }
    return status.status;
}

static uintptr_t carve(struct served_pool *pool, uint64_t extent)
{
    uintptr_t at = 0;
    spin_lock(&pool->lock);
    for (uint32_t i = 0; i < pool->count; i++) {
        if (pool->extents[i].length < extent)
            continue;
        at = pool->extents[i].at;
        pool->extents[i].at += extent;
        pool->extents[i].length -= extent;
        if (pool->extents[i].length == 0)
            pool->extents[i] = pool->extents[--pool->count];
        break;
    }
    if (!at && pool->limit - pool->bump >= extent) {
        at = pool->bump;
        pool->bump += extent;
    }
    spin_unlock(&pool->lock);
    return at;
}

static void uncarve(struct served_pool *pool, uintptr_t at, uint64_t extent)
{
    /* MAP_FIXED replaces in one step: the kernel reports the unmap of the registered part
     * to the custodian (UNMAP event), and the range is a reservation again. It returns
     * once the custodian has read that event, so the range can be given out again. */
    mmap((void *)at, extent, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
    spin_lock(&pool->lock);
    if (pool->count < SERVED_EXTENTS) {
        pool->extents[pool->count].at = at;
        pool->extents[pool->count].length = extent;
        pool->count++;
    } /* else the address space is given up, never reused: 1 TiB of it */
    spin_unlock(&pool->lock);
}

/* A retired block whose data pages hold `data` bytes, and not more than twice that (a
 * larger one would hold address space and books for nothing); NULL if none. */
static struct served_block *take_retired(uint64_t data)
{
    struct served_block *best = NULL;
    uint32_t at = 0;
    spin_lock(&served.retired_lock);
    for (uint32_t i = 0; i < served.retired_count; i++) {
        struct served_block *b = served.retired[i];
        uint64_t has = b->data;
        if (has >= data && has <= 2 * data && (!best || b->extent < best->extent)) {
            best = b;
            at = i;
        }
    }
    if (best) {
        served.retired[at] = served.retired[--served.retired_count];
        served.retired_bytes -= best->extent;
    }
    spin_unlock(&served.retired_lock);
    return best;
}

/* A block of `size` bytes for a served process's malloc (a forked child's, or the
 * program's with TIBET_SERVE=custodian), from the custodian; NULL if this process is not
 * served (the caller then decides: plaintext, announced, or refused). */
void *tibet_served_alloc(size_t size, size_t alignment, int zeroed)
{
    /* posix_memalign and aligned_alloc allow any power of two; above a page, the extent
     * carries the padding (at most 1 GiB of it: larger alignments are not served). */
    if (__atomic_load_n(&served.state, __ATOMIC_ACQUIRE) == SERVED_NONE || alignment > (1UL << 30) || !own_state() || !ready())
        return NULL;
    uint64_t data = ((uint64_t)size + SERVED_PAGE - 1) & ~(SERVED_PAGE - 1);
    uint64_t padding = alignment > SERVED_PAGE ? alignment - SERVED_PAGE : 0;
    if (data == 0 || data > SERVED_RESERVATION / 4)
        return NULL;
    /* Not for calloc: a retired block's pages were discarded, and read as zeros, but an
     * eviction racing the discard under load can keep a page's old contents on the
     * custodian's books (ProgramEvents: a discard it could not write-protect in time). */
    if (alignment <= SERVED_PAGE && !zeroed) {
        struct served_block *reused = take_retired(data);
        if (reused) {
            reused->size = size;
            reused->magic = SERVED_MAGIC;
            return (char *)reused + SERVED_PAGE;
        }
    }
    uint64_t extent = padding + SERVED_PAGE + data;
    uintptr_t at = carve(&served.blocks, extent);
    if (!at)
        return NULL;
    uintptr_t p = alignment > SERVED_PAGE ? (at + SERVED_PAGE + alignment - 1) & ~(uintptr_t)(alignment - 1) : at + SERVED_PAGE;
    if (mmap((void *)at, extent, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) == MAP_FAILED) {
        uncarve(&served.blocks, at, extent);
        return NULL;
    }
    /* The padding an alignment leaves, before the header and after the data, is never
     * registered: never the program's either. */
    if (p - SERVED_PAGE > at)
        mprotect((void *)at, p - SERVED_PAGE - at, PROT_NONE);
    if (at + extent > p + data)
        mprotect((void *)(p + data), at + extent - (p + data), PROT_NONE);
    madvise((void *)p, data, MADV_NOHUGEPAGE);
    madvise((void *)p, data, MADV_DONTDUMP);
    if (announce(p, data) != 0) {
        uncarve(&served.blocks, at, extent);
        return NULL;
    }
    struct served_block *header = (struct served_block *)(p - SERVED_PAGE);
    header->magic = SERVED_MAGIC;
    header->start = at;
    header->extent = extent;
    header->size = size;
    header->data = data;
    header->owner = served.instance;
    return (void *)p;
}

/* An anonymous mapping of `length` bytes for a forked child's mmap, served by the
 * custodian; NULL if not served. Carved from the reservation, as blocks are, never placed
 * by the kernel: an address the kernel hands out again while the UNMAP event of its last
 * mapping is still unread by the custodian would be adopted first and then dropped by
 * that event (measured: SIGBUS in a program whose threads map and unmap concurrently).
 * A reservation range is given out again only after its UNMAP event was read (uncarve).
 * The program's munmap and mremap of it come back here (tibet_served_release). */
void *tibet_served_map(size_t length, int prot)
{
    if (__atomic_load_n(&served.state, __ATOMIC_ACQUIRE) == SERVED_NONE || !own_state() || !ready())
        return NULL;
    uint64_t rounded = ((uint64_t)length + SERVED_PAGE - 1) & ~(SERVED_PAGE - 1);
    /* Every served mapping is on the table, so that its munmap is known to be one (see
     * tibet_served_release): a full table serves no more. */
    if (rounded == 0 || rounded > SERVED_RESERVATION / 2 || __atomic_load_n(&served.map_count, __ATOMIC_RELAXED) >= SERVED_MAPS - 1)
        return NULL;
    uintptr_t at = carve(&served.maps_pool, rounded);
    if (!at)
        return NULL;
    void *p = (void *)at;
    /* A reservation (PROT_NONE) is mapped so from the start: the kernel charges no commit
     * for it, as for the program's own reservation, even where MAP_NORESERVE is ignored
     * (vm.overcommit_memory=2); userfaultfd registers it all the same. */
    if (mmap(p, rounded, prot == PROT_NONE ? PROT_NONE : PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) == MAP_FAILED) {
        uncarve(&served.maps_pool, at, rounded);
        return NULL;
    }
    madvise(p, rounded, MADV_NOHUGEPAGE);
    madvise(p, rounded, MADV_DONTDUMP);
    if (announce(at, rounded) != 0) {
        uncarve(&served.maps_pool, at, rounded);
        return NULL;
    }
    spin_lock(&served.maps_lock);
    int remembered = served.map_count < SERVED_MAPS;
    if (remembered) {
        served.maps[served.map_count].start = at;
        served.maps[served.map_count].length = rounded;
        served.maps[served.map_count].booked_end = at + rounded;
        served.maps[served.map_count].reservation = prot == PROT_NONE;
        served.map_count++;
    }
    spin_unlock(&served.maps_lock);
    if (!remembered) { /* the table filled meanwhile: given back, as if refused */
        uncarve(&served.maps_pool, at, rounded);
        return NULL;
    }
    return p;
}

/* One served mapping's part in [a, b), taken off the table: 1 with *x, *y (the part) and
 * *relist (whether its range may be given out again), 0 when no mapping has a part there.
 * The table is changed here, the address space by the caller, outside the lock. */
static int take_part(uintptr_t a, uintptr_t b, uintptr_t *x, uintptr_t *y, int *relist)
{
    int found = 0;
    spin_lock(&served.maps_lock);
    for (uint32_t i = 0; i < served.map_count && !found; i++) {
        uintptr_t s = served.maps[i].start, e = s + served.maps[i].length;
        if (b <= s || e <= a)
            continue;
        found = 1;
        *x = a > s ? a : s;
        *y = b < e ? b : e;
        /* The custodian's books of the mapping trim a released tail (PageEngine.AdoptArena),
         * so a whole mapping or its tail may be given out again. A head or a middle stays
         * on its books as unmapped pages until the rest goes: given out again, it would be
         * refused, every time. */
        *relist = *y == served.maps[i].booked_end;
        if (*x == s && *y == e) {
            served.maps[i] = served.maps[--served.map_count];
        } else if (*x == s) {
            served.maps[i].start = *y;
            served.maps[i].length = e - *y;
        } else if (*y == e) {
            served.maps[i].length = *x - s;
        } else {
            served.maps[i].length = *x - s;
            if (served.map_count < SERVED_MAPS) {
                served.maps[served.map_count].start = *y;
                served.maps[served.map_count].length = e - *y;
                served.maps[served.map_count].booked_end = served.maps[i].booked_end;
                served.maps[served.map_count].reservation = served.maps[i].reservation;
                served.map_count++;
            } /* else the rest is never released: held to the process's end (address space
               * of the reservation; its pages are the custodian's) */
        }
    }
    spin_unlock(&served.maps_lock);
    return found;
}

/* See served.h. */
int tibet_served_release(void *start, size_t length)
{
    uintptr_t a = (uintptr_t)start;
    uint64_t rounded = ((uint64_t)length + SERVED_PAGE - 1) & ~(SERVED_PAGE - 1);
    uintptr_t pool = tibet_served_base + SERVED_RESERVATION, end = pool + SERVED_RESERVATION; /* the mappings' pool */
    if (tibet_served_base == (uintptr_t)1 << 63 || (a & (SERVED_PAGE - 1)) != 0 || rounded == 0
        || rounded > SERVED_RESERVATION || a < pool || a > end - rounded)
        return 0;
    /* Only what is a served mapping now: released twice, or never given out, a range is
     * left as it is (a second listing of a free range would give it out twice). */
    uintptr_t x, y;
    int relist;
    while (take_part(a, a + rounded, &x, &y, &relist)) {
        if (relist)
            uncarve(&served.maps_pool, x, y - x);
        else
            mmap((void *)x, y - x, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
    }
    return 1;
}

/* Looks [start, start+length) up in the table: a served mapping (or a part of one left
 * by unmaps) that holds it wholly (inside), or that overlaps it. 1 and, if asked, that
 * mapping's reservation flag; 0 if there is none. */
static int look_up(const void *start, size_t length, int inside, int *reservation)
{
    uintptr_t a = (uintptr_t)start, b = a + length;
    if (!own_state() || length == 0 || b <= a)
        return 0;
    int found = 0;
    spin_lock(&served.maps_lock);
    for (uint32_t i = 0; i < served.map_count && !found; i++) {
        uintptr_t s = served.maps[i].start, e = s + served.maps[i].length;
        found = inside ? s <= a && b <= e : s < b && a < e;
        if (found && reservation)
            *reservation = served.maps[i].reservation;
    }
    spin_unlock(&served.maps_lock);
    return found;
}

/* See served.h. */
int tibet_served_part(const void *start, size_t length, int *reservation)
{
    *reservation = 0;
    return look_up(start, length, 1, reservation);
}

/* See served.h. */
int tibet_served_overlaps(const void *start, size_t length) { return look_up(start, length, 0, NULL); }

/* See served.h. */
int tibet_served_covers(const void *start, size_t length) { return look_up(start, length, 1, NULL); }

/* See served.h. A mapping cut in two (a map of the program's placed in its middle: the
 * JVM maps archived heap regions from a file inside its heap) is kept as its two parts,
 * still served; with the table full, it is forgotten (a MAP_FIXED commit in it is then the
 * kernel's, said, and an mremap of either part too). */
void tibet_served_unmapped(const void *start, size_t length)
{
    if (!own_state() || length == 0)
        return;
    uintptr_t a = (uintptr_t)start, b = a + ((length + SERVED_PAGE - 1) & ~(SERVED_PAGE - 1));
    spin_lock(&served.maps_lock);
    for (uint32_t i = 0; i < served.map_count;) {
        uintptr_t s = served.maps[i].start, e = s + served.maps[i].length;
        if (b <= s || e <= a) {
            i++;
            continue;
        }
        if (a <= s && b >= e) {
            served.maps[i] = served.maps[--served.map_count];
            continue;
        }
        if (a <= s) {
            served.maps[i].start = b;
            served.maps[i].length = e - b;
        } else if (b >= e) {
            served.maps[i].length = a - s;
        } else if (served.map_count < SERVED_MAPS) {
            served.maps[i].length = a - s;
            served.maps[served.map_count].start = b;
            served.maps[served.map_count].length = e - b;
            served.maps[served.map_count].booked_end = served.maps[i].booked_end;
            served.maps[served.map_count].reservation = served.maps[i].reservation;
            served.map_count++;
        } else {
            served.maps[i] = served.maps[--served.map_count];
            continue;
        }
        i++;
    }
    spin_unlock(&served.maps_lock);
}

static struct served_block *block_of(const void *p)
{
    struct served_block *header = (struct served_block *)((uintptr_t)p - SERVED_PAGE);
    return ((uintptr_t)p & (SERVED_PAGE - 1)) == 0 && header->magic == SERVED_MAGIC ? header : NULL;
}

void tibet_served_free(void *p)
{
    struct served_block *header = block_of(p);
    if (!header)
        abort(); /* not a block of ours inside our reservation: the program's heap is corrupt */
    uint64_t start = header->start, extent = header->extent;
    header->magic = 0;
    /* Kept for reuse if this process registered it (see served.retired). Its contents go
     * first: MADV_DONTNEED returns once the custodian has read the REMOVE event, and its
     * pages, resident or sealed, are gone from both sides. */
    if (header->owner == served.instance && own_state() && extent <= SERVED_RETIRED_BYTES && served.retired_count < SERVED_RETIRED) {
        if (madvise((char *)header + SERVED_PAGE, header->data, MADV_DONTNEED) == 0) {
            spin_lock(&served.retired_lock);
            if (served.retired_count < SERVED_RETIRED && served.retired_bytes + extent <= SERVED_RETIRED_BYTES) {
                served.retired[served.retired_count++] = header;
                served.retired_bytes += extent;
                header = NULL;
            }
            spin_unlock(&served.retired_lock);
            if (!header)
                return;
        }
    }
    uncarve(&served.blocks, start, extent);
}

size_t tibet_served_usable_size(const void *p)
{
    struct served_block *header = block_of(p);
    return header ? header->data : 0;
}
