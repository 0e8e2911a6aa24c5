using Tibet.Core.Interop;
using Tibet.Core.Sealing;

namespace Tibet.Core.Custodian;

/// <summary>
/// The custodian's side of a sealed model's page session: it keeps the model's data key
/// for one process (<see cref="CustodianPageOpener"/> is the process's side), installs the
/// pages of the process's maps of the model into it (<see cref="ProcessPageInstaller"/>,
/// when the process sent its engine's userfaultfd), and decrypts the ciphertext the
/// process puts into a shared window (its reads of the file, its forked children's
/// faults). The session has <see cref="Lanes"/> lanes, each a connection, a thread and its own part of
/// the window, so that two threads of the process (its fault handler and its fill worker)
/// have pages decrypted at once. It ends, destroying the key, when the process has closed
/// every lane.
/// </summary>
/// <remarks>Why lanes: a model map's evicted pages come back through here (Arena.
/// RefetchesSource), and with one lane the fill worker's requests queued behind the
/// handler's: llama.cpp at half budget ran at 9 tokens/s, against 16.5 when the program
/// held the key and both threads decrypted.</remarks>
internal sealed unsafe class SealedPageService
{
    /// <summary>Pages per request: a 2 MiB range of a model map in one round trip.</summary>
    public const int WindowPages = 512;

    /// <summary>Lanes per session: the window holds <see cref="WindowPages"/> per lane.</summary>
    public const int Lanes = 2;

    /// <summary>Sessions at once, in all and per process: each holds a thread per lane and
    /// a locked 4 MiB window, and a process holding the grant could otherwise ask for them
    /// until the custodian, which serves the whole tree, runs out (a process asks once per
    /// sealed file it opens). 128 sessions: 256 threads, 512 MiB of windows, 32 MiB of
    /// install buffers.</summary>
    public const int MaxSessions = 128, MaxSessionsPerProcess = 64;

    private const nuint LaneBytes = WindowPages * (nuint)SealFormat.PageSize;

    private static readonly Lock s_count = new();
    private static readonly Dictionary<int, int> s_byPid = [];
    private static int s_total;
    private readonly int _pid;

    private readonly SealedModelKey _key;
    private readonly int[] _lanes;
    private readonly nint _window;
    private readonly ProcessPageInstaller? _installer;
    private int _running;

    private SealedPageService(SealedModelKey key, int[] lanes, nint window, int pid, ProcessPageInstaller? installer)
    {
        _key = key;
        _lanes = lanes;
        _window = window;
        _pid = pid;
        _installer = installer;
        _running = lanes.Length;
    }

