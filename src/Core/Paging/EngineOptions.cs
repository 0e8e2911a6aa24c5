namespace Tibet.Core.Paging;

/// <summary>Whether sealed pages are compressed before encryption.</summary>
public enum CompressionMode
{
    /// <summary>Encrypt only. The default: on this hardware zstd decompression costs
    /// several times what AES-GCM does (see bench/results).</summary>
    Off,

    /// <summary>Try zstd on each page and keep the result when it is no larger than
    /// <see cref="EngineOptions.CompressedKeepBytes"/>; stop trying for a while in an
    /// arena whose pages keep failing to compress.</summary>
    Auto,
}

/// <summary>A page that failed authentication: its reader gets SIGBUS.</summary>
public readonly record struct AuthenticationFailure(ulong ArenaId, long PageIndex, nint Address, string Detail);

/// <summary>Tuning and policy for a <see cref="PageEngine"/>.</summary>
public sealed record EngineOptions
{
    public const long Unlimited = long.MaxValue;

    /// <summary>The most plaintext bytes kept mapped across all arenas. Above it, the
    /// oldest resident pages are sealed and dropped.</summary>
    public long ResidentBudgetBytes { get; init; } = Unlimited;

    public CompressionMode Compression { get; init; } = CompressionMode.Off;

    /// <summary>The AEAD that seals pages: AES-256-GCM (the default) or AEGIS-256.</summary>
    public Crypto.PageCipherSuite Cipher { get; init; } = Crypto.PageCipherSuite.Aes256Gcm;

    /// <summary>Which resident page is sealed next when the budget is reached.</summary>
    public Eviction.EvictionPolicy Eviction { get; init; } = Paging.Eviction.EvictionPolicy.ScanResistant;

    /// <summary>When pages are sealed ahead of need (see <see cref="Eviction.ResidentWatermarks"/>).</summary>
    public Eviction.ResidentWatermarks Watermarks { get; init; } = new();

    /// <summary>Another engine that serves the same process and shares its budget (see
    /// <see cref="Eviction.ResidentBudgetShare"/>); null: the budget is this engine's alone.</summary>
    public Eviction.ResidentBudgetShare? BudgetShare { get; init; }

    /// <summary>Under <see cref="CompressionMode.Auto"/>, a compressed page is kept only
    /// if its sealed size (compressed bytes + the cipher's tag) is at most this.</summary>
    public int CompressedKeepBytes { get; init; } = 2048;

    /// <summary>Sequential faults grow a read-ahead window up to this many pages, served
    /// with one UFFDIO_COPY.</summary>
    public int ReadAheadMaxPages { get; init; } = 64;

    /// <summary>The same for arenas backed by a source (model maps): a model is streamed in
    /// at load, and its file is read one run at a time, so longer runs read it faster
    /// (512 pages: 2 MiB reads).</summary>
    public int SourceReadAheadMaxPages { get; init; } = 512;

    /// <summary>Decryption ahead of the program, in 2 MiB ranges. A model is read in the
    /// same order on every pass (its weights, every token): once a fault brings in a range
    /// of a model map, the handler, whenever it has nothing else to do, brings in the
    /// ranges after it, up to this many ahead of the newest fault, 64 pages at a time, so
    /// that decrypting (or reading the file) overlaps the program's compute. Only into room
    /// the budget has to spare: nothing is evicted for it. 0: off.</summary>
    public int DecryptAheadRanges { get; init; } = 1;

    /// <summary>Threads besides the handler that decrypt and install long runs of sealed
    /// pages (0 or 1; see <see cref="Faults.FillWorker"/>). Default: 1 where there is more
    /// than one CPU.</summary>
    public int FillThreads { get; init; } = Environment.ProcessorCount > 1 ? 1 : 0;

