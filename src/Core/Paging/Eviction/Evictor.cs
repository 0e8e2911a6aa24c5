using Tibet.Core.Paging.AddressSpace;
using Tibet.Core.Paging.Sealing;

namespace Tibet.Core.Paging.Eviction;

/// <summary>
/// The engine's eviction part: keeps the books of resident pages (count, order, refault
/// distances) and, when the budget needs room, takes pages out of the address space and
/// has them sealed, a batch at a time.
/// </summary>
/// <remarks>
/// <para>Policy comes in as objects (<see cref="EngineOptions.Eviction"/> orders the
/// candidates, <see cref="EngineOptions.Watermarks"/> says when to evict ahead of need);
/// this class is the mechanism. Called under the engine lock, on the fault path:
/// allocation-free and malloc-free.</para>
/// <para>The pages the newest fault brought in are never taken: the thread it woke may
/// not have run yet, and taking its page would make it fault again, and again, whenever
/// the pages the kernel refuses to move (shared with a forked child) hold the whole
/// budget (seen: a program that stopped making progress). Nothing is then evicted, and
/// the budget is exceeded until they become movable, as the README states.</para>
/// </remarks>
internal sealed unsafe class Evictor : IResidency, IDisposable
{
    private readonly int _afterFaultPages;
    private readonly ArenaTable _arenas;
    private readonly PageSealer _sealer;
    // Seals the pages of the handler's own evictions with the engine lock let go (null:
    // every sealing under the lock); _unlockedVictims[i] is the victim of its ith page.
    private readonly UnlockedSealer? _unlocked;
    private readonly int[] _unlockedVictims;
    private readonly AddressSpaceOps _space;
    private readonly Action<Arena, long>? _beforeTakingOut; // EngineOptions.BeforeTakingOut: tests only
    private readonly ResidentSet _residentSet;
    private readonly long _budgetPages;
    private readonly long _highPages, _lowPages;
    private readonly long _halfPages; // what each of two engines that share the budget is owed
    private long _sizedFor; // the part of a shared budget the policy was last sized for
    private EvictionClock _clock;

    private readonly Victim[] _victims;
    private readonly TakeOutRun[] _runs;
    private readonly TakeOutcome[] _outcomes;
    private readonly ResidentQueue.Element[] _keptBack;
    // The staging slot whole ranges are taken out into (-1: ranges are evicted page by
    // page), and whether it holds one now (see TryEvictRange, TakeRecycled).
    private readonly int _rangeSlot;
    private bool _rangeHeld;
    private long _rangeEvictions;
    private ulong _lastTicket;
    private ulong _newestFaultFirstTicket = ulong.MaxValue;

    private long _residentPages, _peakResidentPages;
    private readonly ResidentBudgetShare? _share;
    // Pages a step (a fault, a range placed ahead) made room for and has not brought in
    // yet (see MakeRoom): counted against the budget until admitted pages use them up,
    // and what is left goes back when the step ends. With a shared budget the shared
    // count holds them too.
    private long _reserved;
    private long _evictions, _zeroEvictions, _refused, _reconciled, _refaults, _sourceDrops, _batches;

    private struct Victim
    {
        public Arena? Arena;
        public long PageIndex;
        public ulong Ticket;
    }

    private enum TakeOutcome : byte
    {
        Taken,
        Gone,
        Refused,
    }

    /// <param name="unlocked">Seals the handler's evictions after a fault and when idle
    /// with the engine lock let go; null: all under the lock.</param>
    public Evictor(EngineOptions options, ArenaTable arenas, PageSealer sealer, AddressSpaceOps space,
        UnlockedSealer? unlocked = null)
    {
        _arenas = arenas;
        _sealer = sealer;
        _unlocked = unlocked;
        _unlockedVictims = new int[options.EvictBatchPages];
        System.Diagnostics.Debug.Assert(unlocked == null || unlocked.Capacity >= options.EvictBatchPages);
        _space = space;
        _beforeTakingOut = options.BeforeTakingOut;
        _share = options.BudgetShare;
        _budgetPages = options.ResidentBudgetBytes == EngineOptions.Unlimited
            ? long.MaxValue
            : Math.Max(1, options.ResidentBudgetBytes / Userfaultfd.PageSize);
        _highPages = options.Watermarks.HighPages(_budgetPages);
        _lowPages = options.Watermarks.LowPages(_budgetPages);
        _afterFaultPages = options.Watermarks.AfterFaultPages;
        _halfPages = _budgetPages / 2;
        _sizedFor = _budgetPages;
        ReadAheadLimit = _budgetPages == long.MaxValue ? int.MaxValue : options.Watermarks.ReadAheadLimit(_budgetPages);
        // The policy sizes its probation for the read-ahead runs of anonymous arenas, and
        // grows it when a model map's whole 2 MiB ranges start arriving (ExpectRuns).
        _residentSet = options.Eviction.CreateSet(_budgetPages, this, options.ReadAheadMaxPages);
        _victims = new Victim[options.EvictBatchPages];
        _runs = new TakeOutRun[options.EvictBatchPages];
        _outcomes = new TakeOutcome[options.EvictBatchPages];
        _keptBack = new ResidentQueue.Element[options.MaxRunPages + 1];
        _rangeSlot = options.PlacesRangesUnderPressure ? space.RecyclingSlot : -1;
    }

