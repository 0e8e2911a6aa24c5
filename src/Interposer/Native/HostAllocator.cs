using System.Runtime.InteropServices;

namespace Tibet.Interposer.Native;

/// <summary>
/// The host's own allocator (glibc, or the program's jemalloc), for memory tibet cannot
/// serve from an arena. Managed code runs with the shim's in-tibet guard set, so these
/// calls reach the next definition, never tibet's redirection.
/// </summary>
/// <remarks>Not in Core's <see cref="Tibet.Core.Interop.Libc"/>: the allocator is what the
/// interposer redirects, and Libc is kept to calls the engine may make; the engine must never
/// call malloc, so calloc and posix_memalign stay here, reachable only from the interposer's
/// plaintext fallbacks.</remarks>
internal static unsafe partial class HostAllocator
{
    /// <summary>https://man7.org/linux/man-pages/man3/calloc.3.html. calloc rather than
    /// malloc: the caller may be the program's calloc, and a block reused by the host's
    /// allocator need not be zero.</summary>
    [LibraryImport("libc", EntryPoint = "calloc")]
    private static partial nint calloc(nuint count, nuint size);

    /// <summary>https://man7.org/linux/man-pages/man3/posix_memalign.3.html</summary>
    [LibraryImport("libc", EntryPoint = "posix_memalign")]
    private static partial int posix_memalign(nint* pointer, nuint alignment, nuint size);

    /// <summary>A block of <paramref name="size"/> bytes aligned to
    /// <paramref name="alignment"/> (a power of two) from the host's allocator, or 0 when
    /// it has none to give. The host decides: a size it cannot hold fails here exactly as
    /// it would in the program. Blocks aligned to at most 16 bytes are zeroed, since the
    /// shim asks with that alignment for calloc; the aligned allocators promise no zeros.</summary>
    public static nint Allocate(ulong size, ulong alignment)
    {
        if (alignment <= 16)
            return calloc(1, (nuint)size);
        nint block;
        if (posix_memalign(&block, (nuint)Math.Max(alignment, (ulong)sizeof(nint)), (nuint)size) != 0)
            return 0;
        return block;
    }
}