    /// <summary>Pin the handlers (see <see cref="HandlerPerCpu"/>) and the fill thread to
    /// CPUs of those the engine's creator may run on, the fill thread apart from the serving
    /// handler (see <see cref="Threading.ServiceCpus"/> for why). Off: one handler, and all
    /// are left to the scheduler.</summary>
    public bool PinServiceThreads { get; init; } = true;

    /// <summary>With <see cref="PinServiceThreads"/>: a handler thread pinned to each CPU the
    /// engine's creator may run on (at most Threading.ServiceCpus.MaxHandlers; beyond, one),
    /// so that a fault is served on the CPU of the thread that took it, with no wake-up of
    /// another CPU. One serves at a time. Off: one handler. Default: off: it halves a
    /// scattered fault's wait and speeds Redis at half budget by a third, but raises the
    /// p99 of random faults and slows sequential reads (the handler then shares the
    /// faulting thread's CPU); README, "A handler per CPU", says by how much. See
    /// <see cref="Threading.ServiceCpus"/> for what it is worth.</summary>
    public bool HandlerPerCpu { get; init; }

    /// <summary>The most pages one fault may bring in, whatever the arena.</summary>
    internal int MaxRunPages => Math.Max(ReadAheadMaxPages, SourceReadAheadMaxPages);

    /// <summary>Sequential streams tracked per arena, each with its own read-ahead window
    /// (a program's threads often scan different parts of one arena at once).</summary>
    public int ReadAheadStreams { get; init; } = 8;

    /// <summary>Pages sealed per eviction step. Faults are served between steps, so this
    /// also bounds how long eviction holds the engine lock.</summary>
    public int EvictBatchPages { get; init; } = 64;

    /// <summary>How long the handler keeps polling after its last message before it
    /// sleeps. Spinning saves the wake-up of an idle vCPU (~40 µs) at the price of CPU.</summary>
    public int SpinMicroseconds { get; init; } = 50;

    /// <summary>Collapse each 2 MiB range of a model map (an arena with a source) into a
    /// transparent huge page once all its pages are resident (see
    /// <see cref="Collapse.RangeCollapser"/>): a resident model is then read at about
    /// native speed. Off: arenas stay in 4 KiB pages (MADV_NOHUGEPAGE).</summary>
    public bool CollapseResidentRanges { get; init; } = true;

    /// <summary>With <see cref="CollapseResidentRanges"/>: a model map's 2 MiB ranges are
    /// also placed whole when the budget is full, from their sealed copies as from their
    /// source, and evicted whole (the evictor takes a range's huge page out and the next
    /// range is decrypted into it; see Faults.RangePlacer, Eviction.Evictor.TryEvictRange).
    /// Off: under a full budget ranges come and go 4 KiB at a time.</summary>
    public bool PlacesRangesUnderPressure { get; init; } = true;

    /// <summary>Track writes with userfaultfd write protection, so that a page brought back
    /// from its sealed copy and not written since is evicted by keeping that copy: no
    /// encryption, and a read-only model is sealed once. Its cost is one write-protect
    /// fault on the first write to such a page. Off: every eviction seals anew.</summary>
    public bool TrackWrites { get; init; } = true;

    /// <summary>Forked children's agents (see Children.ChildAgents) take the clean pages a
    /// child read from sealed copies out again once it holds more than the budget of them.
    /// Needs <see cref="TrackWrites"/>, a budget and <see cref="ServeForkedChildren"/>.
    /// Off: what a child reads stays resident in it until it ends.</summary>
    public bool EvictInChildren { get; init; } = true;

    /// <summary>Exclude arenas from core dumps (MADV_DONTDUMP), so a crash never writes
    /// the resident plaintext to disk.</summary>
    public bool ExcludeFromCoreDumps { get; init; } = true;

    /// <summary>
    /// Serve forked children (UFFD_FEATURE_EVENT_FORK): a child's arenas are registered
    /// with a userfaultfd of its own, and this engine serves its faults with the contents
    /// the pages had at fork time. Without it a child would read zeros where the parent
    /// had evicted pages. The interposer turns it on; in-process users that fork leave it off.
    /// </summary>
    public bool ServeForkedChildren { get; init; }