    public bool Unlimited => _budgetPages == long.MaxValue;

    /// <summary>The most pages one fault's read-ahead run may bring in.</summary>
    public int ReadAheadLimit { get; }

    public long ResidentPages => _residentPages;

    /// <summary>The most pages resident at once, counting those of an engine that shares
    /// the budget (<see cref="EngineOptions.BudgetShare"/>).</summary>
    public long PeakResidentPages => _peakResidentPages;

    /// <summary>This engine's resident pages and the room its step is making for more
    /// (see <see cref="MakeRoom"/>) and, with a shared budget, the other engine's: what the
    /// budget bounds.</summary>
    private long CountedPages => _share == null ? OwnCounted : _share.Combined(OwnCounted);

    /// <summary>This engine's pages as the shared count holds them (with the room its fault
    /// is making).</summary>
    private long OwnCounted => _residentPages + _reserved;

    /// <summary>With a shared budget: the other engine's pages (and the room its faults are
    /// making), as the shared count holds them.</summary>
    private long OtherPages => _share!.Combined(OwnCounted) - OwnCounted;

    /// <summary>With a shared budget: whether this engine holds at most its half while the
    /// other holds more than its own. Then the other gives way, not this one (see
    /// ResidentBudgetShare).</summary>
    private bool OwedRoom
    {
        get
        {
            if (_share == null || Unlimited || OwnCounted > _halfPages || !_share.Live)
                return false;
            return OtherPages > _halfPages;
        }
    }

    /// <summary>With a shared budget: evicts as many of this engine's pages as the other
    /// engine demands, never below this engine's half. Whether any were evicted.</summary>
    private bool GiveWay()
    {
        if (_share == null || Unlimited || _residentPages <= _halfPages)
            return false;
        long pages = _share.TakeDemand(Math.Min(_victims.Length, _residentPages - _halfPages));
        if (pages <= 0)
            return false;
        int evicted = EvictFromQueue((int)pages);
        _share.ReturnDemand(pages - evicted); // nothing movable for the rest: it stands
        return evicted > 0;
    }

    /// <summary>With a shared budget: what this engine asked of the other stands only while
    /// it is owed room.</summary>
    private void WithdrawIfNotOwed()
    {
        if (_share != null && !Unlimited && !OwedRoom)
            _share.WithdrawDemand();
    }

    /// <summary>Pages left this engine's books: the shared count (if any) follows.</summary>
    private void Left(long pages)
    {
        if (pages > 0)
            _share?.Left(pages);
    }
    public long Evictions => _evictions;
    public long ZeroEvictions => _zeroEvictions;
    public long Refused => _refused;
    public long Reconciled => _reconciled;
    public long Refaults => _refaults;

    /// <summary>Evictions of model pages as their source gives them: dropped, not sealed
    /// (see Arena.RefetchesSource).</summary>
    public long SourceDrops => _sourceDrops;

    /// <summary>Eviction steps that took pages out: one round trip each where the take-out
    /// is the served process's thread's (AgentAddressSpace).</summary>
    public long Batches => _batches;

    /// <summary>2 MiB ranges placed whole that eviction took out whole (see <see cref="TryEvictRange"/>).</summary>
    public long RangeEvictions => _rangeEvictions;

    /// <summary>Elements the resident set holds without growing (for tests).</summary>
    public long Capacity => _residentSet.Capacity;

    public ResidentSet ResidentSet => _residentSet;

    /// <summary>Whether <paramref name="pages"/> more fit below the high watermark: no
    /// eviction is near.</summary>
    public bool HasRoomFor(long pages) => Unlimited || CountedPages + pages <= _highPages;

    /// <summary>
    /// The longest run of <paramref name="wanted"/> pages a fault may bring in: with a
    /// shared budget, no more than this engine can make room for by evicting its own pages,
    /// so that the other engine's pages never push the two above the budget by more than
    /// the faulting page. Without one, <paramref name="wanted"/>.
    /// </summary>
    public int RunThatFits(int wanted)
    {
        if (_share == null || Unlimited)
            return wanted;
        long room = _budgetPages - CountedPages + _residentPages;
        return (int)Math.Clamp(room, 1, Math.Max(1, wanted));
    }

