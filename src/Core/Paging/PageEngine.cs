using System.Diagnostics;
using Tibet.Core.Compression;
using Tibet.Core.Diagnostics;
using Tibet.Core.Interop;
using Tibet.Core.Paging.Reporting;
using Tibet.Core.Paging.AddressSpace;
using Tibet.Core.Paging.Children;
using Tibet.Core.Paging.Collapse;
using Tibet.Core.Paging.Events;
using Tibet.Core.Paging.Faults;
using Tibet.Core.Paging.Eviction;
using Tibet.Core.Paging.Sealing;
using Tibet.Core.Storage;
using static Tibet.Core.Interop.UserfaultfdAbi;

namespace Tibet.Core.Paging;

/// <summary>
/// Keeps arenas of memory encrypted behind userfaultfd: pages beyond the resident
/// budget exist only as AES-256-GCM ciphertext, and a touch of such a page is served by
/// this engine's handler thread (authenticate, decrypt, inject, wake).
/// </summary>
/// <remarks>
/// <para><b>Threads.</b> A handler thread reads the userfaultfd and serves faults and
/// events; with <see cref="EngineOptions.HandlerPerCpu"/> there is one pinned to each CPU,
/// and the one that takes the baton (<see cref="_baton"/>) serves, one step at a time, so
/// that the rest of the engine sees one handler: a fault is served on the CPU it was taken
/// on. Every change to page tables, the store and the resident queue happens under one
/// lock (<see cref="_gate"/>), taken by the serving handler per batch of messages, by the
/// fill worker for each slice it installs while the handler has let go of it, and by API
/// calls. Whoever holds the lock never touches arena memory, so a fault can never wait
/// for its own lock holder.</para>
/// <para><b>Eviction.</b> A resident page is taken out of the arena with UFFDIO_MOVE
/// into a scratch area registered on a second userfaultfd. The move is atomic against
/// writers: a write either landed before it (and is sealed) or faults after it (and is
/// served from the new ciphertext once sealing is done, because the handler holds the
/// lock meanwhile). The scratch area is released with MADV_DONTNEED; because its
/// userfaultfd has no REMOVE events, the engine never waits on an event of its own.</para>
/// <para><b>Fault path.</b> Reading a message, decrypting, UFFDIO_COPY and eviction use
/// preallocated native buffers only: no managed allocation and no malloc. The handler
/// reports what it allocated in <see cref="EngineStats.HandlerAllocatedBytes"/>. Tampered
/// pages are reported by a reporter thread, fed through a preallocated ring.</para>
/// <para><b>Failure policy.</b> An unexpected exception in the handler never ends the
/// program silently and never makes it read zeros: one line names the failure, and from
/// then on every fault is answered with SIGBUS in the faulting thread. See HandlerLoop
/// in PageEngine.Handler.cs.</para>
/// </remarks>
public sealed unsafe partial class PageEngine : IDisposable
{
    private const int PageSize = Userfaultfd.PageSize;

    private readonly EngineOptions _options;
    private readonly Lock _gate = new();
    // Held by the handler that serves, for a whole step, including the windows in which it
    // lets go of _gate: the other handlers wait for it, so only one reads events and serves.
    private readonly Lock _baton = new();
    // The same lock as the handler lets go of it mid-step, around file reads, decryption and sealing.
    private readonly Threading.EngineLockWindow _handlerWindow;
    private readonly Userfaultfd _uffd;
    // Every change to the program's page tables goes through here (see AddressSpaceOps).
    private readonly AddressSpaceOps _space;
    private readonly LocalAddressSpace? _takeOut;
    // Where the handler and the fill worker run (see EngineOptions.PinServiceThreads).
    private readonly Threading.ServiceCpus _serviceCpus;
    // The parts, each with its own state (see README, "Follow one fault").
    private readonly ArenaTable _arenas = new();
    private readonly PageSealer _sealer;
    private readonly FailureReporter _reporter;
    private readonly Evictor _evictor;
    private readonly UnlockedSealer? _unlockedSealer;
    private readonly ProgramEvents _events;
    private readonly FaultService _faults;
    private readonly ChildService _children;
    private readonly RangeCollapser _collapser;
    // Per handler: its thread, its poll set (replaced under the lock by FillPollSet on that
    // thread), the eventfd that kicks it, what it allocated.
    private readonly Thread[] _handlers;
    private readonly Libc.PollFd[][] _pollSets;
    private readonly int[] _wakeFds;
    private readonly long[] _handlerAllocated;
    // Set by the first handler that switches to SIGBUS-only service; the others end.
    private int _degradedServer;
    // The handler that serves: the only one polling the userfaultfd (the others sleep on
    // their eventfds, so a fault wakes one thread), passed on to the handler on the CPU the
    // faults come from (PageEngine.Handler.cs, ConsiderHandover).
    private volatile int _activeHandler;
    private long _handovers;
    // ConsiderHandover's state: faults since the last look at a faulting thread's CPU, the
    // handler the last looks named (other than the active one) and how many in a row.
    private int _faultsSinceLook, _candidate = -1, _candidateVotes;
    private uint _lastFaultThread;
    private long _lastHandover;
    // Counts down as each handler has pinned itself and warmed up: the constructor waits,
    // so that no handler does either while the program runs (or a malloc probe is armed).
    private readonly CountdownEvent _handlersReady;
    // Whether the last look found the faulting thread on the serving handler's CPU: then
    // the handler does not spin after its work (ServeNormally).
    private bool _faultsLookedLocal;
    // /proc/TID/stat is read through here (Threading.ThreadCpu); null with one handler.
    private readonly byte* _threadCpuBuffer;
    private volatile bool _stopping;
    private bool _disposed;
    private readonly bool _tracksWrites;
    private readonly ChildAgents? _childAgents;