    /// <summary>Called when a page fails authentication, on the engine's reporter thread
    /// (never on the fault handler: formatting, writing and auditing may allocate, lock
    /// and wait). The reader of the page gets SIGBUS once the call has returned (or after
    /// <see cref="PageEngine.ReportWaitMilliseconds"/> if it does not). The default writes
    /// one line to stderr.</summary>
    public Action<AuthenticationFailure>? OnAuthenticationFailure { get; init; }

    /// <summary>
    /// Called once, on the engine's reporter thread, with one line that names an
    /// unexpected failure of the fault handler (a failed read of the userfaultfd, an mmap
    /// failure as the store grows, an exhausted nonce space, a full store). From then on
    /// the engine serves every fault on a page that is not resident with SIGBUS in the
    /// faulting thread, never with zeros (see <see cref="PageEngine"/>, "Failure policy").
    /// The default writes the line to stderr.
    /// </summary>
    public Action<string>? OnHandlerFailure { get; init; }

    /// <summary>The most memory the ciphertext store may map. Sealing a page beyond it is
    /// a failure of the handler (see <see cref="OnHandlerFailure"/>): the engine cannot
    /// keep the page, so it stops serving rather than lose it. Unlimited by default.</summary>
    public long StoreLimitBytes { get; init; } = Unlimited;

    /// <summary>For tests: called on the handler thread while it decrypts a read-ahead
    /// slice or a whole range without the engine lock (Faults.FaultService.OpenWithoutLock,
    /// Faults.RangePlacer.OpenSealed), with the arena. What it does happens in that window: an API call that must not wait for the
    /// cipher, an arena released under the decryption. Null (nothing called) in use.</summary>
    internal Action<Arena>? WhileOpeningWithoutLock { get; init; }

    /// <summary>For tests: as <see cref="WhileOpeningWithoutLock"/>, while the handler
    /// decrypts the page a thread faulted on (Faults.FaultService.ServeFaultingPage).</summary>
    internal Action<Arena>? WhileOpeningFaultingPageWithoutLock { get; init; }

    /// <summary>
    /// Whether the fill worker decrypts its part of a long run without the engine lock,
    /// installing each slice under it if unchanged (Faults.FillWorker). Default: off, for
    /// speed: scaletest's sequential reads ran at 650-1363 MB/s with it on against
    /// 1267-1433 off (3 interleaved rounds, 2026-12-08,
    /// bench/results/2026-12-08-fills-without-lock.md). Off, the handler holds the lock
    /// for the whole run, as it does anyway while a thread waits to come in between its
    /// steps; the program's threads that map or unmap then wait for the run.
    /// </summary>
    public bool FillsWithoutLock { get; init; }

    /// <summary>For tests: called on the fill worker's thread after it filled or decrypted a
    /// slice of its part of a run without the engine lock, before it takes the lock to
    /// install the slice (Faults.FillWorker), with the arena. Null (nothing called) in use.</summary>
    internal Action<Arena>? WhileFillingWithoutLock { get; init; }

    /// <summary>
    /// Whether the handler's own evictions (after a fault, when idle) seal their pages with
    /// the engine lock let go (Sealing.UnlockedSealer), so that the program's threads that
    /// map or unmap do not wait for the cipher. Default: true. Off, the
    /// pages are sealed under the lock, as evictions an API call asks for always are.
    /// </summary>
    public bool SealsWithoutLock { get; init; } = true;

    /// <summary>For tests: called on the handler thread while it seals an eviction batch
    /// without the engine lock (<see cref="SealsWithoutLock"/>), with the arena of the
    /// batch's first page. Null (nothing called) in use.</summary>
    internal Action<Arena>? WhileSealingWithoutLock { get; init; }

