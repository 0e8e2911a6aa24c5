using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>syscall(2), for the system calls glibc has no wrapper for (or only a variadic
/// one), and their numbers. Does not call malloc.</summary>
internal static partial class Libc
{
    public const long SYS_tgkill = 234; // x86_64
    public const long SYS_getrandom = 318;
    public const long SYS_userfaultfd = 323;
    public const long SYS_cachestat = 451; // Linux 6.5+
    public const long SYS_pidfd_open = 434; // Linux 5.3+

    /// <summary>Three arguments: userfaultfd, getrandom, tgkill...</summary>
    // https://man7.org/linux/man-pages/man2/syscall.2.html
    [LibraryImport(Library, EntryPoint = "syscall", SetLastError = true)]
    public static partial long syscall(long number, long a1, long a2, long a3);

    /// <summary>For calls with a fourth argument that must be passed (cachestat's flags):
    /// the three-argument form would leave that register holding whatever it held.</summary>
    // https://man7.org/linux/man-pages/man2/syscall.2.html
    [LibraryImport(Library, EntryPoint = "syscall", SetLastError = true)]
    public static partial long syscall(long number, long a1, long a2, long a3, long a4);

    /// <summary>Five arguments (mremap with MREMAP_FIXED).</summary>
    // https://man7.org/linux/man-pages/man2/syscall.2.html
    [LibraryImport(Library, EntryPoint = "syscall", SetLastError = true)]
    public static partial long syscall(long number, long a1, long a2, long a3, long a4, long a5);
}
