using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>Descriptor control (fcntl.h): duplicating above a number, close-on-exec.
/// Does not call malloc (<see cref="HighDescriptors"/> runs on the fault handler thread).</summary>
internal static partial class Libc
{
    public const int F_DUPFD = 0;
    public const int F_GETFD = 1;
    public const int F_SETFD = 2;
    public const int F_DUPFD_CLOEXEC = 1030;
    public const int FD_CLOEXEC = 1;

    /// <summary>fcntl with an int argument (the argument is variadic in C; on x86-64 and
    /// arm64 Linux it is passed like a fixed argument).</summary>
    // https://man7.org/linux/man-pages/man2/fcntl.2.html
    [LibraryImport(Library, EntryPoint = "fcntl", SetLastError = true)]
    public static partial int fcntl(int fd, int cmd, int arg);
}
