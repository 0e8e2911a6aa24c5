using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>
/// The libc functions the engine calls. Each import names its man page; the
/// declarations follow the C prototypes so that they can be read side by side.
/// </summary>
/// <remarks>
/// None of these allocate managed memory, and none of them call malloc inside libc,
/// which is what lets the fault path use them.
/// </remarks>
internal static unsafe partial class Libc
{
    private const string Library = "libc";

    public const int PROT_NONE = 0x0;
    public const int PROT_READ = 0x1;
    public const int PROT_WRITE = 0x2;

    public const int MAP_SHARED = 0x01;
    public const int MAP_PRIVATE = 0x02;
    public const int MAP_TYPE = 0x0f;
    public const int MAP_FIXED_NOREPLACE = 0x100000;
    public const int SEEK_SET = 0;
    public const int SEEK_CUR = 1;
    public const int SEEK_END = 2;
    public const int MAP_FIXED = 0x10;
    public const int MAP_ANONYMOUS = 0x20;
    public const int MAP_NORESERVE = 0x4000;
    public static readonly nint MAP_FAILED = -1;

    public const int MADV_DONTNEED = 4;
    public const int MADV_FREE = 8;
    public const int MADV_DONTDUMP = 16;
    public const int MADV_NOHUGEPAGE = 15;

    public const int O_RDONLY = 0x0;
    public const int O_RDWR = 0x2;
    public const int O_CREAT = 0x40;
    public const int O_APPEND = 0x400;
    public const int O_DIRECT = 0x4000; // x86_64
    public const int O_NONBLOCK = 0x800;
    public const int O_NOFOLLOW = 0x20000;
    public const int O_CLOEXEC = 0x80000;

    public const int LOCK_SH = 1;
    public const int LOCK_EX = 2;
    public const int LOCK_NB = 4;
    public const int LOCK_UN = 8;

    public const int EINTR = 4;
    public const int EIO = 5;
    public const int EACCES = 13;
    public const int EAGAIN = 11;
    public const int EWOULDBLOCK = EAGAIN;
    public const int ENOMEM = 12;
    public const int EFAULT = 14;
    public const int EBUSY = 16;
    public const int EEXIST = 17;
    public const int ENOENT = 2;
    public const int ENOTDIR = 20;
    public const int EINVAL = 22;
    public const int EPERM = 1;
    public const int ENOSYS = 38;
    public const int ESRCH = 3;
    public const int ELOOP = 40;

    public const short POLLIN = 0x1;

    public const int S_IFMT = 0xF000;
    public const int S_IFREG = 0x8000;
    public const int S_IFDIR = 0x4000;
    public const int POSIX_FADV_DONTNEED = 4;
    public const long SYS_cachestat = 451; // x86_64, Linux 6.5+

    public const long SYS_userfaultfd = 323; // x86_64
    public const long SYS_tgkill = 234;
    public const long SYS_getrandom = 318;

    public const int SIGBUS = 7;
    public const int EFD_CLOEXEC = 0x80000;
    public const int EFD_NONBLOCK = 0x800;

    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    /// <summary>struct stat of x86-64 (asm/stat.h); only the fields tibet reads are
    /// named. The ABI test compares size and offsets with the C header.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 144)]
    public struct Stat
    {
        [FieldOffset(0)] public ulong st_dev;
        [FieldOffset(8)] public ulong st_ino;
        [FieldOffset(24)] public uint st_mode;
        [FieldOffset(28)] public uint st_uid;
        [FieldOffset(48)] public long st_size;
        [FieldOffset(88)] public long st_mtim_sec;
        [FieldOffset(96)] public long st_mtim_nsec;
    }

    /// <summary>https://man7.org/linux/man-pages/man2/mincore.2.html</summary>
    [LibraryImport(Library, EntryPoint = "mincore", SetLastError = true)]
    public static partial int mincore(nint addr, nuint length, byte* vec);

    /// <summary>https://man7.org/linux/man-pages/man2/fstat.2.html</summary>
    [LibraryImport(Library, EntryPoint = "fstat", SetLastError = true)]
    public static partial int fstat(int fd, Stat* buf);

    /// <summary>https://man7.org/linux/man-pages/man2/pread.2.html</summary>
    [LibraryImport(Library, EntryPoint = "pread", SetLastError = true)]
    public static partial nint pread(int fd, void* buf, nuint count, long offset);

    /// <summary>https://man7.org/linux/man-pages/man2/lseek.2.html</summary>
    [LibraryImport(Library, EntryPoint = "lseek", SetLastError = true)]
    public static partial long lseek(int fd, long offset, int whence);

    /// <summary>https://man7.org/linux/man-pages/man2/posix_fadvise.2.html (returns the
    /// error number instead of setting errno)</summary>
    [LibraryImport(Library, EntryPoint = "posix_fadvise")]
    public static partial int posix_fadvise(int fd, long offset, long len, int advice);

    /// <summary>https://man7.org/linux/man-pages/man2/mmap.2.html</summary>
    [LibraryImport(Library, EntryPoint = "mmap", SetLastError = true)]
    public static partial nint mmap(nint addr, nuint length, int prot, int flags, int fd, long offset);

    /// <summary>https://man7.org/linux/man-pages/man2/munmap.2.html</summary>
    [LibraryImport(Library, EntryPoint = "munmap", SetLastError = true)]
    public static partial int munmap(nint addr, nuint length);

