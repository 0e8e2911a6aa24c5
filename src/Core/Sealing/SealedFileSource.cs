using Tibet.Core.Files;
using Tibet.Core.Interop;
using Tibet.Core.Paging;
using Tibet.Core.Storage;

namespace Tibet.Core.Sealing;

/// <summary>
/// Serves the pages of a map of a sealed model straight from the file, on first touch:
/// the pages' ciphertext is read (pread, through the page cache, which only ever holds
/// ciphertext) and turned by the <see cref="SealedFileView"/> into what the program may
/// see. Nothing is decrypted before it is touched, so mapping a model costs nothing, and
/// no plaintext exists outside the resident working set.
/// </summary>
/// <remarks>
/// <para>A live model is read and decrypted a window at a time (<see cref="ReadAheadWindow"/>):
/// the run the handler announced (<see cref="BeginRun"/>, up to a 2 MiB range), or at least
/// 32 pages. One read, and one call of the key for the
/// whole window, which matters when the key is the custodian's: one request per range
/// instead of one per page. The window is locked and excluded from core dumps; each page
/// is wiped from it when handed out, and the rest when the fault has been served.</para>
/// <para>Runs on the fault path (see <see cref="PageSource"/>): pread and the view's
/// decryption allocate nothing and never throw. <c>onTampered</c>, which may do more,
/// runs on the engine's reporter thread (<see cref="ReportTampered"/>).</para>
/// </remarks>
public sealed unsafe class SealedFileSource : PageSource
{
    private const int PageSize = SealFormat.PageSize;

    private readonly SealedFileView _view;
    private readonly int _fd;
    private readonly long _fileOffset;
    private readonly Action? _onTampered;
    // Live models only: decrypted pages read ahead (null: dead or refused, nothing to decrypt).
    private readonly ReadAheadWindow? _window;
    // Live models whose key the custodian keeps and that install their pages themselves.
    private readonly SealedPageInstaller? _installer;
    private long _failedPage = -1; // the page after the window's good ones failed authentication
    private int _references = 1;

    /// <param name="view">What the process may see of the file.</param>
    /// <param name="fd">A read-only descriptor of the file that outlives the arena.</param>
    /// <param name="fileOffset">The file offset of the arena's first page (the map's offset).</param>
    /// <param name="onTampered">Called (off the fault path) when a page failed authentication or could not be read.</param>
    public SealedFileSource(SealedFileView view, int fd, long fileOffset, Action? onTampered = null)
    {
        ArgumentNullException.ThrowIfNull(view);
        if (fileOffset < 0 || fileOffset % PageSize != 0)
            throw new ArgumentException("The file offset of a mapping is page-aligned.", nameof(fileOffset));
        _view = view;
        _fd = fd;
        _fileOffset = fileOffset;
        _onTampered = onTampered;
        PositionalRead.Prepare(fd);
        if (view.IsLive)
            _window = new ReadAheadWindow();
        _installer = view.Installer;
    }

    /// <inheritdoc/>
    public override PageVerdict Fill(long pageIndex, Span<byte> page)
    {
        if (Volatile.Read(ref _references) <= 0)
            return PageVerdict.Tampered; // released: nothing can be served
        if (_window == null)
            return FillAlone(pageIndex, page); // dead or refused: zeros and public pages, no key
        if (pageIndex == _failedPage)
        {
            page.Clear();
            return PageVerdict.Tampered;
        }
        // A page asked for again (its first injection was abandoned) is read afresh.
        if (!_window.Holds(pageIndex))
        {
            PageVerdict refilled = Refill(_window, pageIndex);
            if (refilled != PageVerdict.Keep)
            {
                page.Clear();
                return refilled;
            }
        }
        _window.HandOut(pageIndex, page);
        return PageVerdict.Keep;
    }

    /// <summary>One page read and filtered on its own (a view without a key decrypts nothing).</summary>
    private PageVerdict FillAlone(long pageIndex, Span<byte> page)
    {
        long at = _fileOffset + pageIndex * PageSize;
        long done;
        fixed (byte* p = page)
            done = PositionalRead.Fully(_fd, p, PageSize, at);
        if (done < 0)
            return PageVerdict.Tampered; // an I/O error: the kernel would raise SIGBUS for a file map too
        page[(int)done..].Clear(); // past the end of the file: zeros
        return _view.Filter(at, page);
    }

    /// <inheritdoc/>
    public override void BeginRun(long firstPage, int pages) => _window?.Announce(firstPage, pages);

    /// <inheritdoc/>
    /// <remarks>The run's read and its decryption (the custodian's round trip, when it keeps
    /// the key) happen here, without the engine lock.</remarks>
    public override void Prefetch(long firstPage)
    {
        if (_window != null && Volatile.Read(ref _references) > 0 && !_window.Holds(firstPage) && firstPage != _failedPage)
            Refill(_window, firstPage);
    }