    /// <summary>Whether the handler, when idle, should look again within milliseconds
    /// rather than sleep until the next fault: the other engine's pages may grow, and then
    /// this engine's must give way, which it does only when it runs.</summary>
    public bool WatchesSharedBudget => _share != null && !Unlimited && _residentPages > 0 && _share.Live
                                       && OtherPages > 0; // the other engine holds pages

    /// <summary>The fault is served (or the handler's step is done): the room it made and
    /// did not use goes back now, not at the next fault (which may not come for a long
    /// time); a range taken out whole and not placed again is wiped.</summary>
    public void EndStep()
    {
        ReleaseReservation();
        DiscardRecycled();
    }

    /// <summary>While set, no range is taken out whole (<see cref="TryEvictRange"/>): the
    /// range placer fills a staging huge page without the engine lock (Faults.RangePlacer),
    /// possibly the recycling slot, into which an API call's eviction would otherwise take
    /// a range meanwhile. Changed under the engine lock.</summary>
    public bool RangeEvictionPaused { get; set; }

    /// <summary>
    /// Whether the recycling slot holds a range taken out whole by this fault's eviction:
    /// if so, the caller takes it over, fills every byte of it anew and places it (or
    /// discards it): the huge page is used again as it is, without the kernel freeing,
    /// allocating and zeroing 2 MiB.
    /// </summary>
    public bool TakeRecycled(out int slot)
    {
        slot = _rangeSlot;
        if (!_rangeHeld)
            return false;
        _rangeHeld = false;
        return true;
    }

    /// <summary>Wipes a range taken out and not used again: its plaintext is outside the
    /// budget's books. Called at the end of every step of the handler (a fault served, a
    /// range placed ahead, an idle eviction) and of every API call that evicts, so that it
    /// never outlives the step that evicted it.</summary>
    public void DiscardRecycled()
    {
        if (!_rangeHeld)
            return;
        _rangeHeld = false;
        _space.DiscardStaged(_rangeSlot);
    }

    /// <summary>Runs of <paramref name="pages"/> pages arrive (a model map's 2 MiB ranges):
    /// the policy keeps room for them (see ResidentSet.ExpectRuns).</summary>
    public void ExpectRuns(int pages) => _residentSet.ExpectRuns(pages);

    /// <summary>A fault is being served: what it brings in stays until the next one.</summary>
    public void BeginFault()
    {
        _newestFaultFirstTicket = _lastTicket + 1;
        ReleaseReservation();
    }

    /// <summary>Gives back the room the last step made and did not bring pages into.</summary>
    private void ReleaseReservation()
    {
        if (_reserved > 0)
        {
            _share?.Reserve(-_reserved);
            _reserved = 0;
        }
    }

    /// <summary>
    /// Pages became resident (UFFDIO_COPY or ZEROPAGE). A page that was sealed gives its
    /// slot back, or keeps it when it was installed write-protected
    /// (<paramref name="keepCopies"/>, see PageSealer.Retain); its refault distance goes
    /// to the policy.
    /// </summary>
    public void Admit(Arena arena, long index, int count, bool keepCopies = false)
    {
        if (count == RangePages)
            _residentSet.BeginRun(count); // a range placed whole: kept together by the policy
        int admitted = 0;
        for (long i = index; i < index + count; i++)
        {
            ref PageEntry entry = ref arena.Entries[i];
            if (entry.State == PageState.Resident)
                continue;
            // A model page dropped to its source is Untouched again, with its stamp.
            uint refaultDistance = entry.State is PageState.Sealed or PageState.Zero
                                   || (entry.State == PageState.Untouched && entry.EvictionStamp != 0)
                ? _clock.DistanceSince(entry.EvictionStamp)
                : ResidentSet.FirstTouch;
            if (refaultDistance != ResidentSet.FirstTouch)
                _refaults++;
            entry.EvictionStamp = 0;
            if (keepCopies && entry.State == PageState.Sealed)
            {
                _sealer.Retain(ref entry);
            }
            else if (keepCopies && entry.State == PageState.Untouched && arena.RefetchesSource)
            {
                // From the arena's source, installed write-protected (FaultService.KeepsCopy).
                entry.State = PageState.Resident;
                entry.Flags = PageEntry.FlagSourceCopy;
            }
            else
            {
                _sealer.Forget(ref entry);
                entry.State = PageState.Resident;
            }
            entry.ResidentTicket = ++_lastTicket;
            _residentSet.Admit(new ResidentQueue.Element(arena.Slot, i, entry.ResidentTicket), refaultDistance);
            _residentPages++;
            admitted++;
        }
        if (count == RangePages)
            _residentSet.BeginRun(0); // pages skipped above must not carry the run over
        if (admitted > 0)
        {
            // Counted already as far as the step made room for them (MakeRoom).
            long reserved = Math.Min(_reserved, admitted);
            _reserved -= reserved;
            _share?.Admitted(admitted, reserved);
        }
        long counted = _share == null ? _residentPages : _share.Resident(_residentPages);
        if (counted > _peakResidentPages)
            _peakResidentPages = counted;
    }

