using System.Runtime.InteropServices;
using Tibet.Core.Interop;
using Tibet.Core.Paging.AddressSpace;
using Tibet.Core.Paging.Collapse;
using Tibet.Core.Paging.Eviction;
using Tibet.Core.Paging.Events;
using Tibet.Core.Paging.Sealing;

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
/// Brings a model map's 2 MiB ranges in whole, as transparent huge pages: read from the
/// source (untouched ranges) or decrypted from the store (ranges evicted whole) straight
/// into a staging huge page of the address space, and moved into the map with
/// UFFDIO_MOVE. Part of the fault service (FaultService asks it first, for a fault and
/// when idle), on the handler thread, under the engine lock except around a source's read.
/// Allocation-free, like the rest of the fault path.
/// </summary>
/// <remarks>
/// Under a full budget this is a cycle with the evictor (Evictor.TryEvictRange): the range
/// the policy evicts leaves whole, as its huge page, into the recycling slot; the range
/// the program wants is decrypted into that same page (two threads: this one and the fill
/// worker) and moved in. Per 2 MiB: two table-entry moves, one TLB flush and 512
/// decryptions, where page by page it was 512 take-outs, wipes, frees, allocations, copies
/// and 4 KiB TLB entries (llama.cpp at half its model's budget: see bench/results,
/// whole-ranges).
/// </remarks>
internal sealed unsafe class RangePlacer : IDisposable
{
    private const int PageSize = Userfaultfd.PageSize;

    private readonly AddressSpaceOps _space;
    private readonly Evictor _evictor;
    private readonly ProgramEvents _events;
    private readonly RangeCollapser _collapser;
    private readonly bool _tracksWrites;
    private readonly bool _underPressure;
    private readonly Threading.EngineLockWindow _engineLock;
    private readonly PageSealer _sealer;
    // Decrypts the second half of a sealed range while the handler decrypts the first (null: one CPU).
    private readonly FillWorker? _worker;
    // Reads the range after the one placed last, ahead of the program (null: no second
    // staging slot, or decryption ahead turned off).
    private readonly RangeReader? _reader;
    private long _placedRanges, _placedReadAhead, _placedSealed, _recycled, _sourcedPages;
    // A sealed range's entries as they were when its decryption began (OpenSealed):
    // native, so that the fill worker reads them through a pointer.
    private readonly PageEntry* _rangeEntries = (PageEntry*)NativeMemory.AllocZeroed(RangePages, (nuint)sizeof(PageEntry));
    private readonly UnlockedOpener _opener;

    public RangePlacer(EngineOptions options, AddressSpaceOps space, Evictor evictor, ProgramEvents events, RangeCollapser collapser,
        bool tracksWrites, Threading.EngineLockWindow engineLock, Action wakeHandler, PageSealer sealer, FillWorker? worker,
        UnlockedOpener opener)
    {
        _sealer = sealer;
        _worker = worker;
        _underPressure = options.PlacesRangesUnderPressure;
        _space = space;
        _evictor = evictor;
        _events = events;
        _collapser = collapser;
        _tracksWrites = tracksWrites;
        _engineLock = engineLock;
        _opener = opener;
        if (space.HugeStagingSlots > RangeReader.Slot && options.DecryptAheadRanges > 0 && options.CollapseResidentRanges)
            _reader = new RangeReader(space, wakeHandler);
    }

    /// <summary>2 MiB ranges of model maps brought in whole, as huge pages.</summary>
    public long PlacedRanges => _placedRanges;

    /// <summary>Of <see cref="PlacedRanges"/>, those the range reader had read ahead of their fault.</summary>
    public long PlacedReadAhead => _placedReadAhead;

    /// <summary>Of <see cref="PlacedRanges"/>, those decrypted from their sealed copies (evicted whole before).</summary>
    public long PlacedSealed => _placedSealed;

    /// <summary>Ranges filled into the huge page of a range just evicted whole (see Evictor.TakeRecycled).</summary>
    public long Recycled => _recycled;

