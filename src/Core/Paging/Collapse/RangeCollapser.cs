using Tibet.Core.Paging.AddressSpace;
using Tibet.Core.Paging.Eviction;

namespace Tibet.Core.Paging.Collapse;

/// <summary>
/// Turns 2 MiB ranges of an arena whose pages are all resident into transparent huge
/// pages (MADV_COLLAPSE), when the handler has nothing else to do.
/// </summary>
/// <remarks>
/// <para>Why: pages come in through UFFDIO_COPY, 4 KiB at a time, so a resident model is
/// read through 4 KiB page-table entries. Measured on llama.cpp with the whole model
/// resident (97 MB, 2 threads): 62 tokens/s in 4 KiB pages, 176 after collapsing, 188
/// natively (bench/results/2026-12-06-collapse).</para>
/// <para>Why it is safe: collapsing copies present pages into a huge page and changes no
/// contents; the kernel refuses a range with any missing (or zero-page) entry in a
/// userfaultfd-armed area, so it never fills a page the engine has not served. Taking a
/// page out for eviction later splits the huge page again (UFFDIO_MOVE splits it).</para>
/// <para>When: a collapse costs 0.9–2.7 ms here (a huge page, a 2 MiB copy). A range of
/// a model map (an arena with a source) is collapsed as soon as a fault completes it:
/// models are streamed in once at load, and a collapse then costs the first token a little
/// instead of costing every later token (done while the program computed, collapses took
/// a CPU from its threads and delayed its next faults: 32 tokens ran at 0.27–0.63× native
/// instead of about 0.9×). Other ranges are queued and collapsed one per turn once the
/// handler has had nothing to do for <see cref="IdleTicks"/>. Always under the engine
/// lock, after checking the range is still fully resident. Allocation-free.</para>
/// </remarks>
internal sealed class RangeCollapser
{
    public const int RangePages = 512;
    private const long RangeBytes = RangePages * (long)Userfaultfd.PageSize;
    private const int QueueCapacity = 1024;

    private readonly ArenaTable _arenas;
    private readonly AddressSpaceOps _space;
    private readonly Evictor _evictor;
    private readonly int[] _slots = new int[QueueCapacity];
    private readonly long[] _firstPages = new long[QueueCapacity];
    private int _head, _count;
    private long _collapsed, _failed;

    /// <param name="enabled">False: nothing is ever queued (EngineOptions.CollapseResidentRanges).</param>
    public RangeCollapser(ArenaTable arenas, AddressSpaceOps space, Evictor evictor, bool enabled)
    {
        _arenas = arenas;
        _space = space;
        _evictor = evictor;
        Enabled = enabled;
    }

    public bool Enabled { get; }

    /// <summary>Ranges turned into huge pages.</summary>
    public long Collapsed => _collapsed;

    /// <summary>Ranges the kernel would not collapse (a zero page in it, no huge page free).</summary>
    public long Failed => _failed;

    /// <summary>Pages <paramref name="firstPage"/> and the <paramref name="count"/> − 1
    /// after it became resident: queues each aligned range they complete.</summary>
    public void Consider(Arena arena, long firstPage, int count)
    {
        // Near the budget, pages are about to be taken out again, and taking one out splits
        // the huge page: a collapse would be wasted (at half a model's size in budget,
        // collapsing every range a refault completed cost a fifth of the tokens/s).
        if (!Enabled || count <= 0 || !_evictor.HasRoomFor(RangePages))
            return;
        long first = RangeStart(arena, firstPage);
        long last = RangeStart(arena, firstPage + count - 1);
        for (long start = first; start <= last; start += RangePages)
        {
            if (arena.Source != null)
            {
                if (IsFullyResident(arena, start))
                    CollapseNow(arena, start);
                continue;
            }
            if (_count == QueueCapacity)
                return; // a busy burst: the rest stay in 4 KiB pages
            if (IsFullyResident(arena, start))
            {
                int tail = (_head + _count++) % QueueCapacity;
                _slots[tail] = arena.Slot;
                _firstPages[tail] = start;
            }
        }
    }

    /// <summary>Collapses the next queued range if it is still fully resident. True if
    /// there was one (the handler counts that as work).</summary>
    public bool CollapseOne()
    {
        while (_count > 0)
        {
            int slot = _slots[_head];
            long start = _firstPages[_head];
            _head = (_head + 1) % QueueCapacity;
            _count--;
            // The arena may be gone, or its slot reused: the range is checked again.
            Arena? arena = _arenas.InSlot(slot);
            if (arena == null || !IsFullyResident(arena, start) || !_evictor.HasRoomFor(RangePages))
                continue;
            CollapseNow(arena, start);
            return true;
        }
        return false;
    }

    /// <summary>How long the handler must have been idle before a queued range is collapsed.</summary>
    public static readonly long IdleTicks = System.Diagnostics.Stopwatch.Frequency / 100;

    /// <summary>Ranges waiting for an idle handler.</summary>
    public bool HasQueued => _count > 0;

    private void CollapseNow(Arena arena, long start)
    {
        if (_space.Collapse(arena.PageAddress(start), (nuint)RangeBytes) == 0)
            _collapsed++;
        else
            _failed++;
    }

    /// <summary>The page index where the 2 MiB-aligned range holding <paramref name="page"/>
    /// starts (by address: an arena need not start on a 2 MiB boundary); may be negative
    /// or run past the arena, which <see cref="IsFullyResident"/> rejects.</summary>
    private static long RangeStart(Arena arena, long page)
    {
        long address = arena.Address + page * Userfaultfd.PageSize;
        long rangeAddress = address & ~(RangeBytes - 1);
        return (rangeAddress - arena.Address) / Userfaultfd.PageSize;
    }

    private static unsafe bool IsFullyResident(Arena arena, long start)
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