    /// <summary>https://man7.org/linux/man-pages/man2/madvise.2.html</summary>
    [LibraryImport(Library, EntryPoint = "madvise", SetLastError = true)]
    public static partial int madvise(nint addr, nuint length, int advice);

    /// <summary>mlock(2), checked: a failure is counted and said once on stderr (see
    /// <see cref="MemoryLocking"/>).</summary>
    public static int mlock(nint addr, nuint length) => MemoryLocking.Lock(addr, length);

    /// <summary>https://man7.org/linux/man-pages/man2/ioctl.2.html</summary>
    [LibraryImport(Library, EntryPoint = "ioctl", SetLastError = true)]
    public static partial int ioctl(int fd, ulong request, void* argp);

    /// <summary>https://man7.org/linux/man-pages/man2/read.2.html</summary>
    [LibraryImport(Library, EntryPoint = "read", SetLastError = true)]
    public static partial nint read(int fd, void* buf, nuint count);

    /// <summary>https://man7.org/linux/man-pages/man2/write.2.html</summary>
    [LibraryImport(Library, EntryPoint = "write", SetLastError = true)]
    public static partial nint write(int fd, void* buf, nuint count);

    /// <summary>https://man7.org/linux/man-pages/man2/open.2.html</summary>
    [LibraryImport(Library, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string pathname, int flags);

    /// <summary>https://man7.org/linux/man-pages/man2/open.2.html, with the mode a file
    /// created by O_CREAT gets (the mode argument is variadic in C; on x86-64 and arm64
    /// Linux it is passed like a fixed argument).</summary>
    [LibraryImport(Library, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string pathname, int flags, uint mode);

    /// <summary>https://man7.org/linux/man-pages/man2/close.2.html</summary>
    [LibraryImport(Library, EntryPoint = "close", SetLastError = true)]
    public static partial int close(int fd);

    /// <summary>https://man7.org/linux/man-pages/man2/fsync.2.html</summary>
    [LibraryImport(Library, EntryPoint = "fsync", SetLastError = true)]
    public static partial int fsync(int fd);

    /// <summary>https://man7.org/linux/man-pages/man2/ftruncate.2.html</summary>
    [LibraryImport(Library, EntryPoint = "ftruncate", SetLastError = true)]
    public static partial int ftruncate(int fd, long length);

    /// <summary>https://man7.org/linux/man-pages/man2/flock.2.html</summary>
    [LibraryImport(Library, EntryPoint = "flock", SetLastError = true)]
    public static partial int flock(int fd, int operation);

    /// <summary>https://man7.org/linux/man-pages/man2/poll.2.html</summary>
    [LibraryImport(Library, EntryPoint = "poll", SetLastError = true)]
    public static partial int poll(PollFd* fds, nuint nfds, int timeout);

    /// <summary>https://man7.org/linux/man-pages/man2/eventfd.2.html</summary>
    [LibraryImport(Library, EntryPoint = "eventfd", SetLastError = true)]
    public static partial int eventfd(uint initval, int flags);

    /// <summary>https://man7.org/linux/man-pages/man2/syscall.2.html (userfaultfd, getrandom, gettid, tgkill)</summary>
    [LibraryImport(Library, EntryPoint = "syscall", SetLastError = true)]
    public static partial long syscall(long number, long a1, long a2, long a3);

    /// <summary>https://man7.org/linux/man-pages/man2/syscall.2.html, for calls with a
    /// fourth argument that must be passed (cachestat's flags): the three-argument form
    /// would leave that register holding whatever it held.</summary>
    [LibraryImport(Library, EntryPoint = "syscall", SetLastError = true)]
    public static partial long syscall(long number, long a1, long a2, long a3, long a4);

    /// <summary>https://man7.org/linux/man-pages/man2/getpid.2.html</summary>
    [LibraryImport(Library, EntryPoint = "getpid")]
    public static partial int getpid();

    /// <summary>https://man7.org/linux/man-pages/man2/geteuid.2.html</summary>
    [LibraryImport(Library, EntryPoint = "geteuid")]
    public static partial uint geteuid();

    /// <summary>https://man7.org/linux/man-pages/man3/memcpy.3.html. Used so that
    /// arena memory is touched from native code, where a blocked fault never holds up
    /// the garbage collector (see <see cref="Paging.ArenaMemory"/>).</summary>
    [LibraryImport(Library, EntryPoint = "memcpy")]
    public static partial nint memcpy(void* dest, void* src, nuint n);

    /// <summary>https://man7.org/linux/man-pages/man3/memset.3.html</summary>
    [LibraryImport(Library, EntryPoint = "memset")]
    public static partial nint memset(void* s, int c, nuint n);

    /// <summary>https://man7.org/linux/man-pages/man3/memcmp.3.html</summary>
    [LibraryImport(Library, EntryPoint = "memcmp")]
    public static partial int memcmp(void* s1, void* s2, nuint n);

    public static int LastErrno => Marshal.GetLastPInvokeError();

    /// <summary>What <paramref name="errno"/> means, in strerror(3)'s words.</summary>
    public static string ErrorMessage(int errno) => Marshal.GetPInvokeErrorMessage(errno);

    /// <summary><see cref="ErrorMessage"/> followed by the number.</summary>
    public static string Describe(int errno) => ErrorMessage(errno) + $" (errno {errno})";
}
