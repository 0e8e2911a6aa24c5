using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>Opening and closing descriptors (fcntl.h, unistd.h). open marshals its path
/// (UTF-8, on the stack when short), so it stays off the fault path; close may run there.</summary>
internal static partial class Libc
{
    public const int O_RDONLY = 0x0;
    public const int O_RDWR = 0x2;
    public const int O_CREAT = 0x40;
    public const int O_APPEND = 0x400;
    public const int O_NONBLOCK = 0x800;
    public const int O_DIRECT = 0x4000; // x86_64
    public const int O_NOFOLLOW = 0x20000;
    public const int O_PATH = 0x200000;
    public const int O_CLOEXEC = 0x80000;

    // https://man7.org/linux/man-pages/man2/open.2.html
    [LibraryImport(Library, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string pathname, int flags);

    /// <summary>open(2) with the mode a file created by O_CREAT gets (the mode argument is
    /// variadic in C; on x86-64 and arm64 Linux it is passed like a fixed argument).</summary>
    // https://man7.org/linux/man-pages/man2/open.2.html
    [LibraryImport(Library, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string pathname, int flags, uint mode);

    /// <summary>open(2) of a NUL-terminated path the caller wrote itself: nothing is
    /// marshalled, so it may run on the fault path (Threading.ThreadCpu).</summary>
    // https://man7.org/linux/man-pages/man2/open.2.html
    [LibraryImport(Library, EntryPoint = "open", SetLastError = true)]
    public static unsafe partial int open(byte* pathname, int flags);

    // https://man7.org/linux/man-pages/man2/close.2.html
    [LibraryImport(Library, EntryPoint = "close", SetLastError = true)]
    public static partial int close(int fd);
}
