using Tibet.Core.Interop;
using Tibet.Core.Paging;
using Tibet.Core.Storage;

namespace Tibet.Core.Files;

/// <summary>
/// The pages a file-backed page source read ahead of the fault handler: the run the
/// handler announced (<see cref="Announce"/>, up to <see cref="MaxPages"/>, a 2 MiB range),
/// or at least <see cref="DefaultPages"/>. The source fills <see cref="Buffer"/> with what
/// the program may see (<see cref="FileSource"/>: the plain file; the sealed model's source:
/// decrypted pages); pages are handed out one by one, each wiped as it goes, and the rest
/// when the fault has been served, so no plaintext stays here between faults.
/// </summary>
/// <remarks>Locked and excluded from core dumps. Used on the fault path, by one thread at a
/// time: no allocation after construction, no throwing.</remarks>
internal sealed unsafe class ReadAheadWindow : IDisposable
{
    /// <summary>The most pages held at once (2 MiB).</summary>
    public const int MaxPages = 512;

    /// <summary>Pages read at once when no run was announced.</summary>
    public const int DefaultPages = 32;

    private const int PageSize = Userfaultfd.PageSize;
    private const int Bytes = MaxPages * PageSize;

    private nint _buffer;
    private long _first = -1;
    private int _pages;
    private readonly ulong[] _handedOut = new ulong[MaxPages / 64]; // bit i: page i was copied out and wiped
    private long _runFirst = -1;
    private int _runPages;

    public ReadAheadWindow()
    {
        _buffer = KernelMemory.Map(Bytes);
        Libc.mlock(_buffer, Bytes);
        Libc.madvise(_buffer, Bytes, Libc.MADV_DONTDUMP);
    }

    /// <summary>Where the source writes the window it plans (<see cref="Plan"/>).</summary>
    public byte* Buffer => (byte*)_buffer;

    /// <summary>The fault being served will ask for this run (a hint).</summary>
    public void Announce(long firstPage, int pages)
    {
        _runFirst = firstPage;
        _runPages = pages;
    }

    /// <summary>Forgets the announced run (the next window starts at the page asked for).</summary>
    public void ForgetRun() => _runFirst = -1;

    /// <summary>Whether <paramref name="page"/> is in the window and not handed out yet.</summary>
    public bool Holds(long page) => page >= _first && page < _first + _pages && !IsHandedOut((int)(page - _first));

    /// <summary>
    /// Empties the window (wiping what was not handed out) and says which pages to read for
    /// <paramref name="page"/>: within the announced run the window is the run (its pages
    /// may be asked for in any order), never less than <see cref="DefaultPages"/>: single-page
    /// reads are slow, and a short run is often followed by its neighbours.
    /// </summary>
    public (long First, int Pages) Plan(long page)
    {
        Wipe();
        if (page < _runFirst || page >= _runFirst + _runPages)
            return (page, DefaultPages);
        long first = _runFirst;
        int pages = Math.Clamp(_runPages, DefaultPages, MaxPages);
        if (page >= first + pages)
        {
            first = page;
            pages = (int)Math.Clamp(_runFirst + _runPages - page, DefaultPages, MaxPages);
        }
        return (first, pages);
    }

    /// <summary>The source filled <paramref name="pages"/> pages from <paramref name="first"/> into <see cref="Buffer"/>.</summary>
    public void Filled(long first, int pages)
    {
        _first = first;
        _pages = pages;
    }

    /// <summary>Copies <paramref name="page"/> (which the window holds) out and wipes it here.</summary>
    public void HandOut(long page, Span<byte> destination)
    {
        int slot = (int)(page - _first);
        var source = new Span<byte>((byte*)_buffer + (long)slot * PageSize, PageSize);
        source.CopyTo(destination);
        source.Clear(); // handed out: it must not linger here
        _handedOut[slot >> 6] |= 1UL << (slot & 63);
    }

    /// <summary>Wipes what was not handed out, and empties the window.</summary>
    public void Wipe()
    {
        if (_buffer == 0)
            return; // disposed: nothing held
        for (int i = 0; i < _pages; i++)
            if (!IsHandedOut(i))
                Libc.memset((byte*)_buffer + (long)i * PageSize, 0, PageSize);
        _first = -1;
        _pages = 0;
        Array.Clear(_handedOut);
    }

    /// <summary>The fault has been served: nothing read ahead stays, and the run is over.</summary>
    public void EndOfFault()
    {
        Wipe();
        _runFirst = -1;
        _runPages = 0;
    }

    public void Dispose()
    {
        if (_buffer == 0)
            return;
        Libc.memset((void*)_buffer, 0, Bytes);
        KernelMemory.Unmap(_buffer, Bytes);
        _buffer = 0;
    }

    private bool IsHandedOut(int slot) => (_handedOut[slot >> 6] & (1UL << (slot & 63))) != 0;
}
