using Tibet.Core.Interop;
using Tibet.Core.Paging;

namespace Tibet.Core.Custodian;

/// <summary>
/// The custodian: a process tibet-run starts beside the program, which serves the large
/// allocations of every forked child in the tree (src/Interposer/native/served.c), and
/// outlives any of them: a daemon whose first parent exits stays served.
/// </summary>
/// <remarks>
/// <para>The registry: an abstract SOCK_SEQPACKET socket tibet-run binds and hands over,
/// whose random name every process of the tree finds in TIBET_CUSTODIAN_SOCKET. A child
/// connects and sends its hello, with its own connections and its userfaultfd attached
/// (see <see cref="ServedProtocol"/>). Whoever connects must be of a uid of the tree's
/// (tibet-run's, or --user's: SO_PEERCRED), and the pid the hello names must be the
/// connecting process and the one that made the attached connections.</para>
/// <para>Lifetime: it serves while the program lives (tibet-run executed it, so it has
/// tibet-run's pid; the custodian holds a pidfd of it), and after that while any process
/// it serves does, and while any process of the tree holds it (<see cref="ServedProtocol.KindKeep"/>:
/// every interposed program connects at its start, and the children it forks share that
/// connection), so that a daemon's child whose first large allocation comes after its
/// parent exited still finds it. It ends once the program is gone and none of those has
/// been left for <see cref="Linger"/>. It runs in a session of its own, so a
/// Ctrl-C meant for the program does not end it while a daemon still needs it.</para>
/// <para>Sealed models: with --identity, the custodian holds the identity and the claim
/// (<see cref="IdentityCustody"/>); a process that opens a sealed model asks it for the
/// decision and gets only that model's data key.</para>
/// <para>What it is not yet (docs/design/custodian.md): the program's own pages are
/// served by the engine inside the program, and the keys of those (arena keys, and the
/// data keys of live models) live there.</para>
/// </remarks>
internal sealed unsafe class CustodianService
{
    /// <summary>How long the custodian waits, with the program gone and nothing served,
    /// before it ends.</summary>
    public static readonly TimeSpan Linger = TimeSpan.FromMilliseconds(300);

    private readonly int _registry;
    private readonly uint[] _uids;
    private readonly int _program;
    private readonly EngineOptions _options;
    private readonly bool _registerWriteProtect;
    private readonly Action<string> _say;
    private readonly int _verbosity;
    private readonly IdentityCustody? _custody;
    private readonly List<ServedProcess> _served = [];
    private readonly Lock _servedLock = new();
    private long _refused;

    /// <param name="registry">The listening socket (owned from now on).</param>
    /// <param name="uids">The uids whose processes may connect (root always may).</param>
    /// <param name="program">A pidfd of the program (tibet-run became it): while it lives, the custodian stays.</param>
    /// <param name="options">The engine options of each served process.</param>
    /// <param name="verbosity">Above 0: one line per served process as it ends.</param>
    /// <param name="say">Where lines for the user go (the custodian's stderr).</param>
    /// <param name="custody">The identity tibet-run handed over, if it was given one: the
    /// custodian decides access to sealed models for the tree.</param>
    public CustodianService(int registry, uint[] uids, int program, EngineOptions options, int verbosity, Action<string> say, IdentityCustody? custody = null)
    {
        _custody = custody;
        _registry = registry;
        _uids = uids;
        _program = program;
        _verbosity = verbosity;
        _say = say;
        KernelFeatures features = PageEngine.ProbeKernel();
        if (options.ResidentBudgetBytes != EngineOptions.Unlimited && !features.CanEvict)
            throw new UserfaultfdUnavailableException("the custodian cannot evict: " + string.Join("; ", features.Shortcomings()));
        // A served process's copies reach its forked child through fork events, served
        // from the process's books; the child's agent, whose end the process passes on
        // (ServedProcess.Forked), takes what the child reads back out under the budget.
        // Its take-outs are round trips to the served process's thread: evicted in batches.
        _options = options with
        {
            ServeForkedChildren = features.EventFork,
            CollapseResidentRanges = false,
            Watermarks = Paging.Eviction.ResidentWatermarks.ForRoundTrips,
        };
        _registerWriteProtect = options.TrackWrites && features.CanEvict;
    }

    /// <summary>Processes served so far, living and ended.</summary>
    public IReadOnlyList<ServedProcess> Served
    {
        get { lock (_servedLock) return [.. _served]; }
    }

    /// <summary>Hellos refused (a pid that did not match its connection, or nonsense).</summary>
    public long Refused => Interlocked.Read(ref _refused);

    /// <summary>Connections accepted whose hello has not come yet: each is read when it
    /// comes, so that one that says nothing holds no other up.</summary>
    private readonly List<(int Fd, int Pid, long Deadline)> _pending = [];

