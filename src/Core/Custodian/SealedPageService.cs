using Tibet.Core.Interop;
using Tibet.Core.Sealing;

namespace Tibet.Core.Custodian;

/// <summary>
/// The custodian's side of a sealed model's page session: it keeps the model's data key
/// for one process, which sends the ciphertext of data pages through a shared window and
/// gets them back decrypted (<see cref="CustodianPageOpener"/> is the process's side). One
/// thread per session, which ends, destroying the key, when the process closes its end.
/// </summary>
internal sealed unsafe class SealedPageService
{
    /// <summary>Pages per request: a 2 MiB range of a model map in one round trip.</summary>
    public const int WindowPages = 512;

    /// <summary>Sessions at once, in all and per process: each holds a thread and a locked
    /// 2 MiB window, and a process holding the grant could otherwise ask for them until the
    /// custodian, which serves the whole tree, runs out (a process asks once per sealed
    /// file it opens).</summary>
    public const int MaxSessions = 256, MaxSessionsPerProcess = 64;

    private static readonly Lock s_count = new();
    private static readonly Dictionary<int, int> s_byPid = [];
    private static int s_total;
    private readonly int _pid;

    private readonly SealedModelKey _key;
    private readonly int _session;
    private readonly nint _window;

    private SealedPageService(SealedModelKey key, int session, nint window, int pid)
    {
        _key = key;
        _session = session;
        _window = window;
        _pid = pid;
    }

    /// <summary>
    /// Starts a session of process <paramref name="pid"/> for <paramref name="key"/> (owned
    /// from now on, once this returns): returns the process's end of the connection and the
    /// window's memfd, for the caller to hand over and close.
    /// </summary>
    /// <exception cref="InvalidOperationException">Too many sessions, or no socket, window or thread for one.</exception>
    public static (int Session, int Window) Start(SealedModelKey key, int pid)
    {
        lock (s_count)
        {
            int mine = s_byPid.GetValueOrDefault(pid);
            if (s_total >= MaxSessions || mine >= MaxSessionsPerProcess)
                throw new InvalidOperationException($"{s_total} sessions are open, {mine} of them pid {pid}'s (at most {MaxSessions}, {MaxSessionsPerProcess} per process)");
            s_total++;
            s_byPid[pid] = mine + 1;
        }
        int* pair = stackalloc int[2];
        pair[0] = pair[1] = -1;
        nint window = 0;
        int memfd = -1;
        try
        {
            if (Libc.socketpair(Libc.AF_UNIX, Libc.SOCK_SEQPACKET | Libc.SOCK_CLOEXEC, 0, pair) != 0)
                throw new InvalidOperationException($"socketpair failed: {Libc.Describe(Libc.LastErrno)}");
            window = SharedWindow.Create("tibet-sealed-pages", WindowPages, out memfd);
            var service = new SealedPageService(key, HighDescriptors.MoveAbove(pair[0]), window, pid);
            new Thread(service.Serve) { IsBackground = true, Name = $"tibet-sealed {pid}" }.Start();
            return (pair[1], memfd);
        }
        catch (Exception e)
        {
            if (window != 0) Libc.munmap(window, (nuint)(WindowPages * Paging.Userfaultfd.PageSize));
            if (memfd >= 0) Libc.close(memfd);
            if (pair[0] >= 0) Libc.close(pair[0]);
            if (pair[1] >= 0) Libc.close(pair[1]);
            Ended(pid);
            throw e as InvalidOperationException ?? new InvalidOperationException(e.Message, e);
        }
    }

    private static void Ended(int pid)
    {
        lock (s_count)
        {
            s_total--;
            if (s_byPid.TryGetValue(pid, out int mine) && mine > 1)
                s_byPid[pid] = mine - 1;
            else
                s_byPid.Remove(pid);
        }
    }

    private void Serve()
    {
        try
        {
            while (true)
            {
                SealedPagesRequest request;
                nint n = Libc.recv(_session, &request, (nuint)sizeof(SealedPagesRequest), 0);
                if (n < 0 && Libc.LastErrno == Libc.EINTR)
                    continue;
                if (n != sizeof(SealedPagesRequest))
                    return; // the process closed its end (or said nonsense)
                SealedPagesAnswer answer = default;
                if (request.Count > 0 && request.Count <= WindowPages && request.FirstPage >= 0)
                    answer.Opened = _key.OpenPages(request.FirstPage, request.Count, (byte*)_window);
                if (Libc.send(_session, &answer, (nuint)sizeof(SealedPagesAnswer), Libc.MSG_NOSIGNAL) != sizeof(SealedPagesAnswer))
                    return;
            }
        }
        finally
        {
            Libc.memset((void*)_window, 0, (nuint)(WindowPages * Paging.Userfaultfd.PageSize));
            Libc.munmap(_window, (nuint)(WindowPages * Paging.Userfaultfd.PageSize));
            Libc.close(_session);
            _key.Dispose();
            Ended(_pid);
        }
    }
}
