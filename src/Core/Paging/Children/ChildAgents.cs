using System.Security.Cryptography;
using Tibet.Core.Interop;

namespace Tibet.Core.Paging.Children;

/// <summary>
/// Where forked children's agents connect: an abstract unix socket the engine listens on,
/// and the connections that arrived before their child's fork was reported.
/// </summary>
/// <remarks>
/// <para>The agent (src/Interposer/native/agent.c) is a thread a forked child starts right
/// after fork. It connects here, and moves pages out of the child's memory when asked
/// (see ChildService). A take-out must be done inside the child: UFFDIO_MOVE issued on
/// another process's userfaultfd fails with EINVAL.</para>
/// <para>The name is random, and a connection is accepted only from a process the kernel
/// says is one of this engine's forked children (SO_PEERCRED, matched against the pid
/// the fork reported). The agent checks the other way round that it reached its parent.</para>
/// </remarks>
internal sealed unsafe class ChildAgents : IDisposable
{
    // Connections waiting for their child to be reported, and the listen backlog: a
    // prefork server starts many children at once (the tests fork 80).
    private const int MaxPending = 1024;

    private readonly int _listener;
    private readonly byte[] _address;
    // Connections whose child is not known yet: (descriptor, pid).
    private readonly (int Fd, int Pid)[] _pending = new (int, int)[MaxPending];
    private int _pendingCount;

    private ChildAgents(int listener, byte[] address)
    {
        _listener = listener;
        _address = address;
    }

    /// <summary>The socket's abstract name, with its leading zero byte, for the agent.</summary>
    public ReadOnlySpan<byte> Address => _address;

    /// <summary>The listening descriptor, for the handler's poll set.</summary>
    public int Listener => _listener;

    /// <summary>Listens on a new random abstract name; null (with the reason) if the
    /// system refuses, and children are then served without eviction, as before.</summary>
    public static ChildAgents? TryListen(out string? problem)
    {
        problem = null;
        string name = $"tibet-agent-{Libc.getpid()}-{Convert.ToHexString(RandomNumberGenerator.GetBytes(8))}";
        byte[] address = [0, .. System.Text.Encoding.ASCII.GetBytes(name)];
        int fd = Libc.socket(Libc.AF_UNIX, Libc.SOCK_SEQPACKET | Libc.SOCK_NONBLOCK | Libc.SOCK_CLOEXEC, 0);
        if (fd < 0)
        {
            problem = $"socket: {Libc.Describe(Libc.LastErrno)}";
            return null;
        }
        Libc.SockAddrUnix unix = Libc.SockAddrUnix.Abstract(name, out uint length);
        if (Libc.bind(fd, &unix, length) != 0 || Libc.listen(fd, MaxPending) != 0)
        {
            problem = $"bind/listen: {Libc.Describe(Libc.LastErrno)}";
            Libc.close(fd);
            return null;
        }
        fd = HighDescriptors.MoveAbove(fd);
        var agents = new ChildAgents(fd, address);
        agents.Bind();
        return agents;
    }

    /// <summary>The handler's first calls of these imports, made here: binding an import
    /// allocates, and the handler must not.</summary>
    private void Bind()
    {
        Accept();
        ulong none;
        Libc.recv(-1, &none, 0, Libc.MSG_DONTWAIT);
        Libc.send(-1, &none, 0, Libc.MSG_DONTWAIT | Libc.MSG_NOSIGNAL);
    }

    /// <summary>Takes every waiting connection, with the pid of the process that opened it.</summary>
    public void Accept()
    {
        while (true)
        {
            int fd = Libc.accept4(_listener, null, null, Libc.SOCK_NONBLOCK | Libc.SOCK_CLOEXEC);
            if (fd < 0)
                return;
            Libc.UCred peer;
            uint length = (uint)sizeof(Libc.UCred);
            if (Libc.getsockopt(fd, Libc.SOL_SOCKET, Libc.SO_PEERCRED, &peer, &length) != 0 || _pendingCount == MaxPending)
            {
                Libc.close(fd);
                continue;
            }
            _pending[_pendingCount++] = (fd, peer.Pid);
        }
    }

    /// <summary>The connection the child <paramref name="pid"/> opened, or -1.</summary>
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

    /// <summary>Whether connections are waiting for their child.</summary>
    public bool HasPending => _pendingCount > 0;

    public void Dispose()
    {
        for (int i = 0; i < _pendingCount; i++)
            Libc.close(_pending[i].Fd);
        _pendingCount = 0;
        Libc.close(_listener);
    }
}
