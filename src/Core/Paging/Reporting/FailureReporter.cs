using System.Diagnostics;
using Tibet.Core.Interop;
using Tibet.Core.Paging.AddressSpace;

namespace Tibet.Core.Paging.Reporting;

/// <summary>What failed authentication: a sealed page, or a page its source refused.</summary>
internal enum TamperKind : byte
{
    /// <summary>A sealed page's ciphertext failed authentication.</summary>
    SealedPage,

    /// <summary>The arena's page source said Tampered (or could not read the page).</summary>
    SourcePage,
}

// The engine's reporting part: reporting off the fault path. The handler must not format strings, write to stderr,
// call the program's callbacks or take an audit lock: any of these may allocate, call
// malloc (whose locks a faulting thread may hold) or wait. So the handler only fills a
// fixed-size slot of a preallocated ring and pokes an eventfd; the reporter thread does
// the rest. The faulting thread's SIGBUS stays on the handler, and is held back until
// the report is out (bounded by ReportWaitMilliseconds), because the SIGBUS usually ends
// the process and the line must be written first.
internal sealed unsafe class FailureReporter
{
    private const int PageSize = Userfaultfd.PageSize;
    /// <summary>Reports the handler has handed over but the reporter has not delivered yet
    /// (beyond it, reports are counted, not queued).</summary>
    private const int ReportRingCapacity = 256;

    /// <summary>SIGBUSes held back until their report is out (beyond it, sent at once).</summary>
    private const int HeldSignalCapacity = 256;

    /// <summary>
    /// How long a SIGBUS for a tampered page (or for any fault after a handler failure)
    /// waits for its report. The reporter runs the program's callbacks, which may wait
    /// (an audit lock) or even depend on the faulting thread (a malloc lock it holds);
    /// past this the signal goes out anyway: a lost report is better than a hang.
    /// </summary>
    public const int ReportWaitMilliseconds = 2000;

    private const long SYS_kill = 62;

    /// <summary>One tampered page, as the handler hands it over: fixed size, references
    /// copied (never allocated), formatted by the reporter.</summary>
    private struct TamperReport
    {
        public TamperKind Kind;
        public ulong ArenaId;
        public string? Label;
        public long PageIndex;
        public nint Address;
        public PageSource? Source;
        public int ChildPid; // 0: this process; -1: a forked child whose pid is not known yet
    }

    private struct HeldSignal
    {
        public AddressSpaceOps? Space;
        public nint Address;
        public uint ThreadId;
        public int Pid;
        public long AfterReport; // sent once this many reports are delivered
        public long Deadline;    // or at this Stopwatch timestamp
    }

    private readonly TamperReport[] _reports = new TamperReport[ReportRingCapacity];
    private long _reportsPosted;   // written by the handler under the lock
    private long _reportsDone;     // written by the reporter
    private long _reportsDropped;  // written by the handler under the lock
    private long _reportsDroppedTold;
    private readonly HeldSignal[] _heldSignals = new HeldSignal[HeldSignalCapacity];
    private int _heldSignalCount;
    private int _reporterFd = -1;
    private Thread? _reporter;
    private volatile bool _reporterStopping;

    private readonly EngineOptions _options;
    private readonly Action _kickHandler;
    private readonly bool _canPoison;
    private long _tampered; // written by the handler under the lock
    private Exception? _failure;
    private volatile bool _failureReported;

    /// <param name="kickHandler">Wakes the handler: a held signal may go out now.</param>
    /// <param name="canPoison">The kernel has UFFDIO_POISON.</param>
    public FailureReporter(EngineOptions options, Action kickHandler, bool canPoison)
    {
        _options = options;
        _kickHandler = kickHandler;
        _canPoison = canPoison;
    }

    /// <summary>The failure that stopped normal service, or null. See PageEngine, "Failure policy".</summary>
    public Exception? Failure => Volatile.Read(ref _failure);

    /// <summary>The failure's line is out.</summary>
    public bool FailureReported => _failureReported;

    /// <summary>Pages found tampered (posted, whether or not the report fitted the ring).</summary>
    public long Tampered => _tampered;

    /// <summary>SIGBUSes waiting for their reports.</summary>
    public int HeldSignals => _heldSignalCount;

    /// <summary>Records the failure (the first one wins) and has the reporter write its line.</summary>
    public void Fail(Exception failure)
    {
        Interlocked.CompareExchange(ref _failure, failure, null);
        WakeReporter();
    }

