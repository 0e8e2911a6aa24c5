using Tibet.Core.Interop;
using Tibet.Core.Sealing;

namespace Tibet.Core.Custodian;

/// <summary>
/// The custodian's side of a sealed model's page session: it keeps the model's data key
/// for one process, which sends the ciphertext of data pages through a shared window and
/// gets them back decrypted (<see cref="CustodianPageOpener"/> is the process's side). One
/// thread per session, which ends, destroying the key, when the process closes its end.
/// </summary>
/// <remarks>A long request is split with a second thread of the session's, started at its
/// first long request: each decrypts half. A model map's evicted pages come back through
/// here (Arena.RefetchesSource), a 2 MiB range per request while the program waits, and
/// one thread decrypting alone was half of what the program's own engine does with its
/// fill thread.</remarks>
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

    /// <summary>Requests at least this long are split between two threads.</summary>
    private const int SplitPages = 64;
    // The second half of a split request, handed to the helper thread.
    private Thread? _helper;
    private readonly SemaphoreSlim _helperStart = new(0), _helperDone = new(0);
    private long _helperFirst;
    private int _helperCount, _helperOpened;
    private byte* _helperPages;
    private volatile bool _stopping;

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

    /// <summary>Decrypts a request's pages in place, a long one in two halves at once.
    /// Returns how many opened before the first that failed, as SealedModelKey.OpenPages.</summary>
    private int OpenPages(long firstPage, int count, byte* pages)
    {
        if (count < SplitPages || Environment.ProcessorCount < 2 || !HelperRunning())
            return _key.OpenPages(firstPage, count, pages);
        int half = count / 2;
        _helperFirst = firstPage + half;
        _helperCount = count - half;
        _helperPages = pages + (long)half * SealFormat.PageSize;
        _helperStart.Release();
        int opened = _key.OpenPages(firstPage, half, pages);
        _helperDone.Wait();
        if (opened == half)
            return half + _helperOpened;
        // Pages after a failed one are never handed out: wipe what the helper opened.
        Libc.memset(pages + (long)half * SealFormat.PageSize, 0, (nuint)((long)(count - half) * SealFormat.PageSize));
        return opened;
    }

    private bool HelperRunning()
    {
        if (_helper != null)
            return true;
        try
        {
            var helper = new Thread(HelpServe) { IsBackground = true, Name = $"tibet-sealed+ {_pid}" };
            helper.Start();
            _helper = helper;
            return true;
        }
        catch (Exception e) when (e is OutOfMemoryException or ThreadStartException)
        {
            return false; // no second thread: one decrypts it all
        }
    }

    private void HelpServe()
    {
        while (true)
        {
            _helperStart.Wait();
            if (_stopping)
                return;
            _helperOpened = _key.OpenPages(_helperFirst, _helperCount, _helperPages);
            _helperDone.Release();
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
                    answer.Opened = OpenPages(request.FirstPage, request.Count, (byte*)_window);
                if (Libc.send(_session, &answer, (nuint)sizeof(SealedPagesAnswer), Libc.MSG_NOSIGNAL) != sizeof(SealedPagesAnswer))
                    return;
            }
        }
        finally
        {
            _stopping = true;
            if (_helper != null)
            {
                _helperStart.Release();
                _helper.Join(); // before the key goes
            }
            Libc.memset((void*)_window, 0, (nuint)(WindowPages * Paging.Userfaultfd.PageSize));
            Libc.munmap(_window, (nuint)(WindowPages * Paging.Userfaultfd.PageSize));
            Libc.close(_session);
            _key.Dispose();
            Ended(_pid);
        }
    }
}
