using Tibet.Core.Paging.AddressSpace;
using Tibet.Core.Paging.Eviction;
using Tibet.Core.Paging.Sealing;

namespace Tibet.Core.Paging.Collapse;

/// <summary>
/// Turns each 2 MiB range of a model map (an arena backed by a source) into a transparent
/// huge page (MADV_COLLAPSE) as soon as the fault that makes all its pages resident has
/// been served.
/// </summary>
/// <remarks>
/// <para>Why: pages come in through UFFDIO_COPY, 4 KiB at a time, so a resident model
/// would be read through 4 KiB page-table entries. llama.cpp with the whole model resident
/// (97 MB, 2 threads, 600 tokens): 0.91–0.96× native with collapse, 0.82–0.94× without
/// (bench/results/2026-12-06-llama-resident-600).</para>
/// <para>Why it is safe: collapsing copies present pages into a huge page and changes no
/// contents; the kernel refuses a range with any missing (or zero-page) entry in a
/// userfaultfd-armed area, so it never fills a page the engine has not served. Taking a
/// page out for eviction later splits the huge page again (UFFDIO_MOVE splits it).</para>
/// <para>Why only model maps, and only at their first touch: a collapse costs 0.9–2.7 ms
/// here (a huge page, a 2 MiB copy) under the mmap lock. A model is streamed in once, at
/// load, so there it costs the first token a little. Done while a program runs (an idle
/// handler collapsing anonymous arenas one range per 10 ms), it took a CPU from the
/// program and slowed Redis GETs from 0.985× to 0.674× native with the data resident;
/// llama.cpp's short decodes suffered the same way. Near the budget (above the high
/// watermark) nothing is collapsed: the next eviction would split it again (at half a
/// model's size in budget, collapsing each range a refault completed cost a fifth of the
/// tokens/s). Under the engine lock; allocation-free.</para>
/// <para>Write-protected pages (installed with a copy kept: their sealed copy, or the model
/// file for a model map that refetches, see Arena.RefetchesSource): the kernel collapses
/// no range with a write-protected entry. In a map the program made read-only, which it
/// never writes, the protection is lifted, the range collapsed, and the huge page
/// protected again; a range that could not be protected again loses its copies (its pages
/// count as written: sealed when evicted), so that no write is ever missed. A range with
/// some pages protected and some not is left in 4 KiB pages.</para>
/// </remarks>
internal sealed unsafe class RangeCollapser
{
    public const int RangePages = 512;
    private const long RangeBytes = RangePages * (long)Userfaultfd.PageSize;

    private readonly AddressSpaceOps _space;
    private readonly Evictor _evictor;
    private readonly PageSealer _sealer;
    private long _collapsed, _failed;

    /// <param name="enabled">False: nothing is collapsed (EngineOptions.CollapseResidentRanges).</param>
    public RangeCollapser(AddressSpaceOps space, Evictor evictor, PageSealer sealer, bool enabled)
    {
        _space = space;
        _evictor = evictor;
        _sealer = sealer;
        Enabled = enabled;
    }

    public bool Enabled { get; }

    /// <summary>Ranges turned into huge pages.</summary>
    public long Collapsed => _collapsed;

    /// <summary>Fully resident ranges the kernel would not collapse (a zero page in them,
    /// no huge page free).</summary>
    public long Failed => _failed;

    /// <summary>Pages <paramref name="firstPage"/> and the <paramref name="count"/> − 1
    /// after it became resident: collapses each aligned range of a model map they complete.</summary>
    public void Consider(Arena arena, long firstPage, int count)
    {
        if (!Enabled || count <= 0 || arena.Source == null || !_evictor.HasRoomFor(RangePages))
            return;
        long first = RangeStart(arena, firstPage);
        long last = RangeStart(arena, firstPage + count - 1);
        for (long start = first; start <= last; start += RangePages)
        {
            if (!IsFullyResident(arena, start))
                continue;
            int withCopies = PagesWithCopies(arena, start);
            if (withCopies == 0)
                Count(_space.Collapse(arena.PageAddress(start), (nuint)RangeBytes));
            else if (withCopies == RangePages && arena.MappedReadOnly)
                CollapseProtected(arena, start);
        }
    }

    private void Count(int rc)
    {
        if (rc == 0)
            _collapsed++;
        else
            _failed++;
    }

    /// <summary>Lifts the range's write protection, collapses it, and protects the huge
    /// page again (the program never writes a read-only map, so no write falls between).</summary>
    private void CollapseProtected(Arena arena, long start)
    {
        nint address = arena.PageAddress(start);
        bool lifted = _space.Unprotect(address, (nuint)RangeBytes) == 0;
        if (lifted)
            Count(_space.Collapse(address, (nuint)RangeBytes));
        if (lifted && _space.Protect(address, (nuint)RangeBytes) == 0)
            return;
        // Some pages may be writable now, unseen: none may be dropped or resealed by a copy.
        for (long i = start; i < start + RangePages; i++)
            _sealer.Forget(ref arena.Entries[i]);
    }

    /// <summary>Pages of the range installed write-protected with a copy kept.</summary>
    private static int PagesWithCopies(Arena arena, long start)
    {
        int count = 0;
        for (long i = start; i < start + RangePages; i++)
            if (arena.Entries[i].HoldsCleanCopy || arena.Entries[i].HoldsSourceCopy)
                count++;
        return count;
    }

    /// <summary>The page index where the 2 MiB-aligned range holding <paramref name="page"/>
    /// starts (by address: an arena need not start on a 2 MiB boundary); may be negative
    /// or run past the arena, which <see cref="IsFullyResident"/> rejects.</summary>
    public static long RangeStart(Arena arena, long page)
    {
        long address = arena.Address + page * Userfaultfd.PageSize;
        long rangeAddress = address & ~(RangeBytes - 1);
        return (rangeAddress - arena.Address) / Userfaultfd.PageSize;
    }

    private static bool IsFullyResident(Arena arena, long start)
    {
        if (start < 0 || start + RangePages > arena.PageCount)
            return false;
        // From the end: a range being filled in order fails on its last pages at once.
        for (long i = start + RangePages - 1; i >= start; i--)
            if (arena.Entries[i].State != PageState.Resident)
                return false;
        return true;
    }
}