    /// <summary>Hellos waiting at once; beyond, the oldest is dropped (its process's
    /// allocations run in plaintext, said).</summary>
    private const int MaxPending = 256;

    /// <summary>Serves until the program has ended and every served process has too.</summary>
    public void Run()
    {
        Diagnostics.LiveStatsServer.Start(Snapshot, _say);
        long idleSince = System.Diagnostics.Stopwatch.GetTimestamp();
        var set = new List<Libc.PollFd>();
        while (true)
        {
            set.Clear();
            set.Add(new Libc.PollFd { Fd = _registry, Events = Libc.POLLIN });
            foreach (var (fd, _, _) in _pending)
                set.Add(new Libc.PollFd { Fd = fd, Events = Libc.POLLIN });
            foreach (int fd in _holders)
                set.Add(new Libc.PollFd { Fd = fd, Events = Libc.POLLIN });
            Libc.PollFd[] fds = [.. set];
            int ready;
            fixed (Libc.PollFd* polled = fds)
                ready = Libc.poll(polled, (nuint)fds.Length, 50);
            if (ready < 0 && Libc.LastErrno != Libc.EINTR)
                throw new InvalidOperationException($"poll of the registry failed: {Libc.Describe(Libc.LastErrno)}");
            long now = System.Diagnostics.Stopwatch.GetTimestamp();
            // Holders first (their entries follow the pending ones): one that hung up, or
            // said anything more, is let go.
            int holdersAt = 1 + _pending.Count;
            for (int i = _holders.Count - 1; i >= 0; i--)
            {
                if (ready > 0 && fds[holdersAt + i].Revents != 0)
                {
                    Libc.close(_holders[i]);
                    _holders.RemoveAt(i);
                }
            }
            for (int i = _pending.Count - 1; i >= 0; i--)
            {
                var (fd, pid, deadline) = _pending[i];
                if (ready > 0 && fds[1 + i].Revents != 0)
                {
                    if (ReceiveHello(fd, pid))
                    {
                        _holders.Add(fd); // a holder: kept open, see KindKeep
                        _pending.RemoveAt(i);
                        continue;
                    }
                }
                else if (now < deadline)
                {
                    continue;
                }
                Libc.close(fd); // answered, or silent for 2 s
                _pending.RemoveAt(i);
            }
            if (ready > 0 && (fds[0].Revents & Libc.POLLIN) != 0)
                Accept();
            // tibet-run's stderr stays open here while anything is served: lines such as
            // "plaintext in the children now" must reach the user.
            bool programLives = ProgramLives();
            int living = Living() + _holders.Count;
            if (living > 0 || programLives)
                idleSince = System.Diagnostics.Stopwatch.GetTimestamp();
            else if (System.Diagnostics.Stopwatch.GetElapsedTime(idleSince) >= Linger)
                break;
        }
        foreach (var (fd, _, _) in _pending)
            Libc.close(fd);
        foreach (int fd in _holders)
            Libc.close(fd);
        Libc.close(_registry);
    }

    /// <summary>Connections of processes of the tree that hold the custodian (hello kind
    /// keep): forked children share their parent's, and each exec'd program makes its own.
    /// While any is open, the custodian stays, for the large allocations still to come.</summary>
    private readonly List<int> _holders = [];

