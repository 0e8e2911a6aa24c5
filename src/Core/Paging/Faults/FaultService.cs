using System.Diagnostics;
using Tibet.Core.Diagnostics;
using Tibet.Core.Interop;
using Tibet.Core.Paging.AddressSpace;
using Tibet.Core.Paging.Collapse;
using Tibet.Core.Paging.Events;
using Tibet.Core.Paging.Eviction;
using Tibet.Core.Paging.Reporting;
using Tibet.Core.Paging.Sealing;
using Tibet.Core.Storage;
using static Tibet.Core.Interop.UserfaultfdAbi;

namespace Tibet.Core.Paging.Faults;

/// <summary>
/// The engine's fault service: for one fault, finds the page, decides the read-ahead
/// run, fills the pages (opened from the store, read from the arena's source, or zeros),
/// makes room under the budget, and installs them, waking the faulting thread with the
/// first page.
/// </summary>
/// <remarks>
/// Runs under the engine lock on the handler thread: allocation-free and malloc-free.
/// Plaintext exists only in the locked inject buffer, wiped after every use.
/// </remarks>
internal sealed unsafe class FaultService : IDisposable
{
    private const int PageSize = Userfaultfd.PageSize;
    private static readonly double NanosecondsPerTick = 1e9 / Stopwatch.Frequency;

    private readonly ArenaTable _arenas;
    private readonly Evictor _evictor;
    private readonly PageSealer _sealer;
    private readonly AddressSpaceOps _space;
    private readonly ProgramEvents _events;
    private readonly FailureReporter _reporter;
    private readonly RangeCollapser _collapser;
    private readonly int _readAheadMaxPages;
    private readonly int _sourceReadAheadMaxPages;
    private readonly bool _tracksWrites;
    private readonly int _decryptAheadPages;
    // Shares long runs of sealed pages (null: one CPU, or EngineOptions.FillThreads 0).
    private readonly FillWorker? _worker;
    private readonly RangePlacer _placer;
    // The engine's lock, which the handler holds while it serves: let go around a source's
    // file read and decryption (see PageSource.Prefetch).
    private readonly Threading.EngineLockWindow _engineLock;
    // While the worker runs, no event may be read (see FillWorker): an install that meets
    // one ends the handler's part instead.
    private bool _workerRunning;
    // The worker's part of the run under way, as its entries were when it started: it fills
    // them without the engine lock, which the handler lets go meanwhile (FillAndInject).
    private readonly PageEntry* _workerEntries;
    private readonly nuint _workerEntriesLength;
    private bool _workerUnlocked;
    // EngineOptions.FillsWithoutLock.
    private readonly bool _fillsWithoutLock;
    // The model map whose ranges are decrypted ahead: the one the newest range fault was in.
    private Arena? _aheadArena;
    private readonly byte* _buffer;
    private readonly nuint _bufferLength;
    // A slice's pages as they were when it was prepared, to open its sealed ones without
    // the engine lock and find out afterwards whether any changed (OpenWithoutLock).
    private readonly PageEntry[] _sliceEntries = new PageEntry[InjectSlicePages];
    private readonly int[] _sliceSealed = new int[InjectSlicePages];
    private readonly UnlockedOpener _opener;
    private readonly LatencyHistogram _latency = new();
    private long _received;
    private bool _recorded;
    private long _faults, _readAheadPages, _zeroFills, _sourcedPages, _sourceInstalls, _writeFaults, _pagesAhead;

    /// <param name="wakeHandler">Wakes the handler from its poll (the range reader, when a range is read).</param>
    /// <param name="tracksWrites">The arenas are registered for write protection: pages
    /// opened from the store are installed write-protected and keep their sealed copy.</param>
    /// <summary>Faults on addresses in no arena get SIGBUS (an engine serving another
    /// process, whose registered ranges it does not release); else the thread is woken.</summary>
    public bool PoisonUntracked { get; init; }

    public FaultService(EngineOptions options, ArenaTable arenas, Evictor evictor, PageSealer sealer, AddressSpaceOps space,
        ProgramEvents events, FailureReporter reporter, RangeCollapser collapser, bool tracksWrites, Threading.EngineLockWindow engineLock, Action wakeHandler,
        Threading.ServiceCpus serviceCpus)
    {
        _engineLock = engineLock;
        _opener = new UnlockedOpener(engineLock, sealer, options.WhileOpeningWithoutLock, options.WhileOpeningFaultingPageWithoutLock);
        _tracksWrites = tracksWrites;
        _fillsWithoutLock = options.FillsWithoutLock;
        _decryptAheadPages = options.DecryptAheadRanges * RangeCollapser.RangePages;
        if (options.FillThreads > 0)
            _worker = new FillWorker(sealer, space, engineLock, options.SpinMicroseconds, serviceCpus.Fill, options.WhileFillingWithoutLock);
        _collapser = collapser;
        _placer = new RangePlacer(options, space, evictor, events, collapser, tracksWrites, engineLock, wakeHandler, sealer, _worker, _opener);
        _arenas = arenas;
        _evictor = evictor;
        _sealer = sealer;
        _space = space;
        _events = events;
        _reporter = reporter;
        _readAheadMaxPages = options.ReadAheadMaxPages;
        _sourceReadAheadMaxPages = options.SourceReadAheadMaxPages;
        _bufferLength = (nuint)(options.MaxRunPages * PageSize);
        _buffer = (byte*)KernelMemory.Map(_bufferLength);
        _workerEntriesLength = (nuint)(options.MaxRunPages * sizeof(PageEntry));
        _workerEntries = (PageEntry*)KernelMemory.Map(_workerEntriesLength);
        // Plaintext passes through this buffer: keep it out of swap and core dumps.
        Libc.mlock((nint)_buffer, _bufferLength);
        Libc.madvise((nint)_buffer, _bufferLength, Libc.MADV_DONTDUMP);
        _latency.Record(0);
        _latency.Clear();
    }

