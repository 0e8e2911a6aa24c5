using Tibet.Core.Interop;
using Tibet.Core.Sealing;

namespace Tibet.Core.Custodian;

/// <summary>
/// A live sealed model's pages, decrypted by the custodian, which keeps the data key: the
/// process's side of a page session (<see cref="SealedPageService"/>). The ciphertext of a
/// run goes into the shared window, one request decrypts it there, and the plaintext comes
/// back into the caller's buffer; the window is wiped after each run.
/// </summary>
/// <remarks>Allocation-free and malloc-free (the engine's fault handler calls it), never
/// throws. One run at a time: callers wait on a spin lock. A custodian that has gone opens
/// nothing: the pages fail, so a map of them raises SIGBUS and a read fails with EIO,
/// never zeros or ciphertext.</remarks>
internal sealed unsafe class CustodianPageOpener : ISealedPageOpener, IDisposable
{
    private const int PageSize = SealFormat.PageSize;

    private readonly int _session;
    private nint _window;
    private readonly int _windowPages;
    private int _busy;
    private bool _gone;

    /// <param name="session">This process's end of the session (owned from now on).</param>
    /// <param name="windowFd">The window's memfd (closed here once mapped).</param>
    /// <exception cref="InvalidOperationException">The window cannot be mapped.</exception>
    public CustodianPageOpener(int session, int windowFd, int windowPages)
    {
        _session = HighDescriptors.MoveAbove(session);
        _windowPages = windowPages;
        _window = SharedWindow.Map(windowFd, (nuint)(windowPages * PageSize));
        int errno = Libc.LastErrno;
        Libc.close(windowFd);
        if (_window == Libc.MAP_FAILED)
        {
            Libc.close(_session);
            throw new InvalidOperationException($"the custodian's page window cannot be mapped: {Libc.Describe(errno)}");
        }
    }

    /// <inheritdoc/>
    public int OpenPages(long firstPage, int count, byte* pages)
    {
        while (Interlocked.CompareExchange(ref _busy, 1, 0) != 0)
            Thread.Yield();
        try
        {
            if (_gone)
            {
                Libc.memset(pages, 0, PageSize);
                return 0;
            }
            int done = 0;
            while (done < count && !_gone)
            {
                int run = Math.Min(count - done, _windowPages);
                nuint bytes = (nuint)(run * PageSize);
                Libc.memcpy((void*)_window, pages + (long)done * PageSize, bytes);
                SealedPagesRequest request = new() { FirstPage = firstPage + done, Count = run };
                SealedPagesAnswer answer = default;
                bool answered = Libc.send(_session, &request, (nuint)sizeof(SealedPagesRequest), Libc.MSG_NOSIGNAL) == sizeof(SealedPagesRequest)
                                && Receive(&answer);
                int opened = answered ? Math.Clamp(answer.Opened, 0, run) : 0;
                _gone |= !answered;
                Libc.memcpy(pages + (long)done * PageSize, (void*)_window, (nuint)(opened * PageSize));
                Libc.memset((void*)_window, 0, bytes);
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
            Volatile.Write(ref _busy, 0);
        }
    }

    private bool Receive(SealedPagesAnswer* answer)
    {
        while (true)
        {
            nint n = Libc.recv(_session, answer, (nuint)sizeof(SealedPagesAnswer), 0);
            if (n == sizeof(SealedPagesAnswer))
                return true;
            if (n < 0 && Libc.LastErrno == Libc.EINTR)
                continue;
            return false;
        }
    }

    public void Dispose()
    {
        while (Interlocked.CompareExchange(ref _busy, 1, 0) != 0)
            Thread.Yield();
        if (!_gone || _window != 0)
        {
            _gone = true;
            Libc.munmap(_window, (nuint)(_windowPages * PageSize));
            Libc.close(_session);
            _window = 0;
        }
        Volatile.Write(ref _busy, 0); // later calls find it gone: their pages fail
    }
}
