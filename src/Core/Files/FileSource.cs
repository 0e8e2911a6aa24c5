using Tibet.Core.Interop;
using Tibet.Core.Paging;
using Tibet.Core.Storage;

namespace Tibet.Core.Files;

/// <summary>
/// Serves the pages of a map of a plain file from the file itself, on first touch, so
/// that mapping a model costs nothing up front and its untouched pages take no memory.
/// The file is read through tibet's own descriptor with O_DIRECT, so its plaintext does
/// not pass through the page cache.
/// </summary>
/// <remarks>
/// <para>Reads go in windows, because the fault handler asks for a read-ahead run page by
/// page and O_DIRECT reads of single pages are slow: the run the handler announced
/// (<see cref="BeginRun"/>, up to <see cref="WindowPages"/> pages, so a model streamed in
/// at load is read 2 MiB at a time), and at least <see cref="DefaultWindowPages"/>. The window is
/// locked and excluded from core dumps; each page is wiped from it as soon as it is handed
/// out, and the rest when the fault has been served, so no plaintext stays here between
/// faults.</para>
/// <para>Where the file system refuses O_DIRECT the file is read normally and each window
/// dropped from the page cache (POSIX_FADV_DONTNEED) right after.</para>
/// <para>Fill runs on the fault path under the engine lock: no allocation, no throwing.</para>
/// </remarks>
public sealed unsafe class FileSource : PageSource
{
    /// <summary>The most pages read from the file at once (2 MiB).</summary>
    public const int WindowPages = ReadAheadWindow.MaxPages;

    /// <summary>Pages read at once when no run was announced.</summary>
    public const int DefaultWindowPages = ReadAheadWindow.DefaultPages;

    private const int PageSize = Userfaultfd.PageSize;

    private readonly int _fd;
    private readonly bool _direct;
    private readonly long _fileOffset;
    private readonly ReadAheadWindow _window;
    private int _references = 1;

    private FileSource(int fd, bool direct, long fileOffset, ReadAheadWindow window)
    {
        _fd = fd;
        _direct = direct;
        _fileOffset = fileOffset;
        _window = window;
    }

    /// <summary>True when the file is read with O_DIRECT.</summary>
    public bool BypassesPageCache => _direct;

    /// <summary>Pages of the file the kernel still cached when the map was served, after
    /// every drop had been tried (see <see cref="PageCacheDrop"/>): 0 normally; more when
    /// another process maps the file or it is being written back; -1 when it cannot be told.</summary>
    public long PagesLeftInPageCache { get; private init; }