    /// <summary>The locked plaintext buffer pages are prepared in (a read-ahead run's
    /// worth); the child service uses it too, under the same lock.</summary>
    public byte* Buffer => _buffer;

    public long Faults => _faults;
    public long ReadAheadPages => _readAheadPages;
    public long ZeroFills => _zeroFills;
    public long SourcedPages => _sourcedPages + (_worker?.Sourced ?? 0) + _placer.SourcedPages;

    /// <summary>Of <see cref="SourcedPages"/>, those their source installed itself (PageSource.InstallsRuns).</summary>
    public long SourceInstalls => _sourceInstalls + (_worker?.SourceInstalls ?? 0);

    /// <summary>First writes to pages that kept their sealed copy (write-protect faults).</summary>
    public long WriteFaults => _writeFaults;

    /// <summary>2 MiB ranges of model maps brought in whole, as huge pages (see <see cref="RangePlacer"/>).</summary>
    public long PlacedRanges => _placer.PlacedRanges;

    /// <summary>Of the ranges placed, those the range reader had read ahead of their fault (see <see cref="RangeReader"/>).</summary>
    public long PlacedReadAhead => _placer.PlacedReadAhead;

    /// <summary>Of <see cref="PlacedRanges"/>, those decrypted from their sealed copies.</summary>
    public long PlacedSealed => _placer.PlacedSealed;

    /// <summary>Ranges filled into the huge page of a range just evicted whole.</summary>
    public long RecycledRanges => _placer.Recycled;

    /// <summary>Pages brought in ahead of the program (see <see cref="DecryptAhead"/>).</summary>
    public long PagesAhead => _pagesAhead;
    public LatencyHistogram Latency => _latency;

    /// <summary>Pages the fill worker decrypted (the sealer counts the handler's).</summary>
    public long WorkerOpens => _worker?.Opened ?? 0;

    /// <summary>Pages the fill worker filled from a source as its share of a range (RangePlacer).</summary>
    public long WorkerSharedFills => _worker?.SharedFilled ?? 0;

    /// <summary>The handler pinned to <paramref name="handlerCpu"/> took the baton: the fill
    /// worker's next run is on <paramref name="partnerCpu"/> if it is on the handler's CPU
    /// (see FillWorker.ServedFrom).</summary>
    public void HandlerServesOn(int handlerCpu, int partnerCpu) => _worker?.ServedFrom(handlerCpu, partnerCpu);

    /// <summary>Clears the inject buffers (after a failure, or at the end).</summary>
    public void Wipe()
    {
        Libc.memset(_buffer, 0, _bufferLength);
        _worker?.Wipe();
        _placer.Wipe();
    }

    public void Dispose()
    {
        _worker?.Dispose(); // wipes and unmaps its own buffer
        _placer.Dispose();
        _opener.Dispose();
        KernelMemory.Unmap((nint)_workerEntries, _workerEntriesLength);
        Libc.memset(_buffer, 0, _bufferLength);
        KernelMemory.Unmap((nint)_buffer, _bufferLength);
    }

    /// <summary>
    /// Records how long the faulting thread waited: from reading its message to the wake
    /// (the first page's UFFDIO_COPY). Read-ahead done after the wake is not its wait.
    /// </summary>
    private void RecordServed()
    {
        if (_recorded)
            return;
        _recorded = true;
        _latency.Record((long)((Stopwatch.GetTimestamp() - _received) * NanosecondsPerTick));
    }

    /// <summary>Serves one fault message: the faulting thread runs again when this returns
    /// (or has its SIGBUS coming). <paramref name="received"/>: when the message was read
    /// (Stopwatch ticks), for the latency the thread saw.</summary>
    public void Serve(in uffd_msg message, long received)
    {
        _received = received;
        _recorded = false;
        ServeCore(in message);
        _evictor.EndStep();
        RecordServed();
    }

    private void ServeCore(in uffd_msg message)
    {
        _faults++;
        // Pages this fault brings in stay until the next fault (see Evictor).
        _evictor.BeginFault();
        nint address = (nint)(message.pagefault_address & ~(ulong)(PageSize - 1));
        bool write = (message.pagefault_flags & UFFD_PAGEFAULT_FLAG_WRITE) != 0;
        if ((message.pagefault_flags & UFFD_PAGEFAULT_FLAG_WP) != 0)
        {
            ServeWriteProtectFault(address);
            return;
        }

        // Events handled while serving (see ProgramEvents.Drain) can change the pages under us;
        // then the decrypted buffer is stale and the fault is served afresh.
        while (true)
        {
            Arena? arena = _arenas.Find(address);
            if (arena == null)
            {
                if (PoisonUntracked)
                {
                    // Another process's range the books do not hold (it grew or moved a
                    // range by itself): nothing here can give its pages, and waking would
                    // only fault again, for ever. SIGBUS says so.
                    _space.Poison(address, PageSize);
                    _space.Wake(address, PageSize);
                    return;
                }
                // A range released meanwhile; unregistering already woke the thread.
                _space.Wake(address, PageSize);
                return;
            }
            long index = (address - arena.Address) / PageSize;
            PageState state = arena.Entries[index].State;
            if (state is PageState.Resident or PageState.Poisoned or PageState.Unmapped)
            {
                ServeSpuriousFault(arena, index, state, message.pagefault_feat_ptid);
                return;
            }
            if (TryServeMissingPage(arena, index, write, message.pagefault_feat_ptid))
            {
                // The thread runs again; restore some headroom under the budget now, so
                // that the next faults find room without evicting one page at a time.
                _evictor.EvictAfterFault();
                return;
            }
        }
    }

