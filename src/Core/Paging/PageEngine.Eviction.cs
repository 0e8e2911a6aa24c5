using Tibet.Core.Interop;
using Tibet.Core.Paging.Eviction;

namespace Tibet.Core.Paging;

// Eviction: sealing resident pages and dropping their plaintext, a batch at a time.
public sealed unsafe partial class PageEngine
{
    /// <summary>Evicts until <paramref name="incoming"/> more pages fit the budget.</summary>
    private void MakeRoom(int incoming)
    {
        if (_budgetPages == long.MaxValue)
            return;
        long attempts = _residentSet.Count;
        while (_residentPages + incoming > _budgetPages && attempts > 0)
        {
            int want = (int)Math.Min(_victims.Length, _residentPages + incoming - _budgetPages);
            attempts -= want;
            // A step that evicts nothing met only pages the kernel refuses to move (shared
            // with a forked child, or reprotected); trying the rest of the queue on every
            // fault would cost a failed UFFDIO_MOVE per page. The budget is exceeded
            // until they become movable, as the README states.
            if (EvictFromQueue(want) == 0)
                break;
        }
    }

    /// <summary>When idle, keeps a batch of headroom under the budget so that faults
    /// rarely have to evict before they are served.</summary>
    private bool EvictInBackgroundLocked()
    {
        if (_budgetPages == long.MaxValue)
            return false;
        long headroom = Math.Min(_victims.Length, _budgetPages / 4);
        long excess = _residentPages - (_budgetPages - headroom);
        if (excess <= 0)
            return false;
        return EvictFromQueue((int)Math.Min(excess, _victims.Length)) > 0;
    }

    private const int EvictAfterFaultPages = 16;

    /// <summary>A small slice of background eviction after each served fault: a busy
    /// program never leaves the handler idle, and without this every fault at the budget
    /// would evict a single page with three system calls of its own.</summary>
    private void EvictAfterFault()
    {
        if (_budgetPages == long.MaxValue)
            return;
        long headroom = Math.Min(_victims.Length, _budgetPages / 4);
        long excess = _residentPages - (_budgetPages - headroom);
        if (excess > 0)
            EvictFromQueue((int)Math.Min(excess, Math.Min(EvictAfterFaultPages, _victims.Length)));
    }

    /// <summary>Takes up to <paramref name="want"/> resident pages in the policy's order and seals them.</summary>
    /// <remarks>The pages the newest fault brought in are never taken: the thread it woke
    /// may not have run yet, and taking its page would make it fault again, and again,
    /// whenever the pages the kernel refuses to move (shared with a forked child) hold the
    /// whole budget (seen: a program that stopped making progress). Nothing is then
    /// evicted, and the budget is exceeded until they become movable, as documented.</remarks>
    private int EvictFromQueue(int want)
    {
        int count = 0, kept = 0;
        long candidates = _residentSet.Count;
        while (count < want && kept < _keptBack.Length && candidates-- > 0 && _residentSet.TryTakeNext(out ResidentQueue.Element element))
        {
            Arena? arena = element.ArenaSlot < _arenaSlots.Length ? _arenaSlots[element.ArenaSlot] : null;
            if (arena == null || element.PageIndex >= arena.PageCount)
                continue;
            ref PageEntry entry = ref arena.Entries[element.PageIndex];
            if (entry.State != PageState.Resident || entry.ResidentTicket != element.Ticket)
                continue; // stale: the page left residency after this element was queued
            if (element.Ticket >= _newestFaultFirstTicket)
            {
                _keptBack[kept++] = element;
                continue;
            }
            _victims[count++] = new Victim { Arena = arena, PageIndex = element.PageIndex, Ticket = element.Ticket };
        }
        for (int i = 0; i < kept; i++)
            _residentSet.Keep(in _keptBack[i]);
        return count == 0 ? 0 : EvictVictims(count);
    }

