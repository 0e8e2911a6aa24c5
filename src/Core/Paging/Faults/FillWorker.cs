using System.Diagnostics;
using Tibet.Core.Interop;
using Tibet.Core.Paging.AddressSpace;
using Tibet.Core.Paging.Sealing;
using Tibet.Core.Storage;

namespace Tibet.Core.Paging.Faults;

/// <summary>
/// A second thread for the fault service's long runs of sealed pages (a model map's
/// 2 MiB range, a long read-ahead), or of pages of a source that can fill runs on another
/// thread (<see cref="PageSource.FillsRunsConcurrently"/>: a sealed model's, read and
/// decrypted again after eviction): while the handler decrypts and installs the first
/// half of a run, this thread decrypts and installs the second half, so that two CPUs
/// share the cryptography and the copies. A 2 MiB range placed whole (RangePlacer) is
/// shared instead chunk by chunk, each thread claiming the next until none is left
/// (<see cref="StartSharedOpen"/>, <see cref="StartSharedFill"/>). The engine's books are
/// not touched here: the handler admits what was installed once both parts are done.
/// </summary>
/// <remarks>
/// <para>A run's part is filled and decrypted without the engine lock, and installed a
/// slice at a time under it (<see cref="Start"/> with the entries copied): the handler
/// lets go of the lock while it decrypts its own part and while it waits for this
/// thread's, so the program's threads that map or unmap do not wait
/// for either. What keeps that safe is what keeps the handler's own unlocked decryptions
/// safe (UnlockedOpener): no userfaultfd event is read until this thread has finished
/// (FaultService.FillAndInject), the caller holds the arena's key, its source and a pin
/// on the store, the pages are filled from the entries as the caller copied them under the
/// lock, and each slice is installed only after its pages were found unchanged, and the
/// arena not released, with the lock held (<see cref="InstallUnchanged"/>). A page this
/// thread installed is on the books only once the handler admits it, after the run.</para>
/// <para>When the handler could not let go (a thread waits to come in between its steps:
/// Threading.EngineLockWindow.MayLetGo), it holds the lock for the whole run, and this
/// thread reads the live entries and installs without it, as the handler vouches for them.</para>
/// <para>An install the kernel refuses (EAGAIN while the program's own event waits to be
/// read, EEXIST) ends this thread's part; the handler serves the rest of the run itself,
/// the usual way, after reading the event.</para>
/// <para>A source that installs its pages itself (<see cref="PageSource.InstallsRuns"/>)
/// is asked for the whole part at once, and this thread only waits for it.</para>
/// <para>Only uncompressed pages are handed over: the decompressor keeps state and
/// belongs to the handler. Plaintext exists only in this thread's locked slice buffer,
/// wiped after every slice, and in the staging huge page of a shared range, which is the
/// handler's to move into place or wipe. Allocation-free and malloc-free, like the handler; between
/// runs it spins for a while (waking an idle vCPU costs ~100 µs on the VMs we measured),
/// then sleeps on an eventfd.</para>
/// </remarks>
internal sealed unsafe class FillWorker : IDisposable
{
    private const int PageSize = Userfaultfd.PageSize;

    /// <summary>Pages decrypted and installed at a time.</summary>
    public const int SlicePages = 32;

    private readonly PageSealer _sealer;
    private readonly AddressSpaceOps _space;
    private readonly Threading.EngineLockWindow _engineLock;
    // EngineOptions.WhileFillingWithoutLock: tests only.
    private readonly Action<Arena>? _whileFilling;
    private readonly byte* _buffer;
    private readonly nuint _bufferLength;
    private readonly byte* _staging;
    private readonly int _wakeFd;
    private readonly long _spinTicks;
    private readonly Thread _thread;

