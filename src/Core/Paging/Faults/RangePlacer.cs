using Tibet.Core.Interop;
using Tibet.Core.Paging.AddressSpace;
using Tibet.Core.Paging.Collapse;
using Tibet.Core.Paging.Eviction;
using Tibet.Core.Paging.Events;

namespace Tibet.Core.Paging.Faults;

/// <summary>What became of a fault in <see cref="RangePlacer.TryPlace"/>.</summary>
internal enum RangePlacement
{
    /// <summary>Served: the range is in (or its arena went away), and its waiters are woken.</summary>
    Placed,
    /// <summary>Not for placing, or the kernel would not: the usual path serves the fault.</summary>
    NotPlaced,
    /// <summary>Some of the range went in: the fault is served again from the books.</summary>
    Retry,
    /// <summary>Ahead of the program only: the range reader is still reading the range;
    /// it wakes the handler when it is done, rather than have the idle handler wait for it
    /// (a fault meanwhile would wait too).</summary>
    Pending,
}

/// <summary>
/// Brings a model map's untouched 2 MiB ranges in whole, as transparent huge pages: read
/// (or decrypted) straight into a staging huge page of the address space and moved into
/// the map with UFFDIO_MOVE. Part of the fault service (FaultService asks it first, for a
/// fault and when idle), on the handler thread, under the engine lock except around the
/// read. Allocation-free, like the rest of the fault path.
/// </summary>
internal sealed unsafe class RangePlacer : IDisposable
{
    private const int PageSize = Userfaultfd.PageSize;

    private readonly AddressSpaceOps _space;
    private readonly Evictor _evictor;
    private readonly ProgramEvents _events;
    private readonly RangeCollapser _collapser;
    private readonly bool _tracksWrites;
    private readonly Lock _engineLock;
    // Reads the range after the one placed last, ahead of the program (null: no second
    // staging slot, or decryption ahead turned off).
    private readonly RangeReader? _reader;
    private long _placedRanges, _placedReadAhead, _sourcedPages;

    public RangePlacer(EngineOptions options, AddressSpaceOps space, Evictor evictor, ProgramEvents events, RangeCollapser collapser,
        bool tracksWrites, Lock engineLock, Action wakeHandler)
    {
        _space = space;
        _evictor = evictor;
        _events = events;
        _collapser = collapser;
        _tracksWrites = tracksWrites;
        _engineLock = engineLock;
        if (space.HugeStagingSlots > RangeReader.Slot && options.DecryptAheadRanges > 0 && options.CollapseResidentRanges)
            _reader = new RangeReader(space, wakeHandler);
    }

    /// <summary>2 MiB ranges of model maps brought in whole, as huge pages.</summary>
    public long PlacedRanges => _placedRanges;

    /// <summary>Of <see cref="PlacedRanges"/>, those the range reader had read ahead of their fault.</summary>
    public long PlacedReadAhead => _placedReadAhead;

    /// <summary>Pages placed from their source (every page of a range placed, and of one
    /// placed in 4 KiB pages where the kernel had no huge page).</summary>
    public long SourcedPages => _sourcedPages;

    /// <summary>Wipes what the range reader read ahead (after a failure).</summary>
    public void Wipe() => _reader?.Drop();

    public void Dispose() => _reader?.Dispose(); // wipes its staging slot

