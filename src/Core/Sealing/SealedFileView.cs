using Tibet.Core.Files;
using Tibet.Core.Interop;
using Tibet.Core.Paging;
using Tibet.Core.Storage;

namespace Tibet.Core.Sealing;

/// <summary>
/// What a program may see of a sealed model file: its header and trailer as they are
/// (they are public), and its data pages decrypted when the access decision was live,
/// or as zeros (dead material) when it was not. A data page that fails authentication is
/// never seen: a map of it raises SIGBUS, a read of it fails with EIO.
/// </summary>
/// <remarks>
/// One view serves both ways a program gets at a file: <see cref="Filter"/> for the pages
/// of a map (imported into an arena), <see cref="Read"/> for read(2), pread(2) and fread(3).
/// Plaintext passes only through a locked, non-dumpable scratch buffer, wiped after each read.
/// </remarks>
public sealed unsafe class SealedFileView : IDisposable
{
    private const int PageSize = SealFormat.PageSize;
    private const int ScratchPages = 64;
    private const int ScratchBytes = ScratchPages * PageSize;

    private readonly ISealedPageOpener? _key;
    private readonly bool _refused;
    private readonly Lock _scratchLock = new();
    private nint _scratch;
    private long _tamperedPages;

    private SealedFileView(long dataOffset, long dataPages, long fileLength, ISealedPageOpener? key, bool refused)
    {
        DataOffset = dataOffset;
        DataEnd = dataOffset + dataPages * PageSize;
        FileLength = fileLength;
        _key = key;
        _refused = refused;
        Installer = key is SealedPageInstaller { Installs: true } installer ? installer : null;
    }

    /// <summary>What installs the data pages of a live view's maps straight into the
    /// process (the custodian, when it took the engine's userfaultfd), or null.</summary>
    public SealedPageInstaller? Installer { get; }

    /// <summary>Whether the custodian that decrypts for this view has ended: the pages it
    /// refused since were refused for that (see <see cref="TamperedPages"/>).</summary>
    public bool KeyHolderGone => _key is SealedPageInstaller { KeyHolderGone: true };

    /// <summary>A view that decrypts with <paramref name="key"/> (live: the model's key, or
    /// the custodian that keeps it), or shows zeros for every data page when it is null
    /// (dead). The key stays owned by the caller.</summary>
    public static SealedFileView For(SealedModel model, ISealedPageOpener? key)
    {
        ArgumentNullException.ThrowIfNull(model);
        return new SealedFileView(model.DataOffset, model.DataPages, model.FileLength, key, refused: false);
    }

    /// <summary>A view of a file that claims to be sealed but cannot be parsed as one: it has
    /// no trustworthy layout, so every page is zeros and every read fails.</summary>
    public static SealedFileView Refused(long fileLength) => new(0, 0, fileLength, null, refused: true);

    /// <summary>File offset of the first data page.</summary>
    public long DataOffset { get; }

    /// <summary>File offset just past the last data page (where the trailer starts).</summary>
    public long DataEnd { get; }

    /// <summary>The file's length when it was opened.</summary>
    public long FileLength { get; }

    /// <summary>True when data pages are decrypted.</summary>
    public bool IsLive => _key != null;

    /// <summary>Data pages that failed authentication so far.</summary>
    public long TamperedPages => Interlocked.Read(ref _tamperedPages);

    /// <summary>Rewrites <paramref name="page"/> (the 4096 bytes read from the page-aligned
    /// file offset <paramref name="fileOffset"/>, zeros past the end of the file) in place
    /// into what the program may see, and says what it now is. Allocation-free; never throws.</summary>
    public PageVerdict Filter(long fileOffset, Span<byte> page)
    {
        System.Diagnostics.Debug.Assert(page.Length == PageSize);
        fixed (byte* p = page)
            return FilterRun(fileOffset, 1, p, out bool anyData) == 0 ? PageVerdict.Tampered
                : anyData ? PageVerdict.Keep : PageVerdict.Zero;
    }