    /// <summary>
    /// The live statistics (<c>tibet stats</c>, <c>tibet-run --metrics</c>): totals over
    /// the processes served now, and one row per process, in the shape of a program's
    /// forked-children rows (<c>served</c>: true; its resident bytes are all it holds in
    /// plaintext, written or not).
    /// </summary>
    private string Snapshot()
    {
        var stream = new MemoryStream();
        using (var w = new System.Text.Json.Utf8JsonWriter(stream, new System.Text.Json.JsonWriterOptions { Indented = true }))
        {
            long faults = 0, evictions = 0, resident = 0, sealedBytes = 0, decrypts = 0;
            var rows = new List<(int Pid, Diagnostics.EngineStats Stats)>();
            foreach (ServedProcess process in Served)
            {
                if (process.Ended || process.Stats() is not { } stats)
                    continue;
                rows.Add((process.Pid, stats));
                faults += stats.Faults;
                evictions += stats.Evictions;
                resident += stats.ResidentBytes;
                sealedBytes += stats.SealedBytes;
                decrypts += stats.Decrypts;
            }
            w.WriteStartObject();
            w.WriteBoolean("custodian", true);
            w.WriteBoolean("encrypted", true);
            w.WriteNumber("faults", faults);
            w.WriteNumber("decrypts", decrypts);
            w.WriteNumber("evictions", evictions);
            w.WriteNumber("residentBytes", resident);
            w.WriteNumber("residentBudgetBytes", _options.ResidentBudgetBytes == EngineOptions.Unlimited ? -1 : _options.ResidentBudgetBytes);
            w.WriteNumber("sealedBytes", sealedBytes);
            w.WriteNumber("authenticationFailures", rows.Sum(r => r.Stats.AuthenticationFailures));
            w.WriteNumber("forkedChildren", rows.Count);
            w.WriteNumber("servedProcesses", Served.Count);
            w.WriteNumber("refusedConnections", Refused);
            w.WriteStartArray("children");
            foreach (var (pid, stats) in rows)
            {
                w.WriteStartObject();
                w.WriteNumber("pid", pid);
                w.WriteBoolean("served", true);
                w.WriteNumber("faults", stats.Faults);
                w.WriteNumber("cleanResidentBytes", stats.ResidentBytes);
                w.WriteNumber("residentBytes", stats.ResidentBytes);
                w.WriteNumber("sealedBytes", stats.SealedBytes);
                w.WriteNumber("evictions", stats.Evictions);
                w.WriteBoolean("agent", true);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartObject("unencrypted");
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(stream.ToArray());
    }

    /// <summary>A pidfd reads ready once its process has ended.</summary>
    private bool ProgramLives()
    {
        Libc.PollFd ended = new() { Fd = _program, Events = Libc.POLLIN };
        return Libc.poll(&ended, 1, 0) == 0;
    }

    private int Living()
    {
        lock (_servedLock)
            return _served.Count(p => !p.Ended);
    }

    /// <summary>Takes one connection off the registry; its hello is read when it comes.</summary>
    private void Accept()
    {
        int connection = Libc.accept4(_registry, null, null, Libc.SOCK_CLOEXEC | Libc.SOCK_NONBLOCK);
        if (connection < 0)
            return;
        Libc.UCred peer;
        uint length = (uint)sizeof(Libc.UCred);
        if (Libc.getsockopt(connection, Libc.SOL_SOCKET, Libc.SO_PEERCRED, &peer, &length) != 0)
        {
            Libc.close(connection);
            return;
        }
        if (peer.Uid != 0 && Array.IndexOf(_uids, peer.Uid) < 0)
        {
            Interlocked.Increment(ref _refused);
            _say($"tibet custodian: refused pid {peer.Pid} of uid {peer.Uid}: it is not of this tree's users");
            Libc.close(connection);
            return;
        }
        if (_pending.Count == MaxPending)
        {
            Libc.close(_pending[0].Fd);
            _pending.RemoveAt(0);
        }
        _pending.Add((connection, peer.Pid, System.Diagnostics.Stopwatch.GetTimestamp() + 2 * System.Diagnostics.Stopwatch.Frequency));
    }

    /// <returns>True when the connection is a holder's (kind keep), to be kept open.</returns>
    private bool ReceiveHello(int connection, int peerPid)
    {
        ServedHello hello;
        Span<int> fds = stackalloc int[3];
        nint n = Libc.ReceiveWithDescriptors(connection, &hello, (nuint)sizeof(ServedHello), fds, out int count);
        if (n <= 0)
        {
            for (int i = 0; i < count; i++)
                Libc.close(fds[i]);
            return false;
        }
        int expected = hello.Kind switch
        {
            ServedProtocol.KindServe => 3,
            ServedProtocol.KindKeep => 0,
            ServedProtocol.KindStats => 1,
            // the reply, the model, and the engine's userfaultfd if it has one
            ServedProtocol.KindSealed when count == 3 => 3,
            _ => 2,
        };
        if (n != sizeof(ServedHello) || count != expected || hello.Magic != ServedProtocol.Magic || hello.Version != ServedProtocol.Version
            || hello.Kind > ServedProtocol.KindStats || hello.Pid != peerPid || (count > 0 && !CreatedBy(fds[0], hello.Pid)))
        {
            for (int i = 0; i < count; i++)
                Libc.close(fds[i]);
            Interlocked.Increment(ref _refused);
            _say($"tibet custodian: refused a connection of pid {peerPid}: its hello did not match what it sent");
            return false;
        }
        if (hello.Kind == ServedProtocol.KindKeep)
            return true;
        if (hello.Kind == ServedProtocol.KindStats)
        {
            AnswerStatsRequest(fds[0], hello.Pid);
            return false;
        }
        if (hello.Kind == ServedProtocol.KindSealed)
        {
            AnswerSealedRequest(fds[0], fds[1], count == 3 ? fds[2] : -1, hello.Pid);
            return false;
        }
        int uffd = fds[expected - 1];
        int api = EnableFeatures(uffd, hello.Features);
        if (hello.Kind == ServedProtocol.KindApi)
        {
            ServedStatus status = new() { Status = api };
            Libc.send(fds[0], &status, (nuint)sizeof(ServedStatus), Libc.MSG_NOSIGNAL | Libc.MSG_DONTWAIT);
            Libc.close(fds[0]);
            Libc.close(fds[1]);
            return false;
        }
        if (api != 0)
        {
            for (int i = 0; i < count; i++)
                Libc.close(fds[i]); // its thread sees the end, and its allocations say why
            _say($"tibet custodian: cannot serve pid {hello.Pid}: UFFDIO_API on its userfaultfd failed: {Libc.Describe(api)}");
            return false;
        }
        var process = new ServedProcess(hello.Pid, HighDescriptors.MoveAbove(fds[0]), HighDescriptors.MoveAbove(fds[1]),
            HighDescriptors.MoveAbove(fds[2]), _options, _registerWriteProtect, _say, _verbosity > 0);
        lock (_servedLock)
            _served.Add(process);
        process.Start();
        return false;
    }

    /// <summary>A process asks for what this custodian's engine did for it (its own pid
    /// only: the hello's pid is the peer's, checked above). Answered off this thread: a
    /// busy engine may take up to its 200 ms to answer.</summary>
    private void AnswerStatsRequest(int reply, int pid)
    {
        reply = HighDescriptors.MoveAbove(reply);
        ThreadPool.UnsafeQueueUserWorkItem(_ =>
        {
            try
            {
                ServedProcess? served = null;
                lock (_servedLock)
                    served = _served.LastOrDefault(p => p.Pid == pid && !p.Ended);
                Diagnostics.EngineStats? stats = served?.Stats();
                byte[] json = stats is { } s ? System.Text.Encoding.UTF8.GetBytes(s.ToJson()) : [];
                // Never waits: a peer that filled its own reply connection gets nothing.
                fixed (byte* data = json)
                    Libc.send(reply, data, (nuint)json.Length, Libc.MSG_NOSIGNAL | Libc.MSG_DONTWAIT);
            }
            finally
            {
                Libc.close(reply);
            }
        }, null);
    }

    /// <summary>A process asks for the key of a sealed model it opened: decided off this
    /// thread (it reads the model's tag table and writes the audit log), so that the
    /// registry keeps answering.</summary>
    private void AnswerSealedRequest(int reply, int model, int uffd, int pid)
    {
        if (_custody is not { } custody)
        {
            // tibet-run was given no identity: the program holds no grant either, so this
            // is not a request tibet's own processes make.
            Interlocked.Increment(ref _refused);
            Libc.close(reply);
            Libc.close(model);
            if (uffd >= 0)
                Libc.close(uffd);
            _say($"tibet custodian: refused a sealed-model request of pid {pid}: tibet-run was given no identity");
            return;
        }
        reply = HighDescriptors.MoveAbove(reply);
        model = HighDescriptors.MoveAbove(model);
        uffd = HighDescriptors.MoveAbove(uffd);
        ThreadPool.UnsafeQueueUserWorkItem(_ => custody.Answer(reply, model, pid, uffd), null);
    }

    /// <summary>
    /// Issues UFFDIO_API on a served process's userfaultfd: 0 or an errno. Only features
    /// the custodian's engines use are granted. Fork events among them need
    /// CAP_SYS_PTRACE of the caller, which the custodian has and a program run as another
    /// user does not (docs/threat-model.md says what granting them means).
    /// </summary>
    private static int EnableFeatures(int uffd, ulong features)
    {
        const ulong granted = UserfaultfdAbi.UFFD_FEATURE_EVENT_FORK | UserfaultfdAbi.UFFD_FEATURE_EVENT_REMAP | UserfaultfdAbi.UFFD_FEATURE_EVENT_REMOVE
                              | UserfaultfdAbi.UFFD_FEATURE_EVENT_UNMAP | UserfaultfdAbi.UFFD_FEATURE_THREAD_ID | UserfaultfdAbi.UFFD_FEATURE_POISON
                              | UserfaultfdAbi.UFFD_FEATURE_PAGEFAULT_FLAG_WP
                              // Moves within the process's own address space: its model ranges
                              // placed whole (LocalAddressSpace.PlaceStaged). No privilege.
                              | UserfaultfdAbi.UFFD_FEATURE_MOVE;
        if ((features & ~granted) != 0)
            return Libc.EINVAL;
        // Only on a userfaultfd: the custodian runs as root, and an ioctl on whatever a peer
        // sent could mean anything to another kind of file.
        if (new FileInfo($"/proc/self/fd/{uffd}").LinkTarget != "anon_inode:[userfaultfd]")
            return Libc.EBADF;
        UserfaultfdAbi.uffdio_api api = new() { api = UserfaultfdAbi.UFFD_API, features = features };
        return Libc.ioctl(uffd, UserfaultfdAbi.UFFDIO_API, &api) == 0 ? 0 : Libc.LastErrno;
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
