using Tibet.Core.Interop;

namespace Tibet.Core.Paging.Children;

/// <summary>
/// The engine's ends of forked children's agent connections, until each is matched to
/// the child it belongs to.
/// </summary>
/// <remarks>
/// <para>The agent (src/Interposer/native/agent.c) is a thread a forked child starts right
/// after fork. It moves pages out of the child's memory when asked (see ChildService): a
/// take-out must be done inside the child, since UFFDIO_MOVE issued on another process's
/// userfaultfd fails with EINVAL.</para>
/// <para>The connection is a socketpair the shim's fork() makes just before forking: the
/// child keeps one end, the parent's end comes here (<see cref="Add"/>). Nothing else can
/// reach either end. The agent's first message is its pid, which names the child it
/// serves; an end whose pid is no child of this engine is closed.</para>
/// <para>Custody (<see cref="GiveCustody"/>): the agent also holds a duplicate of the
/// child's userfaultfd and a map of its inherited contents (InheritedContents), and serves
/// the child itself if this engine's process ends without letting it go. So every end is
/// let go through <see cref="Release"/>, which says so first: a connection that ends
/// without that message means this process died (or exec'd), and nothing else reads the
/// child's userfaultfd any more.</para>
/// <para>Called under the engine lock; <see cref="ReadHellos"/> and <see cref="TakeFor"/>
/// run on the handler and allocate nothing.</para>
/// </remarks>
internal sealed unsafe class ChildAgents : IDisposable
{
    /// <summary>Ends waiting for their child's pid or their child: a prefork server forks
    /// many children at once (the tests fork 80). Beyond this, a child has no agent.</summary>
    private const int MaxPending = 1024;

    private readonly (int Fd, int Pid)[] _pending = new (int, int)[MaxPending];
    private int _pendingCount;

    public ChildAgents()
    {
        // The handler's first calls of these imports, made here: binding an import allocates.
        int none;
        Libc.recv(-1, &none, 0, Libc.MSG_DONTWAIT);
        Libc.send(-1, &none, 0, Libc.MSG_DONTWAIT | Libc.MSG_NOSIGNAL);
    }

    /// <summary>The engine's end of a new child's connection (from the fork); returns the
    /// descriptor it is kept under, or -1 if it was let go (too many waiting).</summary>
    public int Add(int fd)
    {
        if (fd < 0)
            return -1;
        if (_pendingCount == MaxPending)
        {
            Release(fd);
            return -1;
        }
        fd = HighDescriptors.MoveAbove(fd);
        _pending[_pendingCount++] = (fd, 0);
        return fd;
    }

    /// <summary>Gives the agent at <paramref name="fd"/> custody of the child's userfaultfd
    /// <paramref name="uffd"/> (a duplicate travels) and its contents map
    /// <paramref name="contents"/> (AGENT_CUSTODY). The agent reads it after its hello.</summary>
    public static void GiveCustody(int fd, int uffd, int contents)
    {
        AgentRequest custody = new() { Kind = AgentRequest.Custody };
        Libc.SendWithDescriptors(fd, &custody, (nuint)sizeof(AgentRequest), [uffd, contents]);
    }

    /// <summary>Lets an agent's connection go: AGENT_RELEASE (its custody ends; harmless
    /// without one), then the close.</summary>
    public static void Release(int fd)
    {
        AgentRequest release = new() { Kind = AgentRequest.Release };
        Libc.send(fd, &release, (nuint)sizeof(AgentRequest), Libc.MSG_DONTWAIT | Libc.MSG_NOSIGNAL);
        Libc.close(fd);
    }

    /// <summary>Whether ends are waiting.</summary>
    public bool HasPending => _pendingCount > 0;

    /// <summary>Reads the pid each new agent sends first; an end whose agent is gone is closed.</summary>
    public void ReadHellos()
    {
        for (int i = _pendingCount - 1; i >= 0; i--)
        {
            if (_pending[i].Pid != 0)
                continue;
            int pid;
            nint n = Libc.recv(_pending[i].Fd, &pid, sizeof(int), Libc.MSG_DONTWAIT);
            if (n == sizeof(int) && pid > 0)
                _pending[i].Pid = pid;
            else if (!(n < 0 && Libc.LastErrno is Libc.EAGAIN or Libc.EINTR))
                Drop(i); // gone before it said who it is, or nonsense
        }
    }

    /// <summary>The connection of the child <paramref name="pid"/>, or -1.</summary>
    public int TakeFor(int pid)
    {
        for (int i = 0; i < _pendingCount; i++)
        {
            if (_pending[i].Pid != pid)
                continue;
            int fd = _pending[i].Fd;
            _pending[i] = _pending[--_pendingCount];
            return fd;
        }
        return -1;
    }

    /// <summary>Ends waiting (some with their agent's pid known, see <see cref="PidAt"/>).</summary>
    public int PendingCount => _pendingCount;

    /// <summary>The pid the agent of pending end <paramref name="i"/> named, or 0 if not yet.</summary>
    public int PidAt(int i) => _pending[i].Pid;

    /// <summary>Takes pending end <paramref name="i"/> (the last one moves into its place).</summary>
    public int TakeAt(int i)
    {
        int fd = _pending[i].Fd;
        _pending[i] = _pending[--_pendingCount];
        return fd;
    }

    private void Drop(int i) => Release(TakeAt(i));

    /// <summary>Lets every waiting end go.</summary>
    public void ReleaseAll()
    {
        for (int i = 0; i < _pendingCount; i++)
            Release(_pending[i].Fd);
        _pendingCount = 0;
    }

    public void Dispose() => ReleaseAll();
}

/// <summary>What the engine sends an agent (struct agent_request in native/agent.c).</summary>
internal struct AgentRequest
{
    public const uint TakeOut = 0, Custody = 1, Release = 2; // AGENT_TAKE_OUT, AGENT_CUSTODY, AGENT_RELEASE

    public ulong Start;
    public uint Pages;
    public uint Kind;
}

/// <summary>What an agent answers (struct agent_answer in native/agent.c): bit i of
/// each mask is page i of the request.</summary>
internal struct AgentAnswer
{
    public ulong Moved;
    public ulong Absent;
}
