/*
 * Prints the libc declarations tibet re-declares in src/Core/Interop/Libc/ (struct
 * stat, struct rlimit, and the constants of the engine, the GGUF map path, the audit
 * log, the identity files and the launcher), one "name value" per line, for
 * LibcAbiTests. This must be C: only a C compiler reading glibc's headers can say what
 * the structs really look like.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <poll.h>
#include <signal.h>
#include <sys/auxv.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/syscall.h>
#include <unistd.h>

#define VALUE(c) printf("%s %llu\n", #c, (unsigned long long)(c))

int main(void)
{
    printf("sizeof_stat %zu\n", sizeof(struct stat));
    printf("offsetof_stat.st_mode %zu\n", offsetof(struct stat, st_mode));
    printf("offsetof_stat.st_uid %zu\n", offsetof(struct stat, st_uid));
    printf("offsetof_stat.st_rdev %zu\n", offsetof(struct stat, st_rdev));
    printf("offsetof_stat.st_size %zu\n", offsetof(struct stat, st_size));
    printf("offsetof_stat.st_dev %zu\n", offsetof(struct stat, st_dev));
    printf("offsetof_stat.st_ino %zu\n", offsetof(struct stat, st_ino));
    printf("offsetof_stat.st_mtim %zu\n", offsetof(struct stat, st_mtim));
    VALUE(O_RDONLY);
    VALUE(O_DIRECT);
    VALUE(O_CLOEXEC);
    VALUE(O_RDWR);
    VALUE(O_CREAT);
    VALUE(O_APPEND);
    VALUE(O_NONBLOCK);
    VALUE(O_NOFOLLOW);
    VALUE(S_IFMT);
    VALUE(S_IFREG);
    VALUE(S_IFDIR);
    VALUE(S_IFCHR);
    VALUE(O_PATH);
    VALUE(LOCK_SH);
    VALUE(LOCK_EX);
    VALUE(LOCK_NB);
    VALUE(LOCK_UN);
    VALUE(EINTR);
    VALUE(EBADF);
    VALUE(ENOENT);
    VALUE(ENOTDIR);
    VALUE(ELOOP);
    VALUE(EWOULDBLOCK);
    VALUE(POSIX_FADV_DONTNEED);
    VALUE(SEEK_SET);
    VALUE(SEEK_CUR);
    VALUE(SEEK_END);
    VALUE(MAP_SHARED);
    VALUE(MAP_TYPE);
    VALUE(MAP_FIXED_NOREPLACE);
    VALUE(MAP_PRIVATE);
    VALUE(MAP_FIXED);
    VALUE(MAP_ANONYMOUS);
    VALUE(MAP_NORESERVE);
    VALUE(PROT_NONE);
    VALUE(PROT_READ);
    VALUE(PROT_WRITE);
    VALUE(MADV_DONTNEED);
    VALUE(MADV_FREE);
    VALUE(MADV_NOHUGEPAGE);
    VALUE(MADV_DONTDUMP);
    VALUE(MREMAP_MAYMOVE);
    VALUE(MREMAP_FIXED);
    VALUE(F_DUPFD);
    VALUE(F_GETFD);
    VALUE(F_SETFD);
    VALUE(F_DUPFD_CLOEXEC);
    VALUE(FD_CLOEXEC);
    printf("sizeof_rlimit %zu\n", sizeof(struct rlimit));
    printf("offsetof_rlimit.rlim_max %zu\n", offsetof(struct rlimit, rlim_max));
    VALUE(RLIMIT_NOFILE);
    VALUE(RLIMIT_MEMLOCK);
    VALUE(RLIM_INFINITY);
    VALUE(PR_GET_DUMPABLE);
    VALUE(PR_SET_DUMPABLE);
    VALUE(AT_SECURE);
    VALUE(EFD_NONBLOCK);
    VALUE(EFD_CLOEXEC);
    VALUE(POLLIN);
    printf("sizeof_pollfd %zu\n", sizeof(struct pollfd));
    VALUE(SIGBUS);
    VALUE(SIGPIPE);
    VALUE(SYS_tgkill);
    VALUE(SYS_getrandom);
    VALUE(SYS_userfaultfd);
    VALUE(SYS_mremap);
    VALUE(SYS_memfd_secret);
    VALUE(SYS_pidfd_open);
    VALUE(ECONNABORTED);
    VALUE(SOCK_STREAM);
    VALUE(AF_UNIX);
    VALUE(SOCK_SEQPACKET);
    VALUE(SOCK_NONBLOCK);
    VALUE(SOCK_CLOEXEC);
    VALUE(SOL_SOCKET);
    VALUE(SO_PEERCRED);
    VALUE(SO_TYPE);
    VALUE(SO_RCVTIMEO);
    VALUE(SO_SNDTIMEO);
    printf("sizeof_timeval %zu\n", sizeof(struct timeval));
    VALUE(MSG_DONTWAIT);
    VALUE(MSG_NOSIGNAL);
    printf("sizeof_sockaddr_un %zu\n", sizeof(struct sockaddr_un));
    printf("offsetof_sockaddr_un.sun_path %zu\n", offsetof(struct sockaddr_un, sun_path));
    printf("sizeof_ucred %zu\n", sizeof(struct ucred));
    printf("offsetof_ucred.uid %zu\n", offsetof(struct ucred, uid));
    VALUE(SCM_RIGHTS);
    VALUE(MSG_CMSG_CLOEXEC);
    VALUE(MSG_CTRUNC);
    VALUE(MFD_CLOEXEC);
    printf("sizeof_msghdr %zu\n", sizeof(struct msghdr));
    printf("offsetof_msghdr.msg_control %zu\n", offsetof(struct msghdr, msg_control));
    printf("offsetof_msghdr.msg_flags %zu\n", offsetof(struct msghdr, msg_flags));
    printf("sizeof_cmsghdr %zu\n", sizeof(struct cmsghdr));
    printf("cmsg_space_4_fds %zu\n", (size_t)CMSG_SPACE(4 * sizeof(int)));
    printf("cmsg_len_0 %zu\n", (size_t)CMSG_LEN(0));
    return 0;
}
