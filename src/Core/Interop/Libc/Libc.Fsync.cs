using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>Flushing a file to its device (unistd.h).</summary>
internal static partial class Libc
{
    // https://man7.org/linux/man-pages/man2/fsync.2.html
    [LibraryImport(Library, EntryPoint = "fsync", SetLastError = true)]
    public static partial int fsync(int fd);
}
