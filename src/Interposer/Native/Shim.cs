using System.Runtime.InteropServices;

namespace Tibet.Interposer.Native;

/// <summary>The functions of native/shim.c that managed code calls (linked in, not loaded).</summary>
internal static unsafe partial class Shim
{
    private const string Library = "tibetshim";

    /// <summary>Turns redirection on: thresholds, the two reserved regions, and the table
    /// of malloc block sizes that free/malloc_usable_size read without managed code.</summary>
    [LibraryImport(Library, EntryPoint = "tibet_shim_configure")]
    public static partial void Configure(nuint mallocThreshold, nuint mmapThreshold,
        nuint mallocBase, nuint mallocLimit, nuint mmapBase, nuint mmapLimit, nuint* blockSizes, uint unitShift);
}
