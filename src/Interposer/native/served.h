/* What the shim calls of native/served.c: a forked child's own large allocations, served
 * by the custodian. */
#ifndef TIBET_SERVED_H
#define TIBET_SERVED_H
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The address range a served process carves its large mallocs from (the first half of a
 * PROT_NONE reservation; its mappings come from the second), so that free() knows such a
 * block by one compare. Until a process reserves it, the base is an address no pointer
 * can be within the span of. */
#define TIBET_SERVED_SPAN (1ULL << 40)
extern uintptr_t tibet_served_base;

static inline int tibet_served_owns(const void *p) { return (uintptr_t)p - tibet_served_base < TIBET_SERVED_SPAN; }

/* In a process tibet-run started: the custodian's abstract socket name
 * (TIBET_CUSTODIAN_SOCKET). 0, or -1 if it is not one of tibet-run's names. */
int tibet_served_configure(const char *name, long custodian_uid);
/* TIBET_USERFAULTFD_FD: an inherited /dev/userfaultfd descriptor, for a child whose user
 * may not call userfaultfd(2) itself (tibet-run --user). */
void tibet_served_set_device(int device);
/* userfaultfd(2) with `flags`, or through that device descriptor where this user may not
 * call it; moved above the program's descriptors. -1 with errno set. */
int tibet_open_userfaultfd(int flags);
/* Holds the custodian: a connection it keeps living for (hello kind KEEP), close-on-exec
 * and so shared by every child this process forks. Called once a process of the tree
 * starts (its exec'd programs each hold their own). */
void tibet_served_hold_custodian(void);
/* Whether a registry was configured: forked children are then served. */
int tibet_served_active(void);
/* In a forked child right after fork() returned 0, with libc's pthread_create. */
void tibet_served_start_in_child(int (*create_thread)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *));
/* In the process tibet runs in (TIBET_SERVE=custodian): its own large allocations are
 * served by the custodian too. 0, or -1 (not configured, or no thread). */
int tibet_served_start_self(int (*create_thread)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *));
/* Whether the custodian serves this process's memory now (its thread is connected):
 * what a child forks off with is served by the custodian, whose engine then takes the
 * child's pages out through the child's agent. */
int tibet_served_serving(void);
/* The count of this process's resident pages that its engine and the custodian's engine
 * for it share (one budget for both), or NULL while the custodian serves nothing here.
 * Exported to the managed side (tibet_shim_served_share). */
int64_t *tibet_served_share(void);
/* The parent's side of a fork while served: the child's agent connection end goes to
 * the custodian, which matches it to the child `pid` (its fork event). Closes `agent`. */
void tibet_served_forked(pid_t pid, int agent);
/* A block (malloc) or a mapping (mmap: readable and writable, or with `prot` PROT_NONE a
 * reservation, inaccessible until the program makes parts of it accessible) served by the
 * custodian, or NULL if this process is not served (no custodian, it refused, or it is gone). */
void *tibet_served_alloc(size_t size, size_t alignment, int zeroed);
void *tibet_served_map(size_t length, int prot);
void tibet_served_free(void *p);
/* Whether [start, start+length) lies wholly inside one served mapping (tibet_served_map)
 * of this process's, or a part of one left by unmaps: an mremap of it must not be the
 * kernel's, which would leave its grown part registered but unserved (SIGBUS).
 * *reservation: the mapping was mapped PROT_NONE (parts of it may still be inaccessible,
 * so its contents cannot be copied). */
int tibet_served_part(const void *start, size_t length, int *reservation);
/* Whether [start, start+length) overlaps any served mapping of this process's: an mremap
 * of a range that does without lying inside one (two neighbours the kernel merged into
 * one area, say) is refused, never left to the kernel. */
int tibet_served_overlaps(const void *start, size_t length);
/* Whether [start, start+length) lies wholly inside one served mapping of this process's:
 * a MAP_FIXED map there is a commit inside the mapping (see the shim's commit_in_arena). */
int tibet_served_covers(const void *start, size_t length);
/* munmap of [start, start+length) inside the mappings' pool: the served mappings in it
 * (or their parts) become reservation again, to be given out once the custodian has read
 * their UNMAP events (a head or a middle never: see served.c); the rest of the range is
 * left as it is. 1 if the range is the pool's (done), 0 if not (the caller unmaps). */
int tibet_served_release(void *start, size_t length);
/* A mapping of the program's own (MAP_FIXED, MREMAP_FIXED) replaced [start,
 * start+length): the served mappings' parts there are forgotten, not released (their range holds
 * the program's mapping now). */
void tibet_served_unmapped(const void *start, size_t length);
size_t tibet_served_usable_size(const void *p);
/* Why a child's allocation was not served, for the shim's one line: a short phrase. */
const char *tibet_served_why_not(void);

#endif
