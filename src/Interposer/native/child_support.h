/* What the two threads tibet starts in a forked child share (native/agent.c for inherited
 * pages, native/served.c for the child's own): descriptors out of the program's way, the
 * scratch area pages are moved into, and starting a thread that takes no signal. */
#ifndef TIBET_CHILD_SUPPORT_H
#define TIBET_CHILD_SUPPORT_H
#include <pthread.h>
#include <stddef.h>

/* Descriptors tibet keeps in a child sit at or above this, out of the program's way. */
#define TIBET_CHILD_FD_FLOOR 1000

typedef int (*tibet_pthread_create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

/* `fd` moved to TIBET_CHILD_FD_FLOOR or above (close-on-exec), the original closed; a
 * negative or already high `fd` is returned as it is. */
int tibet_move_high(int fd);

/* Maps `bytes` of scratch for UFFDIO_MOVE: no huge pages, not dumped, wiped in a child
 * of this process (which must not inherit plaintext in flight), registered write-protect
 * only on a userfaultfd of its own, so that nothing there ever waits on an event or a
 * fault. Returns that userfaultfd (high, close-on-exec) and the area in *area, or -1 with
 * *area set to what was mapped (NULL if nothing). */
int tibet_open_scratch(size_t bytes, void **area);

/* Starts a detached thread with every signal blocked (the program's signals are not its
 * business) through `create` (libc's pthread_create: the shim's takes its heap lock,
 * which a forked child must never take). 0 or an errno. */
int tibet_start_child_thread(tibet_pthread_create_fn create, size_t stack, void *(*start)(void *), void *arg, const char *name);

#endif
