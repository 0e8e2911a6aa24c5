/* The messages between a served process (native/served.c) and the custodian
 * (src/Core/Custodian/ServedProtocol.cs mirrors each; tests/integration/Abi compares the
 * layouts gcc gives these with the custodian's). served.c's comment describes the
 * conversation. */
#ifndef TIBET_SERVED_PROTOCOL_H
#define TIBET_SERVED_PROTOCOL_H
#include <stdint.h>

#define SERVED_MAGIC 0x54494254u /* "TIBT" */
#define SERVED_VERSION 3u

/* SERVED_KIND_SEALED (2) is managed on both sides (CustodianClient); KEEP attaches nothing
 * and keeps the connection open: the custodian stays while any such connection is. */
enum { SERVED_KIND_SERVE = 0, SERVED_KIND_API = 1, SERVED_KIND_KEEP = 3 };

struct served_hello {
    uint32_t magic;
    uint32_t version;
    int32_t pid;
    uint32_t kind;     /* SERVED_KIND_*; SERVE attaches control, agent and userfaultfd */
    uint64_t features; /* what the custodian is to enable with UFFDIO_API on the userfaultfd */
};

struct served_welcome {
    uint32_t magic;
    uint32_t status;        /* 0: served; else the custodian refused (it said why on its stderr) */
    uint32_t window_pages;  /* the attached memfd's size, in pages */
    uint32_t register_wp;   /* register arenas for write protection too */
};

struct served_arena {
    uint64_t start;
    uint64_t length;
};

struct served_status {
    int32_t status; /* 0 or an errno */
    uint32_t reserved;
};

struct served_take_header {
    uint32_t count; /* entries that follow, at most SERVED_MAX_TAKE */
    uint32_t reserved;
};

struct served_take {
    uint64_t start;
    uint32_t pages;
    uint32_t slot; /* where in the window page 0 goes */
};

struct served_taken { /* bit i: window slot i (the window holds at most 64 pages) */
    uint64_t moved; /* the page asked into slot i is there */
    uint64_t gone;  /* nothing was mapped there (ENOENT) */
    uint64_t again; /* the kernel said EAGAIN (an event waits to be read) */
    uint64_t reserved;
};

_Static_assert(sizeof(struct served_hello) == 24, "the custodian's ServedHello mirrors this");
_Static_assert(sizeof(struct served_welcome) == 16, "the custodian's ServedWelcome mirrors this");
_Static_assert(sizeof(struct served_arena) == 16, "the custodian's ServedArena mirrors this");
_Static_assert(sizeof(struct served_status) == 8, "the custodian's ServedStatus mirrors this");
_Static_assert(sizeof(struct served_take_header) == 8, "the custodian's ServedTakeHeader mirrors this");
_Static_assert(sizeof(struct served_take) == 16, "the custodian's ServedTake mirrors this");
_Static_assert(sizeof(struct served_taken) == 32, "the custodian's ServedTaken mirrors this");

#endif
