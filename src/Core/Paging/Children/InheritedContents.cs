using System.Diagnostics;
using System.Runtime.InteropServices;
using Tibet.Core.Interop;

namespace Tibet.Core.Paging.Children;

/// <summary>
/// Which pages a forked child inherited with contents only this engine can give back
/// (sealed, taken out by its agent, a model's not yet read), in a memfd the child's agent
/// maps (struct agent_contents_header in native/agent.c). The agent also holds a duplicate
/// of the child's userfaultfd. If this engine's process ends without handing the child its
/// pages (killed, or a raw exit_group: nothing of it runs), the registration stays with
/// that duplicate, and the agent serves the child's faults itself: SIGBUS for a page
/// marked here, whose contents went with this process's keys, and zeros for the others,
/// as they would have read. Without it, the kernel dropped the registration with this
/// process's descriptor, and every missing page read zeros: wrong bytes, silently.
/// </summary>
/// <remarks>
/// Kept true while the engine serves: built from the child's copy of the books at its
/// fork event, and changed by the child's events (a page discarded or unmapped reads
/// zeros; a range moved takes its marks along). A page present in the child keeps its mark:
/// it matters only once missing, and it goes missing only through the agent (then its
/// sealed copy is its contents) or through those events. Sealed at its size: the child
/// holds the memfd, and a shrunken one would kill the engine with SIGBUS at its next write.
/// The child can write to it too: that changes only how its own faults are answered once
/// orphaned, since this process keeps its own copy of the table and writes only bits.
/// </remarks>
internal sealed unsafe class InheritedContents : IDisposable
{
    private const ulong Magic = 0x31746e65746e6f63; // "contents1", AGENT_CONTENTS_MAGIC
    private const int PageSize = Userfaultfd.PageSize;

    [StructLayout(LayoutKind.Sequential)]
    private struct Header
    {
        public ulong Magic;
        public uint Regions;
        public uint Reserved;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct Region
    {
        public ulong Start;
        public ulong Pages;
        public ulong Bitmap; // byte offset of its bitmap in the map
    }

    private int _memfd; // until the agent has its own (GiveCustody): then closed
    private readonly byte* _map;
    private readonly nuint _bytes;
    // The table as written, kept here: the child can write to the map, and an offset it
    // changed there must not steer this process's writes (the custodian's, for a child).
    private readonly Region[] _regions;

    private InheritedContents(int memfd, byte* map, nuint bytes, Region[] regions)
    {
        _memfd = memfd;
        _map = map;
        _bytes = bytes;
        _regions = regions;
    }

    /// <summary>The memfd, for the agent (AGENT_CUSTODY); -1 once let go.</summary>
    public int Descriptor => _memfd;

    /// <summary>Closes the memfd once the agent has its copy (the map stays): a descriptor
    /// per child held in the program would be one more the program could trip over.</summary>
    public void CloseDescriptor()
    {
        if (_memfd >= 0)
            Libc.close(_memfd);
        _memfd = -1;
    }

    /// <summary>Whether a page in this state, missing in the child, has contents only the
    /// engine can give (<paramref name="sourced"/>: its arena reads from a file).</summary>
    public static bool HasContents(in PageEntry entry, bool sourced) => entry.State switch
    {
        PageState.Sealed or PageState.Resident => true,
        PageState.Untouched => sourced,
        _ => false,
    };

    /// <summary>The map for a child's inherited <paramref name="ranges"/> (address, page
    /// count, entries, from a file), or null if the kernel refused one (the child then has
    /// no custody: it reads zeros as before, if this engine dies first).</summary>
    public static InheritedContents? Create(ReadOnlySpan<(nint Address, long Pages, nint Entries, bool Sourced)> ranges)
    {
        nuint table = (nuint)(sizeof(Header) + ranges.Length * sizeof(Region));
        nuint bytes = (table + 7) & ~(nuint)7;
        foreach (var range in ranges)
            bytes += (nuint)((range.Pages + 63) / 64 * 8);
        // Above the descriptors programs use (the program's own fork event may make it).
        int memfd = HighDescriptors.MoveAbove(Libc.memfd_create("tibet-inherited", Libc.MFD_CLOEXEC | Libc.MFD_ALLOW_SEALING));
        if (memfd < 0)
            return null;
        nint map = Libc.MAP_FAILED;
        if (Libc.ftruncate(memfd, (long)bytes) == 0
            && Libc.fcntl(memfd, Libc.F_ADD_SEALS, Libc.F_SEAL_SHRINK | Libc.F_SEAL_GROW | Libc.F_SEAL_SEAL) == 0)
            map = Libc.mmap(0, bytes, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, memfd, 0);
        if (map == Libc.MAP_FAILED)
        {
            Libc.close(memfd);
            return null;
        }
        Libc.madvise(map, bytes, Libc.MADV_DONTFORK);
        var regions = new Region[ranges.Length];
        var contents = new InheritedContents(memfd, (byte*)map, bytes, regions);
        *(Header*)map = new Header { Magic = Magic, Regions = (uint)ranges.Length };
        ulong offset = (table + 7) & ~(nuint)7;
        for (int i = 0; i < ranges.Length; i++)
        {
            var (address, pages, entries, sourced) = ranges[i];
            regions[i] = new Region { Start = (ulong)address, Pages = (ulong)pages, Bitmap = offset };
            ((Region*)((byte*)map + sizeof(Header)))[i] = regions[i];
            ulong* bits = (ulong*)((byte*)map + offset);
            var books = (PageEntry*)entries;
            for (long page = 0; page < pages; page++)
                if (HasContents(in books[page], sourced))
                    bits[page / 64] |= 1UL << (int)(page % 64);
            offset += (ulong)((pages + 63) / 64 * 8);
        }
        Debug.Assert(offset == bytes);
        return contents;
    }

    /// <summary>Marks the page at <paramref name="address"/> (nothing outside the ranges).</summary>
    public void Set(nint address, bool hasContents)
    {
        ulong* word = Word(address, out ulong bit);
        if (word != null)
            *word = hasContents ? *word | bit : *word & ~bit;
    }

    /// <summary>Whether the page at <paramref name="address"/> is marked; outside the
    /// ranges nobody knows, and the agent takes it as marked.</summary>
    public bool Get(nint address)
    {
        ulong* word = Word(address, out ulong bit);
        return word == null || (*word & bit) != 0;
    }

    /// <summary>The bitmap word and bit of the page at <paramref name="address"/>; null
    /// outside the ranges (contents_word in native/agent.c).</summary>
    private ulong* Word(nint address, out ulong bit)
    {
        ulong at = (ulong)address;
        for (int i = 0; i < _regions.Length; i++)
        {
            ref Region region = ref _regions[i];
            if (at < region.Start || at >= region.Start + region.Pages * PageSize)
                continue;
            ulong page = (at - region.Start) / PageSize;
            bit = 1UL << (int)(page % 64);
            return (ulong*)(_map + region.Bitmap) + page / 64;
        }
        bit = 0;
        return null;
    }

    public void Dispose()
    {
        Libc.munmap((nint)_map, _bytes);
        CloseDescriptor();
    }
}