    /// <returns>False when an event changed the pages mid-way and the fault must be re-served.</returns>
    private bool TryServeMissingPage(Arena arena, long index, bool write, uint threadId)
    {
        // Held for the fault: the arena may be released while the lock is let go (a
        // sealing, a decryption), and the source's read-ahead is wiped all the same.
        PageSource? source = arena.Source;
        source?.Retain();
        try
        {
            return TryServeMissingPageCore(arena, index, write, threadId);
        }
        finally
        {
            if (source != null)
            {
                source.EndOfFault();
                source.Release();
            }
        }
    }

    private bool TryServeMissingPageCore(Arena arena, long index, bool write, uint threadId)
    {
        int count = ReadAheadRun(arena, index);
        int before = SourceRangeBefore(arena, index, ref count);
        long epoch = _events.Epoch;
        // Room for the faulting page only: the thread waits for this part. The read-ahead
        // run makes its own room after the thread is running again. Sealed with the lock
        // let go (Sealing.UnlockedSealer): an arena released meanwhile needs nothing more,
        // as in FillAndInject (its release woke the thread, or the process unmapped it).
        _evictor.MakeRoom(1, sealsUnlocked: true);
        if (_events.Epoch != epoch)
            return false;
        if (arena.Released)
            return true;

        switch (_placer.TryPlace(arena, index, epoch, roomMade: 1))
        {
            case RangePlacement.Placed:
                RecordServed();
                if (!arena.Released)
                    _readAheadPages += RangeCollapser.RangePages - 1;
                return true;
            case RangePlacement.Retry:
                return false;
        }

        int served = TryInstallHead(arena, index, count, write, epoch);
        if (served < 0)
            return false;
        if (served == 0)
        {
            switch (ServeFaultingPage(arena, index, count, before, write, threadId))
            {
                case FaultingPage.Retry:
                    return false;
                case FaultingPage.Finished:
                    return true;
            }
            served = 1;
        }
        if (count == served && before == 0)
            return true;
        _evictor.MakeRoom(count - served + before, sealsUnlocked: true);
        if (_events.Epoch != epoch || arena.Released)
            return true;

        FillAndInject(arena, index + served, count - served, epoch);
        if (arena.Released)
            return true; // released while its pages were decrypted without the lock
        FillAndInject(arena, index - before, before, epoch);
        return true;
    }

    /// <summary>
    /// The faulting page and the untouched ones after it in its run (up to a slice),
    /// installed by the arena's source itself (the custodian, for a live sealed model: see
    /// <see cref="PageSource.InstallsRuns"/>), which wakes the thread. Untouched pages only:
    /// the others of the run (sealed after a write, given up) are not the file's bytes.
    /// Returns how many are in; 0 when the faulting page is for the usual path (a write,
    /// or nothing installed: not the source's to install, failed authentication, its
    /// custodian gone; the usual path says which), -1 when an event changed the pages.
    /// </summary>
    private int TryInstallHead(Arena arena, long index, int count, bool write, long epoch)
    {
        if (write || arena.Entries[index].State != PageState.Untouched || arena.Source is not { InstallsRuns: true })
            return 0;
        int head = 1;
        while (head < Math.Min(count, InjectSlicePages) && arena.Entries[index + head].State == PageState.Untouched)
            head++;
        if (head > 1)
        {
            _evictor.MakeRoom(head - 1);
            if (_events.Epoch != epoch)
                return -1;
        }
        int installed = Install(arena, index, head, plaintext: null, KeepsCopy(arena, in arena.Entries[index]), out _, out _);
        if (installed == 0)
            return _events.Epoch != epoch ? -1 : 0;
        RecordServed();
        _readAheadPages += installed - 1;
        return installed;
    }

    /// <summary>What became of the faulting page in <see cref="ServeFaultingPage"/>.</summary>
    private enum FaultingPage
    {
        /// <summary>Installed, and the thread woken: the read-ahead run follows.</summary>
        Injected,
        /// <summary>Nothing more to do for this fault (poisoned, a zero page, released).</summary>
        Finished,
        /// <summary>An event changed the pages mid-way: the fault is served again.</summary>
        Retry,
    }

    /// <summary>The faulting page alone, the usual way: from the source (its announced run
    /// read ahead without the engine lock), the store, or zeros; poisoned if it cannot be
    /// opened.</summary>
    private FaultingPage ServeFaultingPage(Arena arena, long index, int count, int before, bool write, uint threadId)
    {
        if (arena.Entries[index].State == PageState.Untouched && arena.Source is { } source)
        {
            // A source whose long runs the fill worker shares (see FillAndInject, which
            // shares a part of at least SharedRunPages): only the first slice now, so that
            // the thread is woken before the rest is decrypted. The handler then reads its
            // half under the engine lock (the worker runs only while it is held).
            bool shared = arena.SourceFillsRunsConcurrently && _worker != null && (count - 1 >= SharedRunPages || before >= SharedRunPages);
            if (shared)
                source.BeginRun(index, Math.Min(count, InjectSlicePages));
            else
                source.BeginRun(index - before, before + count);
            if (!PrefetchUnlocked(arena, source, shared ? index : index - before))
                return FaultingPage.Finished; // released meanwhile: unregistering woke the thread
        }
        byte* buffer = _buffer;
        ref PageEntry first = ref arena.Entries[index];
        PageVerdict fromSource = first.State == PageState.Untouched && arena.Source != null
            ? FillFromSource(arena.Source, index, buffer)
            : PageVerdict.Zero;
        if (first.State == PageState.Sealed)
        {
            // Without the engine lock, as a read-ahead slice (OpenWithoutLock): the faulting
            // thread waits for this page anyway, the program's others need not. The fill
            // worker, which relies on the lock, starts only once this page is in.
            Debug.Assert(!_workerRunning);
            PageEntry copied = first;
            bool opened;
            using (_opener.LetGo(arena, faultingPage: true))
                opened = _opener.TryOpen(arena.Cipher, index, in copied, buffer);
            if (arena.Released)
            {
                Libc.memset(buffer, 0, PageSize);
                return FaultingPage.Finished; // unregistering woke the thread
            }
            first = ref arena.Entries[index]; // the table may have been replaced (ExtendArena)
            if (!UnlockedOpener.Unchanged(in first, in copied))
            {
                Libc.memset(buffer, 0, PageSize);
                return FaultingPage.Retry;
            }
            if (opened)
                _sealer.CountOpened(1);
            else
            {
                PoisonPage(arena, index, ref first, threadId, TamperKind.SealedPage);
                return FaultingPage.Finished;
            }
        }
        else if (fromSource == PageVerdict.Tampered)
        {
            PoisonPage(arena, index, ref first, threadId, TamperKind.SourcePage);
            return FaultingPage.Finished;
        }
        else if (fromSource == PageVerdict.Zero)
        {
            _zeroFills++;
            if (count == 1 && !write)
                return TryInjectZeroPage(arena, index) ? FaultingPage.Finished : FaultingPage.Retry;
        }

        // The faulting thread is woken by the first page alone; the read-ahead run is
        // decrypted while it works on that page, and wakes it again if it has already
        // moved on and faulted into the run. A page opened from the store keeps its copy
        // unless the thread is about to write it.
        bool injected = TryInject(arena, index, 1, buffer, KeepsCopy(arena, in first) && !write);
        Libc.memset(buffer, 0, PageSize);
        if (!injected)
            return FaultingPage.Retry;
        RecordServed();
        return FaultingPage.Injected;
    }

