using System.Runtime.InteropServices;

namespace Tibet.Interposer.Native;

/// <summary>The functions of native/shim.c that managed code calls (linked in, not loaded).</summary>
/// <remarks>Not in Core's <see cref="Tibet.Core.Interop.Libc"/>: this is the interposer's own C
/// code, statically linked into libtibet.so (the "tibetshim" name resolves to it), and exists
/// only there.</remarks>
internal static unsafe partial class Shim
{
    private const string Library = "tibetshim";

    /// <summary>Turns redirection on: thresholds, the two reserved regions, and the table
    /// of malloc block sizes that free/malloc_usable_size read without managed code.
    /// Also creates the shared page that forked children count into (<see cref="ChildTally"/>).</summary>
    [LibraryImport(Library, EntryPoint = "tibet_shim_configure")]
    public static partial void Configure(nuint mallocThreshold, nuint mmapThreshold,
        nuint mallocBase, nuint mallocLimit, nuint mmapBase, nuint mmapLimit, nuint* blockSizes, uint unitShift);

    /// <summary>--require-encryption (nonzero): a forked child's allocation at or above the
    /// threshold, which tibet cannot serve there, fails with ENOMEM (one line per child)
    /// instead of running in plaintext (counted, one line per child).</summary>
    [LibraryImport(Library, EntryPoint = "tibet_shim_set_policy")]
    public static partial void SetPolicy(int requireEncryption);

    /// <summary>What forked children (and their descendants) allocated at or above the
    /// threshold since <see cref="Configure"/>: <paramref name="count"/> allocations of
    /// <paramref name="bytes"/> in total that were not encrypted (forked children are not
    /// served), and <paramref name="refused"/> allocations failed with ENOMEM under
    /// --require-encryption. The children count into a MAP_SHARED page, so the parent reads
    /// them live. A child's malloc of a large block that its allocator carves from a large
    /// mapping is counted at both calls.</summary>
    /// <summary>Whether the custodian serves this process's own large anonymous allocations
    /// (TIBET_SERVE=custodian): its statistics then add the custodian's engine's.</summary>
    [LibraryImport(Library, EntryPoint = "tibet_shim_serves_self")]
    public static partial int ServesSelf();

    /// <summary>The resident count shared with the custodian's engine (one budget for both),
    /// or null while it serves nothing here.</summary>
    [LibraryImport(Library, EntryPoint = "tibet_shim_served_share")]
    public static partial long* ServedShare();

    /// <summary>Kinds of <see cref="ChildTally"/>: large allocations no custodian took on,
    /// and writable MAP_FIXED maps (native/shim.c, CHILD_ALLOCATIONS and CHILD_FIXED_MAPS).</summary>
    public const int ChildAllocations = 0, ChildFixedMaps = 1;

    /// <summary>What forked children did of <paramref name="kind"/> that ran unencrypted
    /// (count, bytes), and were refused (--require-encryption).</summary>
    [LibraryImport(Library, EntryPoint = "tibet_shim_child_tally")]
    public static partial void ChildTally(int kind, ulong* count, ulong* bytes, ulong* refused);

    /// <summary>From now on, each fork of this process makes a socketpair for the child's
    /// agent (native/agent.c), which takes the child's pages out when the engine asks; the
    /// engine gets its end through tibet_managed_forked.</summary>
    [LibraryImport(Library, EntryPoint = "tibet_agent_enable")]
    public static partial void EnableChildAgents();

    /// <summary>Writes <paramref name="length"/> bytes (whole lines) where tibet reports: a
    /// close-on-exec duplicate, above the descriptors programs use, of the stderr the program
    /// started with, so that lines still arrive after a daemon points fd 2 at /dev/null. Falls
    /// back to fd 2 if the program closed it.</summary>
    [LibraryImport(Library, EntryPoint = "tibet_shim_report")]
    public static partial void Report(byte* line, nuint length);

    /// <summary>Writes one line where tibet reports (see <see cref="Report"/>), without the
    /// managed Console, which would set up terminal handling inside the host program.</summary>
    public static void WriteError(string line)
    {
        byte[] bytes = System.Text.Encoding.UTF8.GetBytes(line + "\n");
        fixed (byte* p = bytes)
            Report(p, (nuint)bytes.Length);
    }
}