    /// <summary>A resident page left the books without eviction (unmapped, released).
    /// Its queue element goes stale and is skipped.</summary>
    public void Forget(ref PageEntry entry)
    {
        if (entry.State == PageState.Resident)
        {
            _residentPages--;
            Left(1);
        }
    }

    /// <summary>Evicts until <paramref name="incoming"/> more pages fit the budget, besides
    /// those the step made room for already and has not brought in: the room adds up, so
    /// that a fault may make room for its faulting page first and for the rest of its run
    /// (or range) after. Counted as room made until admitted (or the step ends), it never
    /// lets two calls count the same free page.</summary>
    /// <param name="sealsUnlocked">The pages are sealed with the engine lock let go
    /// (<see cref="UnlockedSealer"/>): an API call may then release any arena meanwhile,
    /// the faulting one included, which the caller checks afterwards.</param>
    public void MakeRoom(int incoming, bool sealsUnlocked = false)
    {
        if (Unlimited)
            return;
        // Counted before the room is made. With a shared budget, an engine that faults at
        // the same time then sees these pages, and makes room for its own besides them.
        _share?.Reserve(incoming);
        _reserved += incoming;
        long attempts = _residentSet.Count;
        long counted;
        while ((counted = CountedPages) > _budgetPages && attempts > 0)
        {
            // With a shared budget the other engine's pages count too, but only this
            // engine's can be evicted here: at most all of them.
            int want = (int)Math.Min(_victims.Length, Math.Min(_residentPages, counted - _budgetPages));
            if (want <= 0)
                break;
            // Below its half while the other engine holds more: this engine's pages still
            // go, so that the budget holds, and the other is asked to give as many back.
            if (OwedRoom)
                _share!.AddDemand(want, _halfPages - OwnCounted);
            attempts -= want;
            // A step that evicts nothing met only pages the kernel refuses to move (shared
            // with a forked child, or reprotected); trying the rest of the queue on every
            // fault would cost a failed take-out per page. The budget is exceeded until
            // they become movable, as the README states.
            if (EvictFromQueue(want, sealsUnlocked: sealsUnlocked) == 0)
                break;
        }
        GiveWay();
        WithdrawIfNotOwed();
        ResizeForShare();
    }

    /// <summary>With a shared budget: sizes the policy for the part of the budget the other
    /// engine leaves this one (at least its half), when that moved by a 32nd of the budget.</summary>
    private void ResizeForShare()
    {
        if (_share == null || Unlimited || !_share.Live)
            return;
        long part = Math.Max(_halfPages, _budgetPages - OtherPages);
        if (Math.Abs(part - _sizedFor) * 32 < _budgetPages)
            return;
        _sizedFor = part;
        _residentSet.Resize(part);
    }

    /// <summary>When idle: gives way to the other engine's demand, or seals a batch if
    /// resident pages are above the high watermark (with a shared budget, only when the
    /// other engine is not the one to give way: see <see cref="OwedRoom"/>).</summary>
    public bool EvictInBackground()
    {
        long counted;
        if (GiveWay())
            return true;
        if (Unlimited || (counted = CountedPages) <= _highPages || _residentPages == 0 || OwedRoom)
            return false;
        return EvictFromQueue((int)Math.Min(Math.Min(counted - _lowPages, _residentPages), _victims.Length), takesRanges: false,
            sealsUnlocked: true) > 0;
    }

    /// <summary>A small slice of background eviction after each served fault: a busy
    /// program never leaves the handler idle, and without this every fault at the budget
    /// would evict a single page with three system calls of its own.</summary>
    public void EvictAfterFault()
    {
        ReleaseReservation(); // the fault's pages are in: room it made and did not fill is not headroom
        long counted;
        if (GiveWay() || Unlimited || (counted = CountedPages) <= _highPages || _residentPages == 0 || OwedRoom)
            return;
        EvictFromQueue((int)Math.Min(Math.Min(counted - _lowPages, _residentPages), Math.Min(_afterFaultPages, _victims.Length)), takesRanges: false,
            sealsUnlocked: true);
    }

