using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>Locking pages in RAM (sys/mman.h). Neither calls malloc.</summary>
internal static partial class Libc
{
    /// <summary>mlock(2), checked: a failure is counted and said once on stderr (see
    /// <see cref="MemoryLocking"/>). What the engine calls.</summary>
    public static int mlock(nint addr, nuint length) => MemoryLocking.Lock(addr, length);

    /// <summary>The bare mlock(2), for <see cref="MemoryLocking"/> only; everything else
    /// calls <see cref="mlock"/>.</summary>
    // https://man7.org/linux/man-pages/man2/mlock.2.html
    [LibraryImport(Library, EntryPoint = "mlock", SetLastError = true)]
    public static partial int mlock_unchecked(nint addr, nuint length);
}
