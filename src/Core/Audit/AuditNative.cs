using System.Runtime.InteropServices;

namespace Tibet.Core.Audit;

/// <summary>
/// The libc calls behind the audit log. .NET's FileStream cannot be used: it has no
/// O_APPEND, and it takes its own non-blocking flock for FileShare emulation, which fails
/// (instead of waiting) while another process holds the log's lock.
/// </summary>
internal static unsafe partial class AuditNative
{
    private const string Library = "libc";

    public const int O_RDONLY = 0x0;
    public const int O_RDWR = 0x2;
    public const int O_CREAT = 0x40;
    public const int O_APPEND = 0x400;
    public const int O_CLOEXEC = 0x80000;
    public const int O_NOFOLLOW = 0x20000;
    public const int O_NONBLOCK = 0x800;

    public const int LOCK_SH = 1;
    public const int LOCK_EX = 2;
    public const int LOCK_NB = 4;
    public const int LOCK_UN = 8;

    public const int SEEK_END = 2;

    public const int EINTR = 4;
    public const int ENOENT = 2;
    public const int EWOULDBLOCK = 11;
    public const int ELOOP = 40;

    public const uint S_IFMT = 0xF000;
    public const uint S_IFREG = 0x8000;

    /// <summary>struct stat of x86-64 (asm/stat.h); only st_mode is read here.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 144)]
    public struct FileStatus
    {
        [FieldOffset(24)] public uint Mode;
    }

    /// <summary>https://man7.org/linux/man-pages/man2/fstat.2.html</summary>
    [LibraryImport(Library, EntryPoint = "fstat", SetLastError = true)]
    public static partial int fstat(int fd, FileStatus* status);

    /// <summary>https://man7.org/linux/man-pages/man2/fsync.2.html</summary>
    [LibraryImport(Library, EntryPoint = "fsync", SetLastError = true)]
    public static partial int fsync(int fd);

    /// <summary>https://man7.org/linux/man-pages/man2/open.2.html (the mode argument is
    /// variadic in C; on x86-64 and arm64 Linux it is passed like a fixed argument).</summary>
    [LibraryImport(Library, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string pathname, int flags, uint mode);

    /// <summary>https://man7.org/linux/man-pages/man2/flock.2.html</summary>
    [LibraryImport(Library, EntryPoint = "flock", SetLastError = true)]
    public static partial int flock(int fd, int operation);

    /// <summary>https://man7.org/linux/man-pages/man2/lseek.2.html</summary>
    [LibraryImport(Library, EntryPoint = "lseek", SetLastError = true)]
    public static partial long lseek(int fd, long offset, int whence);

    /// <summary>https://man7.org/linux/man-pages/man2/pread.2.html</summary>
    [LibraryImport(Library, EntryPoint = "pread", SetLastError = true)]
    public static partial nint pread(int fd, byte* buffer, nuint count, long offset);

    /// <summary>https://man7.org/linux/man-pages/man2/write.2.html</summary>
    [LibraryImport(Library, EntryPoint = "write", SetLastError = true)]
    public static partial nint write(int fd, byte* buffer, nuint count);

    /// <summary>https://man7.org/linux/man-pages/man2/ftruncate.2.html</summary>
    [LibraryImport(Library, EntryPoint = "ftruncate", SetLastError = true)]
    public static partial int ftruncate(int fd, long length);

    /// <summary>https://man7.org/linux/man-pages/man2/close.2.html</summary>
    [LibraryImport(Library, EntryPoint = "close", SetLastError = true)]
    public static partial int close(int fd);

    /// <summary>https://man7.org/linux/man-pages/man2/geteuid.2.html</summary>
    [LibraryImport(Library, EntryPoint = "geteuid")]
    public static partial uint geteuid();

    public static int LastErrno => Marshal.GetLastPInvokeError();

    public static string Describe(int errno) => Marshal.GetPInvokeErrorMessage(errno);

    /// <summary>flock, retried when a signal interrupts the wait.</summary>
    public static int Lock(int fd, int operation)
    {
        int result;
        while ((result = flock(fd, operation)) < 0 && LastErrno == EINTR)
        {
        }
        return result;
    }

    /// <summary>fsync, retried when a signal interrupts it.</summary>
    public static int FsyncRetrying(int fd)
    {
        int result;
        while ((result = fsync(fd)) < 0 && LastErrno == EINTR)
        {
        }
        return result;
    }

    /// <summary>"a character device", "a FIFO"...: what a file that is not regular is.</summary>
    public static string DescribeType(uint mode) => (mode & S_IFMT) switch
    {
        0x2000 => "a character device",
        0x6000 => "a block device",
        0x1000 => "a FIFO",
        0xC000 => "a socket",
        0x4000 => "a directory",
        0xA000 => "a symbolic link",
        _ => $"a file of type 0{Convert.ToString((mode & S_IFMT) >> 12, 8)}",
    };

    /// <summary>Reads exactly <paramref name="destination"/>.Length bytes at
    /// <paramref name="offset"/>, or fewer only at end of file; -1 on error.</summary>
    public static long ReadAt(int fd, Span<byte> destination, long offset)
    {
        long total = 0;
        fixed (byte* p = destination)
        {
            while (total < destination.Length)
            {
                nint read = pread(fd, p + total, (nuint)(destination.Length - total), offset + total);
                if (read < 0)
                {
                    if (LastErrno == EINTR) continue;
                    return -1;
                }
                if (read == 0)
                    break;
                total += read;
            }
        }
        return total;
    }
}
