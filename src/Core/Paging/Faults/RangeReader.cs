using System.Diagnostics;
using Tibet.Core.Interop;
using Tibet.Core.Paging.AddressSpace;

namespace Tibet.Core.Paging.Faults;

/// <summary>
/// Reads the next 2 MiB range of a model map from its source into a staging slot of its
/// own (<see cref="Slot"/>) on a thread of its own, while the program works on the range
/// the fault service has just placed, so that the next range is in memory, read and
/// decrypted, when the program reaches it (RangePlacer.TryPlace moves it in).
/// </summary>
/// <remarks>
/// <para>Why: the fault service reads a range when the program faults on it, so the disk
/// and the cipher worked only while the program waited, and idled while it computed. The
/// kernel's own read-ahead keeps reads in flight ahead of a sequential reader; this is the
/// same for the model maps we serve.</para>
/// <para>One range at a time, and only one the budget has room for besides the range
/// placed (the fault service checks before <see cref="Start"/>): its plaintext waits here,
/// outside the program's page tables, at most until the handler is next idle for
/// <see cref="StaleAfterMilliseconds"/> (RangePlacer.DropUnwantedReadAhead drops it then).</para>
/// <para>No engine state is touched here: the job is the source's FillRun into the slot
/// (a source whose FillRun takes concurrent calls: a file's pread, a sealed model's
/// decryption, by its own key or the custodian's lanes), and the handler keeps the books.
/// The source is retained for the job's life, so a map released meanwhile stays readable.
/// Allocation-free and malloc-free, like the handler it serves; it sleeps on an eventfd
/// between jobs.</para>
/// </remarks>
internal sealed unsafe class RangeReader : IDisposable
{
    /// <summary>The staging slot this reader fills (the fault service fills slot 0).</summary>
    public const int Slot = 1;

    /// <summary>How long a range read ahead and not asked for may wait in staging.</summary>
    public const int StaleAfterMilliseconds = 100;

    private const int RangePages = Collapse.RangeCollapser.RangePages;

    private readonly AddressSpaceOps _space;
    private readonly Action _wakeHandler;
    private readonly int _wakeFd;
    private readonly Thread _thread;

    // The job: written by the handler before it publishes _posted, and cleared by the
    // handler once the range is placed or dropped (after the thread finished it).
    private Arena? _arena;
    private PageSource? _source;
    private long _first;
    // Written by the thread before it publishes _finished.
    private PageVerdict _verdict;
    private long _finishedAt;

    private int _posted, _finished;
    private volatile bool _stopping;
    private long _ranges;

    /// <param name="wakeHandler">Wakes the engine's handler: a range it asked for ahead is read.</param>
    public RangeReader(AddressSpaceOps space, Action wakeHandler)
    {
        Debug.Assert(space.HugeStagingSlots > Slot);
        _space = space;
        _wakeHandler = wakeHandler;
        _wakeFd = Libc.eventfd(0, Libc.EFD_CLOEXEC);
        if (_wakeFd < 0)
            throw new InvalidOperationException($"eventfd failed: {Libc.Describe(Libc.LastErrno)}");
        // Bind the native calls the handler makes here (dlsym calls malloc), not on its first job.
        ulong one = 1, drained;
        Libc.write(_wakeFd, &one, sizeof(ulong));
        Libc.read(_wakeFd, &drained, sizeof(ulong));
        _ = Stopwatch.GetTimestamp();
        _thread = new Thread(Loop) { IsBackground = true, Name = "tibet-ahead" };
        _thread.Start();
    }

    /// <summary>Ranges read ahead (placed or not).</summary>
    public long Ranges => Volatile.Read(ref _ranges);

    /// <summary>Whether a range is read, or being read, and waits for the handler.</summary>
    public bool HoldsJob => _arena != null;

    /// <summary>Whether the range read (or being read) is <paramref name="first"/>.. of <paramref name="arena"/>.</summary>
    public bool Holds(Arena arena, long first) => _arena == arena && _first == first;

    /// <summary>The job's arena (the handler's, while <see cref="HoldsJob"/>).</summary>
    public Arena? JobArena => _arena;

    /// <summary>Whether a job is held and its read has finished.</summary>
    public bool IsDone => _arena != null && Volatile.Read(ref _finished) == _posted;

    /// <summary>Whether the read has finished and it waited longer than <see cref="StaleAfterMilliseconds"/>.</summary>
    public bool IsStale =>
        _arena != null && Volatile.Read(ref _finished) == _posted
        && (Stopwatch.GetTimestamp() - Volatile.Read(ref _finishedAt)) * 1000 > StaleAfterMilliseconds * Stopwatch.Frequency;

    /// <summary>Starts reading range <paramref name="first"/>.. of <paramref name="arena"/>
    /// (a whole 2 MiB range) from <paramref name="source"/> into the slot. Only when no
    /// job is held. Under the engine lock.</summary>
    public void Start(Arena arena, PageSource source, long first)
    {
        Debug.Assert(_arena == null && Volatile.Read(ref _finished) == _posted);
        source.Retain();
        _arena = arena;
        _source = source;
        _first = first;
        Interlocked.Increment(ref _posted);
        ulong one = 1;
        Libc.write(_wakeFd, &one, sizeof(ulong));
    }

    /// <summary>Waits for the read (call it without the engine lock: it takes a disk read
    /// and a decryption) and says what the range holds, as PageSource.FillRun does.</summary>
    public PageVerdict Wait()
    {
        Debug.Assert(_arena != null);
        while (Volatile.Read(ref _finished) != _posted)
            Thread.Yield();
        return _verdict;
    }

    /// <summary>The handler placed the range: the slot is empty again, and the job ends.</summary>
    public void Placed() => EndJob();

    /// <summary>The range is not wanted (or could not be placed): waits for the read,
    /// wipes the slot and ends the job.</summary>
    public void Drop()
    {
        if (_arena == null)
            return;
        Wait();
        _space.DiscardStaged(Slot);
        EndJob();
    }

    public void Dispose()
    {
        Drop();
        _stopping = true;
        ulong one = 1;
        Libc.write(_wakeFd, &one, sizeof(ulong));
        _thread.Join();
        Libc.close(_wakeFd);
    }

    private void EndJob()
    {
        PageSource source = _source!;
        _arena = null;
        _source = null;
        source.Release();
    }

    private void Loop()
    {
        while (true)
        {
            int posted = Volatile.Read(ref _posted);
            if (posted != _finished)
            {
                PageVerdict verdict;
                try
                {
                    verdict = _source!.FillRun(_first, RangePages,
                        new Span<byte>((void*)_space.HugeStaging(Slot), RangePages * Userfaultfd.PageSize));
                }
                catch
                {
                    verdict = PageVerdict.Tampered; // the handler reads it again page by page, and finds out
                }
                _verdict = verdict;
                _ranges++;
                Volatile.Write(ref _finishedAt, Stopwatch.GetTimestamp());
                Volatile.Write(ref _finished, posted);
                _wakeHandler(); // an idle handler places the range now, not at its next fault
                continue;
            }
            if (_stopping)
                return;
            ulong drained;
            Libc.read(_wakeFd, &drained, sizeof(ulong));
        }
    }
}
