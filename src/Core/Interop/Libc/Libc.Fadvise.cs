using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>Page-cache advice (fcntl.h).</summary>
internal static partial class Libc
{
    public const int POSIX_FADV_DONTNEED = 4;

    /// <summary>Returns the error number instead of setting errno.</summary>
    // https://man7.org/linux/man-pages/man2/posix_fadvise.2.html
    [LibraryImport(Library, EntryPoint = "posix_fadvise")]
    public static partial int posix_fadvise(int fd, long offset, long len, int advice);
}
