using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>libsodium's guarded heap (sodium/utils.h), for key material tibet holds
/// itself: pages of their own between guard pages, locked (mlock), out of core dumps
/// (MADV_DONTDUMP), and wiped when freed.</summary>
// https://doc.libsodium.org/memory_management#guarded-heap-allocations
internal static unsafe partial class Sodium
{
    /// <summary>Null when the memory cannot be had (it maps pages; it does not call malloc).</summary>
    [LibraryImport(Library, EntryPoint = "sodium_malloc")]
    public static partial void* sodium_malloc(nuint size);

    /// <summary>Wipes and unmaps what <see cref="sodium_malloc"/> gave.</summary>
    [LibraryImport(Library, EntryPoint = "sodium_free")]
    public static partial void sodium_free(void* ptr);

    /// <summary>Zeroes memory in a way the compiler cannot remove.</summary>
    [LibraryImport(Library, EntryPoint = "sodium_memzero")]
    public static partial void sodium_memzero(void* pnt, nuint len);
}