    /// <summary>
    /// <see cref="Filter"/> for <paramref name="pages"/> consecutive pages at
    /// <paramref name="data"/> (read from the page-aligned <paramref name="fileOffset"/>):
    /// their data pages go to the key as one run, so that a custodian decrypts a whole
    /// range per request. Returns how many pages, from the first on, the program may see;
    /// the page after those failed authentication (and is cleared). <paramref name="anyData"/>:
    /// whether any of them holds more than zeros. Allocation-free; never throws.
    /// </summary>
    public int FilterRun(long fileOffset, int pages, byte* data, out bool anyData)
    {
        anyData = false;
        if (_refused || _key == null)
        {
            for (int i = 0; i < pages; i++)
            {
                long at = fileOffset + (long)i * PageSize;
                if (!_refused && (at < DataOffset || at >= DataEnd))
                    anyData = true; // the header or the trailer: public, served as stored
                else
                    new Span<byte>(data + (long)i * PageSize, PageSize).Clear();
            }
            return pages;
        }
        for (int i = 0; i < pages;)
        {
            long at = fileOffset + (long)i * PageSize;
            anyData = true;
            if (at < DataOffset || at >= DataEnd)
            {
                i++;
                continue;
            }
            int run = (int)Math.Min(pages - i, (DataEnd - at) / PageSize);
            int opened = _key.OpenPages((at - DataOffset) / PageSize, run, data + (long)i * PageSize);
            if (opened < run)
            {
                Interlocked.Increment(ref _tamperedPages);
                return i + opened;
            }
            i += run;
        }
        return pages;
    }

    /// <summary>
    /// Reads up to <paramref name="count"/> bytes at <paramref name="position"/> of the file
    /// open as <paramref name="fd"/> into <paramref name="destination"/>, as the program may
    /// see them. Returns the bytes read (0 at the end of the file) or a negative errno: EIO
    /// when a data page in the range failed authentication (nothing of that page is copied),
    /// EACCES for a refused file.
    /// </summary>
    /// <remarks><paramref name="destination"/> may be memory served by userfaultfd: it is
    /// written with libc memcpy only, never by managed code.</remarks>
    public long Read(int fd, long position, byte* destination, long count)
    {
        if (_refused)
            return -Libc.EACCES;
        if (position < 0)
            return -Libc.EINVAL;
        long end = Math.Min(position + Math.Max(count, 0), FileLength);
        if (position >= end)
            return 0;
        lock (_scratchLock)
        {
            byte* scratch = (byte*)Scratch();
            long done = 0;
            try
            {
                while (position + done < end)
                {
                    long at = position + done;
                    long pageStart = at & ~(long)(PageSize - 1);
                    int span = (int)Math.Min(ScratchBytes, RoundUpToPage(end) - pageStart);
                    long got = PositionalRead.Fully(fd, scratch, span, pageStart);
                    if (got < 0)
                        return done > 0 ? done : got;
                    if (got < span)
                        Libc.memset(scratch + got, 0, (nuint)(span - got));
                    int fine = FilterRun(pageStart, span / PageSize, scratch, out _);
                    if (fine < span / PageSize)
                    {
                        // Copy what came before the bad page; the bad page itself never.
                        long good = Math.Max(0, Math.Min(pageStart + (long)fine * PageSize, end) - at);
                        Libc.memcpy(destination + done, scratch + (at - pageStart), (nuint)good);
                        done += good;
                        return done > 0 ? done : -Libc.EIO;
                    }
                    long chunk = Math.Min(end, pageStart + span) - at;
                    Libc.memcpy(destination + done, scratch + (at - pageStart), (nuint)chunk);
                    done += chunk;
                }
                return done;
            }
            finally
            {
                Libc.memset(scratch, 0, ScratchBytes);
            }
        }
    }

    /// <summary>Wipes and frees the scratch buffer. The key is the caller's to dispose.</summary>
    public void Dispose()
    {
        lock (_scratchLock)
        {
            if (_scratch == 0)
                return;
            Libc.memset((void*)_scratch, 0, ScratchBytes);
            KernelMemory.Unmap(_scratch, ScratchBytes);
            _scratch = 0;
        }
    }

    private nint Scratch()
    {
        if (_scratch != 0)
            return _scratch;
        nint buffer = KernelMemory.Map(ScratchBytes);
        // Decrypted pages pass through here: keep them out of swap and out of core dumps.
        Libc.mlock(buffer, ScratchBytes);
        Libc.madvise(buffer, ScratchBytes, Libc.MADV_DONTDUMP);
        return _scratch = buffer;
    }

    private static long RoundUpToPage(long value) => (value + PageSize - 1) & ~(long)(PageSize - 1);
}