    /// <summary>A source for a map of the file open as <paramref name="fd"/> (the program's
    /// descriptor) from the page-aligned <paramref name="offset"/>. Drops whatever the page
    /// cache holds of the file, such as a header the program read before mapping it and
    /// the readahead that read started, and waits until the drop has taken.</summary>
    /// <exception cref="IOException">The file cannot be reopened.</exception>
    public static FileSource Open(int fd, long offset)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        if ((offset & (PageSize - 1)) != 0)
            throw new ArgumentException("The file offset of a mapping is page-aligned.", nameof(offset));
        int own = OpenPrivately(fd, out bool direct);
        ReadAheadWindow? window = null;
        try
        {
            window = new ReadAheadWindow();
            // Whatever the program read itself (the header, and the readahead its read
            // started) leaves the page cache now, including reads still in flight.
            long leftCached = PageCacheDrop.DropAndWait(own, PageCacheDrop.DefaultDeadline);
            PositionalRead.Prepare(own);
            return new FileSource(own, direct, offset, window) { PagesLeftInPageCache = leftCached };
        }
        catch
        {
            window?.Dispose();
            Libc.close(own);
            throw;
        }
    }

    /// <inheritdoc/>
    public override PageVerdict Fill(long pageIndex, Span<byte> page)
    {
        if (Volatile.Read(ref _references) <= 0)
            return PageVerdict.Tampered; // released: nothing can be served
        // A page asked for again (its first injection was abandoned) is read afresh.
        if (!_window.Holds(pageIndex))
        {
            PageVerdict refilled = Refill(pageIndex);
            if (refilled != PageVerdict.Keep)
            {
                page.Clear();
                return refilled;
            }
        }
        _window.HandOut(pageIndex, page);
        return PageVerdict.Keep;
    }

    /// <inheritdoc/>
    public override void BeginRun(long firstPage, int pages) => _window.Announce(firstPage, pages);

    /// <inheritdoc/>
    public override void Prefetch(long firstPage)
    {
        if (Volatile.Read(ref _references) > 0 && !_window.Holds(firstPage))
            Refill(firstPage);
    }

    /// <inheritdoc/>
    /// <remarks>One read straight into the destination (O_DIRECT where the file system
    /// allows it: the destination is page-aligned and so is the offset), no window.</remarks>
    public override PageVerdict FillRun(long firstPage, int pages, Span<byte> destination)
    {
        if (Volatile.Read(ref _references) <= 0)
            return PageVerdict.Tampered;
        int length = pages * PageSize;
        long at = _fileOffset + firstPage * PageSize;
        long done = PositionalRead.FillFrom(_fd, destination[..length], at);
        if (done < 0)
            return PageVerdict.Tampered;
        if (!_direct)
            Libc.posix_fadvise(_fd, at, length, Libc.POSIX_FADV_DONTNEED);
        return done == 0 ? PageVerdict.Zero : PageVerdict.Keep;
    }

    /// <summary>Wipes the pages read ahead that no one asked for.</summary>
    public override void EndOfFault() => _window.EndOfFault();

    public override void Retain() => Interlocked.Increment(ref _references);

    public override void Release()
    {
        if (Interlocked.Decrement(ref _references) != 0)
            return;
        _window.Dispose();
        Libc.close(_fd);
    }

    /// <summary>
    /// A read-only descriptor of tibet's own for the file open as <paramref name="fd"/>,
    /// with O_DIRECT where the file system allows it. Reopening matters: O_DIRECT set on
    /// the program's own descriptor would apply to the program's reads too (they share the
    /// open file description) and break its unaligned freads.
    /// </summary>
    private static int OpenPrivately(int fd, out bool direct)
    {
        string path = $"/proc/self/fd/{fd}";
        int own = Libc.open(path, Libc.O_RDONLY | Libc.O_CLOEXEC | Libc.O_DIRECT);
        direct = own >= 0;
        if (own < 0 && Libc.LastErrno == Libc.EINVAL)
            own = Libc.open(path, Libc.O_RDONLY | Libc.O_CLOEXEC); // no O_DIRECT on this file system
        if (own < 0)
            throw new IOException($"cannot reopen descriptor {fd} through {path}: {Libc.Describe(Libc.LastErrno)} (is /proc mounted?)");
        return HighDescriptors.MoveAbove(own);
    }

    /// <summary>Reads the window that starts at <paramref name="pageIndex"/>: Keep, Zero when
    /// the page lies wholly past the end of the file, Tampered on an I/O error (a file map
    /// raises SIGBUS for those too).</summary>
    private PageVerdict Refill(long pageIndex)
    {
        // Whatever the last window held that was not handed out is wiped with it.
        var (first, pages) = _window.Plan(pageIndex);
        int bytes = pages * PageSize;
        long at = _fileOffset + first * PageSize;
        long done = PositionalRead.Fully(_fd, _window.Buffer, bytes, at);
        if (!_direct)
            Libc.posix_fadvise(_fd, at, bytes, Libc.POSIX_FADV_DONTNEED);
        if (done <= (pageIndex - first) * PageSize)
        {
            // An error (a partial read may have landed) or the page lies wholly past the
            // end of the file: nothing of this read stays here.
            Libc.memset(_window.Buffer, 0, (nuint)bytes);
            return done < 0 ? PageVerdict.Tampered : PageVerdict.Zero;
        }
        _window.Filled(first, (int)((done + PageSize - 1) / PageSize)); // the last one zero-padded past the end
        return PageVerdict.Keep;
    }
}
