using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>Duplicating a descriptor onto a chosen number (unistd.h).</summary>
internal static partial class Libc
{
    // https://man7.org/linux/man-pages/man2/dup2.2.html
    [LibraryImport(Library, EntryPoint = "dup2", SetLastError = true)]
    public static partial int dup2(int oldfd, int newfd);
}