    /// <summary>Seals resident pages in the policy's order, the newest fault's included,
    /// until at most <paramref name="targetPages"/> remain (or none can be moved).</summary>
    public void TrimTo(long targetPages)
    {
        try
        {
            TrimToCore(targetPages);
        }
        finally
        {
            DiscardRecycled();
        }
    }

    private void TrimToCore(long targetPages)
    {
        _newestFaultFirstTicket = ulong.MaxValue;
        long attempts = _residentSet.Count;
        while (_residentPages > targetPages && attempts > 0)
        {
            int want = (int)Math.Min(_victims.Length, _residentPages - targetPages);
            attempts -= want;
            EvictFromQueue(want);
        }
    }

    /// <summary>Seals every resident page of <paramref name="arena"/>.</summary>
    public void EvictArena(Arena arena)
    {
        int count = 0;
        for (long i = 0; i < arena.PageCount; i++)
        {
            ref PageEntry entry = ref arena.Entries[i];
            if (entry.State != PageState.Resident) continue;
            _victims[count++] = new Victim { Arena = arena, PageIndex = i, Ticket = entry.ResidentTicket };
            if (count == _victims.Length)
            {
                EvictVictims(count);
                count = 0;
            }
        }
        if (count > 0) EvictVictims(count);
    }

    /// <summary>Whether a resident-queue element still names a resident page.</summary>
    bool IResidency.IsLiveResident(in ResidentQueue.Element element)
    {
        Arena? arena = _arenas.InSlot(element.ArenaSlot);
        if (arena == null || element.PageIndex >= arena.PageCount)
            return false;
        ref PageEntry entry = ref arena.Entries[element.PageIndex];
        return entry.State == PageState.Resident && entry.ResidentTicket == element.Ticket;
    }

    public void Dispose() => _residentSet.Dispose();

    /// <summary>Takes up to <paramref name="want"/> resident pages in the policy's order and
    /// seals them. <paramref name="takesRanges"/> false (headroom made ahead of need): stops
    /// at a range placed whole, which is left for a fault that needs the room, since that
    /// fault fills the range's huge page again (<see cref="TakeRecycled"/>) where a range
    /// evicted ahead would be wiped and freed, and the next allocated and zeroed.
    /// <paramref name="sealsUnlocked"/>: the pages are sealed with the engine lock let go
    /// (the handler's own evictions at the end of a step: see <see cref="UnlockedSealer"/>).</summary>
    private int EvictFromQueue(int want, bool takesRanges = true, bool sealsUnlocked = false)
    {
        int count = 0, kept = 0, inRanges = 0;
        long candidates = _residentSet.Count;
        while (count + inRanges < want && kept < _keptBack.Length && candidates-- > 0
               && (takesRanges || !NextIsWholeRange()) && _residentSet.TryTakeNext(out ResidentQueue.Element element))
        {
            Arena? arena = _arenas.InSlot(element.ArenaSlot);
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
            if (_rangeSlot >= 0 && arena.PlacedWhole is { } whole && whole[element.PageIndex / RangePages])
            {
                int taken = TryEvictRange(arena, element.PageIndex / RangePages);
                if (taken > 0)
                {
                    inRanges += taken;
                    continue;
                }
            }
            _victims[count++] = new Victim { Arena = arena, PageIndex = element.PageIndex, Ticket = element.Ticket };
        }
        for (int i = 0; i < kept; i++)
            _residentSet.Keep(in _keptBack[i]);
        return inRanges + (count == 0 ? 0 : EvictVictims(count, sealsUnlocked));
    }

    private const int RangePages = Collapse.RangeCollapser.RangePages;

    /// <summary>Whether the policy's next candidate is a live page of a range placed whole.</summary>
    private bool NextIsWholeRange()
    {
        if (_rangeSlot < 0 || !_residentSet.TryPeekNext(out ResidentQueue.Element next))
            return false;
        Arena? arena = _arenas.InSlot(next.ArenaSlot);
        return arena?.PlacedWhole is { } whole && next.PageIndex < arena.PageCount && whole[next.PageIndex / RangePages]
               && ((IResidency)this).IsLiveResident(in next);
    }