    /// <summary>Whether forked children's pages are evicted through their agents
    /// (native/agent.c): the interposer then has each fork make the agent's connection.</summary>
    public bool ServesChildAgents => _childAgents != null;

    /// <param name="served">Another process's userfaultfd and address space (the
    /// custodian serves it; see <see cref="ServeProcess"/>); null: this process.</param>
    private PageEngine(EngineOptions options, (Userfaultfd Uffd, AgentAddressSpace Space)? served = null)
    {
        _handlerWindow = new Threading.EngineLockWindow(_gate);
        options.Validate();
        _options = options;
        _sealer = new PageSealer(new CiphertextStore(options.StoreLimitBytes, PageSize + options.Cipher.TagSize),
            options.Compression, options.CompressedKeepBytes);
        Features = Userfaultfd.Probe();
        ulong wanted = UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP
                       | UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_POISON | UFFD_FEATURE_PAGEFAULT_FLAG_WP
                       | (options.ServeForkedChildren ? UFFD_FEATURE_EVENT_FORK : 0)
                       | (options.CollapseResidentRanges ? UFFD_FEATURE_MOVE : 0); // model ranges placed whole (LocalAddressSpace.PlaceStaged)
        _uffd = served?.Uffd ?? Userfaultfd.Open(Features.Bits & wanted);

        // Write tracking serves eviction: without take-out there is nothing to save.
        _tracksWrites = options.TrackWrites && Features.CanEvict;
        if (served is { } process)
        {
            _space = process.Space;
            ServesAnotherProcess = true;
        }
        else if (Features.CanEvict)
        {
            _takeOut = new LocalAddressSpace(_uffd, placesRanges: options.CollapseResidentRanges && Features.Move, options.EvictBatchPages);
            _space = _takeOut;
        }
        else
        {
            _space = new UffdAddressSpace(_uffd);
        }
        if (!Features.CanEvict && options.ResidentBudgetBytes != EngineOptions.Unlimited)
        {
            throw new UserfaultfdUnavailableException(
                "A resident budget was requested, but " + string.Join("; ", Features.Shortcomings()) + ".");
        }

        // A handler per CPU, or one (see Threading.ServiceCpus): chosen before anything
        // that kicks them exists.
        _serviceCpus = options.PinServiceThreads && (options.FillThreads > 0 || options.HandlerPerCpu)
            ? Threading.ServiceCpus.Choose(options.HandlerPerCpu) : Threading.ServiceCpus.None;
        int handlers = _serviceCpus.HandlerCount;
        _handlers = new Thread[handlers];
        _pollSets = new Libc.PollFd[handlers][];
        _wakeFds = new int[handlers];
        _handlerAllocated = new long[handlers];
        _handlersReady = new CountdownEvent(handlers);
        if (handlers > 1)
        {
            _threadCpuBuffer = (byte*)KernelMemory.Map(Threading.ThreadCpu.BufferLength);
            // First the handler on the creator's CPU: in a program, its main thread.
            _activeHandler = Math.Max(0, HandlerOnCpu(Libc.sched_getcpu()));
        }
        for (int i = 0; i < handlers; i++)
        {
            _pollSets[i] = new Libc.PollFd[2 + 2 * 16];
            _wakeFds[i] = Libc.eventfd(0, Libc.EFD_CLOEXEC | Libc.EFD_NONBLOCK);
            if (_wakeFds[i] < 0)
                throw new InvalidOperationException($"eventfd failed: {Libc.Describe(Libc.LastErrno)}");
        }

        _reporter = new FailureReporter(options, KickHandler, Features.Poison);
        // The events part forgets pages on the evictor's books. A take-out never waits for
        // the program's events (see Evictor.TakeOutOneRun), so the evictor reads none.
        if (options.SealsWithoutLock && _space.CanTakeOut)
            _unlockedSealer = new UnlockedSealer(_handlerWindow, _sealer, options.EvictBatchPages, options.WhileSealingWithoutLock);
        _evictor = new Evictor(options, _arenas, _sealer, _space, _unlockedSealer);
        _events = new ProgramEvents(_uffd, _arenas, _sealer, _evictor, _space, _tracksWrites, descriptor => _children!.AdoptFromParent(descriptor),
            arena => ReleaseArenaLocked(arena))
        {
            ProtectAfterDiscardFails = options.ProtectAfterDiscardFails,
            AfterGivingUp = options.AfterGivingUp,
        };
        _collapser = new RangeCollapser(_space, _evictor, _sealer, options.CollapseResidentRanges && _takeOut != null);
        _faults = new FaultService(options, _arenas, _evictor, _sealer, _space, _events, _reporter, _collapser, _tracksWrites, _handlerWindow, KickHandler,
            _serviceCpus)
        {
            PoisonUntracked = ServesAnotherProcess,
        };
        // Forked children's agents connect here (see ChildAgents); without a budget or
        // write tracking a child's pages are never evicted, so none is needed.
        if (options.ServeForkedChildren && options.EvictInChildren && _tracksWrites && options.ResidentBudgetBytes != EngineOptions.Unlimited)
            _childAgents = new ChildAgents();
        _children = new ChildService(_arenas, _sealer, _faults, _reporter, _events, _childAgents,
            options.ResidentBudgetBytes == EngineOptions.Unlimited ? long.MaxValue : Math.Max(1, options.ResidentBudgetBytes / Userfaultfd.PageSize), _tracksWrites);
        WarmUp();
        _reporter.Start();
        for (int i = 0; i < handlers; i++)
        {
            // One name for all: the malloc probe (MallocFreedomTests) counts the fault path by it.
            _handlers[i] = new Thread(HandlerLoop) { IsBackground = true, Name = "tibet-uffd" };
            _handlers[i].Start(i);
        }
        _handlersReady.Wait();
    }