    /// <summary>Pages placed from their source (every page of a range placed, and of one
    /// placed in 4 KiB pages where the kernel had no huge page).</summary>
    public long SourcedPages => _sourcedPages;

    /// <summary>Wipes every staging slot (after a failure, which may have struck while a
    /// range was read or decrypted into one, or while eviction held one for recycling).</summary>
    public void Wipe()
    {
        _reader?.Drop();
        _evictor.DiscardRecycled();
        if (_space.HugeStagingSlots == 0)
            return;
        _space.DiscardStaged(FaultSlot);
        if (_space.RecyclingSlot >= 0)
            _space.DiscardStaged(_space.RecyclingSlot);
    }

    public void Dispose()
    {
        _reader?.Dispose(); // wipes its staging slot
        NativeMemory.Free(_rangeEntries);
    }

    /// <summary>
    /// A fault (or the idle handler, ahead of the program) on a 2 MiB range of a model map
    /// none of whose pages is in: every page untouched, or every page sealed (uncompressed).
    /// The source reads the whole range into a staging huge page
    /// (<see cref="AddressSpaceOps.HugeStaging"/>) without the engine lock, or the sealed
    /// pages are decrypted into it; the huge page is moved into the map (UFFDIO_MOVE of
    /// its table entry), which is then woken.
    /// </summary>
    /// <remarks>
    /// <para>Why: page by page, a range costs 512 UFFDIO_COPY page copies and then a
    /// collapse, which allocates a huge page and copies the 2 MiB again under the mmap lock
    /// (0.9–2.7 ms, see RangeCollapser). Here the file is read into the huge page itself
    /// (O_DIRECT, so the disk writes it there) and nothing is copied. llama.cpp's first
    /// token with the model read cold: see bench/results (llama-budget).</para>
    /// <para>Under a full budget (EngineOptions.PlacesRangesUnderPressure) room is made
    /// for the range first, by evicting a whole range where the policy's next page is in
    /// one (its huge page is then filled again: Evictor.TakeRecycled), ahead of the
    /// program as for a fault (see FaultService.DecryptAhead).</para>
    /// <para>A source that installs its runs itself (a live sealed model whose key the
    /// custodian keeps) fills the range here too (PageSource.FillRun: the custodian
    /// decrypts it through the shared window): an install from another process is a
    /// UFFDIO_COPY, which would leave the range to be collapsed.</para>
    /// </remarks>
    /// <param name="epoch">The event epoch the caller's books are of: an event read meanwhile means Retry.</param>
    /// <param name="roomMade">Pages of the range the budget has made room for already (the faulting page's).</param>
    public RangePlacement TryPlace(Arena arena, long index, long epoch, int roomMade)
    {
        if (_space.HugeStagingSlots == 0 || arena.RefusesPlacement || arena.Source is not { } source || !_collapser.Enabled)
            return RangePlacement.NotPlaced;
        long first = RangeCollapser.RangeStart(arena, index);
        RangeKind kind = KindOf(arena, first);
        // Under a full budget only where the budget holds several ranges (a quarter of it
        // is one fault's most, as for read-ahead runs); else only into room it has.
        bool underPressure = _underPressure && _evictor.ReadAheadLimit >= RangePages;
        if (kind == RangeKind.Mixed || (!underPressure && (kind == RangeKind.Sealed || !_evictor.HasRoomFor(RangePages))))
            return RangePlacement.NotPlaced;

        // Read ahead already (or being read), or read now into the fault service's own slot.
        bool readAhead = kind == RangeKind.Untouched && _reader != null && _reader.Holds(arena, first);
        if (readAhead && roomMade == 0 && !_reader!.IsDone)
            return RangePlacement.Pending;

        _evictor.MakeRoom(RangePages - roomMade);
        if (_events.Epoch != epoch)
            return RangePlacement.Retry;
        // The huge page of a range the budget just evicted whole is filled again as it is.
        int slot = readAhead ? RangeReader.Slot : FaultSlot;
        bool recycledSlot = false;
        if (!readAhead && _evictor.TakeRecycled(out int recycled))
        {
            slot = recycled;
            recycledSlot = true;
            _recycled++;
        }
        // Both let the engine lock go while they fill the slot, and take it again before
        // they return, also when they throw.
        PageVerdict verdict;
        _evictor.RangeEvictionPaused = true;
        try
        {
            verdict = kind == RangeKind.Sealed
                ? OpenSealed(arena, first, (byte*)_space.HugeStaging(slot))
                : ReadFromSource(arena, source, first, slot, readAhead);
        }
        finally
        {
            _evictor.RangeEvictionPaused = false;
        }
        if (arena.Released)
        {
            DiscardStaged(slot);
            return RangePlacement.Placed; // unregistering woke the thread
        }
        // Only the handler reads events, so the books of the range cannot have changed;
        // checked all the same, since a page placed over a page in would be lost.
        if (verdict != PageVerdict.Keep || _events.Epoch != epoch || KindOf(arena, first) != kind)
        {
            // A page that must never be mapped (or a read that failed): the usual path
            // finds which and poisons it alone.
            DiscardStaged(slot);
            return RangePlacement.NotPlaced;
        }

        nint address = arena.PageAddress(first);
        // A huge page recycled from a range placed whole is known to be one (a split since,
        // under memory pressure, would only cost this range its one TLB entry).
        int rc = _space.PlaceStaged(slot, address, stagedHuge: recycledSlot, out long moved, out bool huge);
        int pages = (int)(moved / PageSize);
        // Installed write-protected, keeping a copy (as FaultService.KeepsCopy says for a
        // page installed alone): the file, where the arena refetches; its sealed copies, in
        // a map the program cannot write (the range is writable between the move and the
        // protection: a write to a writable map then would be lost with the copy).
        bool keepCopies = _tracksWrites && (kind == RangeKind.Sealed ? arena.MappedReadOnly : arena.RefetchesSource);
        if (pages > 0 && keepCopies && _space.Protect(address, (nuint)moved) != 0)
            keepCopies = false; // counted as written: sealed when evicted, never dropped
        if (pages > 0)
        {
            _evictor.Admit(arena, first, pages, keepCopies);
            if (kind == RangeKind.Untouched)
                _sourcedPages += pages;
        }
        _space.Wake(address, (nuint)(RangePages * PageSize));
        if (pages == RangePages)
        {
            _evictor.ExpectRuns(RangePages); // probation keeps room for a few ranges
            if (readAhead)
            {
                _reader!.Placed();
                _placedReadAhead++;
            }
            if (huge)
            {
                _placedRanges++;
                if (kind == RangeKind.Sealed)
                    _placedSealed++;
                if (arena.PlacedWhole is { } whole)
                    whole[first / RangePages] = true;
            }
            else
            {
                _collapser.Consider(arena, first, RangePages); // counted collapsed, or refused
            }
            if (kind == RangeKind.Untouched)
                ReadNext(arena, source, first + RangePages);
            return RangePlacement.Placed;
        }
        DiscardStaged(slot);
        if (rc == Libc.EINVAL)
            arena.RefusesPlacement = true;
        return pages > 0 ? RangePlacement.Retry : RangePlacement.NotPlaced;
    }