    /// <summary>
    /// Reads the announced run of <paramref name="source"/> without the engine lock: the
    /// file read (a 2 MiB range of a model, from a cold disk) and a sealed model's
    /// decryption no longer hold up the program's threads that map or unmap
    /// meanwhile. Only the handler reads userfaultfd events, so no event changes
    /// the pages meanwhile; an API call may release the arena (false: the fault needs no
    /// more), and the source stays alive through the reference held here.
    /// </summary>
    private bool PrefetchUnlocked(Arena arena, PageSource source, long firstPage)
    {
        Debug.Assert(_engineLock.IsHeldByCurrentThread);
        source.Retain();
        _engineLock.LetGo();
        try
        {
            source.Prefetch(firstPage);
        }
        finally
        {
            _engineLock.TakeBack();
        }
        bool released = arena.Released;
        if (released)
            source.EndOfFault(); // nothing read ahead stays
        source.Release();
        return !released;
    }

    /// <summary>Pages filled and installed at a time by a read-ahead run: a thread that has
    /// moved on into the run waits for the next slice only, not for the whole run.</summary>
    private const int InjectSlicePages = 32;

    /// <summary>Runs at least this long are shared with the fill worker, which takes the
    /// second half: a slice or more (a 64-page read-ahead run leaves 63 after the faulting page).</summary>
    private const int SharedRunPages = 2 * FillWorker.SlicePages - 1;

    /// <summary>The read-ahead part of a fault: fills <paramref name="count"/> pages from
    /// <paramref name="first"/> on and installs them, a slice at a time (stopping at the
    /// first page that changed meanwhile or fails), and wipes the buffer. A long run's
    /// second half, if all sealed (or all untouched, of a source that fills runs on another
    /// thread, unless <paramref name="sourcePrefetched"/> says the source holds them
    /// already), goes to the fill worker, and this thread does the first (the one the
    /// program needs first).</summary>
    private void FillAndInject(Arena arena, long first, int count, long epoch, bool sourcePrefetched = false)
    {
        bool fromSource = false;
        int shared = 0;
        if (count >= SharedRunPages)
            shared = SharedPart(arena, first + count / 2, count - count / 2, sourcePrefetched, out fromSource);
        if (shared == 0)
        {
            FillAndInjectSerially(arena, first, count, epoch);
            return;
        }

        long sharedFirst = first + count - shared;
        // Source pages keep their copy only where the arena refetches (see KeepsCopy).
        bool keepCopies = _tracksWrites && (!fromSource || arena.RefetchesSource);
        PageSource? source = fromSource ? arena.Source : null;
        // Without the engine lock, unless a thread waits to come in between the handler's
        // steps, or a source that installs runs itself (the custodian) does the worker's
        // part: those installs happen in another process, where no lock of ours can order
        // them against the arena's release.
        bool unlocked = _fillsWithoutLock && _engineLock.MayLetGo && source is not { InstallsRuns: true };
        int installed = 0;
        Crypto.PageCipher cipher = arena.Cipher;
        Debug.Assert((nuint)shared * (nuint)sizeof(PageEntry) <= _workerEntriesLength, "a run longer than EngineOptions.MaxRunPages");
        if (unlocked)
        {
            System.Buffer.MemoryCopy(arena.Entries + sharedFirst, _workerEntries, (long)shared * sizeof(PageEntry), (long)shared * sizeof(PageEntry));
            // What the worker reads while the lock is free: the arena's key and source, and
            // the store's slots, none of which a release may free meanwhile.
            cipher.Retain();
            source?.Retain();
            _sealer.Store.Pin();
        }
        _worker!.Start(arena, sharedFirst, shared, keepCopies, fromSource, source, unlocked ? _workerEntries : null);
        _workerRunning = true;
        _workerUnlocked = unlocked;
        try
        {
            FillAndInjectSerially(arena, first, count - shared, epoch);
        }
        finally
        {
            if (unlocked)
            {
                // Always let go here, whatever MayLetGo says now: the worker takes the
                // lock to install its slices.
                _engineLock.LetGo();
                try
                {
                    installed = _worker.Finish();
                }
                finally
                {
                    _engineLock.TakeBack();
                    _sealer.Store.Unpin();
                    source?.Release();
                    cipher.Release();
                }
            }
            else
            {
                installed = _worker.Finish();
            }
            _workerRunning = false;
            _workerUnlocked = false;
        }
        if (arena.Released)
            return; // its range went with it, the worker's pages too
        if (installed > 0)
        {
            // Without the lock, installed under it, each page found unchanged then; nothing
            // since could change them but a release (an eviction an API call asks for waits
            // until the handler is between steps, and events are read only here). Under the
            // lock throughout, nothing could.
            _evictor.Admit(arena, sharedFirst, installed, keepCopies);
            _collapser.Consider(arena, sharedFirst, installed);
            _readAheadPages += installed;
        }
        // What the worker left (a page that failed to open, an install the kernel refused
        // until an event is read): served here, the usual way.
        if (installed < shared && _events.Epoch == epoch)
            FillAndInjectSerially(arena, sharedFirst + installed, shared - installed, epoch);
    }