    public void Start()
    {
        _reporterFd = Libc.eventfd(0, Libc.EFD_CLOEXEC);
        if (_reporterFd < 0)
            throw new InvalidOperationException($"eventfd failed: {Libc.Describe(Libc.LastErrno)}");
        _reporter = new Thread(ReporterLoop) { IsBackground = true, Name = "tibet-report" };
        _reporter.Start();
    }

    public void Stop()
    {
        _reporterStopping = true;
        WakeReporter();
        // A callback of the program's may block for ever: disposal must not. The
        // descriptor then stays open, so its number cannot be reused under the reporter.
        if (_reporter == null || _reporter.Join(ReportWaitMilliseconds))
            Libc.close(_reporterFd);
    }

    private void WakeReporter()
    {
        ulong one = 1;
        Libc.write(_reporterFd, &one, sizeof(ulong));
    }

    /// <summary>Hands a tampered page to the reporter. Fault path: no allocation.</summary>
    public void Post(TamperKind kind, ulong arenaId, string? label, long pageIndex, nint address,
        PageSource? source, int childPid)
    {
        _tampered++;
        long posted = _reportsPosted;
        if (posted - Volatile.Read(ref _reportsDone) >= ReportRingCapacity)
        {
            _reportsDropped++;
            WakeReporter();
            return;
        }
        ref TamperReport slot = ref _reports[posted % ReportRingCapacity];
        slot.Kind = kind;
        slot.ArenaId = arenaId;
        slot.Label = label;
        slot.PageIndex = pageIndex;
        slot.Address = address;
        slot.Source = source;
        slot.ChildPid = childPid;
        Volatile.Write(ref _reportsPosted, posted + 1);
        WakeReporter();
    }

    /// <summary>
    /// The faulting thread must get SIGBUS. If reports are still on their way (its own
    /// page's, usually), the signal is held until they are out, so that the line is
    /// written before the SIGBUS ends the process; the thread stays blocked meanwhile.
    /// </summary>
    public void SignalFault(AddressSpaceOps space, nint address, uint threadId, int pid)
    {
        long posted = _reportsPosted;
        bool reportPending = posted > Volatile.Read(ref _reportsDone) || (_failure != null && !_failureReported);
        if (reportPending && _heldSignalCount < HeldSignalCapacity)
        {
            _heldSignals[_heldSignalCount++] = new HeldSignal
            {
                Space = space,
                Address = address,
                ThreadId = threadId,
                Pid = pid,
                AfterReport = posted,
                Deadline = Stopwatch.GetTimestamp() + ReportWaitMilliseconds * Stopwatch.Frequency / 1000,
            };
            return;
        }
        RaiseSigbus(space, address, threadId, pid);
    }

    /// <summary>Sends the held signals whose reports are out (or that waited long enough;
    /// all of them when <paramref name="all"/>). True if any was sent.</summary>
    public bool ReleaseHeldSignals(bool all)
    {
        if (_heldSignalCount == 0)
            return false;
        long done = Volatile.Read(ref _reportsDone);
        bool failurePending = _failure != null && !_failureReported;
        long now = Stopwatch.GetTimestamp();
        int kept = 0;
        for (int i = 0; i < _heldSignalCount; i++)
        {
            HeldSignal held = _heldSignals[i];
            if (all || now >= held.Deadline || (done >= held.AfterReport && !failurePending))
                RaiseSigbus(held.Space!, held.Address, held.ThreadId, held.Pid);
            else
                _heldSignals[kept++] = held;
        }
        bool sent = kept != _heldSignalCount;
        for (int i = kept; i < _heldSignalCount; i++)
            _heldSignals[i] = default;
        _heldSignalCount = kept;
        return sent;
    }

    /// <summary>
    /// SIGBUS for the thread blocked on <paramref name="address"/>: UFFDIO_POISON where
    /// the kernel has it (the thread retries and takes a hardware-poison SIGBUS), else
    /// tgkill with the thread id the kernel reported (UFFD_FEATURE_THREAD_ID). Never
    /// zeros: without either, the thread is woken, faults again and is answered again.
    /// A child whose pid is not known yet (0) can only be poisoned.
    /// </summary>
    public void RaiseSigbus(AddressSpaceOps space, nint address, uint threadId, int pid)
    {
        if (_canPoison)
        {
            int rc = space.Poison(address, PageSize);
            if (rc == 0)
                return;
            if (rc == Libc.EEXIST)
            {
                // Mapped already (a fault served just before a failure) or poisoned
                // already: the woken thread's retry finds out which.
                space.Wake(address, PageSize);
                return;
            }
        }
        if (threadId != 0 && pid > 0)
            Libc.syscall(Libc.SYS_tgkill, pid, threadId, Libc.SIGBUS);
        space.Wake(address, PageSize);
    }

