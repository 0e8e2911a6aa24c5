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

    /// <summary>The engine's end of a new child's connection (from the fork).</summary>
    public void Add(int fd)
    {
        if (fd < 0)
            return;
        if (_pendingCount == MaxPending)
        {
            Libc.close(fd);
            return;
        }
        _pending[_pendingCount++] = (HighDescriptors.MoveAbove(fd), 0);
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

    private void Drop(int i) => Libc.close(TakeAt(i));

    public void Dispose()
    {
        for (int i = 0; i < _pendingCount; i++)
            Libc.close(_pending[i].Fd);
        _pendingCount = 0;
    }
}
