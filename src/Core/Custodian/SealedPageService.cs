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

    private readonly SealedModelKey _key;
    private readonly int _session;
    private readonly nint _window;

    private SealedPageService(SealedModelKey key, int session, nint window)
    {
        _key = key;
        _session = session;
        _window = window;
    }

    /// <summary>
    /// Starts a session for <paramref name="key"/> (owned from now on): returns the
    /// process's end of the connection and the window's memfd, for the caller to hand over
    /// and close.
    /// </summary>
    public static (int Session, int Window) Start(SealedModelKey key, string label)
    {
        int* pair = stackalloc int[2];
        if (Libc.socketpair(Libc.AF_UNIX, Libc.SOCK_SEQPACKET | Libc.SOCK_CLOEXEC, 0, pair) != 0)
            throw new InvalidOperationException($"socketpair failed: {Libc.Describe(Libc.LastErrno)}");
        nint window;
        int memfd;
        try
        {
            window = SharedWindow.Create("tibet-sealed-pages", WindowPages, out memfd);
        }
        catch
        {
            Libc.close(pair[0]);
            Libc.close(pair[1]);
            throw;
        }
        var service = new SealedPageService(key, HighDescriptors.MoveAbove(pair[0]), window);
        new Thread(service.Serve) { IsBackground = true, Name = "tibet-sealed " + label }.Start();
        return (pair[1], memfd);
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
        }
    }
}