    /// <summary>What this kernel's userfaultfd offers. Throws
    /// <see cref="UserfaultfdUnavailableException"/>, naming the fix, when this process
    /// may not use userfaultfd at all.</summary>
    public static KernelFeatures ProbeKernel() => Userfaultfd.Probe();

    /// <summary>Creates an engine with its handler thread.</summary>
    /// <exception cref="UserfaultfdUnavailableException">userfaultfd cannot be used here;
    /// the message names the fix.</exception>
    public static PageEngine Create(EngineOptions? options = null) => new(options ?? new EngineOptions());

    /// <summary>
    /// Creates an engine that serves another process (the custodian's, see
    /// Custodian.ServedProcess): <paramref name="uffd"/> is that process's userfaultfd, its
    /// arenas are the ranges it registered itself (<see cref="AdoptArena"/>), and pages
    /// leave it through <paramref name="space"/>, its own thread. The engine owns both.
    /// </summary>
    internal static PageEngine ServeProcess(EngineOptions options, Userfaultfd uffd, AgentAddressSpace space) =>
        new(options, (uffd, space));

    /// <summary>Whether the arenas are another process's (see <see cref="ServeProcess"/>).</summary>
    internal bool ServesAnotherProcess { get; }

    /// <summary>Whether every page of <paramref name="arena"/> outside [address, +length)
    /// is unmapped.</summary>
    private static bool AllUnmappedOutside(Arena arena, nint address, long length)
    {
        for (long i = 0; i < arena.PageCount; i++)
        {
            nint page = arena.PageAddress(i);
            if ((page < address || page >= address + (nint)length) && arena.Entries[i].State != PageState.Unmapped)
                return false;
        }
        return true;
    }

    /// <summary>Whether every page of <paramref name="arena"/> from <paramref name="address"/>
    /// to its end is unmapped, and some before it are not: the process shrank or cut the
    /// tail of a served range (mremap in place, munmap of the end).</summary>
    private static bool TailUnmappedFrom(Arena arena, nint address)
    {
        if (address <= arena.Address || address >= arena.Address + (nint)arena.Length)
            return false;
        for (long i = (address - arena.Address) / PageSize; i < arena.PageCount; i++)
            if (arena.Entries[i].State != PageState.Unmapped)
                return false;
        return true;
    }

    /// <summary>Ends <paramref name="arena"/> at <paramref name="end"/>: its pages from there
    /// on are unmapped (<see cref="TailUnmappedFrom"/>), and a new range takes their place.
    /// No page index before <paramref name="end"/> changes, so the resident queue and the
    /// store keep their books; queue entries past the end are stale and skipped.</summary>
    private void TrimTailLocked(Arena arena, nint end)
    {
        Debug.Assert(TailUnmappedFrom(arena, end));
        long pages = (end - arena.Address) / PageSize;
        if (arena.Adopted)
            _adoptedBytes -= arena.Length - pages * PageSize;
        var entries = (PageEntry*)KernelMemory.Map((nuint)(pages * sizeof(PageEntry)));
        Buffer.MemoryCopy(arena.Entries, entries, pages * sizeof(PageEntry), pages * sizeof(PageEntry));
        KernelMemory.Unmap((nint)arena.Entries, (nuint)(arena.PageCount * sizeof(PageEntry)));
        arena.Entries = entries;
        arena.PageCount = pages;
        arena.Length = pages * PageSize;
        _arenas.Reindex();
    }

    /// <summary>Whether arenas are registered for write protection too (a served process
    /// registers its own, and must be told).</summary>
    internal bool TracksWrites => _tracksWrites;

