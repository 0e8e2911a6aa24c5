using Tibet.Core.Files;
using Tibet.Core.Paging;

namespace Tibet.Core.Sealing;

/// <summary>
/// Serves the pages of a map of a sealed model straight from the file, on first touch:
/// the page's ciphertext is read (pread, through the page cache, which only ever holds
/// ciphertext) and turned by the <see cref="SealedFileView"/> into what the program may
/// see. Nothing is decrypted before it is touched, so mapping a model costs nothing, and
/// no plaintext exists outside the resident working set.
/// </summary>
/// <remarks>Runs on the fault path (see <see cref="IPageSource"/>): pread and the
/// view's page decryption allocate nothing and never throw. <c>onTampered</c>, which may
/// do more, runs on the engine's reporter thread (<see cref="ReportTampered"/>).</remarks>
public sealed unsafe class SealedFileSource : IPageSource
{
    private const int PageSize = SealFormat.PageSize;

    private readonly SealedFileView _view;
    private readonly int _fd;
    private readonly long _fileOffset;
    private readonly Action? _onTampered;

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
    }

    /// <inheritdoc/>
    public PageVerdict Fill(long pageIndex, Span<byte> page)
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
    /// <remarks>The run's ciphertext in one read, then its data pages decrypted in place as
    /// one run (one request when the custodian keeps the key).</remarks>
    public PageVerdict FillRun(long firstPage, int pages, Span<byte> destination)
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
    public void ReportTampered(long pageIndex) => _onTampered?.Invoke();
}
