using Tibet.Core.Diagnostics;
using Tibet.Core.Interop;
using Tibet.Core.Paging;
using Tibet.Core.Paging.AddressSpace;

namespace Tibet.Core.Custodian;

/// <summary>
/// One process the custodian serves: a forked child's own large allocations (see
/// src/Interposer/native/served.c). Its thread answers the process's control connection
/// (each range it registered is adopted by an engine of its own, created at the first
/// one); the engine's handler serves its faults and takes its pages out through the
/// process's thread.
/// </summary>
/// <remarks>
/// The process's budget is the program's (one engine per process, as for the program's
/// own engine): the README says why. It ends when the process closes its control
/// connection: it exited or executed another program (the descriptors are close-on-exec).
/// </remarks>
internal sealed unsafe class ServedProcess
{
    private const int PageSize = Userfaultfd.PageSize;

    /// <summary>Bounds on what one process may have taken on: the books of a range cost the
    /// custodian about 1 % of its length in (lazily committed) address space, so a peer
    /// announcing absurd lengths must not exhaust it for everyone. 1 TiB per range (the
    /// served side's reservation), 16 TiB held at once (released ranges give theirs back:
    /// a long-running server maps and unmaps without end).</summary>
    private const ulong MaxRangeBytes = 1UL << 40;
    private const long MaxProcessBytes = 1L << 44;
    private const ulong UserAddressLimit = 0x7FFF_FFFF_F000; // x86-64, 4-level page tables

    private readonly int _control;
    private readonly int _pidFd;
    private readonly int _agent;
    private readonly int _uffd;
    private EngineOptions _options;
    private readonly bool _registerWriteProtect;
    private readonly Action<string> _say;
    private readonly Thread _thread;
    private readonly bool _sayWhenEnded;
    private readonly Lock _statsLock = new();
    private PageEngine? _engine;
    private EngineStats? _finalStats;
    private long _arenas, _bytes;

    /// <param name="sayWhenEnded">One line with its statistics when it ends.</param>
    public ServedProcess(int pid, int control, int agent, int uffd, EngineOptions options, bool registerWriteProtect, Action<string> say, bool sayWhenEnded)
    {
        _sayWhenEnded = sayWhenEnded;
        Pid = pid;
        _control = control;
        // Its lifetime is the process's, not its connection's: a child that closes every
        // descriptor (closerange) ends the connection, and its faults must still be served.
        _pidFd = (int)Libc.syscall(Libc.SYS_pidfd_open, pid, 0, 0);
        _agent = agent;
        _uffd = uffd;
        _options = options;
        _registerWriteProtect = registerWriteProtect;
        _say = say;
        _thread = new Thread(Serve) { IsBackground = true, Name = $"tibet-served-{pid}" };
    }

    public int Pid { get; }

    /// <summary>Whether its connection has ended and everything was released.</summary>
    public bool Ended { get; private set; }

    /// <summary>Ranges taken on, and their bytes, over the process's life.</summary>
    public long Arenas => Interlocked.Read(ref _arenas);
    public long Bytes => Interlocked.Read(ref _bytes);

    public void Start() => _thread.Start();

    /// <summary>The engine's statistics now (or when the process ended); null before its
    /// first range, or while its engine is busy for longer than 200 ms (waiting for a
    /// stopped process's answer, say): the tree's live statistics do not wait for it.</summary>
    public EngineStats? Stats()
    {
        lock (_statsLock)
            return _finalStats ?? _engine?.TryGetStats(TimeSpan.FromMilliseconds(200));
    }