    /// <summary>For tests: pages the program gives up (madvise) are never write-protected
    /// in time, as on a loaded machine where the madvising thread waits for a CPU longer
    /// than the event's reader waits for it (Events.ProgramEvents.TryProtect).</summary>
    internal bool ProtectAfterDiscardFails { get; init; }

    /// <summary>For tests: called under the engine lock, on the thread that read the event,
    /// right after the resident pages of an arena the program gave up (one madvise range)
    /// stayed on the books unprotected, before the madvising thread can have the kernel
    /// zap them: what eviction does then. Once per range, after every page of it is on the
    /// books as given up: an eviction inside the loop would take pages the event has not
    /// reached yet, which no eviction can in use (the loop holds the engine lock), and
    /// after MADV_FREE those may already hold what the program wrote since (the madvising
    /// thread runs on once the event is read, before it is handled).</summary>
    internal Action<Arena>? AfterGivingUp { get; init; }

    /// <summary>For tests: called under the engine lock, on the evicting thread, before
    /// each run of an eviction batch is taken out of the address space, with the run's
    /// arena and first page (Eviction.Evictor.TakeOutOneRun). What the program does in it
    /// (a madvise whose event the take-out will find waiting) races the take-out as a
    /// program thread can. Null (nothing called) in use.</summary>
    internal Action<Arena, long>? BeforeTakingOut { get; init; }

    internal void Validate()
    {
        if (ResidentBudgetBytes < 4096)
            throw new ArgumentOutOfRangeException(nameof(ResidentBudgetBytes), ResidentBudgetBytes, "The resident budget must be at least one page (4096 bytes).");
        if (ReadAheadMaxPages is < 1 or > 512)
            throw new ArgumentOutOfRangeException(nameof(ReadAheadMaxPages), ReadAheadMaxPages, "Read-ahead must be 1 to 512 pages.");
        if (SourceReadAheadMaxPages is < 1 or > Files.FileSource.WindowPages)
            throw new ArgumentOutOfRangeException(nameof(SourceReadAheadMaxPages), SourceReadAheadMaxPages, "Read-ahead of a source must be 1 to 512 pages.");
        if (FillThreads is < 0 or > 1)
            throw new ArgumentOutOfRangeException(nameof(FillThreads), FillThreads, "Fill threads must be 0 or 1.");
        if (DecryptAheadRanges is < 0 or > 64)
            throw new ArgumentOutOfRangeException(nameof(DecryptAheadRanges), DecryptAheadRanges, "Decryption ahead must be 0 to 64 ranges.");
        if (ReadAheadStreams is < 1 or > 64)
            throw new ArgumentOutOfRangeException(nameof(ReadAheadStreams), ReadAheadStreams, "Read-ahead streams must be 1 to 64.");
        if (EvictBatchPages is < 1 or > 512)
            throw new ArgumentOutOfRangeException(nameof(EvictBatchPages), EvictBatchPages, "The eviction batch must be 1 to 512 pages.");
        if (CompressedKeepBytes is < 64 or > Storage.CiphertextStore.CompressedClassCount * Storage.CiphertextStore.CompressedClassStep)
            throw new ArgumentOutOfRangeException(nameof(CompressedKeepBytes), CompressedKeepBytes, "CompressedKeepBytes must be 64 to 3584.");
        if (StoreLimitBytes < 1 << 20)
            throw new ArgumentOutOfRangeException(nameof(StoreLimitBytes), StoreLimitBytes, "The store limit must be at least one chunk (1 MiB).");
        ArgumentNullException.ThrowIfNull(Watermarks);
        Watermarks.Validate();
        if (SpinMicroseconds is < 0 or > 1_000_000)
            throw new ArgumentOutOfRangeException(nameof(SpinMicroseconds), SpinMicroseconds, "Spin must be 0 to 1000000 µs.");
    }
}
