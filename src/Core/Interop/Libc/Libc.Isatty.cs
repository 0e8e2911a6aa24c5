using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>Whether a descriptor is a terminal (unistd.h).</summary>
internal static partial class Libc
{
    // https://man7.org/linux/man-pages/man3/isatty.3.html
    [LibraryImport(Library, EntryPoint = "isatty", SetLastError = true)]
    public static partial int isatty(int fd);
}