    /// <summary>
    /// Evicts range <paramref name="range"/> of <paramref name="arena"/>, placed whole and
    /// chosen by the policy through one of its pages, as a whole: one UFFDIO_MOVE takes its
    /// huge page into the recycling slot (one TLB flush; taken 4 KiB at a time, it would be
    /// split, and each page moved, wiped and freed), where its pages are dropped or sealed
    /// as any page taken out. The huge page then waits there for the range the fault
    /// brings in (<see cref="TakeRecycled"/>), or is wiped when the fault ends. Returns the
    /// pages evicted; 0 when the range is not whole on the books any more (a page of it
    /// was evicted or given up since) or the kernel moved none of it (then the page the
    /// policy chose goes the usual way).
    /// </summary>
    private int TryEvictRange(Arena arena, long range)
    {
        if (RangeEvictionPaused)
            return 0; // page by page instead; the range stays placed whole on the books
        arena.PlacedWhole![range] = false; // taken out now, or not whole any more
        long first = range * RangePages;
        if (first + RangePages > arena.PageCount)
            return 0;
        for (long i = first; i < first + RangePages; i++)
            if (arena.Entries[i].State != PageState.Resident)
                return 0;
        DiscardRecycled();
        _space.TakeOutRange(_rangeSlot, arena.PageAddress(first), out long moved);
        int pages = (int)(moved / Userfaultfd.PageSize);
        if (pages == 0)
            return 0;
        byte* taken = (byte*)_space.HugeStaging(_rangeSlot);
        for (int i = 0; i < pages; i++)
            RetireTaken(arena, first + i, ref arena.Entries[first + i], (nint)(taken + (long)i * Userfaultfd.PageSize), wipe: false);
        _batches++;
        _rangeEvictions++;
        Left(pages);
        _rangeHeld = true;
        if (pages < RangePages)
            DiscardRecycled(); // the rest is still mapped, and stays on the books
        return pages;
    }

    /// <summary>
    /// A page taken out of the address space into engine memory at <paramref name="page"/>
    /// leaves the books: as its source gives it, dropped (read from the source again); not
    /// written since its sealed copy was opened, that copy is its contents; else sealed.
    /// <paramref name="wipe"/>: the plaintext is wiped here (a range's is wiped or
    /// overwritten whole by its slot's next use).
    /// </summary>
    private void RetireTaken(Arena arena, long index, ref PageEntry entry, nint page, bool wipe)
    {
        if (entry.HoldsSourceCopy)
        {
            entry.Flags = 0;
            entry.State = PageState.Untouched;
            _sourceDrops++;
            _evictions++;
        }
        else if (entry.HoldsCleanCopy)
        {
            _sealer.ResealClean(ref entry);
            _evictions++;
        }
        else if (_sealer.Seal(arena, index, ref entry, new ReadOnlySpan<byte>((void*)page, Userfaultfd.PageSize)))
        {
            _evictions++;
        }
        else
        {
            _zeroEvictions++;
        }
        if (wipe)
            Interop.Libc.memset((void*)page, 0, Userfaultfd.PageSize);
        LeftByEviction(ref entry);
    }

    /// <summary>A resident page left the books by eviction (sealed, dropped or made a zero
    /// page): stamped, so that its refault distance can be told if it comes back.</summary>
    private void LeftByEviction(ref PageEntry entry)
    {
        entry.EvictionStamp = _clock.Stamp();
        _residentPages--;
    }

    /// <summary>
    /// Takes the victims out of their arenas (runs of neighbours in one take-out), seals
    /// what was taken, and gives the take-out area back.
    /// </summary>
    private int EvictVictims(int count, bool sealsUnlocked = false)
    {
        UnlockedSealer? unlocked = sealsUnlocked ? _unlocked : null;
        int givenUp = 0;
        count = SetAsideGivenUp(count, ref givenUp);
        if (count == 0)
        {
            Left(givenUp);
            return givenUp;
        }
        int runs = 0;
        for (int start = 0; start < count;)
        {
            int end = start + 1;
            while (end < count && _victims[end].Arena == _victims[start].Arena
                   && _victims[end].PageIndex == _victims[end - 1].PageIndex + 1)
                end++;
            _runs[runs++] = new TakeOutRun(_victims[start].Arena!.PageAddress(_victims[start].PageIndex), end - start, start);
            start = end;
        }
        _space.BeginTakeOuts(_runs.AsSpan(0, runs));
        for (int i = 0; i < runs; i++)
            TakeOutOneRun(_runs[i].Slot, _runs[i].Pages);

        int evicted = 0;
        bool taken = false;
        try
        {
            evicted = RetireVictims(count, unlocked, ref taken);
        }
        catch
        {
            // The engine fails (see PageEngine.Fail); the pages handed over go unsealed, and
            // their plaintext and keys with them.
            if (unlocked != null)
                DropUnlocked(unlocked);
            throw;
        }

        if (unlocked is { Count: > 0 })
            evicted += SealUnlocked(unlocked);
        if (taken)
        {
            _space.ReleaseTaken(count);
            _batches++;
        }
        Left(evicted + givenUp);
        return evicted + givenUp;
    }