    private void ReporterLoop()
    {
        while (true)
        {
            ulong count;
            if (Libc.read(_reporterFd, &count, sizeof(ulong)) < 0 && Libc.LastErrno != Libc.EINTR)
                Thread.Sleep(10); // cannot happen on a valid eventfd; never spin hard
            if (_failure is { } failure && !_failureReported)
            {
                Deliver(() => ReportHandlerFailure(failure));
                _failureReported = true;
                _kickHandler();
            }
            long done = _reportsDone;
            while (done < Volatile.Read(ref _reportsPosted))
            {
                TamperReport report = _reports[done % ReportRingCapacity];
                _reports[done % ReportRingCapacity] = default;
                Deliver(() => ReportTampering(report));
                Volatile.Write(ref _reportsDone, ++done);
                _kickHandler();
            }
            long dropped = Volatile.Read(ref _reportsDropped);
            if (dropped != _reportsDroppedTold)
            {
                long more = dropped - _reportsDroppedTold;
                _reportsDroppedTold = dropped;
                Deliver(() => WriteLine($"tibet: {more} more page(s) failed authentication faster than they could be reported; " +
                                        "their readers receive SIGBUS like the others."));
            }
            if (_reporterStopping && done == Volatile.Read(ref _reportsPosted))
                return;
        }
    }

    /// <summary>A callback that throws must not end the reporter (or the process): say so instead.</summary>
    private static void Deliver(Action report)
    {
        try
        {
            report();
        }
        catch (Exception e)
        {
            WriteLine($"tibet: a failure report could not be delivered: {e.GetType().Name}: {e.Message}");
        }
    }

    private void ReportTampering(in TamperReport report)
    {
        string where = report.ChildPid == 0 ? "" : report.ChildPid > 0 ? $" in forked child {report.ChildPid}" : " in a forked child";
        string detail = report.Kind == TamperKind.SealedPage
            ? _options.Cipher.Name.ToUpperInvariant() + " authentication failed: the ciphertext, tag or nonce of this page was altered" + where
            : (report.Source?.RefusalReason(report.PageIndex) ?? "the page's source refused it: its file was altered or could not be read") + where;
        if (_options.OnAuthenticationFailure is { } callback)
            callback(new AuthenticationFailure(report.ArenaId, report.PageIndex, report.Address, detail));
        else
            WriteLine($"tibet: page {report.PageIndex} of arena '{report.Label}' (0x{report.Address:x}) failed authentication ({detail}); " +
                      "it was tampered with or corrupted, and its reader receives SIGBUS instead of data.");
        report.Source?.ReportTampered(report.PageIndex);
    }

    private void ReportHandlerFailure(Exception failure)
    {
        string line = $"tibet: the page handler failed ({failure.GetType().Name}: {failure.Message}). " +
                      "From now on every access to a page that is not resident raises SIGBUS in its thread (never zeros), " +
                      "so the program will most likely end with SIGBUS. " +
                      (failure is OutOfMemoryException
                          ? "The engine ran out of memory for ciphertext: give the process more memory, or a larger budget."
                          : "This is a defect of tibet: please report this line.");
        if (_options.OnHandlerFailure is { } callback)
            callback(line);
        else
            WriteLine(line);
    }

    private static void WriteLine(string line)
    {
        Console.Error.WriteLine(line);
        Console.Error.Flush();
    }

    /// <summary>The last resort when the failure report could not be written in time: a
    /// fixed line, written without formatting or allocation.</summary>
    public static void WriteFixedFailureLine()
    {
        ReadOnlySpan<byte> line = "tibet: the page handler failed, and its report could not be written in time; every access to a page that is not resident now raises SIGBUS.\n"u8;
        fixed (byte* p = line)
            Libc.write(2, p, (nuint)line.Length);
    }

    /// <summary>The handler cannot even read its userfaultfd: blocked threads would wait
    /// forever, so the process ends with SIGBUS now.</summary>
    public static void EndProcessWithSigbus()
    {
        ReadOnlySpan<byte> line = "tibet: the page handler cannot serve its userfaultfd any more; ending the process with SIGBUS rather than leave its threads blocked.\n"u8;
        fixed (byte* p = line)
            Libc.write(2, p, (nuint)line.Length);
        Libc.syscall(SYS_kill, Libc.getpid(), Libc.SIGBUS, 0);
    }
}