    /// <summary>
    /// Reads and decrypts the window that holds <paramref name="pageIndex"/>: the announced
    /// run around it, else <see cref="DefaultWindowPages"/> from it. Keep; Zero when the
    /// page lies wholly past the end of the file; Tampered on an I/O error or when the page
    /// itself failed authentication (pages after a failed one are read again when asked for).
    /// </summary>
    private PageVerdict Refill(ReadAheadWindow window, long pageIndex)
    {
        var (first, pages) = window.Plan(pageIndex);
        _failedPage = -1;
        int bytes = pages * PageSize;
        long at = _fileOffset + first * PageSize;
        long done = PositionalRead.Fully(_fd, window.Buffer, bytes, at);
        if (done <= (pageIndex - first) * PageSize)
        {
            // An error, or the page lies wholly past the end of the file.
            Libc.memset(window.Buffer, 0, (nuint)bytes);
            return done < 0 ? PageVerdict.Tampered : PageVerdict.Zero;
        }
        int read = (int)((done + PageSize - 1) / PageSize); // the last one zero-padded past the end
        int fine = _view.FilterRun(at, read, window.Buffer, out _);
        if (fine < read)
        {
            // Pages after the failed one were not decrypted: never handed out from here.
            Libc.memset(window.Buffer + (long)fine * PageSize, 0, (nuint)((long)(read - fine) * PageSize));
            _failedPage = first + fine;
        }
        window.Filled(first, fine);
        if (pageIndex == _failedPage)
            return PageVerdict.Tampered;
        if (pageIndex >= first + fine)
        {
            // Past a failed page: read again from here.
            window.ForgetRun();
            return Refill(window, pageIndex);
        }
        return PageVerdict.Keep;
    }

    /// <inheritdoc/>
    /// <remarks>A live model's: FillRun reads with its own pread into the caller's buffer and
    /// decrypts there; the key (SealedModelKey, or the custodian's session, a lane per
    /// caller) takes concurrent calls. Nothing of the read-ahead window is touched.</remarks>
    public override bool FillsRunsConcurrently => _window != null;

    /// <inheritdoc/>
    /// <remarks>The run's ciphertext in one read, then its data pages decrypted in place as
    /// one run (one request when the custodian keeps the key).</remarks>
    public override PageVerdict FillRun(long firstPage, int pages, Span<byte> destination)
    {
        long at = _fileOffset + firstPage * PageSize;
        if (PositionalRead.FillFrom(_fd, destination[..(pages * PageSize)], at) < 0)
            return PageVerdict.Tampered;
        int fine;
        bool any;
        fixed (byte* p = destination)
            fine = _view.FilterRun(at, pages, p, out any);
        if (fine < pages)
            return PageVerdict.Tampered;
        return any ? PageVerdict.Keep : PageVerdict.Zero;
    }

    /// <inheritdoc/>
    /// <remarks>A live model whose key the custodian keeps, when it took the engine's userfaultfd.</remarks>
    public override bool InstallsRuns => _installer != null;

    /// <inheritdoc/>
    /// <remarks>Data pages only: a run that starts in the header or the trailer (public,
    /// served as stored) or past the end of the file is left to Fill (EOPNOTSUPP), and one
    /// that reaches into the trailer is installed up to it.</remarks>
    public override int InstallRun(long firstPage, int pages, nint address, bool writeProtect, out int errno)
    {
        long at = _fileOffset + firstPage * PageSize;
        if (_installer == null || Volatile.Read(ref _references) <= 0 || pages <= 0
            || at < _view.DataOffset || at >= _view.DataEnd)
        {
            errno = Libc.EOPNOTSUPP;
            return 0;
        }
        int data = (int)Math.Min(pages, (_view.DataEnd - at) / PageSize);
        int installed = _installer.InstallPages((at - _view.DataOffset) / PageSize, data, address, writeProtect, out errno);
        if (installed == data && data < pages)
            errno = Libc.EOPNOTSUPP; // the trailer's pages: Fill's
        return installed;
    }

    /// <summary>Wipes the pages decrypted ahead that no one asked for.</summary>
    public override void EndOfFault()
    {
        _window?.EndOfFault();
        _failedPage = -1;
    }

    /// <inheritdoc/>
    public override void ReportTampered(long pageIndex) => _onTampered?.Invoke();

    /// <inheritdoc/>
    public override string? RefusalReason(long pageIndex) => _view.KeyHolderGone
        ? "the custodian, which keeps the model's key, has ended: its pages can no longer be decrypted"
        : null;

    public override void Retain() => Interlocked.Increment(ref _references);

    public override void Release()
    {
        if (Interlocked.Decrement(ref _references) == 0)
            _window?.Dispose();
    }
}