    /// <summary>What becomes of each victim once the take-outs are done: sealed (or handed
    /// to <paramref name="unlocked"/> to be sealed with the lock let go), dropped, made a
    /// zero page, or back to the resident set. Returns the pages that left the books.</summary>
    private int RetireVictims(int count, UnlockedSealer? unlocked, ref bool taken)
    {
        int evicted = 0;
        for (int k = 0; k < count; k++)
        {
            ref Victim victim = ref _victims[k];
            Arena arena = victim.Arena!;
            // Nothing between the take-outs and here reads the program's events or lets the
            // engine lock go (see TakeOutOneRun), so no arena is released meanwhile.
            System.Diagnostics.Debug.Assert(!arena.Released, "an arena was released between its take-out and its retirement");
            ref PageEntry entry = ref arena.Entries[victim.PageIndex];
            bool stillOurs = entry.State == PageState.Resident && entry.ResidentTicket == victim.Ticket;
            // A page taken out of a range placed whole splits its huge page: the range is
            // not whole any more, even once its pages are all back (see TryEvictRange).
            if (arena.PlacedWhole is { } whole && _outcomes[k] != TakeOutcome.Refused)
                whole[victim.PageIndex / RangePages] = false;
            switch (_outcomes[k])
            {
                case TakeOutcome.Taken:
                    taken = true;
                    if (stillOurs && unlocked != null && !entry.HoldsSourceCopy && !entry.HoldsCleanCopy)
                    {
                        // Sealed below, with the lock let go; counted once installed.
                        _unlockedVictims[unlocked.Count] = k;
                        unlocked.Add(arena, victim.PageIndex, _space.TakenPage(k));
                    }
                    else if (stillOurs)
                    {
                        RetireTaken(arena, victim.PageIndex, ref entry, _space.TakenPage(k), wipe: true);
                        evicted++;
                    }
                    else
                    {
                        Interop.Libc.memset((void*)_space.TakenPage(k), 0, Userfaultfd.PageSize);
                    }
                    break;
                case TakeOutcome.Gone:
                    // Not mapped any more: the program discarded it (MADV_DONTNEED/FREE).
                    if (stillOurs)
                    {
                        _sealer.MakeZero(ref entry); // as ProgramEvents.DiscardPage
                        LeftByEviction(ref entry);
                        _zeroEvictions++;
                        evicted++;
                    }
                    break;
                case TakeOutcome.Refused:
                    _refused++;
                    if (stillOurs)
                        _residentSet.Return(new ResidentQueue.Element(arena.Slot, victim.PageIndex, victim.Ticket));
                    break;
            }
            victim.Arena = null;
        }
        return evicted;
    }

    /// <summary>Wipes the plaintext of the pages handed to <paramref name="unlocked"/> and
    /// forgets them (their keys go): after a failure, or once they are sealed.</summary>
    private void DropUnlocked(UnlockedSealer unlocked)
    {
        for (int i = 0; i < unlocked.Count; i++)
            Interop.Libc.memset((void*)_space.TakenPage(_unlockedVictims[i]), 0, Userfaultfd.PageSize);
        unlocked.Wipe();
        unlocked.Clear();
    }

    /// <summary>
    /// Seals the pages handed to <paramref name="unlocked"/> with the engine lock let go,
    /// then, with it back, installs each whose entry is still the one taken out (its arena
    /// not released, the page still resident under the same ticket: an API call may have
    /// unmapped it meanwhile, and then the books already let it go). Every plaintext is
    /// wiped. Returns the pages that left the books here.
    /// </summary>
    private int SealUnlocked(UnlockedSealer unlocked)
    {
        int left = 0;
        try
        {
            unlocked.SealAll();
            for (int i = 0; i < unlocked.Count; i++)
            {
                ref Victim victim = ref _victims[_unlockedVictims[i]];
                Arena arena = unlocked.ArenaOf(i);
                if (!arena.Released && victim.PageIndex < arena.PageCount)
                {
                    ref PageEntry entry = ref arena.Entries[victim.PageIndex];
                    if (entry.State == PageState.Resident && entry.ResidentTicket == victim.Ticket)
                    {
                        if (unlocked.Install(i, _sealer, ref entry))
                            _evictions++;
                        else
                            _zeroEvictions++;
                        LeftByEviction(ref entry);
                        left++;
                    }
                }
            }
        }
        finally
        {
            DropUnlocked(unlocked);
        }
        return left;
    }

