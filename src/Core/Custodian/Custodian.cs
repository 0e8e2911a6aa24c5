using Tibet.Core.Interop;
using Tibet.Core.Paging;

namespace Tibet.Core.Custodian;

/// <summary>
/// The custodian: a process tibet-run starts beside the program, which serves the large
/// allocations of every forked child in the tree (src/Interposer/native/served.c), and
/// outlives any of them: a daemon whose first parent exits stays served.
/// </summary>
/// <remarks>
/// <para>The registry: tibet-run makes a SOCK_SEQPACKET socketpair; the custodian holds one
/// end, and every process of the tree inherits the other (TIBET_CUSTODIAN_FD). A child
/// sends its hello there, with its own connections and its userfaultfd attached (see
/// <see cref="ServedProtocol"/>). The pid it names must be the one that made the
/// connections (SO_PEERCRED).</para>
/// <para>Lifetime: when every process holding the registry's other end has gone, the
/// registry reads end-of-file; the custodian then ends once the last process it serves
/// has. It runs in a session of its own, so a Ctrl-C meant for the program does not end
/// it while a daemon still needs it.</para>
/// <para>What it is not yet (docs/design/custodian.md): the program's own pages are
/// served by the engine inside the program, and the keys of those live there.</para>
/// </remarks>
internal sealed unsafe class CustodianService
{
    private readonly int _registry;
    private readonly EngineOptions _options;
    private readonly bool _registerWriteProtect;
    private readonly Action<string> _say;
    private readonly int _verbosity;
    private readonly List<ServedProcess> _served = [];
    private readonly Lock _servedLock = new();
    private long _refused;

    /// <param name="registry">The custodian's end of the registry (owned from now on).</param>
    /// <param name="options">The engine options of each served process.</param>
    /// <param name="verbosity">Above 0: one line per served process as it ends.</param>
    /// <param name="say">Where lines for the user go (the custodian's stderr).</param>
    public CustodianService(int registry, EngineOptions options, int verbosity, Action<string> say)
    {
        _registry = registry;
        _verbosity = verbosity;
        _say = say;
        KernelFeatures features = PageEngine.ProbeKernel();
        if (options.ResidentBudgetBytes != EngineOptions.Unlimited && !features.CanEvict)
            throw new UserfaultfdUnavailableException("the custodian cannot evict: " + string.Join("; ", features.Shortcomings()));
        // A served child's copies reach a grandchild through fork events, served from the
        // child's books; grandchildren have no agent of their own for those (they take
        // their own allocations to the custodian).
        _options = options with { ServeForkedChildren = features.EventFork, EvictInChildren = false, CollapseResidentRanges = false };
        _registerWriteProtect = options.TrackWrites && features.CanEvict;
    }

    /// <summary>Processes served so far, living and ended.</summary>
    public IReadOnlyList<ServedProcess> Served
    {
        get { lock (_servedLock) return [.. _served]; }
    }

    /// <summary>Hellos refused (a pid that did not match its connection, or nonsense).</summary>
    public long Refused => Interlocked.Read(ref _refused);

    /// <summary>Serves until the registry has no holder left and every served process has
    /// ended.</summary>
    public void Run()
    {
        bool registryOpen = true;
        while (registryOpen || Living() > 0)
        {
            if (!registryOpen)
            {
                Thread.Sleep(50);
                continue;
            }
            Libc.PollFd wait = new() { Fd = _registry, Events = Libc.POLLIN };
            int ready = Libc.poll(&wait, 1, 1000);
            if (ready < 0 && Libc.LastErrno != Libc.EINTR)
                throw new InvalidOperationException($"poll of the registry failed: {Libc.Describe(Libc.LastErrno)}");
            if (ready <= 0)
                continue;
            registryOpen = ReceiveHello();
        }
        Libc.close(_registry);
    }

    private int Living()
    {
        lock (_servedLock)
            return _served.Count(p => !p.Ended);
    }

    /// <summary>Takes one hello off the registry; false once no process holds its other end.</summary>
    private bool ReceiveHello()
    {
        ServedHello hello;
        Span<int> fds = stackalloc int[3];
        nint n = Libc.ReceiveWithDescriptors(_registry, &hello, (nuint)sizeof(ServedHello), fds, out int count);
        if (n == 0)
            return false;
        if (n < 0)
            return Libc.LastErrno is Libc.EINTR or Libc.EAGAIN;
        if (n != sizeof(ServedHello) || count != 3 || hello.Magic != ServedProtocol.Magic || hello.Version != ServedProtocol.Version
            || !CreatedBy(fds[0], hello.Pid))
        {
            for (int i = 0; i < count; i++)
                Libc.close(fds[i]);
            Interlocked.Increment(ref _refused);
            _say($"tibet custodian: refused a connection claiming pid {hello.Pid}: its hello did not match what it sent");
            return true;
        }
        var process = new ServedProcess(hello.Pid, HighDescriptors.MoveAbove(fds[0]), HighDescriptors.MoveAbove(fds[1]),
            HighDescriptors.MoveAbove(fds[2]), _options, _registerWriteProtect, _say, _verbosity > 0);
        lock (_servedLock)
            _served.Add(process);
        process.Start();
        return true;
    }

    /// <summary>Whether the process <paramref name="pid"/> made the socket <paramref name="fd"/>
    /// is an end of (SO_PEERCRED of a socketpair: its creator).</summary>
    private static bool CreatedBy(int fd, int pid)
    {
        Libc.UCred credentials;
        uint length = (uint)sizeof(Libc.UCred);
        return Libc.getsockopt(fd, Libc.SOL_SOCKET, Libc.SO_PEERCRED, &credentials, &length) == 0 && credentials.Pid == pid && pid > 0;
    }
}