    /// <summary>How many pages at the end of <paramref name="first"/>..+<paramref name="count"/>
    /// the worker can take, through the end: sealed and uncompressed; or, with a source that
    /// fills runs on another thread and has not read them ahead, untouched
    /// (<paramref name="fromSource"/>).</summary>
    private int SharedPart(Arena arena, long first, int count, bool sourcePrefetched, out bool fromSource)
    {
        fromSource = false;
        if (_worker == null)
            return 0;
        PageState kind = arena.Entries[first + count - 1].State;
        if (kind == PageState.Untouched)
        {
            if (sourcePrefetched || !arena.SourceFillsRunsConcurrently)
                return 0;
            fromSource = true;
        }
        int shared = 0;
        for (long page = first + count - 1; page >= first; page--)
        {
            ref PageEntry entry = ref arena.Entries[page];
            if (fromSource ? entry.State != PageState.Untouched : entry.State != PageState.Sealed || entry.IsCompressed)
                break;
            shared++;
        }
        return shared >= FillWorker.SlicePages ? shared : 0;
    }

    private void FillAndInjectSerially(Arena arena, long first, int count, long epoch)
    {
        int done = 0;
        if (count > 0 && arena.Source is { InstallsRuns: true } && _events.Epoch == epoch)
        {
            // What the source installs itself, in one request; the rest slice by slice.
            int untouched = 0;
            while (untouched < count && arena.Entries[first + untouched].State == PageState.Untouched)
                untouched++;
            if (untouched > 0)
            {
                done = Install(arena, first, untouched, plaintext: null, KeepsCopy(arena, in arena.Entries[first]), out InstallStop stop, out _);
                _readAheadPages += done;
                if (stop is InstallStop.WorkerRunning or InstallStop.EventsChanged)
                    return; // the rest waits for faults of its own, as a slice's would
            }
        }
        for (; done < count && _events.Epoch == epoch; done += InjectSlicePages)
            if (!FillAndInjectSlice(arena, first + done, Math.Min(InjectSlicePages, count - done), epoch))
                return;
    }

    /// <returns>Whether every page of the slice was installed.</returns>
    private bool FillAndInjectSlice(Arena arena, long first, int count, long epoch)
    {
        Debug.Assert(count <= InjectSlicePages);
        byte* buffer = _buffer;
        // Sealed pages are opened after this loop, without the engine lock, unless the
        // fill worker runs meanwhile under it: then it installs pages the handler vouches
        // for, and so relies on the lock that keeps them unchanged (see FillWorker).
        bool deferOpens = !_workerRunning || _workerUnlocked;
        int deferred = 0;
        int filled = 0;
        for (; filled < count; filled++)
        {
            long page = first + filled;
            ref PageEntry entry = ref arena.Entries[page];
            if (entry.State is not (PageState.Sealed or PageState.Untouched or PageState.Zero))
                break; // an event (or the thread itself) changed it meanwhile
            _sliceEntries[filled] = entry;
            byte* slot = buffer + (long)filled * PageSize;
            if (entry.State == PageState.Untouched && arena.Source != null)
            {
                PageVerdict verdict = FillFromSource(arena.Source, page, slot);
                if (verdict == PageVerdict.Tampered)
                    break; // poisoned when someone touches it
                if (verdict == PageVerdict.Zero)
                    _zeroFills++;
                continue;
            }
            if (entry.State != PageState.Sealed)
            {
                _zeroFills++;
                continue; // the buffer is all zeros between uses
            }
            if (deferOpens)
            {
                _sliceSealed[deferred++] = filled;
                continue;
            }
            if (!_sealer.TryOpen(arena.Cipher, page, in entry, slot))
                break; // a bad page ahead is poisoned when someone touches it
        }
        if (deferred > 0)
            filled = OpenWithoutLock(arena, first, filled, deferred);
        _readAheadPages += filled;
        // Installed in runs of one kind: pages opened from the store write-protected
        // (they keep their copy), the others (zeros, the source's) writable.
        bool installed = filled == count;
        for (int start = 0; start < filled && installed;)
        {
            bool keep = KeepsCopy(arena, in arena.Entries[first + start]);
            int end = start + 1;
            while (end < filled && KeepsCopy(arena, in arena.Entries[first + end]) == keep)
                end++;
            installed = _events.Epoch == epoch && TryInject(arena, first + start, end - start, buffer + (long)start * PageSize, keep);
            start = end;
        }
        Libc.memset(buffer, 0, (nuint)((long)filled * PageSize));
        return installed;
    }

