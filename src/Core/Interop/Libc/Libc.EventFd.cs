using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>Event descriptors (sys/eventfd.h), which wake the handler thread.</summary>
internal static partial class Libc
{
    public const int EFD_NONBLOCK = 0x800;
    public const int EFD_CLOEXEC = 0x80000;

    // https://man7.org/linux/man-pages/man2/eventfd.2.html
    [LibraryImport(Library, EntryPoint = "eventfd", SetLastError = true)]
    public static partial int eventfd(uint initval, int flags);
}