    // The job, written by the handler before it publishes _posted, read here after.
    private Arena? _arena;
    private long _first;
    private int _count;
    private bool _writeProtect;
    private bool _fromSource; // the run's pages come from the arena's source, not the store
    // Not null: the run's entries as the caller copied them under the engine lock, which it
    // lets go meanwhile; slices are installed under the lock, if unchanged (Start).
    private PageEntry* _copiedEntries;
    private PageSource? _source; // the run's source, which the caller holds for it
    // Not null: a shared run (StartSharedOpen, StartSharedFill), whose pages go into it, not installed.
    private byte* _destination;
    // A shared open's entries, as the caller copied them under the engine lock: read
    // instead of the arena's books, which an API call may free while the lock is free.
    private PageEntry* _sharedEntries;
    // Pages the caller decrypted in its part of a shared open (ShareAndFinish): counted by
    // the caller once it holds the engine lock again (PageSealer.CountOpened).
    private int _callerOpened;
    // The caller's staging for a store that copies, in its part of a shared open.
    private readonly byte[] _callerStaging = new byte[2 * PageSize];
    // Written here before _finished is published, read by the handler after.
    private int _installed;
    private long _opened, _sourced, _sourceInstalls, _sharedFilled;
    private Exception? _failure;

    // A shared run's books: the pages a claim takes, the first page no thread has claimed
    // yet, whether a page failed (then neither thread claims more), whether any page was
    // brought in (a fill from a source, _sharedSource, may find only zeros).
    private int _chunkPages, _sharedNext, _sharedFailed, _sharedKept;
    private PageSource? _sharedSource;

    private int _posted, _finished, _sleeping;
    private volatile bool _stopping;

    // The CPU this thread is pinned to (-1: none), changed by the serving handler before a
    // run when the two would share a CPU (MoveOffServingCpu).
    private int _cpu;
    private int _tid;
    private int _servingCpu = -1, _servingPartner = -1;
    private readonly Threading.IdleWait _idle;

    /// <param name="cpu">The CPU this thread is pinned to, or -1 (see Threading.ServiceCpus).</param>
    /// <param name="engineLock">The engine lock, taken here to install a slice of a run the
    /// handler let go of it for.</param>
    /// <param name="whileFilling">For tests: called here with the arena after each slice of such
    /// a run is filled, before the lock is taken to install it.</param>
    public FillWorker(PageSealer sealer, AddressSpaceOps space, Threading.EngineLockWindow engineLock, int spinMicroseconds, int cpu = -1,
        Action<Arena>? whileFilling = null)
    {
        _engineLock = engineLock;
        _whileFilling = whileFilling;
        _cpu = cpu;
        _idle = new Threading.IdleWait(ownsCpu: cpu >= 0);
        _sealer = sealer;
        _space = space;
        _bufferLength = (nuint)(SlicePages * PageSize + 2 * PageSize);
        _buffer = (byte*)KernelMemory.Map(_bufferLength);
        // Plaintext passes through here: out of swap and core dumps.
        Libc.mlock((nint)_buffer, _bufferLength);
        Libc.madvise((nint)_buffer, _bufferLength, Libc.MADV_DONTDUMP);
        _staging = _buffer + SlicePages * PageSize; // a store that copies fills this
        _wakeFd = Libc.eventfd(0, Libc.EFD_CLOEXEC);
        if (_wakeFd < 0)
            throw new InvalidOperationException($"eventfd failed: {Libc.Describe(Libc.LastErrno)}");
        _spinTicks = spinMicroseconds * Stopwatch.Frequency / 1_000_000;
        // Bind the native calls the thread makes (dlsym calls malloc) here, not on its first run.
        ulong one = 1, drained;
        Libc.write(_wakeFd, &one, sizeof(ulong));
        Libc.read(_wakeFd, &drained, sizeof(ulong));
        _ = Libc.gettid();
        Thread.Yield();
        _ = Stopwatch.GetTimestamp();
        _thread = new Thread(Loop) { IsBackground = true, Name = "tibet-fill" };
        _thread.Start();
        while (Volatile.Read(ref _tid) == 0)
            Thread.Yield(); // MoveOffServingCpu needs it
    }