    /// <summary>
    /// Opens the sealed pages of a slice that <see cref="FillAndInjectSlice"/> set aside
    /// (<paramref name="deferred"/> of them, listed in <see cref="_sliceSealed"/>), with the
    /// engine lock let go: the program's threads that map or unmap
    /// meanwhile do not wait for the cipher. Returns how many of the slice's
    /// <paramref name="filled"/> pages are good to install, and wipes the others.
    /// </summary>
    /// <remarks>What keeps this safe: see <see cref="UnlockedOpener"/>. The slice ends at the
    /// first page that changed meanwhile, or that failed authentication (poisoned when
    /// someone touches it, as under the lock).</remarks>
    private int OpenWithoutLock(Arena arena, long first, int filled, int deferred)
    {
        Debug.Assert(_engineLock.IsHeldByCurrentThread && (!_workerRunning || _workerUnlocked));
        int failedAt = filled;
        using (_opener.LetGo(arena))
        {
            for (int i = 0; i < deferred; i++)
            {
                int at = _sliceSealed[i];
                if (!_opener.TryOpen(arena.Cipher, first + at, in _sliceEntries[at], _buffer + (long)at * PageSize))
                {
                    failedAt = at;
                    break;
                }
            }
        }

        int good = arena.Released ? 0 : failedAt;
        for (int at = 0; at < good; at++)
            if (!UnlockedOpener.Unchanged(in arena.Entries[first + at], in _sliceEntries[at]))
                good = at;
        int opened = 0;
        for (int i = 0; i < deferred && _sliceSealed[i] < good; i++)
            opened++;
        _sealer.CountOpened(opened);
        if (good < filled)
            Libc.memset(_buffer + (long)good * PageSize, 0, (nuint)((long)(filled - good) * PageSize));
        return good;
    }

    /// <summary>Whether a page about to be installed is installed write-protected and keeps
    /// a copy, with writes tracked: its sealed copy (see <see cref="Sealing.PageSealer.Retain"/>),
    /// or for a model page its source (see <see cref="PageEntry.HoldsSourceCopy"/>).</summary>
    private bool KeepsCopy(Arena arena, in PageEntry entry) =>
        _tracksWrites && (entry.State == PageState.Sealed || (arena.RefetchesSource && entry.State == PageState.Untouched));

    /// <summary>
    /// The first write to a page installed write-protected: its sealed copy no longer
    /// holds its contents, so it is freed, and the page is made writable (which wakes the
    /// writer). The write lands after this; the page is sealed anew when evicted. A page
    /// evicted while its writer waited is only woken: the writer faults it back in. A page
    /// the program gave up with madvise but that is still mapped comes back on the books.
    /// </summary>
    private void ServeWriteProtectFault(nint address)
    {
        _writeFaults++;
        bool readmitted = false;
        Arena? arena = _arenas.Find(address);
        if (arena != null)
        {
            long index = (address - arena.Address) / PageSize;
            ref PageEntry entry = ref arena.Entries[index];
            if (entry.State == PageState.Resident)
                _sealer.Forget(ref entry);
            else if (entry.State == PageState.Zero)
            {
                // Given up with madvise and left mapped (MADV_FREE), now written: the write
                // makes it the program's data again (see ProgramEvents.DiscardPage).
                _evictor.Admit(arena, index, 1);
                readmitted = true;
            }
        }
        for (int attempt = 0; attempt < 1000; attempt++)
        {
            int rc = _space.Unprotect(address, PageSize);
            if (rc == 0)
            {
                // A page back on the books may have taken the budget's last room.
                if (readmitted)
                    _evictor.EvictAfterFault();
                return;
            }
            if (rc != Libc.EAGAIN)
                break; // gone meanwhile (unmapped): the wake lets the writer find out
            _events.Drain(); // the program's own event (fork, madvise, mremap) is read first
        }
        _space.Wake(address, PageSize);
    }

    /// <summary>
    /// A model map's first touch is served a whole 2 MiB-aligned range at a time: the
    /// untouched pages after the faulting one (<paramref name="count"/> grows to the range's
    /// end) and before it (returned), read from the source in one request. llama.cpp's
    /// threads take the rows of a matrix in chunks, so its faults are not sequential enough
    /// for the stream windows to grow, and 4-page reads left the disk mostly idle. Not
    /// when the budget limits read-ahead below a range.
    /// </summary>
    private int SourceRangeBefore(Arena arena, long index, ref int count)
    {
        const int RangePages = Collapse.RangeCollapser.RangePages;
        if (arena.Source == null || !IsAbsentModelPage(arena.Entries[index].State)
            || _evictor.ReadAheadLimit < RangePages || _sourceReadAheadMaxPages < RangePages)
            return 0;
        long address = arena.PageAddress(index);
        long rangeStart = Math.Max(0, index - ((address & (RangePages * (long)PageSize - 1)) / PageSize));
        long rangeEnd = Math.Min(arena.PageCount, rangeStart + RangePages);
        while (index + count < rangeEnd && IsAbsentModelPage(arena.Entries[index + count].State))
            count++;
        int before = 0;
        while (index - before - 1 >= rangeStart && IsAbsentModelPage(arena.Entries[index - before - 1].State))
            before++;
        _evictor.ExpectRuns(RangePages);
        if (_decryptAheadPages > 0)
        {
            // The ranges after this one are next: decrypt them while the program works.
            // Under a full budget the scan-resistant policy keeps some ranges resident, so
            // the next absent ones may lie past them: looked for up to AheadScanRanges away.
            long scanEnd = rangeEnd + _decryptAheadPages + AheadScanRanges * (long)RangePages;
            if (_aheadArena != arena || arena.AheadCursor < rangeEnd || arena.AheadCursor > rangeEnd + _decryptAheadPages)
                arena.AheadCursor = rangeEnd;
            arena.AheadLimit = Math.Min(arena.PageCount, scanEnd);
            arena.AheadSliceLimit = Math.Min(arena.PageCount, rangeEnd + _decryptAheadPages);
            arena.AheadRangesLeft = _decryptAheadPages / RangePages;
            _aheadArena = arena;
        }
        return before;
    }

    private static bool IsAbsentModelPage(PageState state) => state is PageState.Untouched or PageState.Sealed or PageState.Zero;

    private const int AheadSlicePages = 64;

    /// <summary>How many resident ranges decryption ahead looks past for the next absent one.</summary>
    private const int AheadScanRanges = 8;

