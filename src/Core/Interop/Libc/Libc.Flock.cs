using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>Advisory whole-file locks (sys/file.h), for the audit log and identity files.</summary>
internal static partial class Libc
{
    public const int LOCK_SH = 1;
    public const int LOCK_EX = 2;
    public const int LOCK_NB = 4;
    public const int LOCK_UN = 8;

    // https://man7.org/linux/man-pages/man2/flock.2.html
    [LibraryImport(Library, EntryPoint = "flock", SetLastError = true)]
    public static partial int flock(int fd, int operation);
}