    /// <summary>
    /// The handler pinned to <paramref name="handlerCpu"/> serves from now on (it took the
    /// baton): before this thread's next run, if it is pinned there too, it moves to
    /// <paramref name="partnerCpu"/>, so that the two share a run on two CPUs (see
    /// Threading.ServiceCpus). Only then: a handler that takes the baton and finds nothing
    /// to do must not move it. Called by that handler between runs.
    /// </summary>
    public void ServedFrom(int handlerCpu, int partnerCpu)
    {
        _servingCpu = handlerCpu;
        _servingPartner = partnerCpu;
    }

    /// <summary>Moves this thread off the serving handler's CPU (see <see cref="ServedFrom"/>).
    /// Allocation-free; on the handler's thread, between runs.</summary>
    private void MoveOffServingCpu()
    {
        Debug.Assert(Volatile.Read(ref _finished) == _posted, "moved during a run");
        if (_cpu != _servingCpu || _servingPartner < 0 || _servingPartner == _servingCpu)
            return;
        if (Threading.ServiceCpus.PinThread(_tid, _servingPartner))
            _cpu = _servingPartner;
    }

    /// <summary>Pages this thread opened (for the engine's count of decryptions).</summary>
    public long Opened => Volatile.Read(ref _opened);

    /// <summary>Pages this thread filled from their arena's source.</summary>
    public long Sourced => Volatile.Read(ref _sourced);

    /// <summary>Pages this thread filled from a source as its share of a range (<see cref="StartSharedFill"/>).</summary>
    public long SharedFilled => Volatile.Read(ref _sharedFilled);

    /// <summary>Of <see cref="Sourced"/>, those the source installed itself.</summary>
    public long SourceInstalls => Volatile.Read(ref _sourceInstalls);

    /// <summary>
    /// Starts decrypting and installing <paramref name="count"/> sealed, uncompressed pages
    /// of <paramref name="arena"/> from <paramref name="first"/> on, or with
    /// <paramref name="fromSource"/> untouched pages filled by <paramref name="source"/>
    /// (FillRun; the arena's, which the caller holds for this run). The caller reads no
    /// event until <see cref="Finish"/>. With <paramref name="copiedEntries"/> (the run's
    /// entries as the caller copied them under the engine lock, kept until Finish), the
    /// caller holds the arena's key and pins the store, and it must not hold the lock while
    /// it waits in Finish: each slice is installed under it, if unchanged. Without, the
    /// caller holds the lock until Finish, and slices are installed as the live entries say.
    /// </summary>
    public void Start(Arena arena, long first, int count, bool writeProtect, bool fromSource, PageSource? source, PageEntry* copiedEntries)
    {
        Debug.Assert(!fromSource || source != null);
        Debug.Assert(copiedEntries == null || !(fromSource && source!.InstallsRuns), "a source that installs runs itself is asked under the lock");
        _copiedEntries = copiedEntries;
        _source = source;
        Post(arena, first, count, writeProtect, fromSource, destination: null);
    }

    private void Post(Arena arena, long first, int count, bool writeProtect, bool fromSource, byte* destination,
        int chunkPages = SharedChunkPages, PageSource? sharedSource = null, PageEntry* sharedEntries = null)
    {
        if (destination != null)
        {
            _copiedEntries = null;
            _source = null;
        }
        Debug.Assert(Volatile.Read(ref _finished) == _posted, "a run is already in progress");
        Debug.Assert(!fromSource || arena.SourceFillsRunsConcurrently);
        MoveOffServingCpu();
        _arena = arena;
        _first = first;
        _count = count;
        _writeProtect = writeProtect;
        _fromSource = fromSource;
        _destination = destination;
        _sharedEntries = sharedEntries;
        _callerOpened = 0;
        _chunkPages = chunkPages;
        _sharedSource = sharedSource;
        _sharedNext = 0;
        _sharedFailed = 0;
        _sharedKept = 0;
        _installed = 0;
        _failure = null;
        Interlocked.Increment(ref _posted);
        if (Interlocked.CompareExchange(ref _sleeping, 0, 0) == 1)
        {
            ulong one = 1;
            Libc.write(_wakeFd, &one, sizeof(ulong));
        }
    }

    /// <summary>Pages of a shared run a thread claims at a time (16 µs of AES-256-GCM):
    /// small, so that the thread that finishes first waits at most one chunk for the other.</summary>
    public const int SharedChunkPages = 16;