    /// <summary>
    /// A fault (or the idle handler, ahead of the program) on a 2 MiB range of a model map
    /// none of whose pages has been in:
    /// the source reads the whole range into the address space's staging huge page
    /// (<see cref="AddressSpaceOps.HugeStaging"/>), without the engine lock, and the huge
    /// page is moved into the map (UFFDIO_MOVE of its table entry), which is then woken.
    /// </summary>
    /// <remarks>
    /// <para>Why: page by page, a range costs 512 UFFDIO_COPY page copies and then a
    /// collapse, which allocates a huge page and copies the 2 MiB again under the mmap lock
    /// (0.9–2.7 ms, see RangeCollapser). Here the file is read into the huge page itself
    /// (O_DIRECT, so the disk writes it there) and nothing is copied. llama.cpp's first
    /// token with the model read cold: see bench/results (llama-budget).</para>
    /// <para>Only while the budget has room for the whole range below its high watermark,
    /// as for a collapse. A source that installs its runs itself (a live sealed model whose
    /// key the custodian keeps) fills the range here too (PageSource.FillRun: the custodian
    /// decrypts it through the shared window): an install from another process is a
    /// UFFDIO_COPY, which would leave the range to be collapsed.</para>
    /// </remarks>
    /// <param name="epoch">The event epoch the caller's books are of: an event read meanwhile means Retry.</param>
    /// <param name="roomMade">Pages of the range the budget has made room for already (the faulting page's).</param>
    public RangePlacement TryPlace(Arena arena, long index, long epoch, int roomMade)
    {
        const int RangePages = RangeCollapser.RangePages;
        if (_space.HugeStagingSlots == 0 || arena.RefusesPlacement || arena.Source is not { } source
            || !_collapser.Enabled || !_evictor.HasRoomFor(RangePages))
            return RangePlacement.NotPlaced;
        long first = RangeCollapser.RangeStart(arena, index);
        if (!IsUntouchedRange(arena, first))
            return RangePlacement.NotPlaced;

        // Read ahead already (or being read), or read now into the fault service's own slot.
        bool readAhead = _reader != null && _reader.Holds(arena, first);
        if (readAhead && roomMade == 0 && !_reader!.IsDone)
            return RangePlacement.Pending;

        _evictor.MakeRoom(RangePages - roomMade);
        if (_events.Epoch != epoch)
            return RangePlacement.Retry;
        int slot = readAhead ? RangeReader.Slot : 0;
        PageVerdict verdict;
        source.Retain();
        _engineLock.Exit();
        try
        {
            verdict = readAhead
                ? _reader!.Wait()
                : source.FillRun(first, RangePages, new Span<byte>((void*)_space.HugeStaging(slot), RangePages * PageSize));
        }
        catch
        {
            verdict = PageVerdict.Tampered;
        }
        finally
        {
            _engineLock.Enter();
        }
        bool released = arena.Released;
        source.Release();
        if (released)
        {
            DiscardStaged(slot);
            return RangePlacement.Placed; // unregistering woke the thread
        }
        // Only the handler reads events, so the books of the range cannot have changed;
        // checked all the same, since a page placed over a page in would be lost.
        if (verdict == PageVerdict.Tampered || _events.Epoch != epoch || !IsUntouchedRange(arena, first))
        {
            // A page that must never be mapped (or a read that failed): the usual path
            // finds which and poisons it alone.
            DiscardStaged(slot);
            return RangePlacement.NotPlaced;
        }

        nint address = arena.PageAddress(first);
        int rc = _space.PlaceStaged(slot, address, out long moved, out bool huge);
        int pages = (int)(moved / PageSize);
        // Installed write-protected, keeping the file as their copy, where the arena
        // refetches (as FaultService.KeepsCopy says for an untouched page).
        bool keepCopies = _tracksWrites && arena.RefetchesSource;
        if (pages > 0 && keepCopies && _space.Protect(address, (nuint)moved) != 0)
            keepCopies = false; // counted as written: sealed when evicted, never dropped
        if (pages > 0)
        {
            _evictor.Admit(arena, first, pages, keepCopies);
            _sourcedPages += pages;
        }
        _space.Wake(address, (nuint)(RangePages * PageSize));
        if (pages == RangePages)
        {
            if (readAhead)
            {
                _reader!.Placed();
                _placedReadAhead++;
            }
            if (huge)
                _placedRanges++;
            else
                _collapser.Consider(arena, first, RangePages); // counted collapsed, or refused
            ReadNext(arena, source, first + RangePages);
            return RangePlacement.Placed;
        }
        DiscardStaged(slot);
        if (rc == Libc.EINVAL)
            arena.RefusesPlacement = true;
        return pages > 0 ? RangePlacement.Retry : RangePlacement.NotPlaced;
    }

    private void DiscardStaged(int slot)
    {
        if (slot == RangeReader.Slot)
            _reader!.Drop();
        else
            _space.DiscardStaged(slot);
    }

    /// <summary>Has the range reader read the range after one just placed, while the
    /// program works on that one, if the reader is free, the range whole and untouched,
    /// and the budget has room for it too (see <see cref="RangeReader"/>).</summary>
    private void ReadNext(Arena arena, PageSource source, long next)
    {
        if (_reader is { HoldsJob: false } reader && IsUntouchedRange(arena, next) && _evictor.HasRoomFor(RangeCollapser.RangePages))
            reader.Start(arena, source, next);
    }

    /// <summary>A range read ahead that no one is coming for: its arena went away, the
    /// budget has no room left for it, or it waited too long (its plaintext waits outside
    /// the budget's books). Dropped by the idle handler.</summary>
    public void DropUnwantedReadAhead()
    {
        if (_reader is { HoldsJob: true } reader
            && (reader.IsStale || reader.JobArena!.Released || !_evictor.HasRoomFor(RangeCollapser.RangePages)))
            reader.Drop();
    }

    private static bool IsUntouchedRange(Arena arena, long first)
    {
        if (first < 0 || first + RangeCollapser.RangePages > arena.PageCount)
            return false;
        for (long i = first; i < first + RangeCollapser.RangePages; i++)
            if (arena.Entries[i].State != PageState.Untouched)
                return false;
        return true;
    }
}