    private void Serve()
    {
        int windowPages = Math.Min(_options.EvictBatchPages, ServedProtocol.MaxTakePages);
        Userfaultfd? uffd = null;
        AgentAddressSpace? space = null;
        nint share = 0;
        int shareFd = -1;
        try
        {
            // The budget this engine shares with the process's own engine (its model maps,
            // with --serve custodian): the process's resident pages, counted by both.
            // First: if the window cannot be made, the finally below gives this back.
            share = SharedWindow.Create("tibet-budget-share", 1, out shareFd);
            nint window = SharedWindow.Create("tibet-take-out", windowPages, out int memfd);
            _options = _options with { BudgetShare = new Paging.Eviction.SharedCounterBudgetShare(share, custodianSide: true) };
            uffd = Userfaultfd.Adopt(_uffd);
            space = new AgentAddressSpace(uffd, _agent, window, windowPages); // owns the agent and the window
            ServedWelcome welcome = new()
            {
                Magic = ServedProtocol.Magic,
                Status = 0,
                WindowPages = (uint)windowPages,
                RegisterWriteProtect = _registerWriteProtect ? 1u : 0u,
            };
            nint sent = Libc.SendWithDescriptors(_control, &welcome, (nuint)sizeof(ServedWelcome), [memfd, shareFd]);
            Libc.close(memfd);
            Libc.close(shareFd);
            shareFd = -1;
            Span<int> attached = stackalloc int[1];
            while (sent == sizeof(ServedWelcome))
            {
                ServedArena request;
                nint n = Libc.ReceiveWithDescriptors(_control, &request, (nuint)sizeof(ServedArena), attached, out int count);
                if (n < 0 && Libc.LastErrno == Libc.EINTR)
                    continue;
                int agent = count == 1 ? attached[0] : -1;
                if (n != sizeof(ServedArena))
                {
                    if (agent >= 0) Libc.close(agent);
                    break; // the process exited or executed another program
                }
                ServedStatus status = new() { Status = request.Start == 0 ? Forked(request.Length, agent) : TakeOn(uffd, space, request, agent) };
                if (Libc.send(_control, &status, (nuint)sizeof(ServedStatus), Libc.MSG_NOSIGNAL) != sizeof(ServedStatus))
                    break;
            }
            // The connection ended. If the process lives on (it closed its descriptors, or
            // executed another program: then its mm is gone and nothing faults), its pages
            // are served until it ends; without its thread nothing more is taken out.
            WaitForExit();
            // Its own forked children may still read what they inherited of its ranges
            // (a daemon's double fork): they get those pages now, as a program's children
            // do when the program ends first.
            if (_engine != null)
            {
                var (children, pages) = _engine.HandOverChildren();
                if (children > 0)
                    _say($"tibet custodian: pid {Pid} ended while {children} forked children of it still use memory it served; {pages} sealed pages were put into them (plaintext in the children now).");
            }
        }
        catch (Exception e)
        {
            _say($"tibet custodian: serving pid {Pid} failed: {e.Message}. Its thread sees the connection end and answers its faults with SIGBUS.");
        }
        finally
        {
            lock (_statsLock)
            {
                _finalStats = _engine?.GetStats();
                if (_engine != null)
                {
                    _engine.Dispose(); // and with it the userfaultfd and the address space
                }
                else
                {
                    space?.Dispose();
                    uffd?.Dispose();
                    if (space == null) Libc.close(_agent);
                    if (uffd == null) Libc.close(_uffd);
                }
                _engine = null;
            }
            if (shareFd >= 0)
                Libc.close(shareFd);
            if (share != 0)
                Libc.munmap(share, (nuint)Userfaultfd.PageSize); // after the engine: it reads it
            Libc.close(_control);
            if (_pidFd >= 0)
                Libc.close(_pidFd);
            Ended = true;
            if (_sayWhenEnded && _finalStats is { } stats)
                _say($"tibet custodian: pid {Pid} ended: {Arenas} ranges, {Bytes >> 20} MiB served; {stats.Faults} faults, " +
                     $"{stats.Evictions} evictions ({stats.CleanEvictions} clean), peak resident {stats.PeakResidentBytes >> 10} KiB of a {stats.ResidentBudgetBytes >> 10} KiB budget");
        }
    }

    private void WaitForExit()
    {
        if (_pidFd < 0)
            return; // already gone when it said hello
        Libc.PollFd ended = new() { Fd = _pidFd, Events = Libc.POLLIN };
        while (Libc.poll(&ended, 1, -1) < 0 && Libc.LastErrno == Libc.EINTR)
        {
        }
    }

    /// <summary>The process forked the child <paramref name="pid"/>, whose agent's end is
    /// <paramref name="agent"/>: the engine matches both to the child its fork event
    /// announced, and takes the child's inherited pages out through that agent, as the
    /// program's own engine does for its children.</summary>
    private int Forked(ulong pid, int agent)
    {
        // The process is the custodian's peer, not trusted: the end must be a socket of the
        // kind its agent speaks on, and the pid a child of the process.
        bool valid = pid is > 0 and <= int.MaxValue && agent >= 0 && IsSeqPacketSocket(agent) && ParentOf((int)pid) == Pid;
        if (!valid || _engine == null)
        {
            if (agent >= 0) Libc.close(agent);
            return valid ? 0 : Libc.EINVAL; // no range of its yet: nothing inherited
        }
        _engine.ChildForked((int)pid, agent); // owns the end now
        return 0;
    }

    private static bool IsSeqPacketSocket(int fd)
    {
        int type = 0;
        uint length = sizeof(int);
        return Libc.getsockopt(fd, Libc.SOL_SOCKET, Libc.SO_TYPE, &type, &length) == 0 && type == Libc.SOCK_SEQPACKET;
    }

    /// <summary>The parent pid of <paramref name="pid"/> (/proc/PID/status), or 0 if it is gone.</summary>
    private static int ParentOf(int pid)
    {
        try
        {
            foreach (string line in File.ReadLines($"/proc/{pid}/status"))
                if (line.StartsWith("PPid:", StringComparison.Ordinal))
                    return int.TryParse(line.AsSpan(5).Trim(), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int ppid) ? ppid : 0;
        }
        catch (IOException)
        {
        }
        return 0;
    }

    /// <summary>Adopts a range the process registered: 0, or the errno its allocation fails over.</summary>
    private int TakeOn(Userfaultfd uffd, AgentAddressSpace space, ServedArena request, int attached)
    {
        if (attached >= 0)
            Libc.close(attached); // a range request carries none

        if (request.Length == 0 || request.Length > MaxRangeBytes || (request.Start & (PageSize - 1)) != 0 || (request.Length & (PageSize - 1)) != 0
            || request.Start == 0 || request.Start + request.Length > UserAddressLimit || (_engine?.AdoptedBytes ?? 0) > MaxProcessBytes - (long)request.Length)
            return Libc.EINVAL;
        try
        {
            if (_engine == null)
            {
                lock (_statsLock)
                    _engine = PageEngine.ServeProcess(_options, uffd, space);
            }
            _engine.AdoptArena((nint)request.Start, (long)request.Length, $"pid {Pid}");
            Interlocked.Increment(ref _arenas);
            Interlocked.Add(ref _bytes, (long)request.Length);
            return 0;
        }
        catch (Exception e)
        {
            _say($"tibet custodian: cannot serve {request.Length} bytes of pid {Pid}: {e.Message}; that allocation runs unencrypted, and says so.");
            return Libc.ENOMEM;
        }
    }
}