    /// <summary>Pages of a shared fill a thread claims at a time: a read and, for a sealed
    /// model whose key the custodian keeps, a round trip to it, so a range's halves (5
    /// interleaved runs at half budget: medians 42 tokens/s in halves, 39 in quarters).</summary>
    public const int SharedSourceChunkPages = 256;

    /// <summary>
    /// Starts decrypting <paramref name="count"/> sealed, uncompressed pages of
    /// <paramref name="arena"/> from <paramref name="first"/> on into
    /// <paramref name="destination"/>, shared with the caller, who then calls
    /// <see cref="ShareAndFinish"/>: each thread claims <see cref="SharedChunkPages"/> at a
    /// time until none are left.
    /// </summary>
    /// <remarks>
    /// Why not a half each, as runs installed page by page (<see cref="Start"/>): this
    /// thread shares its CPU with the program's (llama.cpp's spin at their barriers while
    /// one of them waits for the fault), and is woken from sleep when the run comes between
    /// tokens; with a fixed half, the handler finished first and paused for it (11 % of all
    /// CPU time at half budget, perf). Shared, whichever thread is faster decrypts more,
    /// and a thread woken late (about 100 µs from sleep on these VMs) takes what is left.
    /// The pages are read as <paramref name="entries"/> has them: a copy of the run's
    /// entries, which the caller made under the engine lock and keeps until
    /// <see cref="ShareAndFinish"/> returns. The caller need not hold the lock meanwhile
    /// if it holds the arena's key and pins the store (Faults.RangePlacer.OpenSealed), and
    /// counts its own decryptions afterwards (<see cref="CallerOpened"/>).
    /// </remarks>
    public void StartSharedOpen(Arena arena, long first, int count, byte* destination, PageEntry* entries)
        => Post(arena, first, count, writeProtect: false, fromSource: false, destination, sharedEntries: entries);

    /// <summary>Pages the caller decrypted in its part of the shared open finished last.</summary>
    public int CallerOpened => _callerOpened;

    /// <summary>
    /// Starts filling <paramref name="count"/> pages of <paramref name="source"/> from
    /// <paramref name="first"/> on into <paramref name="destination"/>, shared with the
    /// caller as <see cref="StartSharedOpen"/> is, <see cref="SharedSourceChunkPages"/> at
    /// a time (PageSource.FillRun, which such a source takes from two threads at once:
    /// <see cref="PageSource.FillsRunsConcurrently"/>). The caller holds a reference to
    /// the source and keeps the destination until <see cref="ShareAndFinish"/> returns; it
    /// need not hold the engine lock, since nothing here touches the engine's books.
    /// </summary>
    /// <remarks>Why: a live sealed model whose key the custodian keeps comes back a range at
    /// a time, read and decrypted by the custodian through one lane of its session, one
    /// thread there; two callers use two lanes, so the custodian decrypts with two threads.
    /// llama.cpp on a sealed model at half budget, 6 interleaved runs: medians 36 tokens/s
    /// against 24 with the whole range on one lane.</remarks>
    public void StartSharedFill(Arena arena, PageSource source, long first, int count, byte* destination)
        => Post(arena, first, count, writeProtect: false, fromSource: true, destination, SharedSourceChunkPages, source);

    /// <summary>
    /// The caller's part of the shared run started last (the same claims as this thread's,
    /// on the caller's own buffers), then waits for this thread's. Keep: every page is in
    /// the destination; Zero: a fill found only pages that read as zeros; Tampered: a page
    /// did not open or the read failed (the usual path finds which, and reports it).
    /// Throws what either thread met, once this thread is done with the destination.
    /// </summary>
    public PageVerdict ShareAndFinish()
    {
        try
        {
            Share(onHandler: true);
        }
        catch
        {
            Volatile.Write(ref _sharedFailed, 1);
            throw;
        }
        finally
        {
            Finish();
        }
        return Volatile.Read(ref _sharedFailed) != 0 ? PageVerdict.Tampered
            : Volatile.Read(ref _sharedKept) != 0 ? PageVerdict.Keep
            : PageVerdict.Zero;
    }