    /// <summary>
    /// When the handler has nothing else to do: brings in the next slice (at most 64 pages)
    /// of the ranges after the newest range fault of a model map, as that fault would have,
    /// while the budget has room for them below its high watermark (nothing is evicted for
    /// this). A whole range is placed as a fault would place it, under a full budget too,
    /// evicting a whole range for it (RangePlacer): the next range is decrypted while the
    /// program works on this one. No thread waits for these pages; one that faulted on them
    /// meanwhile is woken by their UFFDIO_COPY or move. True if it did anything.
    /// </summary>
    /// <remarks>Evicting for a guess 64 pages at a time cost more than it saved (llama.cpp
    /// at half budget: 10.7 tok/s with it, 12.4 without); a whole range at a time, with its
    /// huge page recycled, it is what keeps two CPUs decrypting while the program computes
    /// (11 tok/s without it, 26–46 with it, on the same build: bench/results whole-ranges).</remarks>
    public bool DecryptAhead()
    {
        _placer.DropUnwantedReadAhead();
        Arena? arena = _aheadArena;
        if (arena == null || arena.Released || arena.AheadCursor >= arena.AheadLimit)
            return false;
        long first = arena.AheadCursor, limit = Math.Min(arena.AheadLimit, arena.PageCount);
        while (first < limit && !IsAbsentModelPage(arena.Entries[first].State))
            first++;
        if (first < limit && RangeCollapser.RangeStart(arena, first) == first && arena.AheadRangesLeft > 0)
        {
            // A whole absent range goes in as a huge page, as a fault on it would have it.
            switch (_placer.TryPlace(arena, first, _events.Epoch, roomMade: 0))
            {
                case RangePlacement.Placed:
                    arena.AheadCursor = --arena.AheadRangesLeft > 0 ? first + RangeCollapser.RangePages : arena.AheadLimit;
                    _pagesAhead += RangeCollapser.RangePages;
                    return true;
                case RangePlacement.Retry:
                    return true;
                case RangePlacement.Pending:
                    return false; // the reader wakes the handler when the range is read
            }
        }
        // Pages that cannot come as a whole range come in slices, within the ranges right
        // after the fault only.
        limit = Math.Min(limit, arena.AheadSliceLimit);
        int count = 0;
        while (count < AheadSlicePages && first + count < limit && IsAbsentModelPage(arena.Entries[first + count].State))
            count++;
        arena.AheadCursor = first + count;
        if (count == 0)
            return false;

        // Only into room the budget has to spare: evicting for a guess cost more than it
        // saved (llama.cpp at half budget: 10.7 tok/s with decryption ahead evicting, 12.4
        // without it). So at a full budget this only runs ahead of a model's first load.
        if (!_evictor.HasRoomFor(count))
        {
            arena.AheadCursor = first; // again when the handler is next idle
            return false;
        }
        long epoch = _events.Epoch;
        try
        {
            // A source that installs its pages itself reads nothing ahead: its runs are
            // installed by the handler and the fill worker (FillAndInject).
            bool installs = arena.Source is { InstallsRuns: true };
            if (!installs && arena.Entries[first].State == PageState.Untouched && arena.Source is { } source)
            {
                source.BeginRun(first, count);
                if (!PrefetchUnlocked(arena, source, first))
                    return true;
            }
            FillAndInject(arena, first, count, epoch, sourcePrefetched: !installs);
        }
        finally
        {
            arena.Source?.EndOfFault();
        }
        _pagesAhead += count;
        return true;
    }

    /// <summary>How many pages to serve for a fault at <paramref name="index"/>: the
    /// window of its stream doubles while its faults arrive where its last run ended
    /// (see <see cref="ReadAhead.SequentialStreams"/>), and covers only pages that are
    /// not mapped.</summary>
    private int ReadAheadRun(Arena arena, long index)
    {
        int window = arena.Streams.WindowFor(index, arena.Source != null ? _sourceReadAheadMaxPages : _readAheadMaxPages, out int stream);
        window = _evictor.RunThatFits(Math.Min(window, _evictor.ReadAheadLimit));

        int count = 1;
        while (count < window && index + count < arena.PageCount
               && arena.Entries[index + count].State is PageState.Untouched or PageState.Zero or PageState.Sealed)
            count++;
        arena.Streams.Advance(stream, index, count);
        return count;
    }

    private bool TryInjectZeroPage(Arena arena, long index)
    {
        nint address = arena.PageAddress(index);
        while (true)
        {
            int rc = _space.ZeroPage(address, PageSize);
            if (rc == 0)
            {
                _evictor.Admit(arena, index, 1);
                return true;
            }
            if (rc == Libc.EEXIST)
            {
                AdmitFoundMapped(arena, index, address);
                return true;
            }
            if (rc != Libc.EAGAIN)
                return AbandonInjection(address, rc);
            long epoch = _events.Epoch;
            _events.Drain();
            if (_events.Epoch != epoch) return false;
        }
    }

    /// <summary>UFFDIO_COPY of <paramref name="count"/> prepared pages; wakes the faulting
    /// thread. <paramref name="keepCopies"/>: the pages were opened from the store, or read
    /// from the arena's source; they are installed write-protected and keep their copies
    /// (see <see cref="KeepsCopy"/>).</summary>
    private bool TryInject(Arena arena, long index, int count, byte* source, bool keepCopies = false)
    {
        int done = Install(arena, index, count, source, keepCopies, out InstallStop stop, out int errno);
        return stop switch
        {
            InstallStop.Complete => true,
            InstallStop.WorkerRunning => false, // no event is read while the fill worker runs; the rest waits
            InstallStop.EventsChanged => done > 0, // the faulting page is in; the rest waits for a fault of its own
            _ => AbandonInjection(arena.PageAddress(index + done), errno) || done > 0,
        };
    }

    /// <summary>Why <see cref="Install"/> stopped.</summary>
    private enum InstallStop { Complete, WorkerRunning, EventsChanged, Refused }