    /// <summary>
    /// Starts a session of process <paramref name="pid"/> for <paramref name="key"/> (owned
    /// from now on, once this returns): returns the process's ends of the lanes and the
    /// window's memfd (<see cref="Lanes"/> × <see cref="WindowPages"/> pages), for the
    /// caller to hand over and close. With <paramref name="installer"/> (owned from now on,
    /// whatever happens), the session also installs pages into the process.
    /// </summary>
    /// <exception cref="InvalidOperationException">Too many sessions, or no socket, window or thread for one.</exception>
    public static PageSession Start(SealedModelKey key, int pid, ProcessPageInstaller? installer = null)
    {
        lock (s_count)
        {
            int mine = s_byPid.GetValueOrDefault(pid);
            if (s_total >= MaxSessions || mine >= MaxSessionsPerProcess)
            {
                installer?.Dispose();
                throw new InvalidOperationException($"{s_total} sessions are open, {mine} of them pid {pid}'s (at most {MaxSessions}, {MaxSessionsPerProcess} per process)");
            }
            s_total++;
            s_byPid[pid] = mine + 1;
        }
        int[] ours = [-1, -1], theirs = [-1, -1];
        nint window = 0;
        int memfd = -1;
        int started = 0;
        SealedPageService? service = null;
        try
        {
            int* pair = stackalloc int[2];
            for (int lane = 0; lane < Lanes; lane++)
            {
                if (Libc.socketpair(Libc.AF_UNIX, Libc.SOCK_SEQPACKET | Libc.SOCK_CLOEXEC, 0, pair) != 0)
                    throw new InvalidOperationException($"socketpair failed: {Libc.Describe(Libc.LastErrno)}");
                ours[lane] = HighDescriptors.MoveAbove(pair[0]);
                theirs[lane] = pair[1];
            }
            window = SharedWindow.Create("tibet-sealed-pages", Lanes * WindowPages, out memfd);
            service = new SealedPageService(key, ours, window, pid, installer);
            for (; started < Lanes; started++)
            {
                int lane = started;
                new Thread(() => service.Serve(lane)) { IsBackground = true, Name = $"tibet-sealed {pid}/{lane}" }.Start();
            }
            return new PageSession(theirs[0], theirs[1], memfd);
        }
        catch (Exception e)
        {
            if (started > 0)
            {
                // The running lanes end when their connections do (closed here: nothing was
                // handed out, so none of them is decrypting), and the last one gives the
                // window and the session back. The lanes that never started are counted
                // out now. The key is the caller's again: it disposes it (Dispose is
                // idempotent, and a lane disposes it only as the last one ends).
                for (int lane = 0; lane < Lanes; lane++)
                    if (theirs[lane] >= 0) Libc.close(theirs[lane]);
                for (int lane = started; lane < Lanes; lane++)
                    Libc.close(ours[lane]);
                if (memfd >= 0) Libc.close(memfd);
                if (Interlocked.Add(ref service!._running, started - Lanes) == 0)
                    service.EndSession();
                throw e as InvalidOperationException ?? new InvalidOperationException(e.Message, e);
            }
            if (window != 0) Libc.munmap(window, Lanes * LaneBytes);
            if (memfd >= 0) Libc.close(memfd);
            installer?.Dispose();
            for (int lane = 0; lane < Lanes; lane++)
            {
                if (ours[lane] >= 0) Libc.close(ours[lane]);
                if (theirs[lane] >= 0) Libc.close(theirs[lane]);
            }
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

    private void Serve(int lane)
    {
        int session = _lanes[lane];
        byte* window = (byte*)(_window + (nint)((nuint)lane * LaneBytes));
        try
        {
            while (true)
            {
                SealedPagesRequest request;
                nint n = Libc.recv(session, &request, (nuint)sizeof(SealedPagesRequest), 0);
                if (n < 0 && Libc.LastErrno == Libc.EINTR)
                    continue;
                if (n != sizeof(SealedPagesRequest))
                    return; // the process closed its end (or said nonsense)
                SealedPagesAnswer answer = default;
                if ((request.Flags & SealedPagesRequest.Install) != 0)
                {
                    if (_installer == null)
                        answer.Errno = Libc.ENOSYS;
                    else
                        answer.Opened = _installer.Install(lane, _key, request.FirstPage, request.Count, (nint)request.Address,
                            (request.Flags & SealedPagesRequest.WriteProtect) != 0, out answer.Errno);
                }
                else if (request.Count > 0 && request.Count <= WindowPages && request.FirstPage >= 0)
                    answer.Opened = _key.OpenPages(request.FirstPage, request.Count, window);
                else
                    answer.Errno = Libc.EINVAL;
                if (Libc.send(session, &answer, (nuint)sizeof(SealedPagesAnswer), Libc.MSG_NOSIGNAL) != sizeof(SealedPagesAnswer))
                    return;
            }
        }
        finally
        {
            Libc.memset(window, 0, LaneBytes);
            Libc.close(session);
            if (Interlocked.Decrement(ref _running) == 0)
                EndSession(); // the last lane: nothing decrypts any more
        }
    }

    private void EndSession()
    {
        Libc.munmap(_window, Lanes * LaneBytes);
        _installer?.Dispose();
        _key.Dispose();
        Ended(_pid);
    }
}

/// <summary>The process's ends of a page session's lanes, and its window's memfd.</summary>
internal readonly record struct PageSession(int Lane0, int Lane1, int Window)
{
    public static PageSession None => new(-1, -1, -1);

    public bool Exists => Lane0 >= 0;

    /// <summary>The descriptors as they are sent: the lanes, then the window.</summary>
    public int[] Descriptors => [Lane0, Lane1, Window];

    public void Close()
    {
        if (Lane0 >= 0) Libc.close(Lane0);
        if (Lane1 >= 0) Libc.close(Lane1);
        if (Window >= 0) Libc.close(Window);
    }
}
