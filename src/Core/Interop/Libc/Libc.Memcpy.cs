using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>The mem* functions of string.h. Used so that arena memory is touched from
/// native code, where a blocked fault never holds up the garbage collector (see
/// <see cref="Paging.ArenaMemory"/>). No SetLastError: they set no errno, and they are on
/// the hot path.</summary>
internal static unsafe partial class Libc
{
    // https://man7.org/linux/man-pages/man3/memcpy.3.html
    [LibraryImport(Library, EntryPoint = "memcpy")]
    public static partial nint memcpy(void* dest, void* src, nuint n);

    // https://man7.org/linux/man-pages/man3/memset.3.html
    [LibraryImport(Library, EntryPoint = "memset")]
    public static partial nint memset(void* s, int c, nuint n);

    // https://man7.org/linux/man-pages/man3/memcmp.3.html
    [LibraryImport(Library, EntryPoint = "memcmp")]
    public static partial int memcmp(void* s1, void* s2, nuint n);
}
