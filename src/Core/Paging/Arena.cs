using Tibet.Core.Crypto;
using Tibet.Core.Storage;

namespace Tibet.Core.Paging;

/// <summary>
/// A range of virtual memory whose pages are served by a <see cref="PageEngine"/>: it
/// reads and writes like ordinary memory, while every page beyond the resident budget
/// exists only as AES-256-GCM ciphertext.
/// </summary>
/// <remarks>
/// Managed code in this process must touch the memory through <see cref="ArenaMemory"/>
/// (see there for why). Page tables and keys are owned by the engine and changed only
/// under its lock.
/// </remarks>
public sealed unsafe class Arena : IDisposable, IAddressRange
{
    internal readonly PageEngine Engine;
    internal readonly PageCipher Cipher;
    // Replaced (under the engine lock) when the arena grows in place.
    internal PageEntry* Entries;
    internal long PageCount;
    internal int Slot;

    // Read-ahead: the sequential streams reading this arena, each with its own window.
    internal readonly ReadAhead.SequentialStreams Streams;

    // Compression back-off: consecutive failures, and attempts left to skip.
    internal int IncompressibleStreak;
    internal int CompressionSkips;

    internal bool Released;

    // Decryption ahead (see EngineOptions.DecryptAheadRanges): the next page to bring in,
    // and where to stop (page indices); set by the faults that bring in whole ranges.
    internal long AheadCursor;
    internal long AheadLimit;
    // Pages are brought ahead in slices only below this; whole ranges, up to AheadLimit,
    // while AheadRangesLeft of them remain to be brought for the newest fault.
    internal long AheadSliceLimit;
    internal int AheadRangesLeft;

    /// <summary>Where untouched pages come from; null: they read as zeros.</summary>
    internal PageSource? Source;

    /// <summary>Pages as the source gives them are installed write-protected and, while not
    /// written, dropped when evicted, never sealed: they come back from the source
    /// (see <see cref="AttachSource"/>, <see cref="PageEntry.HoldsSourceCopy"/>).</summary>
    internal bool RefetchesSource;

    /// <summary><see cref="Source"/>'s PageSource.FillsRunsConcurrently, asked once when it
    /// was attached.</summary>
    internal bool SourceFillsRunsConcurrently;

    /// <summary>The program mapped the arena read-only (PROT_READ) and has not made it
    /// writable since (mprotect, see <see cref="MarkWritable"/>): it writes none of its
    /// pages, so lifting their write protection for a moment cannot miss a write it may
    /// make (see Collapse.RangeCollapser).</summary>
    internal bool MappedReadOnly;

    /// <summary>The kernel refused to move a staged range into this arena (UFFDIO_MOVE
    /// answered EINVAL: the program locked or reprotected the map, so its flags differ from
    /// the staging area's): its ranges come in page by page (see Faults.RangePlacer).</summary>
    internal bool RefusesPlacement;

    /// <summary>Per 2 MiB range of a model map (null elsewhere): placed whole by
    /// Faults.RangePlacer and resident since, so that eviction takes it out whole too
    /// (Eviction.Evictor.TryEvictRange) rather than splitting its huge page 4 KiB at a
    /// time. A hint: eviction checks the pages' books before it acts on it.</summary>
    internal bool[]? PlacedWhole;

    /// <summary>Another process's range, served by the custodian (PageEngine.AdoptArena):
    /// the process maps, registers and unmaps it; the engine keeps only the books.</summary>
    internal bool Adopted { get; init; }

    /// <summary>Released pages go back to a PROT_NONE reservation rather than being unmapped.</summary>
    internal bool KeepsReservation { get; init; }

    /// <summary>Mapped inaccessible, as a reservation of the program's (PageEngine.CreateArenaAt):
    /// parts of it may still be, so its contents cannot be copied as a whole.</summary>
    public bool MappedAsReservation { get; init; }

    internal Arena(PageEngine engine, nint address, long length, ulong id, string label)
    {
        Engine = engine;
        Address = address;
        Length = length;
        Id = id;
        Label = label;
        PageCount = length / Userfaultfd.PageSize;
        Entries = (PageEntry*)KernelMemory.Map((nuint)(PageCount * sizeof(PageEntry)));
        Cipher = new PageCipher(id, engine.Options.Cipher);
        Streams = new ReadAhead.SequentialStreams(engine.Options.ReadAheadStreams);
    }

    /// <summary>Where the arena starts. Moves if the program mremaps the whole arena.</summary>
    public nint Address { get; internal set; }

    public long Length { get; internal set; }

    /// <summary>The random id bound into every page's associated data.</summary>
    public ulong Id { get; }

    public string Label { get; }

    internal nint PageAddress(long index) => Address + (nint)(index * Userfaultfd.PageSize);

    public PageState GetPageState(long pageIndex)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(pageIndex);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(pageIndex, PageCount);
        return Engine.ReadPageState(this, pageIndex);
    }

    /// <summary>Pages not yet unmapped by the program.</summary>
    public long MappedPageCount => Engine.MappedPageCount(this, 0, count: -1);

    /// <summary>Whether no page of [address, address+length) was unmapped by the program:
    /// only then is a map the program places there a commit inside the arena, not one over
    /// a hole the kernel owns.</summary>
    public bool HoldsAllPages(nint address, long length)
    {
        long first = (address - Address) / Userfaultfd.PageSize;
        long count = (length + Userfaultfd.PageSize - 1) / Userfaultfd.PageSize;
        return count > 0 && Engine.MappedPageCount(this, first, count) == count;
    }

    /// <summary>Grows the arena in place to <paramref name="newLength"/> bytes. The
    /// range after it must be a reservation of the caller's (see
    /// <see cref="PageEngine.CreateArenaAt"/>); the new pages read as zeros.</summary>
    public void Extend(long newLength) => Engine.ExtendArena(this, newLength);

    /// <summary>
    /// Makes <paramref name="source"/> supply the contents of every page on its first
    /// touch, instead of zeros: an arena that maps a file without reading it first. Only
    /// for an arena none of whose pages has been touched or imported yet.
    /// </summary>
    /// <param name="refetchWhenEvicted">A page not written since it came from the source is
    /// dropped when evicted and read from the source again, never sealed: the engine keeps
    /// no copy of it, so its key opens none of the source's pages (a sealed model whose
    /// key the custodian keeps). Needs EngineOptions.TrackWrites; without it, ignored.</param>
    /// <param name="mappedReadOnly">The program mapped it PROT_READ (see <see cref="MappedReadOnly"/>).</param>
    public void AttachSource(PageSource source, bool refetchWhenEvicted = false, bool mappedReadOnly = false) =>
        Engine.AttachSource(this, source, refetchWhenEvicted, mappedReadOnly);

    /// <summary>The program made the arena writable (mprotect): it is no longer trusted to
    /// write none of its pages (see <see cref="MappedReadOnly"/>).</summary>
    public void MarkWritable() => Engine.MarkWritable(this);

    /// <summary>Seals every resident page of this arena now.</summary>
    public void Evict() => Engine.EvictArena(this);

    /// <summary>Unregisters and unmaps the arena and frees its ciphertext and key.</summary>
    public void Dispose() => Engine.ReleaseArena(this);

    internal void FreeTables()
    {
        KernelMemory.Unmap((nint)Entries, (nuint)(PageCount * sizeof(PageEntry)));
        Cipher.Release();
    }
}