    /// <summary>Claims chunks of the shared run until none are left or a page failed, and
    /// fills or opens them: on the handler with the sealer's own buffers (its count of
    /// decryptions), here with this thread's. Returns the pages this call brought in.</summary>
    private int Share(bool onHandler)
    {
        Arena arena = _arena!;
        int done = 0;
        while (Volatile.Read(ref _sharedFailed) == 0)
        {
            int start = Interlocked.Add(ref _sharedNext, _chunkPages) - _chunkPages;
            if (start >= _count)
                break;
            int pages = Math.Min(_chunkPages, _count - start);
            byte* destination = _destination + (long)start * PageSize;
            int brought;
            if (_sharedSource is { } source)
            {
                PageVerdict verdict = source.FillRun(_first + start, pages, new Span<byte>(destination, pages * PageSize));
                brought = verdict == PageVerdict.Keep ? pages : 0;
                if (verdict is not (PageVerdict.Keep or PageVerdict.Zero))
                    Volatile.Write(ref _sharedFailed, 1);
            }
            else
            {
                brought = onHandler ? OpenForCaller(arena, start, pages, destination) : OpenPages(arena, _first + start, pages, destination, _sharedEntries + start);
                if (brought < pages)
                    Volatile.Write(ref _sharedFailed, 1);
            }
            if (brought > 0)
                Volatile.Write(ref _sharedKept, 1);
            done += brought;
        }
        return done;
    }

    /// <summary>The caller's decryptions of a shared open, from the run's <paramref name="start"/>
    /// on, with its own staging; counted in <see cref="CallerOpened"/>.</summary>
    private int OpenForCaller(Arena arena, int start, int count, byte* destination)
    {
        int opened = 0;
        while (opened < count && _sealer.TryOpenUncompressed(arena.Cipher, _first + start + opened, in _sharedEntries[start + opened],
                   destination + (long)opened * PageSize, _callerStaging))
            opened++;
        _callerOpened += opened;
        return opened;
    }

    /// <summary>Waits for the run started last; returns how many of its pages, from the
    /// first on, are installed. Throws what the thread met, for the handler's failure policy.</summary>
    public int Finish()
    {
        while (Volatile.Read(ref _finished) != _posted)
            _idle.Step(); // on the handler's thread, pinned apart from this one or not at all
        _arena = null;
        _sharedSource = null;
        _source = null;
        _copiedEntries = null;
        if (_failure is { } failure)
            throw new InvalidOperationException("the fill thread failed: " + failure.Message, failure);
        return _installed;
    }

    /// <summary>Clears the slice buffer (the thread is idle: after a failure, or at the end).</summary>
    public void Wipe() => Libc.memset(_buffer, 0, _bufferLength);

    public void Dispose()
    {
        _stopping = true;
        ulong one = 1;
        Libc.write(_wakeFd, &one, sizeof(ulong));
        _thread.Join();
        Wipe();
        Libc.close(_wakeFd);
        KernelMemory.Unmap((nint)_buffer, _bufferLength);
    }

    private void Loop()
    {
        Threading.ServiceCpus.PinCurrentThread(_cpu);
        Volatile.Write(ref _tid, Libc.gettid());
        // The lock's first use on a thread sets up its thread id: here, not in a run.
        using (_engineLock.EnterBesideHandler())
        {
        }
        long lastWork = Stopwatch.GetTimestamp();
        while (true)
        {
            int posted = Volatile.Read(ref _posted);
            if (posted != _finished)
            {
                try
                {
                    Run();
                }
                catch (Exception e)
                {
                    _failure = e;
                }
                Volatile.Write(ref _finished, posted);
                lastWork = Stopwatch.GetTimestamp();
                continue;
            }
            if (_stopping)
                return;
            if (Stopwatch.GetTimestamp() - lastWork < _spinTicks)
            {
                _idle.Step();
                continue;
            }
            // Announce the sleep, then look once more: Start either sees the flag and
            // writes the eventfd, or published its run before this second look.
            Interlocked.Exchange(ref _sleeping, 1);
            if (Volatile.Read(ref _posted) == _finished && !_stopping)
            {
                ulong drained;
                Libc.read(_wakeFd, &drained, sizeof(ulong));
            }
            Interlocked.Exchange(ref _sleeping, 0);
        }
    }

