using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>libsodium's initialisation (sodium/core.h): it picks the CPU's implementations
/// and learns the page size sodium_malloc needs, which is 0 (and sodium_malloc crashes)
/// until it has run. Safe to call from any thread, any number of times.</summary>
// https://doc.libsodium.org/usage
internal static partial class Sodium
{
    /// <summary>0 on the first call, 1 when already done, -1 on failure.</summary>
    [LibraryImport(Library, EntryPoint = "sodium_init")]
    public static partial int sodium_init();
}