    private const int RangePages = RangeCollapser.RangePages;

    /// <summary>The staging slot a fault's range is read into when neither the range
    /// reader nor eviction has one ready.</summary>
    private const int FaultSlot = 0;

    /// <summary>Which ranges can be placed whole: every page untouched (read from the
    /// source), or every page sealed, uncompressed (decrypted from the store).</summary>
    private enum RangeKind { Mixed, Untouched, Sealed }

    private static RangeKind KindOf(Arena arena, long first)
    {
        if (first < 0 || first + RangePages > arena.PageCount)
            return RangeKind.Mixed;
        ref PageEntry head = ref arena.Entries[first];
        RangeKind kind = head.State == PageState.Untouched ? RangeKind.Untouched
            : head.State == PageState.Sealed && !head.IsCompressed ? RangeKind.Sealed
            : RangeKind.Mixed;
        if (kind == RangeKind.Mixed)
            return kind;
        for (long i = first + 1; i < first + RangePages; i++)
        {
            ref PageEntry entry = ref arena.Entries[i];
            if (entry.State != head.State || entry.IsCompressed)
                return RangeKind.Mixed;
        }
        return kind;
    }

    /// <summary>The source reads the range into the slot (or the range reader has), without the engine lock.</summary>
    private PageVerdict ReadFromSource(Arena arena, PageSource source, long first, int slot, bool readAhead)
    {
        PageVerdict verdict;
        source.Retain();
        _engineLock.LetGo();
        try
        {
            verdict = readAhead ? _reader!.Wait()
                : _worker != null && arena.SourceFillsRunsConcurrently ? FillShared(_worker, arena, source, first, (byte*)_space.HugeStaging(slot))
                : source.FillRun(first, RangePages, new Span<byte>((void*)_space.HugeStaging(slot), RangePages * PageSize));
        }
        catch
        {
            verdict = PageVerdict.Tampered;
        }
        finally
        {
            _engineLock.TakeBack();
        }
        source.Release();
        return verdict;
    }

