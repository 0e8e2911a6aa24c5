using Tibet.Core.Interop;
using Tibet.Core.Sealing;

namespace Tibet.Core.Custodian;

/// <summary>
/// A live sealed model's pages, decrypted by the custodian, which keeps the data key: the
/// process's side of a page session (<see cref="SealedPageService"/>). Two ways:
/// <see cref="InstallPages"/> has the custodian install pages of a map straight into this
/// process (the fault path's way, when the custodian took the engine's userfaultfd), and
/// <see cref="OpenPages"/> puts the ciphertext of a run into a lane's part of the shared
/// window, one request decrypts it there, and the plaintext comes back into the caller's
/// buffer (reads, and a forked child's faults); the lane's window is wiped after each run.
/// </summary>
/// <remarks>Allocation-free and malloc-free (the engine's fault handler and its fill worker
/// call it), never throws. Each caller takes a free lane (a connection to its own thread in
/// the custodian), so two callers are served at once; a third waits on a spin lock. A
/// custodian that has gone opens nothing: the pages fail, so a map of them raises SIGBUS
/// and a read fails with EIO, never zeros or ciphertext.</remarks>
internal sealed unsafe class CustodianPageOpener : SealedPageInstaller, ISealedPageOpener, IDisposable
{
    private const int PageSize = SealFormat.PageSize;

    private readonly int[] _lanes;
    private readonly int[] _busy; // per lane: 1 while a caller uses it
    private nint _window;
    private readonly int _windowPages; // per lane
    private volatile bool _gone;
    private readonly bool _installs;

    /// <param name="lanes">This process's ends of the session's lanes (owned from now on).</param>
    /// <param name="windowFd">The window's memfd, <paramref name="windowPages"/> pages per lane (closed here once mapped).</param>
    /// <param name="installs">Whether the session installs pages (the custodian took the engine's userfaultfd).</param>
    /// <exception cref="InvalidOperationException">The window cannot be mapped.</exception>
    public CustodianPageOpener(ReadOnlySpan<int> lanes, int windowFd, int windowPages, bool installs = false)
    {
        _installs = installs;
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
                bool answered = Ask(session, &request, &answer);
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

    /// <inheritdoc/>
    public override bool Installs => _installs;

    /// <inheritdoc/>
    public override bool KeyHolderGone => _gone;

    /// <inheritdoc/>
    /// <remarks>One request per 2 MiB: the custodian installs each request a slice at a
    /// time, so the first pages' threads run again before the rest is decrypted.</remarks>
    public override int InstallPages(long firstPage, int count, nint address, bool writeProtect, out int errno)
    {
        int lane = TakeLane();
        try
        {
            int done = 0;
            errno = 0;
            while (done < count)
            {
                if (_gone)
                {
                    errno = Libc.ECONNABORTED;
                    break;
                }
                int run = Math.Min(count - done, ProcessPageInstaller.MaxRequestPages);
                SealedPagesRequest request = new()
                {
                    FirstPage = firstPage + done,
                    Count = run,
                    Flags = SealedPagesRequest.Install | (writeProtect ? SealedPagesRequest.WriteProtect : 0),
                    Address = address + (nint)done * PageSize,
                };
                SealedPagesAnswer answer = default;
                if (!Ask(_lanes[lane], &request, &answer))
                {
                    _gone = true;
                    errno = Libc.ECONNABORTED;
                    break;
                }
                int installed = Math.Clamp(answer.Opened, 0, run);
                done += installed;
                if (installed < run)
                {
                    errno = answer.Errno != 0 ? answer.Errno : Libc.EIO;
                    break;
                }
            }
            return done;
        }
        finally
        {
            Volatile.Write(ref _busy[lane], 0);
        }
    }

    /// <summary>One request and its answer on a lane; false when the custodian is gone.</summary>
    private static bool Ask(int session, SealedPagesRequest* request, SealedPagesAnswer* answer) =>
        Libc.send(session, request, (nuint)sizeof(SealedPagesRequest), Libc.MSG_NOSIGNAL) == sizeof(SealedPagesRequest)
        && Receive(session, answer);

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
