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
public sealed unsafe class FileSource : IPageSource
{
    /// <summary>The most pages read from the file at once (2 MiB).</summary>
    public const int WindowPages = 512;

    /// <summary>Pages read at once when no run was announced.</summary>
    public const int DefaultWindowPages = 32;

    private const int PageSize = Userfaultfd.PageSize;
    private const int WindowBytes = WindowPages * PageSize;

    private readonly int _fd;
    private readonly bool _direct;
    private readonly long _fileOffset;
    private readonly nint _window;
    private long _windowFirst = -1;
    private int _windowPages;
    private readonly ulong[] _handedOut = new ulong[WindowPages / 64]; // bit i: window page i was copied out and wiped
    private long _runFirst = -1;
    private int _runPages;
    private int _references = 1;

    private FileSource(int fd, bool direct, long fileOffset, nint window)
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
        nint window = 0;
        try
        {
            window = KernelMemory.Map(WindowBytes);
            Libc.mlock(window, WindowBytes);
            Libc.madvise(window, WindowBytes, Libc.MADV_DONTDUMP);
            // Whatever the program read itself (the header, and the readahead its read
            // started) leaves the page cache now, including reads still in flight.
            long leftCached = PageCacheDrop.DropAndWait(own, PageCacheDrop.DefaultDeadline);
            PositionalRead.Prepare(own);
            return new FileSource(own, direct, offset, window) { PagesLeftInPageCache = leftCached };
        }
        catch
        {
            if (window != 0)
                KernelMemory.Unmap(window, WindowBytes);
            Libc.close(own);
            throw;
        }
    }

    /// <inheritdoc/>
    public PageVerdict Fill(long pageIndex, Span<byte> page)
    {
        if (Volatile.Read(ref _references) <= 0)
            return PageVerdict.Tampered; // released: nothing can be served
        // A page asked for again (its first injection was abandoned) is read afresh.
        if (pageIndex < _windowFirst || pageIndex >= _windowFirst + _windowPages
            || IsHandedOut((int)(pageIndex - _windowFirst)))
        {
            PageVerdict refilled = Refill(pageIndex);
            if (refilled != PageVerdict.Keep)
            {
                page.Clear();
                return refilled;
            }
        }
        var source = new Span<byte>((byte*)_window + (pageIndex - _windowFirst) * PageSize, PageSize);
        source.CopyTo(page);
        source.Clear(); // handed out: it must not linger here
        int slot = (int)(pageIndex - _windowFirst);
        _handedOut[slot >> 6] |= 1UL << (slot & 63);
        return PageVerdict.Keep;
    }

    /// <inheritdoc/>
    public void BeginRun(long firstPage, int pages)
    {
        _runFirst = firstPage;
        _runPages = pages;
    }

    private bool IsHandedOut(int slot) => (_handedOut[slot >> 6] & (1UL << (slot & 63))) != 0;

    /// <inheritdoc/>
    /// <remarks>One read straight into the destination (O_DIRECT where the file system
    /// allows it: the destination is page-aligned and so is the offset), no window.</remarks>
    public PageVerdict FillRun(long firstPage, int pages, Span<byte> destination)
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
    public void EndOfFault()
    {
        for (int i = 0; i < _windowPages; i++)
            if (!IsHandedOut(i))
                Libc.memset((byte*)_window + (long)i * PageSize, 0, PageSize);
        _windowFirst = -1;
        _windowPages = 0;
        Array.Clear(_handedOut);
        _runFirst = -1;
        _runPages = 0;
    }

    public void Retain() => Interlocked.Increment(ref _references);

    public void Release()
    {
        if (Interlocked.Decrement(ref _references) != 0)
            return;
        Libc.memset((void*)_window, 0, WindowBytes);
        Libc.munmap(_window, WindowBytes);
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
        Libc.memset((void*)_window, 0, (nuint)((long)Math.Max(_windowPages, 0) * PageSize));
        _windowFirst = -1;
        _windowPages = 0;
        Array.Clear(_handedOut);
        // Within the announced run the window is the run (its pages may be asked for in
        // any order); never less than the default window: single-page O_DIRECT reads are
        // slow, and a short run is often followed by its neighbours.
        long first = pageIndex;
        int pages = DefaultWindowPages;
        if (pageIndex >= _runFirst && pageIndex < _runFirst + _runPages)
        {
            first = _runFirst;
            pages = Math.Clamp(_runPages, DefaultWindowPages, WindowPages);
            if (pageIndex >= first + pages)
            {
                first = pageIndex;
                pages = (int)Math.Clamp(_runFirst + _runPages - pageIndex, DefaultWindowPages, WindowPages);
            }
        }
        int bytes = pages * PageSize;
        long at = _fileOffset + first * PageSize;
        long done = PositionalRead.Fully(_fd, (byte*)_window, bytes, at);
        if (!_direct)
            Libc.posix_fadvise(_fd, at, bytes, Libc.POSIX_FADV_DONTNEED);
        if (done <= (pageIndex - first) * PageSize)
        {
            // An error (a partial read may have landed) or the page lies wholly past the
            // end of the file: nothing of this read stays here.
            Libc.memset((void*)_window, 0, (nuint)bytes);
            return done < 0 ? PageVerdict.Tampered : PageVerdict.Zero;
        }
        _windowFirst = first;
        _windowPages = (int)((done + PageSize - 1) / PageSize); // the last one zero-padded past the end
        return PageVerdict.Keep;
    }
}