    /// <summary>
    /// Decrypts the range's sealed pages into <paramref name="destination"/>, with the fill
    /// worker: the two threads claim chunks of the range until none are left
    /// (FillWorker.StartSharedOpen), so that two CPUs share the 512 decryptions the
    /// faulting thread waits for, each as fast as its CPU lets it. Without the engine lock,
    /// as the fault service's read-ahead slices (<see cref="UnlockedOpener"/> says what keeps
    /// it safe). Keep only if every page opened and none changed; a page that fails is the
    /// usual path's to find and report.
    /// </summary>
    private PageVerdict OpenSealed(Arena arena, long first, byte* destination)
    {
        for (int page = 0; page < RangePages; page++)
            _rangeEntries[page] = arena.Entries[first + page];
        PageVerdict verdict = PageVerdict.Keep;
        int opened = 0;
        using (_opener.LetGo(arena))
        {
            if (_worker is { } worker)
            {
                worker.StartSharedOpen(arena, first, RangePages, destination, _rangeEntries);
                try
                {
                    verdict = worker.ShareAndFinish();
                }
                finally
                {
                    opened = worker.CallerOpened;
                }
            }
            else
            {
                for (; opened < RangePages; opened++)
                    if (!_opener.TryOpen(arena.Cipher, first + opened, in _rangeEntries[opened], destination + (long)opened * PageSize))
                    {
                        verdict = PageVerdict.Tampered;
                        break;
                    }
            }
        }
        _sealer.CountOpened(opened);
        // An API call may have released the arena (the caller checks) or changed its pages
        // (evicted and sealed them anew, say) meanwhile: then the range is not placed, and
        // the usual path serves what the pages are now.
        if (verdict == PageVerdict.Keep && !arena.Released)
        {
            for (int page = 0; page < RangePages; page++)
                if (!UnlockedOpener.Unchanged(in arena.Entries[first + page], in _rangeEntries[page]))
                    return PageVerdict.Tampered;
        }
        return verdict;
    }

    /// <summary>The source fills the range into <paramref name="destination"/> from two
    /// threads, this one and the fill worker (FillWorker.StartSharedFill), without the
    /// engine lock, as any source read of a range.</summary>
    private static PageVerdict FillShared(FillWorker worker, Arena arena, PageSource source, long first, byte* destination)
    {
        worker.StartSharedFill(arena, source, first, RangePages, destination);
        return worker.ShareAndFinish();
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
        if (_reader is { HoldsJob: false } reader && KindOf(arena, next) == RangeKind.Untouched && _evictor.HasRoomFor(RangePages))
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
}