    /// <summary>Decrypts sealed, uncompressed pages into <paramref name="destination"/>
    /// until one does not open; returns how many did (counted in <see cref="Opened"/>).</summary>
    private int OpenPages(Arena arena, long first, int count, byte* destination, PageEntry* entries)
    {
        var staging = new Span<byte>(_staging, 2 * PageSize);
        int opened = 0;
        while (opened < count && _sealer.TryOpenUncompressed(arena.Cipher, first + opened, in entries[opened],
                   destination + (long)opened * PageSize, staging))
            opened++;
        _opened += opened;
        return opened;
    }

    private void Run()
    {
        Arena arena = _arena!;
        if (_destination != null)
        {
            int brought = Share(onHandler: false); // OpenPages counts this thread's decryptions
            if (_sharedSource != null)
                _sharedFilled += brought;
            return;
        }
        if (_fromSource && _source!.InstallsRuns)
        {
            // The source installs the whole part itself (the custodian, a slice at a time):
            // nothing passes through this thread's buffer. What it leaves is the handler's.
            _installed = _source.InstallRun(_first, _count, arena.PageAddress(_first), _writeProtect, out _);
            _sourced += _installed;
            _sourceInstalls += _installed;
            return;
        }
        for (int done = 0; done < _count;)
        {
            int slice = Math.Min(SlicePages, _count - done);
            int opened = 0;
            bool failed = false;
            if (_fromSource)
            {
                // Data only: zeros (past the end, dead material) and failures are the
                // handler's to serve, page by page.
                PageVerdict verdict = _source!.FillRun(_first + done, slice, new Span<byte>(_buffer, slice * PageSize));
                if (verdict == PageVerdict.Keep)
                {
                    opened = slice;
                    _sourced += slice;
                }
                else
                {
                    Libc.memset(_buffer, 0, (nuint)(slice * PageSize));
                    return;
                }
            }
            if (!_fromSource)
            {
                PageEntry* entries = _copiedEntries != null ? _copiedEntries + done : arena.Entries + _first + done;
                opened = OpenPages(arena, _first + done, slice, _buffer, entries);
                failed = opened < slice; // the handler finds out, serving that page itself
            }
            int installed = 0;
            if (opened > 0)
                installed = _copiedEntries != null ? InstallUnchanged(arena, done, opened) : Install(arena, done, opened);
            Libc.memset(_buffer, 0, (nuint)((opened + (failed ? 1 : 0)) * PageSize));
            done += installed;
            _installed = done;
            if (installed < slice)
                return;
        }
    }

    /// <summary>Installs <paramref name="pages"/> pages of the run from <paramref name="done"/>
    /// on out of this thread's buffer; returns how many went in.</summary>
    private int Install(Arena arena, int done, int pages)
    {
        _space.Copy(arena.PageAddress(_first + done), (nint)_buffer, (nuint)(pages * PageSize), _writeProtect, out long copied);
        return (int)(copied / PageSize);
    }

    /// <summary>
    /// As <see cref="Install"/>, for a run whose caller let go of the engine lock: takes it,
    /// and installs the slice up to its first page whose entry is no longer the one copied
    /// (the arena released, a page evicted or given up meanwhile), so that nothing goes into
    /// a range that is no longer the arena's, nor over a page the books changed.
    /// </summary>
    private int InstallUnchanged(Arena arena, int done, int pages)
    {
        _whileFilling?.Invoke(arena);
        using (_engineLock.EnterBesideHandler())
        {
            if (arena.Released)
                return 0;
            int unchanged = 0;
            while (unchanged < pages && UnlockedOpener.Unchanged(in arena.Entries[_first + done + unchanged], in _copiedEntries[done + unchanged]))
                unchanged++;
            return unchanged > 0 ? Install(arena, done, unchanged) : 0;
        }
    }
}