    /// <summary>
    /// Moves the victims out of their arenas (runs of neighbours in one UFFDIO_MOVE),
    /// seals what was moved, and releases the scratch pages.
    /// </summary>
    private int EvictVictims(int count)
    {
        for (int start = 0; start < count;)
        {
            int end = start + 1;
            while (end < count && _victims[end].Arena == _victims[start].Arena
                   && _victims[end].PageIndex == _victims[end - 1].PageIndex + 1)
                end++;
            MoveRun(start, end - start);
            start = end;
        }

        int evicted = 0;
        bool scratchUsed = false;
        for (int k = 0; k < count; k++)
        {
            ref Victim victim = ref _victims[k];
            Arena arena = victim.Arena!;
            ref PageEntry entry = ref arena.Entries[victim.PageIndex];
            bool stillOurs = entry.State == PageState.Resident && entry.ResidentTicket == victim.Ticket;
            nint scratchPage = _space.TakenPage(k);
            switch (_outcomes[k])
            {
                case MoveOutcome.Moved:
                    scratchUsed = true;
                    if (stillOurs)
                    {
                        SealPage(arena, victim.PageIndex, ref entry, scratchPage);
                        StampEviction(ref entry);
                        _residentPages--;
                        evicted++;
                    }
                    else
                    {
                        Libc.memset((void*)scratchPage, 0, PageSize);
                    }
                    break;
                case MoveOutcome.Gone:
                    // Not mapped any more: the program discarded it (MADV_DONTNEED/FREE).
                    if (stillOurs)
                    {
                        entry.State = PageState.Zero;
                        StampEviction(ref entry);
                        _residentPages--;
                        _zeroEvictions++;
                        evicted++;
                    }
                    break;
                case MoveOutcome.Refused:
                    _evictionsRefused++;
                    if (stillOurs)
                    {
                        _residentSet.Return(new ResidentQueue.Element(arena.Slot, victim.PageIndex, victim.Ticket));
                    }
                    break;
            }
            victim.Arena = null;
        }

        if (scratchUsed)
            _space.ReleaseTaken(count);
        return evicted;
    }

    /// <summary>Records when the page left residency, for its refault distance.</summary>
    private void StampEviction(ref PageEntry entry) => entry.EvictionStamp = _evictionClock.Stamp();

    private void MoveRun(int first, int length)
    {
        Arena arena = _victims[first].Arena!;
        long pageIndex = _victims[first].PageIndex;
        int done = 0;
        int retries = 0;
        while (done < length)
        {
            int rc = _space.TakeOut(first + done, arena.PageAddress(pageIndex + done),
                (nuint)((length - done) * PageSize), out long moved);
            int pages = rc == 0 ? length - done : (int)(moved / PageSize);
            for (int i = 0; i < pages; i++)
                _outcomes[first + done + i] = MoveOutcome.Moved;
            done += pages;
            if (rc == 0 || pages > 0)
                continue;

            if (rc == Libc.EAGAIN && ++retries < 1000)
            {
                DrainEvents();
                continue;
            }
            if (_space.TookOutDespiteError(first + done, arena.PageAddress(pageIndex + done)))
            {
                _outcomes[first + done] = MoveOutcome.Moved;
                _movesReconciled++;
                done++;
                continue;
            }
            // ENOENT: nothing mapped there. EBUSY: shared with a child or pinned.
            // Anything else (EINVAL after mprotect, a vanished range): leave it be.
            _outcomes[first + done] = rc == Libc.ENOENT ? MoveOutcome.Gone : MoveOutcome.Refused;
            done++;
        }
    }

    /// <summary>Seals a moved-out page into the store and wipes the scratch copy.</summary>
    private void SealPage(Arena arena, long index, ref PageEntry entry, nint scratchPage)
    {
        var page = new ReadOnlySpan<byte>((void*)scratchPage, PageSize);
        if (_sealer.Seal(arena, index, ref entry, page))
        {
            _evictions++;
            Libc.memset((void*)scratchPage, 0, PageSize);
        }
        else
        {
            _zeroEvictions++;
        }
    }
}