    /// <summary>
    /// Takes the victims the program gave up, whose mapping could not be write-protected
    /// when it did (PageEntry.FlagGivenUp), out of the batch: their bytes may be the given-up
    /// ones, and sealed they would come back instead of zeros. Protected now, they leave
    /// the books as ProgramEvents.DiscardPage would have them leave (counted in
    /// <paramref name="left"/>: still mapped, a write brings them back); still refused (the
    /// madvising thread has not run yet), they go back to the resident set for later.
    /// Returns how many victims remain, in order.
    /// </summary>
    private int SetAsideGivenUp(int count, ref int left)
    {
        int kept = 0;
        for (int k = 0; k < count; k++)
        {
            ref Victim victim = ref _victims[k];
            Arena arena = victim.Arena!;
            ref PageEntry entry = ref arena.Entries[victim.PageIndex];
            if (!entry.IsGivenUp || entry.ResidentTicket != victim.Ticket)
            {
                _victims[kept++] = victim;
                continue;
            }
            int rc = _space.Protect(arena.PageAddress(victim.PageIndex), Userfaultfd.PageSize);
            if (rc == Interop.Libc.EAGAIN)
            {
                _refused++;
                _residentSet.Return(new ResidentQueue.Element(arena.Slot, victim.PageIndex, victim.Ticket));
            }
            else
            {
                // Protected, or gone from the map (ENOENT): zeros from now on, as discarded.
                _sealer.MakeZero(ref entry); // no longer given up, either
                LeftByEviction(ref entry);
                _zeroEvictions++;
                left++;
            }
            victim.Arena = null;
        }
        for (int k = kept; k < count; k++)
            _victims[k].Arena = null; // moved down, or set aside
        return kept;
    }

    /// <summary>
    /// Takes one run of victims out, as far as the address space lets it.
    /// </summary>
    /// <remarks>
    /// A take-out never waits for the program's events. The kernel answers EAGAIN for
    /// events pending on the userfaultfd a move is issued on, and that is the scratch
    /// area's (UFFDIO_MOVE wants its destination registered on it), which asks for no
    /// events. (It also answers EAGAIN when a huge page it must split cannot be split for
    /// the moment: that take-out is asked again, as it is.) A madvise holds its thread, before the kernel zaps or frees anything, until
    /// the engine reads its REMOVE event, and the engine reads events under the lock this
    /// runs under: so a page taken out while such a call waits holds what it held before
    /// the call, and the event, read after the batch, finds it sealed and does what the
    /// call says (GivenUpDuringTakeOutTests). munmap and mremap differ: the kernel has
    /// changed the page tables by the time their events wait, and a page they took away is
    /// found gone. Were the events ever read in the middle of a batch, a page would have to
    /// be refused (back to the resident set), never retaken: once a madvise's thread
    /// has run on, a page it gave up may hold what the program wrote since (MADV_FREE) or
    /// the bytes it gave up (MADV_DONTNEED, not yet zapped), and only the books, settled
    /// between batches, tell which pages to take then.
    /// </remarks>
    private const int MaxTakeOutRetries = 1000;

    private void TakeOutOneRun(int first, int length)
    {
        Arena arena = _victims[first].Arena!;
        long pageIndex = _victims[first].PageIndex;
        int done = 0;
        int retries = 0;
        _beforeTakingOut?.Invoke(arena, pageIndex);
        while (done < length)
        {
            int rc = _space.TakeOut(first + done, arena.PageAddress(pageIndex + done),
                (nuint)((length - done) * Userfaultfd.PageSize), out long moved);
            int pages = rc == 0 ? length - done : (int)(moved / Userfaultfd.PageSize);
            for (int i = 0; i < pages; i++)
                _outcomes[first + done + i] = TakeOutcome.Taken;
            done += pages;
            if (rc == 0 || pages > 0)
                continue;

            // EAGAIN: a huge page the move must split could not be split just now (the
            // kernel found it referenced elsewhere for a moment). Asked again as it is,
            // without reading any event (see above).
            if (rc == Interop.Libc.EAGAIN && ++retries < MaxTakeOutRetries)
            {
                if (retries > 8)
                    Thread.Yield(); // let whoever holds the reference let it go
                continue;
            }
            if (_space.TookOutDespiteError(first + done, arena.PageAddress(pageIndex + done)))
            {
                _outcomes[first + done] = TakeOutcome.Taken;
                _reconciled++;
                done++;
                continue;
            }
            // ENOENT: nothing mapped there. EBUSY: shared with a child or pinned. EAGAIN that
            // lasts: the page stays, and the rest of the run is asked for, as after any
            // refusal: an agent that met it may have moved the pages after it
            // (AgentAddressSpace answers those from its record). Anything else (EINVAL after
            // mprotect, a vanished range): leave it be.
            _outcomes[first + done] = rc == Interop.Libc.ENOENT ? TakeOutcome.Gone : TakeOutcome.Refused;
            done++;
        }
    }
}
