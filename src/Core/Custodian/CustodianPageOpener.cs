using Tibet.Core.Interop;
using Tibet.Core.Sealing;

namespace Tibet.Core.Custodian;

/// <summary>
/// A live sealed model's pages, decrypted by the custodian, which keeps the data key: the
/// process's side of a page session (<see cref="SealedPageService"/>). The ciphertext of a
/// run goes into a lane's part of the shared window, one request decrypts it there, and the
/// plaintext comes back into the caller's buffer; the lane's window is wiped after each run.
/// </summary>
/// <remarks>Allocation-free and malloc-free (the engine's fault handler and its fill worker
/// call it), never throws. Each caller takes a free lane (a connection to its own thread in
/// the custodian), so two callers are served at once; a third waits on a spin lock. A
/// custodian that has gone opens nothing: the pages fail, so a map of them raises SIGBUS
/// and a read fails with EIO, never zeros or ciphertext.</remarks>
internal sealed unsafe class CustodianPageOpener : ISealedPageOpener, IDisposable
{
    private const int PageSize = SealFormat.PageSize;

    private readonly int[] _lanes;
    private readonly int[] _busy; // per lane: 1 while a caller uses it
    private nint _window;
    private readonly int _windowPages; // per lane
    private volatile bool _gone;

    /// <param name="lanes">This process's ends of the session's lanes (owned from now on).</param>
    /// <param name="windowFd">The window's memfd, <paramref name="windowPages"/> pages per lane (closed here once mapped).</param>
    /// <exception cref="InvalidOperationException">The window cannot be mapped.</exception>
    public CustodianPageOpener(ReadOnlySpan<int> lanes, int windowFd, int windowPages)
    {
        _lanes = new int[lanes.Length];
        for (int i = 0; i < lanes.Length; i++)
            _lanes[i] = HighDescriptors.MoveAbove(lanes[i]);
        _busy = new int[lanes.Length];
        _windowPages = windowPages;
        _window = SharedWindow.Map(windowFd, (nuint)(lanes.Length * windowPages * PageSize));
        int errno = Libc.LastErrno;
        Libc.close(windowFd);
        if (_window == Libc.MAP_FAILED)
        {
            foreach (int lane in _lanes)
                Libc.close(lane);
            throw new InvalidOperationException($"the custodian's page window cannot be mapped: {Libc.Describe(errno)}");
        }
    }

    /// <inheritdoc/>
    public int OpenPages(long firstPage, int count, byte* pages)
    {
        int lane = TakeLane();
        try
        {
            if (_gone)
            {
                Libc.memset(pages, 0, PageSize);
                return 0;
            }
            int session = _lanes[lane];
            byte* window = (byte*)_window + (long)lane * _windowPages * PageSize;
            int done = 0;
            while (done < count && !_gone)
            {
                int run = Math.Min(count - done, _windowPages);
                nuint bytes = (nuint)(run * PageSize);
                Libc.memcpy(window, pages + (long)done * PageSize, bytes);
                SealedPagesRequest request = new() { FirstPage = firstPage + done, Count = run };
                SealedPagesAnswer answer = default;
                bool answered = Libc.send(session, &request, (nuint)sizeof(SealedPagesRequest), Libc.MSG_NOSIGNAL) == sizeof(SealedPagesRequest)
                                && Receive(session, &answer);
                int opened = answered ? Math.Clamp(answer.Opened, 0, run) : 0;
                if (!answered)
                    _gone = true;
                Libc.memcpy(pages + (long)done * PageSize, window, (nuint)(opened * PageSize));
                Libc.memset(window, 0, bytes);
                done += opened;
                if (opened < run)
                    break;
            }
            if (done < count)
                Libc.memset(pages + (long)done * PageSize, 0, PageSize); // the page that failed
            return done;
        }
        finally
        {
            Volatile.Write(ref _busy[lane], 0);
        }
    }

    /// <summary>A free lane, taken; spins while every lane is in use.</summary>
    private int TakeLane()
    {
        while (true)
        {
            for (int lane = 0; lane < _busy.Length; lane++)
                if (Interlocked.CompareExchange(ref _busy[lane], 1, 0) == 0)
                    return lane;
            Thread.Yield();
        }
    }

    private static bool Receive(int session, SealedPagesAnswer* answer)
    {
        while (true)
        {
            nint n = Libc.recv(session, answer, (nuint)sizeof(SealedPagesAnswer), 0);
            if (n == sizeof(SealedPagesAnswer))
                return true;
            if (n < 0 && Libc.LastErrno == Libc.EINTR)
                continue;
            return false;
        }
    }

    public void Dispose()
    {
        // Every lane, so that no caller is inside; later calls find the session gone.
        for (int lane = 0; lane < _busy.Length; lane++)
            while (Interlocked.CompareExchange(ref _busy[lane], 1, 0) != 0)
                Thread.Yield();
        if (_window != 0)
        {
            _gone = true;
            Libc.munmap(_window, (nuint)(_lanes.Length * _windowPages * PageSize));
            foreach (int lane in _lanes)
                Libc.close(lane);
            _window = 0;
        }
        for (int lane = 0; lane < _busy.Length; lane++)
            Volatile.Write(ref _busy[lane], 0);
    }
}