    /// <summary>
    /// Takes on a range the served process mapped and registered on its userfaultfd itself
    /// (see <see cref="ServeProcess"/>): its pages read as zeros until written, and are
    /// sealed beyond the budget like any arena's. Books of earlier arenas the range
    /// overlaps are dropped: the process unmapped them before the kernel could give it the
    /// range again.
    /// </summary>
    internal Arena AdoptArena(nint address, long length, string label)
    {
        if (!ServesAnotherProcess)
            throw new InvalidOperationException("Only an engine serving another process adopts its ranges.");
        if (address == 0 || (address & (PageSize - 1)) != 0 || length <= 0 || (length & (PageSize - 1)) != 0)
            throw new ArgumentException($"a served range must be page-aligned and not empty (0x{address:x}, {length} bytes)");
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            // The kernel gave the process this range again: the pages of earlier arenas in
            // it were unmapped (their UNMAP events were read before the range could be
            // reused). An earlier arena that still has pages outside it is not released:
            // its other pages live. The range is then refused (the allocation runs in
            // plaintext, said), never served over books that would no longer match.
            foreach (Arena old in _arenas.ByAddress)
            {
                if (!(old.Address < address + (nint)length && address < old.Address + (nint)old.Length))
                    continue;
                if (!AllUnmappedOutside(old, address, length) && !TailUnmappedFrom(old, address))
                    throw new InvalidOperationException($"the range 0x{address:x}+{length} overlaps a served range that is still mapped in part");
            }
        }
        var arena = new Arena(this, address, length, NewArenaId(), label) { Adopted = true };
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            // Pages only ever become unmapped meanwhile (a range comes back only through
            // this method, on the served process's one control connection).
            foreach (Arena old in _arenas.ByAddress.ToArray())
            {
                if (!(old.Address < address + (nint)length && address < old.Address + (nint)old.Length))
                    continue;
                if (AllUnmappedOutside(old, address, length))
                    ReleaseArenaLocked(old);
                else
                    TrimTailLocked(old, address);
            }
            arena.Slot = _arenas.Add(arena);
            _adoptedBytes += length;
        }
        KickHandler();
        return arena;
    }

    private long _adoptedBytes;

    /// <summary>The bytes of the served process's ranges the books hold now (adopted, not
    /// yet released): what bounds the custodian's books for it.</summary>
    internal long AdoptedBytes
    {
        get { lock (_gate) return _adoptedBytes; }
    }

    public KernelFeatures Features { get; }

    /// <summary>The descriptor of the engine's userfaultfd, for a custodian that installs
    /// pages of this process's arenas (see PageSource.InstallsRuns). Owned by the engine.</summary>
    internal int UserfaultfdDescriptor => _uffd.Descriptor;

    /// <summary>How long a SIGBUS for a tampered page (or for any fault after a handler
    /// failure) waits for its report; see <see cref="FailureReporter"/>.</summary>
    public const int ReportWaitMilliseconds = FailureReporter.ReportWaitMilliseconds;

    /// <summary>The failure that stopped normal service, or null. See "Failure policy".</summary>
    public Exception? HandlerFailure => _reporter.Failure;

    public EngineOptions Options => _options;

    /// <summary>Maps a new arena of <paramref name="length"/> bytes (rounded up to pages).</summary>
    public Arena CreateArena(long length, string label = "arena") => CreateArena(0, length, label, inaccessible: false);

    /// <summary>
    /// Maps a new arena over <paramref name="fixedAddress"/>, a range the caller has
    /// reserved (PROT_NONE). Releasing the arena puts the reservation back instead of
    /// unmapping, so the range never becomes free for someone else's mapping. The
    /// interposer carves every redirected allocation out of such a reservation.
    /// </summary>
    /// <param name="inaccessible">Mapped PROT_NONE, as a reservation the program makes parts
    /// of accessible later (mprotect): those parts are served as any arena page. No commit
    /// is charged for the arena meanwhile, as for the program's own reservation.</param>
    public Arena CreateArenaAt(nint fixedAddress, long length, string label, bool inaccessible = false)
    {
        ArgumentOutOfRangeException.ThrowIfZero(fixedAddress);
        if ((fixedAddress & (PageSize - 1)) != 0)
            throw new ArgumentException("The address of an arena must be page-aligned.", nameof(fixedAddress));
        return CreateArena(fixedAddress, length, label, inaccessible);
    }

    /// <summary>Arenas are registered for missing pages, and for write protection when
    /// writes are tracked (see <see cref="EngineOptions.TrackWrites"/>).</summary>
    private ulong RegistrationMode => UFFDIO_REGISTER_MODE_MISSING | (_tracksWrites ? UFFDIO_REGISTER_MODE_WP : 0);

    private Arena CreateArena(nint fixedAddress, long length, string label, bool inaccessible)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        long rounded = (length + PageSize - 1) & ~(long)(PageSize - 1);
        int flags = Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE | (fixedAddress != 0 ? Libc.MAP_FIXED : 0);
        int prot = inaccessible ? Libc.PROT_NONE : Libc.PROT_READ | Libc.PROT_WRITE;
        nint address = Libc.mmap(fixedAddress, (nuint)rounded, prot, flags, -1, 0);
        if (address == Libc.MAP_FAILED)
            throw new OutOfMemoryException($"mmap of a {rounded}-byte arena failed: {Libc.Describe(Libc.LastErrno)}");
        // No transparent huge pages behind the engine's back (khugepaged, with THP
        // "always"): a model map allows them when its source is attached, for the
        // collapser (see AttachSource).
        Libc.madvise(address, (nuint)rounded, Libc.MADV_NOHUGEPAGE);
        if (_options.ExcludeFromCoreDumps)
            Libc.madvise(address, (nuint)rounded, Libc.MADV_DONTDUMP);

        try
        {
            ulong ioctls = _uffd.Register(address, (nuint)rounded, RegistrationMode);
            const ulong needed = (1UL << _UFFDIO_COPY) | (1UL << _UFFDIO_ZEROPAGE) | (1UL << _UFFDIO_WAKE);
            if ((ioctls & needed) != needed)
                throw new UserfaultfdUnavailableException($"The kernel registered the arena without UFFDIO_COPY/ZEROPAGE/WAKE (ioctls 0x{ioctls:x}).");
            if (_tracksWrites && (ioctls & (1UL << _UFFDIO_WRITEPROTECT)) == 0)
                throw new UserfaultfdUnavailableException($"The kernel registered the arena in write-protect mode without UFFDIO_WRITEPROTECT (ioctls 0x{ioctls:x}); run with TIBET_TRACK_WRITES=0.");
        }
        catch
        {
            GiveBack(address, (nuint)rounded, fixedAddress != 0);
            throw;
        }

        var arena = new Arena(this, address, rounded, NewArenaId(), label) { KeepsReservation = fixedAddress != 0, MappedAsReservation = inaccessible };
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            arena.Slot = _arenas.Add(arena);
        }
        return arena;
    }

    /// <summary>Seals and drops resident pages, oldest first, until at most
    /// <paramref name="residentBytes"/> remain resident.</summary>
    public void Trim(long residentBytes)
    {
        RequireEviction();
        // Between the handler's steps: it may be sealing pages from the take-out area with
        // the lock let go (Sealing.UnlockedSealer), and this eviction would take out into it.
        using (EnterBetweenSteps())
        {
            RequireHealthy();
            try
            {
                // Asked for by the API: the newest fault's pages go too.
                _evictor.TrimTo(Math.Max(0, residentBytes / PageSize));
            }
            catch (Exception e)
            {
                // Pages may sit moved out and unsealed: the engine cannot go on as if not.
                Fail(e);
                throw;
            }
        }
        KickHandler();
    }

    /// <summary>After a handler failure nothing more is sealed: a page evicted now could
    /// never be served back.</summary>
    private void RequireHealthy()
    {
        if (_reporter.Failure is { } failure)
            throw new InvalidOperationException($"the page engine failed earlier ({failure.Message}) and serves faults with SIGBUS only; nothing more is evicted", failure);
    }

    /// <summary>The statistics, taken between the handler's steps: a step that let go of the
    /// lock (a run whose second part the fill worker installs meanwhile) has mapped pages
    /// it has not yet admitted, and counting then would show them as still sealed. Such a
    /// step lasts microseconds to milliseconds; should one not end within
    /// <see cref="StatsPatience"/>, they are taken mid-step rather than never.</summary>
    public EngineStats GetStats()
    {
        if (TryGetStats(StatsPatience) is { } between)
            return between;
        lock (_gate)
            return StatsLocked();
    }

    private static readonly TimeSpan StatsPatience = TimeSpan.FromSeconds(2);

    /// <summary>The statistics, or null if the engine is not between the handler's steps
    /// within <paramref name="wait"/> (its handler waits on another process: the
    /// custodian's live statistics must not wait with it).</summary>
    public EngineStats? TryGetStats(TimeSpan wait)
    {
        if (!TryEnterBetweenSteps(wait))
            return null;
        try
        {
            return StatsLocked();
        }
        finally
        {
            _gate.Exit();
        }
    }

    private EngineStats StatsLocked()
    {
        return new EngineStats
        {
            Faults = _faults.Faults,
            ReadAheadPages = _faults.ReadAheadPages,
            Refaults = _evictor.Refaults,
            EvictionPolicy = _options.Eviction.Name,
            Cipher = _options.Cipher.Name,
            Decrypts = _sealer.Opens + _faults.WorkerOpens,
            WorkerDecrypts = _faults.WorkerOpens,
            WorkerSourcedPages = _faults.WorkerSharedFills,
            Decompressions = _sealer.Decompressions,
            ZeroFills = _faults.ZeroFills,
            Evictions = _evictor.Evictions,
            ZeroEvictions = _evictor.ZeroEvictions,
            CleanEvictions = _sealer.CleanReseals,
            SourceDrops = _evictor.SourceDrops,
            EvictionBatches = _evictor.Batches,
            WriteFaults = _faults.WriteFaults,
            CleanCopies = _sealer.RetainedPages,
            PagesAhead = _faults.PagesAhead,
            SourcedPages = _faults.SourcedPages,
            SourceInstalls = _faults.SourceInstalls,
            CompressedSeals = _sealer.CompressedSeals,
            EvictionsRefused = _evictor.Refused,
            MovesReconciled = _evictor.Reconciled,
            AuthenticationFailures = _reporter.Tampered,
            RemoveEvents = _events.Removes,
            UnmapEvents = _events.Unmaps,
            RemapEvents = _events.Remaps,
            ResidentBytes = _evictor.ResidentPages * PageSize,
            PeakResidentBytes = _evictor.PeakResidentPages * PageSize,
            ResidentBudgetBytes = _options.ResidentBudgetBytes,
            SealedBytes = _sealer.Store.PayloadBytes,
            StoreMappedBytes = _sealer.Store.MappedBytes,
            SealedPages = _sealer.SealedPages,
            FaultP50Nanoseconds = _faults.Latency.Percentile(0.50),
            FaultP99Nanoseconds = _faults.Latency.Percentile(0.99),
            FaultMaxNanoseconds = _faults.Latency.MaxNanoseconds,
            HandlerAllocatedBytes = HandlerAllocatedBytes(),
            HandlerFailed = _reporter.Failure != null,
            ForkedChildren = _children.Count,
            PeakForkedChildren = _children.Peak,
            ChildEvictions = _children.Evictions,
            Children = _children.Snapshot(),
            CollapsedRanges = _collapser.Collapsed,
            PlacedRanges = _faults.PlacedRanges,
            PlacedReadAhead = _faults.PlacedReadAhead,
            PlacedSealedRanges = _faults.PlacedSealed,
            RangeEvictions = _evictor.RangeEvictions,
            RecycledRanges = _faults.RecycledRanges,
            CollapseFailures = _collapser.Failed,
            HandlerHandovers = _handovers,
        };
    }

    private long HandlerAllocatedBytes()
    {
        long total = 0;
        foreach (long allocated in _handlerAllocated)
            total += allocated;
        return total;
    }

    /// <summary>Forgets the fault latencies recorded so far (for benchmarks that measure phases).</summary>
    public void ResetLatency()
    {
        lock (_gate) _faults.Latency.Clear();
    }

    public void Dispose()
    {
        if (_disposed) return;
        _stopping = true;
        KickAllHandlers();
        foreach (Thread handler in _handlers)
            handler.Join();
        _handlersReady.Dispose();
        _reporter.Stop();
        lock (_gate)
        {
            _children.Dispose();
            _childAgents?.Dispose();
            foreach (var arena in _arenas.Slots)
                if (arena != null) ReleaseArenaLocked(arena);
            _disposed = true;
        }
        _sealer.Dispose();
        _unlockedSealer?.Dispose();
        _evictor.Dispose();
        _faults.Dispose(); // before the address space: its range reader wipes a staging slot there
        _uffd.Dispose();
        _takeOut?.Dispose();
        (_space as AgentAddressSpace)?.Dispose();
        _events.Dispose();
        foreach (int wakeFd in _wakeFds)
            Libc.close(wakeFd);
        if (_threadCpuBuffer != null)
            KernelMemory.Unmap((nint)_threadCpuBuffer, Threading.ThreadCpu.BufferLength);
    }

    /// <summary>
    /// Tells the engine the pid of the child the last fork created (the interposer's
    /// fork wrapper calls this), so that the child's snapshot is released when it exits.
    /// Children made by a raw fork syscall keep theirs until this process ends.
    /// </summary>
    /// <param name="agentFd">The engine's end of the child's agent connection (see
    /// Children.ChildAgents), or -1; the engine owns it from now on.</param>
    public void ChildForked(int pid, int agentFd = -1)
    {
        lock (_gate)
            _children.ChildForked(pid, agentFd);
        KickHandler();
    }

    /// <summary>
    /// This process is ending while forked children still use their fork-time arenas (a
    /// daemon's parent exits right after the fork). Once it is gone nothing serves their
    /// faults, and the kernel would give them zero pages where sealed pages were: wrong
    /// bytes. So every page a living child would still need from here is put into it now,
    /// decrypted (no longer sealed in the child), and the caller says so. Returns the
    /// children handed over and the pages put into them.
    /// </summary>
    public (int Children, long Pages) HandOverChildren()
    {
        // Between the handler's steps: the children's pages are decrypted in the fault
        // service's buffer, which the handler fills without the lock inside a step.
        using (EnterBetweenSteps())
            return _children.HandOver();
    }

    /// <summary>Takes the engine lock at a moment the handler is between steps, not inside
    /// one with the lock let go (see <see cref="Threading.EngineLockWindow"/>): then its
    /// buffers are free and its books whole, and stay so while the lock is held.</summary>
    private BetweenSteps EnterBetweenSteps()
    {
        TryEnterBetweenSteps(Timeout.InfiniteTimeSpan);
        return new BetweenSteps(_gate);
    }

    /// <summary>The engine lock held between the handler's steps, exited on Dispose.</summary>
    private readonly ref struct BetweenSteps(Lock gate)
    {
        public void Dispose() => gate.Exit();
    }

    /// <summary>As <see cref="EnterBetweenSteps"/>, giving up after <paramref name="wait"/>
    /// (<see cref="Timeout.InfiniteTimeSpan"/>: never): true with the engine lock held (the
    /// caller exits it), false without.</summary>
    private bool TryEnterBetweenSteps(TimeSpan wait)
    {
        bool forever = wait == Timeout.InfiniteTimeSpan;
        long deadline = Environment.TickCount64 + (forever ? 0 : (long)wait.TotalMilliseconds);
        // Announced, so that the handler opens no new window meanwhile (EngineLockWindow.MayLetGo).
        _handlerWindow.RequestBetweenSteps();
        try
        {
            while (true)
            {
                long left = forever ? long.MaxValue : deadline - Environment.TickCount64;
                if (forever)
                    _gate.Enter();
                else if (!_gate.TryEnter(TimeSpan.FromMilliseconds(Math.Max(0, left))))
                    return false;
                if (!_handlerWindow.IsOpen)
                    return true;
                _gate.Exit();
                if (left <= 0)
                    return false;
                Thread.Sleep(1);
            }
        }
        finally
        {
            _handlerWindow.EndRequest();
        }
    }

    internal long ResidentQueueCapacity
    {
        get { lock (_gate) return _evictor.Capacity; }
    }

    internal PageState ReadPageState(Arena arena, long pageIndex)
    {
        using (EnterBetweenSteps()) // as GetStats
        {
            ObjectDisposedException.ThrowIf(arena.Released, arena);
            return arena.Entries[pageIndex].State;
        }
    }

    /// <summary>Runs <paramref name="observe"/> under the engine lock, for tests that look at
    /// the kernel's page tables: every change the engine makes to them (UFFDIO_COPY,
    /// ZEROPAGE, MOVE) happens under this lock, so the picture is consistent. It must not
    /// touch arena memory.</summary>
    internal T ObserveUnderLock<T>(Func<T> observe)
    {
        // Between the handler's steps: inside one, it may have let go of the lock around a
        // decryption, with a range taken out and not yet given back (EngineLockWindow).
        using (EnterBetweenSteps())
            return observe();
    }

    /// <summary>Where staging slot <paramref name="slot"/> is (0: none), for tests that
    /// check from the page tables that no plaintext stays there (see AddressSpaceOps.HugeStaging).</summary>
    internal nint HugeStagingSlot(int slot) => _space.HugeStagingSlots > slot ? _space.HugeStaging(slot) : 0;

    /// <summary>The staging slot whole ranges are evicted into (-1: none; see AddressSpaceOps.RecyclingSlot).</summary>
    internal int RecyclingSlot => _space.RecyclingSlot;

    /// <summary>For tests: the CPU the serving handler is pinned to (-1: not pinned).</summary>
    internal int ServingHandlerCpu => _serviceCpus.Handler(_activeHandler);

    /// <summary>Where a sealed page's ciphertext lives, for tests that tamper with it.</summary>
    internal bool TryLocateCiphertext(Arena arena, long pageIndex, out nint address, out int length)
    {
        using (EnterBetweenSteps()) // as GetStats
        {
            ref PageEntry entry = ref arena.Entries[pageIndex];
            address = entry.State == PageState.Sealed ? CiphertextStore.AddressOf(entry.Slot) : 0;
            length = entry.State == PageState.Sealed ? entry.SealedLength : 0;
            return address != 0;
        }
    }

    /// <summary>The nonce counters of all sealed pages of an arena, for tests.</summary>
    internal List<ulong> SealedNonces(Arena arena)
    {
        var nonces = new List<ulong>();
        using (EnterBetweenSteps()) // as GetStats
        {
            for (long i = 0; i < arena.PageCount; i++)
                if (arena.Entries[i].State == PageState.Sealed)
                    nonces.Add(arena.Entries[i].Nonce);
        }
        return nonces;
    }

    internal void EvictArena(Arena arena)
    {
        RequireEviction();
        using (EnterBetweenSteps()) // as Trim
        {
            ObjectDisposedException.ThrowIf(arena.Released, arena);
            RequireHealthy();
            try
            {
                _evictor.EvictArena(arena);
            }
            catch (Exception e)
            {
                Fail(e);
                throw;
            }
        }
        KickHandler();
    }

    internal void ReleaseArena(Arena arena)
    {
        lock (_gate)
        {
            if (arena.Released) return;
            ReleaseArenaLocked(arena);
        }
    }

    private void ReleaseArenaLocked(Arena arena)
    {
        if (arena.Adopted)
        {
            // The served process's range: the process unmaps it, here only the books go.
            for (long i = 0; i < arena.PageCount; i++)
                _events.Unmap(ref arena.Entries[i]);
            _arenas.Remove(arena);
            _adoptedBytes -= arena.Length;
            arena.FreeTables();
            arena.Released = true;
            return;
        }
        // Unregistering first wakes any thread still blocked on the range.
        _uffd.Unregister(arena.Address, (nuint)arena.Length);
        long runStart = -1;
        for (long i = 0; i <= arena.PageCount; i++)
        {
            bool mapped = i < arena.PageCount && arena.Entries[i].State != PageState.Unmapped;
            if (i < arena.PageCount)
                _events.Unmap(ref arena.Entries[i]);
            if (mapped && runStart < 0) runStart = i;
            if (!mapped && runStart >= 0)
            {
                // Pages the program already unmapped may hold someone else's mapping now.
                GiveBack(arena.PageAddress(runStart), (nuint)((i - runStart) * PageSize), arena.KeepsReservation);
                runStart = -1;
            }
        }
        _arenas.Remove(arena);
        arena.Source?.Release();
        arena.Source = null;
        arena.FreeTables();
        arena.Released = true;
    }

    /// <summary>Unmaps a range, or turns it back into an inaccessible reservation in one
    /// step (MAP_FIXED replaces atomically, so no other mapping can slip in between).</summary>
    private static void GiveBack(nint address, nuint length, bool keepReservation)
    {
        if (keepReservation)
            Libc.mmap(address, length, Libc.PROT_NONE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE | Libc.MAP_FIXED, -1, 0);
        else
            Libc.munmap(address, length);
    }

    internal void ExtendArena(Arena arena, long newLength)
    {
        long rounded = (newLength + PageSize - 1) & ~(long)(PageSize - 1);
        if (!arena.KeepsReservation)
            throw new InvalidOperationException("Only arenas created over a reservation (CreateArenaAt) can grow in place.");
        if (rounded <= arena.Length)
            return;
        nint tail = arena.Address + (nint)arena.Length;
        nuint extra = (nuint)(rounded - arena.Length);
        nint mapped = Libc.mmap(tail, extra, Libc.PROT_READ | Libc.PROT_WRITE,
            Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE | Libc.MAP_FIXED, -1, 0);
        if (mapped != tail)
            throw new OutOfMemoryException($"cannot grow arena '{arena.Label}' in place: {Libc.Describe(Libc.LastErrno)}");
        Libc.madvise(tail, extra, arena.Source != null && _collapser.Enabled ? Libc.MADV_HUGEPAGE : Libc.MADV_NOHUGEPAGE);
        if (_options.ExcludeFromCoreDumps)
            Libc.madvise(tail, extra, Libc.MADV_DONTDUMP);
        _uffd.Register(tail, extra, RegistrationMode);

        lock (_gate)
        {
            long pages = rounded / PageSize;
            var entries = (PageEntry*)KernelMemory.Map((nuint)(pages * sizeof(PageEntry)));
            Buffer.MemoryCopy(arena.Entries, entries, pages * sizeof(PageEntry), arena.PageCount * sizeof(PageEntry));
            KernelMemory.Unmap((nint)arena.Entries, (nuint)(arena.PageCount * sizeof(PageEntry)));
            arena.Entries = entries;
            arena.PageCount = pages;
            arena.Length = rounded;
        }
    }

    /// <summary>Pages of the arena that the program has not unmapped.</summary>
    /// <summary>How many of the arena's pages from <paramref name="first"/> on, <paramref name="count"/>
    /// of them (all from there: -1), the program has not unmapped (0 once the arena is released).</summary>
    internal long MappedPageCount(Arena arena, long first, long count)
    {
        lock (_gate)
        {
            if (count == -1)
                count = arena.PageCount - first;
            if (arena.Released || first < 0 || count < 0 || first + count > arena.PageCount)
                return 0;
            long mapped = 0;
            for (long i = first; i < first + count; i++)
                if (arena.Entries[i].State != PageState.Unmapped) mapped++;
            return mapped;
        }
    }

    private void RequireEviction()
    {
        if (!_space.CanTakeOut)
            throw new NotSupportedException("Eviction is unavailable on this kernel: " + string.Join("; ", Features.Shortcomings()));
    }

    private static ulong NewArenaId() => Crypto.SecureRandom.NextUInt64();

    /// <summary>Wakes the serving handler from its poll.</summary>
    private void KickHandler() => KickHandler(_activeHandler);

    private void KickHandler(int index)
    {
        ulong one = 1;
        Libc.write(_wakeFds[index], &one, sizeof(ulong));
    }

    /// <summary>Wakes every handler: to stop, or after a failure.</summary>
    private void KickAllHandlers()
    {
        for (int i = 0; i < _wakeFds.Length; i++)
            KickHandler(i);
    }

    /// <summary>The handler pinned to <paramref name="cpu"/>, or -1.</summary>
    private int HandlerOnCpu(int cpu)
    {
        for (int i = 0; i < _serviceCpus.HandlerCount; i++)
            if (cpu >= 0 && _serviceCpus.Handler(i) == cpu)
                return i;
        return -1;
    }

    /// <summary>
    /// Runs every lazily initialised path once (cipher, compressor, histogram, the fault
    /// path's static constructors) on the constructing thread, so the handler's first
    /// fault meets no static constructor and no first-call allocation.
    /// </summary>
    private void WarmUp()
    {
        _sealer.WarmUp(_options.Cipher, _faults.Buffer);
        // The store maps and unmaps chunks from the handler thread.
        KernelMemory.Unmap(KernelMemory.Map(PageSize), PageSize);
        _ = Stopwatch.GetTimestamp();
        _ = GC.GetAllocatedBytesForCurrentThread();
        Threading.LockWarmUp.ForceContention(_gate);
        Threading.LockWarmUp.ForceContention(_baton);
        Threading.CodeWarmUp.Prepare(typeof(PageEngine), typeof(PageSealer), typeof(UnlockedSealer), typeof(UnlockedOpener), typeof(PageCompressor), typeof(Userfaultfd), typeof(PageEntry), typeof(UffdAddressSpace), typeof(LocalAddressSpace),
            typeof(CiphertextStore), typeof(Evictor), typeof(AgentAddressSpace), typeof(ArenaTable), typeof(ProgramEvents), typeof(FaultService), typeof(RangePlacer), typeof(FillWorker), typeof(RangeReader), typeof(ChildService), typeof(ChildAgents), typeof(FailureReporter), typeof(RangeCollapser), _evictor.ResidentSet.GetType(), typeof(Files.FileSource), typeof(ResidentQueue), typeof(ReadAhead.SequentialStreams), typeof(EvictionClock), typeof(Threading.ThreadCpu), typeof(Threading.ServiceCpus), typeof(LatencyHistogram));
    }
}
