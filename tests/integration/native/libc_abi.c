/*
 * Prints the libc declarations tibet re-declares in src/Core/Interop/Libc.cs (struct
 * stat and the file constants of the GGUF map path, the audit log and the identity
 * files), one "name value" per line, for
 * LibcAbiTests. This must be C: only a C compiler reading glibc's headers can say what
 * the structs really look like.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define VALUE(c) printf("%s %llu\n", #c, (unsigned long long)(c))

int main(void)
{
    printf("sizeof_stat %zu\n", sizeof(struct stat));
    printf("offsetof_stat.st_mode %zu\n", offsetof(struct stat, st_mode));
    printf("offsetof_stat.st_uid %zu\n", offsetof(struct stat, st_uid));
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
    VALUE(LOCK_SH);
    VALUE(LOCK_EX);
    VALUE(LOCK_NB);
    VALUE(LOCK_UN);
    VALUE(EINTR);
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
    return 0;
}
