using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>Setting a file's size (unistd.h).</summary>
internal static partial class Libc
{
    // https://man7.org/linux/man-pages/man2/ftruncate.2.html
    [LibraryImport(Library, EntryPoint = "ftruncate", SetLastError = true)]
    public static partial int ftruncate(int fd, long length);
}