    /// <summary>
    /// Installs <paramref name="count"/> pages from <paramref name="index"/> on, from
    /// <paramref name="plaintext"/> (UFFDIO_COPY), or, when it is null, by the arena's
    /// source itself (<see cref="PageSource.InstallRun"/>), and admits what went in. An
    /// install that meets an unread event reads it (unless the fill worker runs) and goes
    /// on if nothing changed; a page found mapped is counted back in. Returns how many
    /// pages, from the first on, are done; <paramref name="stop"/> says why the rest is
    /// not, <paramref name="errno"/> what the kernel or the source said when it refused.
    /// </summary>
    private int Install(Arena arena, long index, int count, byte* plaintext, bool keepCopies, out InstallStop stop, out int errno)
    {
        int done = 0;
        errno = 0;
        while (done < count)
        {
            nint destination = arena.PageAddress(index + done);
            int rc, pages;
            if (plaintext != null)
            {
                rc = _space.Copy(destination, (nint)(plaintext + (long)done * PageSize), (nuint)((count - done) * PageSize), keepCopies, out long copied);
                pages = (int)(copied / PageSize);
            }
            else
            {
                pages = arena.Source!.InstallRun(index + done, count - done, destination, keepCopies, out rc);
                if (pages == 0 && rc == 0)
                    rc = Libc.EIO; // a source that did nothing and said nothing: refused, never asked again
                _sourcedPages += pages;
                _sourceInstalls += pages;
            }
            if (pages > 0)
            {
                _evictor.Admit(arena, index + done, pages, keepCopies);
                _collapser.Consider(arena, index + done, pages);
            }
            done += pages;
            if (rc == 0 || pages > 0)
                continue;

            switch (rc)
            {
                case Libc.EAGAIN when _workerRunning:
                    stop = InstallStop.WorkerRunning;
                    return done;
                case Libc.EAGAIN:
                    long epoch = _events.Epoch;
                    _events.Drain();
                    if (_events.Epoch != epoch)
                    {
                        stop = InstallStop.EventsChanged;
                        return done;
                    }
                    // The event is not readable yet (a fork or mremap under way): a source's
                    // retry is a round trip that reads and decrypts a slice first.
                    if (plaintext == null)
                        Thread.Yield();
                    break;
                case Libc.EEXIST:
                    AdmitFoundMapped(arena, index + done, destination);
                    done++;
                    break;
                default:
                    stop = InstallStop.Refused;
                    errno = rc;
                    return done;
            }
        }
        stop = InstallStop.Complete;
        return done;
    }

    /// <summary>
    /// An install found the page mapped already, which only a page we had written off can
    /// be: its waiters are woken and it is counted back in. Except one the program gave up
    /// (madvise) that the kernel has not zapped yet: on the books it would be evicted, and
    /// sealed, with the contents given up (see ProgramEvents.DiscardPage).
    /// </summary>
    private void AdmitFoundMapped(Arena arena, long index, nint address)
    {
        _space.Wake(address, PageSize);
        if (arena.Entries[index].State != PageState.Zero || !_tracksWrites)
            _evictor.Admit(arena, index, 1);
    }

    private bool AbandonInjection(nint address, int errno)
    {
        // ENOENT/EFAULT: the range went away under us; its UNMAP event wakes the thread.
        if (errno is not (Libc.ENOENT or Libc.EFAULT or Libc.ESRCH))
            Console.Error.WriteLine($"tibet: cannot map page 0x{address:x}: {Libc.Describe(errno)}");
        _space.Wake(address, PageSize);
        return true;
    }

    /// <summary>
    /// A fault on a page the books say is mapped. Resident: the program discarded it with
    /// madvise (or the kernel reclaimed a MADV_FREE page), so it reads as zeros; if it is
    /// still mapped, the fault is stale and a wake is all it needs. Poisoned: poison again.
    /// </summary>
    private void ServeSpuriousFault(Arena arena, long index, PageState state, uint threadId)
    {
        nint address = arena.PageAddress(index);
        if (state == PageState.Resident)
        {
            int rc = _space.ZeroPage(address, PageSize);
            if (rc == 0)
            {
                _zeroFills++;
                _sealer.Forget(ref arena.Entries[index]); // a kept copy no longer holds its contents
            }
            else
            {
                _space.Wake(address, PageSize);
            }
        }
        else if (state == PageState.Poisoned)
        {
            // Another thread on a page just found tampered: its SIGBUS waits for the report too.
            _reporter.SignalFault(_space, address, threadId, Libc.getpid());
        }
        else
        {
            _space.Wake(address, PageSize);
        }
    }

    /// <summary>
    /// The page failed authentication: it is never mapped as data. The failure goes to
    /// the reporter thread (see FailureReporter), and the reader gets SIGBUS
    /// (UFFDIO_POISON, or tgkill on kernels without it) once the report is out.
    /// </summary>
    private void PoisonPage(Arena arena, long index, ref PageEntry entry, uint threadId, TamperKind kind)
    {
        _sealer.Forget(ref entry);
        entry.State = PageState.Poisoned;
        nint address = arena.PageAddress(index);
        _reporter.Post(kind, arena.Id, arena.Label, index, address, kind == TamperKind.SourcePage ? arena.Source : null, 0);
        _reporter.SignalFault(_space, address, threadId, Libc.getpid());
    }

    /// <summary>Fills <paramref name="destination"/> with page <paramref name="index"/> from
    /// <paramref name="source"/> (an arena's, or a forked child's copy of it); anything but
    /// data leaves it cleared. Fault path: no allocation; a throwing source counts as tampered.</summary>
    public PageVerdict FillFromSource(PageSource source, long index, byte* destination)
    {
        var page = new Span<byte>(destination, PageSize);
        PageVerdict verdict;
        try
        {
            verdict = source.Fill(index, page);
        }
        catch
        {
            verdict = PageVerdict.Tampered;
        }
        if (verdict == PageVerdict.Keep)
            _sourcedPages++;
        else
            page.Clear();
        return verdict;
    }
}
