using System.Numerics;
using Tibet.Core.Files;
using Tibet.Core.Interop;
using Tibet.Core.Paging;
using Tibet.Core.Paging.Huge;
using Tibet.Core.Sealing;
using Tibet.Interposer.Sealed;

namespace Tibet.Interposer;

/// <summary>
/// Turns the program's large allocations and mappings into engine arenas, and keeps
/// the books the shim needs: which pointer is ours, and how large each block is.
/// </summary>
/// <remarks>
/// malloc blocks and mmap mappings come from two separate reservations. A pointer
/// inside a mapping we handed out is the program's business (jemalloc carves its own
/// blocks out of it), so free() must never take it for ours; and malloc_usable_size of
/// our blocks must not see mmap sizes. All calls arrive on program threads through the
/// shim and serialise on one lock. Arena memory is copied only with libc memcpy, so a
/// copy that faults never holds up the garbage collector (see ArenaMemory).
/// </remarks>
internal sealed unsafe class Redirector
{
    private const long RegionSize = 1L << 40; // 1 TiB of address space each; no memory
    private const int PageSize = 4096;

    private readonly Lock _lock = new();
    private readonly PageEngine _engine;
    private readonly AddressSpace _mallocSpace;
    private readonly AddressSpace _mmapSpace;
    private readonly nuint* _blockSizes;
    private readonly Dictionary<long, Block> _blocks = [];
    private readonly int _verbosity;
    private readonly long _fileMapThreshold;
    private readonly SealedFiles _sealedFiles;

    /// <summary>A malloc block: its arena, and the address space reserved for it, which
    /// is twice what was asked so that realloc can grow it in place.</summary>
    private sealed record Block(Arena Arena, long Reserved);
    private readonly Dictionary<long, Arena> _mappings = [];

    /// <summary>Read-only model maps served in 2 MiB pages, with the length the program asked for.</summary>
    private readonly Dictionary<long, (HugePageArena Arena, long Requested)> _hugeMappings = [];
    private readonly HugePageService? _huge;
    private readonly bool? _refetchModelPages; // InterposerConfig.RefetchSourcePages

    public Redirector(PageEngine engine, InterposerConfig config, SealedFiles sealedFiles, HugePageService? huge = null)
    {
        _engine = engine;
        _huge = huge;
        _verbosity = config.Verbosity;
        _refetchModelPages = config.RefetchSourcePages;
        _fileMapThreshold = config.ThresholdBytes;
        _sealedFiles = sealedFiles;
        PlaintextFallbacks.Configure(config.RequireEncryption);
        _mallocSpace = new AddressSpace(RegionSize, "malloc blocks");
        _mmapSpace = new AddressSpace(RegionSize, "mappings");
        long entries = RegionSize >> AddressSpace.UnitShift;
        _blockSizes = (nuint*)Libc.mmap(0, (nuint)(entries * sizeof(nuint)), Libc.PROT_READ | Libc.PROT_WRITE,
            Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE, -1, 0);
        if ((nint)_blockSizes == Libc.MAP_FAILED)
            throw new InvalidOperationException("cannot map the block size table: " + Libc.Describe(Libc.LastErrno));
        Native.Shim.Configure((nuint)config.ThresholdBytes, (nuint)config.ThresholdBytes,
            (nuint)_mallocSpace.Base, (nuint)_mallocSpace.Limit, (nuint)_mmapSpace.Base, (nuint)_mmapSpace.Limit,
            _blockSizes, AddressSpace.UnitShift);
    }

    public PageEngine Engine => _engine;

    public HugePageService? HugePages => _huge;

    /// <summary>
    /// A malloc-family call of at least the threshold: a block of a new arena, or, when
    /// tibet cannot serve it, what <see cref="PlaintextFallbacks"/> decides (the host's own
    /// block, counted and announced; 0, so that the host answers; or
    /// <see cref="PlaintextFallbacks.Refused"/>). The size is the program's, anything up to
    /// 2^64-1: it is checked before it is rounded, and a call tibet does not serve leaves
    /// the region as it was.
    /// </summary>
    public nint Allocate(ulong size, ulong alignment)
    {
        if (!_mallocSpace.CanEverHold(size, alignment))
            return PlaintextFallbacks.ServeUnencrypted(PlaintextReason.TooLarge, "malloc"u8, size, alignment);
        nint address = TryAllocate((long)size, (long)BitOperations.RoundUpToPowerOf2(Math.Max(alignment, 1)), out PlaintextReason failure, out string? detail);
        return address != 0 ? address : PlaintextFallbacks.ServeUnencrypted(failure, "malloc"u8, size, alignment, detail);
    }

    /// <summary>A new block in the malloc region, or 0 with the reason. No lock is held
    /// when this returns, so the caller may announce.</summary>
    private nint TryAllocate(long size, long alignment, out PlaintextReason failure, out string? detail)
    {
        long length = AddressSpace.RoundUp(Math.Max(size, 1), PageSize);
        long whole = AddressSpace.RoundUp(length, AddressSpace.Unit);
        detail = null;
        lock (_lock)
        {
            // Twice the length, so that realloc can grow in place; just the length when
            // the region has no stretch that large (a block of more than half the region,
            // or a fragmented region), since a block that cannot grow in place still moves.
            long reserved = whole <= _mallocSpace.Capacity / 2 ? 2 * whole : whole;
            long address = _mallocSpace.Take(reserved, alignment);
            if (address == 0 && reserved != whole)
                address = _mallocSpace.Take(reserved = whole, alignment);
            if (address == 0)
            {
                failure = PlaintextReason.RegionExhausted;
                return 0;
            }
            Arena arena;
            try
            {
                arena = _engine.CreateArenaAt((nint)address, length, "malloc");
            }
            catch (Exception e)
            {
                // The stretch goes back: a failed arena never costs the region anything.
                _mallocSpace.Give(address, reserved);
                failure = PlaintextReason.ArenaCreationFailed;
                detail = e.Message;
                return 0;
            }
            _blocks[address] = new Block(arena, reserved);
            _blockSizes[UnitOf(address)] = (nuint)length;
            failure = default;
            return (nint)address;
        }
    }

    public void Free(nint pointer)
    {
        lock (_lock)
        {
            if (!_blocks.Remove(pointer, out Block? block))
            {
                // Not the start of a block: a program bug (double free or interior
                // pointer). glibc would abort; we refuse to guess and leave it be.
                Native.Shim.WriteError($"tibet: free(0x{pointer:x}) of a pointer tibet never returned; ignored");
                return;
            }
            _blockSizes[UnitOf(pointer)] = 0;
            block.Arena.Dispose();
            _mallocSpace.Give(pointer, block.Reserved);
        }
    }

    /// <summary>
    /// realloc of one of our blocks to at least the threshold (the shim moves smaller ones
    /// to the host itself). Returns the block (grown in place or moved), or
    /// <see cref="PlaintextFallbacks.Refused"/>: the old block is then untouched and the
    /// shim fails the call with ENOMEM, as glibc does for a size it cannot hold.
    /// </summary>
    public nint Reallocate(nint pointer, ulong size)
    {
        Block? old;
        lock (_lock)
        {
            if (!_blocks.TryGetValue(pointer, out old))
            {
                // Inside our region but not a block's start: a program bug. Neither tibet
                // nor the host can resize it; glibc would abort.
                Native.Shim.WriteError($"tibet: realloc(0x{pointer:x}) of a pointer tibet never returned; refused");
                return PlaintextFallbacks.Refused;
            }
            if (size <= (ulong)old.Arena.Length)
                return pointer; // shrinking keeps the block; its usable size stays truthful
            if (size <= (ulong)old.Reserved)
            {
                // Grow in place into the block's own reservation: no copy.
                long length = AddressSpace.RoundUp((long)size, PageSize);
                try
                {
                    old.Arena.Extend(length);
                    _blockSizes[UnitOf(pointer)] = (nuint)length;
                    return pointer;
                }
                catch (OutOfMemoryException)
                {
                    // The tail could not be mapped: the block is as it was; move it instead.
                }
            }
        }
        nint grown;
        if (_mallocSpace.CanEverHold(size, 16))
        {
            grown = TryAllocate((long)size, 16, out PlaintextReason failure, out string? detail);
            if (grown == 0)
                grown = PlaintextFallbacks.ServeUnencrypted(failure, "realloc"u8, size, 16, detail);
        }
        else
        {
            grown = PlaintextFallbacks.ServeUnencrypted(PlaintextReason.TooLarge, "realloc"u8, size, 16);
        }
        // Neither tibet nor the host can hold it: the old block stays, the call fails.
        if (grown == 0 || grown == PlaintextFallbacks.Refused)
            return PlaintextFallbacks.Refused;
        Libc.memcpy((void*)grown, (void*)pointer, (nuint)old.Arena.Length);
        Free(pointer);
        return grown;
    }

    /// <summary>A private anonymous read-write mmap of at least the threshold: a new
    /// arena, or what <see cref="PlaintextFallbacks"/> decides (0: the shim maps it with
    /// libc, unencrypted, counted and announced; or refused).</summary>
    /// <summary>An arena for an anonymous map of the program's; <paramref name="inaccessible"/>:
    /// a reservation (PROT_NONE), which the program commits piece by piece later.</summary>
    public nint Map(ulong length, bool inaccessible = false)
    {
        if (length == 0 || !_mmapSpace.CanEverHold(length, AddressSpace.Unit))
            return length == 0 ? 0 : PlaintextFallbacks.Forward(PlaintextReason.TooLarge, "mmap"u8, length);
        nint address = TryMap((long)length, inaccessible, out PlaintextReason failure, out string? detail);
        return address != 0 ? address : PlaintextFallbacks.Forward(failure, "mmap"u8, length, detail);
    }

    private nint TryMap(long length, bool inaccessible, out PlaintextReason failure, out string? detail)
    {
        long rounded = AddressSpace.RoundUp(length, PageSize);
        detail = null;
        lock (_lock)
        {
            long address = _mmapSpace.Take(rounded, AddressSpace.Unit);
            if (address == 0)
            {
                failure = PlaintextReason.RegionExhausted;
                return 0;
            }
            try
            {
                _mappings[address] = _engine.CreateArenaAt((nint)address, rounded, "mmap", inaccessible);
            }
            catch (Exception e)
            {
                _mmapSpace.Give(address, rounded);
                failure = PlaintextReason.ArenaCreationFailed;
                detail = e.Message;
                return 0;
            }
            failure = default;
            return (nint)address;
        }
    }

    /// <summary>
    /// A map of a GGUF file (the shim has seen its magic). A sealed model is always served
    /// from an arena, whatever its size, holding what this process may see of it (see
    /// <see cref="SealedFiles"/>); a writable shared map of one is refused with EACCES,
    /// since its writes would have to reach the file. A plain model is served from an arena
    /// whose pages are read from the file (O_DIRECT) on first touch, when the map is
    /// read-only and at least the threshold.
    /// Returns 0 to let the kernel map the file, with <paramref name="error"/> set when the
    /// map must fail instead.
    /// </summary>
    /// <remarks>The arena is writable underneath although the program asked for
    /// PROT_READ: UFFDIO_MOVE, which eviction relies on, refuses read-only areas.</remarks>
    public nint MapFile(ulong length, int prot, int flags, int fd, long offset, out int error)
    {
        error = 0;
        int type = flags & Libc.MAP_TYPE;
        bool fixedAddress = (flags & (Libc.MAP_FIXED | Libc.MAP_FIXED_NOREPLACE)) != 0;
        SealedFileAccess? sealedFile = _sealedFiles.Classify(fd);
        if (sealedFile != null)
        {
            if (length == 0 || (offset & (PageSize - 1)) != 0 || !_mmapSpace.CanEverHold(length, AddressSpace.Unit))
            {
                // What the kernel answers for such a map: EINVAL, or ENOMEM for a length no
                // address space holds. Never a raw map of the ciphertext.
                error = length == 0 || (offset & (PageSize - 1)) != 0 ? Libc.EINVAL : Libc.ENOMEM;
                return 0;
            }
            if ((type != Libc.MAP_PRIVATE && (prot & Libc.PROT_WRITE) != 0) || fixedAddress)
            {
                Native.Shim.WriteError($"tibet: refused a {(fixedAddress ? "fixed-address" : "writable shared")} map of sealed model '{sealedFile.Path}': " +
                                               "sealed models are mapped read-only or private (MAP_PRIVATE), never written back");
                error = Libc.EACCES;
                return 0;
            }
        }
        else if (prot != Libc.PROT_READ || fixedAddress || length < (ulong)_fileMapThreshold
                 || (type != Libc.MAP_SHARED && type != Libc.MAP_PRIVATE) || !GgufFiles.StartsWithMagic(fd))
        {
            return 0;
        }
        else if (!_mmapSpace.CanEverHold(length, AddressSpace.Unit))
        {
            return ForwardModelMap(PlaintextReason.TooLarge, length, null, out error);
        }

        if (_huge != null && prot == Libc.PROT_READ && TryMapHuge(length, fd, offset, sealedFile) is var huge and not 0)
            return huge;

        long rounded = AddressSpace.RoundUp((long)length, PageSize);
        Arena? arena = null;
        long address;
        Exception? creationFailure = null;
        lock (_lock)
        {
            address = _mmapSpace.Take(rounded, AddressSpace.Unit);
            if (address != 0)
            {
                try
                {
                    arena = _engine.CreateArenaAt((nint)address, rounded, sealedFile != null ? "sealed gguf" : "gguf");
                }
                catch (Exception e)
                {
                    _mmapSpace.Give(address, rounded);
                    creationFailure = e;
                }
            }
        }
        if (arena == null)
        {
            if (sealedFile == null)
                return ForwardModelMap(creationFailure == null ? PlaintextReason.RegionExhausted : PlaintextReason.ArenaCreationFailed,
                    length, creationFailure?.Message, out error);
            // A sealed model is never mapped raw: the map fails.
            Native.Shim.WriteError($"tibet: a map of sealed model '{sealedFile.Path}' ({length} bytes) failed: " +
                                           (creationFailure?.Message ?? "tibet's mapping region has no free stretch large enough"));
            error = Libc.ENOMEM;
            return 0;
        }
        bool bypassedPageCache = true;
        try
        {
            PageSource source = OpenModelSource(sealedFile, fd, offset, out bypassedPageCache);
            try
            {
                // A sealed model whose key the custodian keeps: its pages are never sealed
                // here (under a key of the program's), they come back from the custodian.
                bool refetch = _refetchModelPages ?? sealedFile is { KeyInCustodian: true };
                arena.AttachSource(source, refetchWhenEvicted: refetch, mappedReadOnly: prot == Libc.PROT_READ);
            }
            catch
            {
                source.Release();
                throw;
            }
        }
        catch
        {
            lock (_lock)
            {
                arena.Dispose();
                _mmapSpace.Give(address, rounded);
            }
            throw;
        }
        lock (_lock)
            _mappings[address] = arena;
        if (_verbosity > 0 && sealedFile != null)
            Native.Shim.WriteError($"tibet: {(sealedFile.View.IsLive ? "live" : "dead")} map of sealed model '{sealedFile.Path}' " +
                                           $"({rounded >> 10} KiB at offset {offset}) at 0x{address:x}: pages are read from the file on first touch");
        else if (_verbosity > 0)
            Native.Shim.WriteError($"tibet: GGUF map of descriptor {fd} ({rounded >> 10} KiB at offset {offset}) served from an encrypted arena at 0x{address:x}: " +
                                           "pages are read from the file on first touch" +
                                           (bypassedPageCache ? "" : "; the file system refuses O_DIRECT, so each read goes through the page cache and is dropped from it at once"));
        return (nint)address;
    }

    /// <summary>
    /// Where a model map's pages come from: the sealed file (each page decrypted, or
    /// zeroed for what this process may not see, when first touched), or the plain file
    /// read with O_DIRECT past the page cache. Nothing is read now.
    /// </summary>
    private PageSource OpenModelSource(SealedFileAccess? sealedFile, int fd, long offset, out bool bypassedPageCache)
    {
        bypassedPageCache = true;
        if (sealedFile != null)
        {
            var access = sealedFile;
            return new SealedFileSource(access.View, (int)access.Source.DangerousGetHandle(), offset,
                onTampered: () => _sealedFiles.ReportTampering(access));
        }
        var source = FileSource.Open(fd, offset);
        bypassedPageCache = source.BypassesPageCache;
        if (source.PagesLeftInPageCache != 0)
            Native.Shim.WriteError(source.PagesLeftInPageCache > 0
                ? $"tibet: {source.PagesLeftInPageCache} pages of the model file open as descriptor {fd} stay in the page cache, in plaintext: " +
                  "the kernel would not drop them (another process maps the file, or it is being written). Stop the other user of the file, or seal the model (tibet seal)."
                : $"tibet: cannot tell whether the page cache still holds the model file open as descriptor {fd} (neither cachestat nor mincore answered).");
        return source;
    }

    /// <summary>
    /// A read-only model map in 2 MiB pages (tibet-run --huge-pages): its address, or 0
    /// when it cannot be had (no aligned stretch left, the pool refused), and the map is
    /// then served in 4 KiB pages as usual, after one line saying why.
    /// </summary>
    private nint TryMapHuge(ulong length, int fd, long offset, SealedFileAccess? sealedFile)
    {
        long rounded = AddressSpace.RoundUp((long)length, HugePageService.HugePageSize);
        long address;
        lock (_lock)
            address = _mmapSpace.Take(rounded, HugePageService.HugePageSize);
        if (address == 0)
            return 0;
        PageSource? source = null;
        try
        {
            source = OpenModelSource(sealedFile, fd, offset, out _);
            var arena = _huge!.CreateArena((nint)address, (long)length, source, sealedFile != null ? "sealed gguf (2 MiB pages)" : "gguf (2 MiB pages)");
            lock (_lock)
                _hugeMappings[address] = (arena, AddressSpace.RoundUp((long)length, PageSize));
            if (_verbosity > 0)
                Native.Shim.WriteError($"tibet: model map of descriptor {fd} ({rounded >> 20} MiB at offset {offset}) served in 2 MiB pages at 0x{address:x}, " +
                                       $"at most {_huge.BudgetBytes >> 20} MiB resident");
            return (nint)address;
        }
        catch (Exception e)
        {
            source?.Release();
            lock (_lock)
                _mmapSpace.Give(address, rounded);
            Native.Shim.WriteError($"tibet: a model map could not have 2 MiB pages ({e.Message}); it is served in 4 KiB pages");
            return 0;
        }
    }

    /// <summary>A plain model's map that tibet cannot serve: the kernel maps the file, so its
    /// pages pass through the page cache in plaintext (counted and announced); or, when
    /// encryption is required, the map fails with ENOMEM.</summary>
    private static nint ForwardModelMap(PlaintextReason reason, ulong length, string? detail, out int error)
    {
        nint answer = PlaintextFallbacks.Forward(reason, "mmap of a model file"u8, length, detail);
        error = answer == PlaintextFallbacks.Refused ? Libc.ENOMEM : 0;
        return 0;
    }

    /// <summary>The program makes [address, address + length) writable: a model map it
    /// mapped read-only there is not read-only any more (see Arena.MappedReadOnly).</summary>
    public void MadeWritable(nint address, nuint length)
    {
        long start = address, end = address + (long)Math.Min(length, (nuint)(long.MaxValue - address));
        lock (_lock)
        {
            foreach (var (mapStart, arena) in _mappings)
                if (mapStart < end && mapStart + arena.Length > start)
                    arena.MarkWritable();
        }
    }

    /// <summary>Whether [address, address+length) lies wholly inside one anonymous arena
    /// (an mmap of the program's, not a model map).</summary>
    public bool CoversAnonymous(nint address, nuint length)
    {
        long start = address;
        if (length == 0 || length > (nuint)(long.MaxValue - start))
            return false;
        long end = start + (long)length;
        lock (_lock)
        {
            foreach (var (mapStart, arena) in _mappings)
                if (mapStart <= start && end <= mapStart + arena.Length)
                    return arena.Source == null && arena.HoldsAllPages(address, end - start);
        }
        return false;
    }

    /// <summary>munmap of a range that touches the mapping region: 0, or an errno.</summary>
    public int Unmap(nint address, ulong length)
    {
        // The kernel's own checks (mm/mmap.c): a page-aligned start, a length that is not
        // 0 and does not run past the end of the address space.
        if ((address & (PageSize - 1)) != 0 || length == 0 || address < 0
            || length > (ulong)(long.MaxValue - address) - PageSize)
            return Libc.EINVAL;
        long start = address;
        long end = start + AddressSpace.RoundUp((long)length, PageSize);
        long inStart = Math.Max(start, _mmapSpace.Base);
        long inEnd = Math.Min(end, _mmapSpace.Limit);

        // Whatever lies outside our region is somebody else's mapping.
        if (start < inStart && Libc.munmap((nint)start, (nuint)(inStart - start)) != 0) return Libc.LastErrno;
        if (inEnd < end && Libc.munmap((nint)inEnd, (nuint)(end - inEnd)) != 0) return Libc.LastErrno;

        lock (_lock)
        {
            // 2 MiB-page maps first: a hugetlb mapping can only be cut at 2 MiB boundaries.
            long reserveFrom = inStart;
            foreach (var (hugeStart, (hugeArena, requested)) in _hugeMappings.Where(m => m.Key < inEnd && m.Key + m.Value.Arena.Length > inStart).OrderBy(m => m.Key).ToList())
            {
                Reserve(reserveFrom, Math.Max(0, hugeStart - reserveFrom));
                long hugeEnd = hugeStart + hugeArena.Length;
                if (inStart <= hugeStart && inEnd >= hugeStart + requested)
                {
                    _hugeMappings.Remove(hugeStart);
                    hugeArena.Dispose();
                    _mmapSpace.Give(hugeStart, hugeArena.Length);
                }
                else
                {
                    // Part of the map: its whole 2 MiB pages inside the range go (their
                    // UNMAP event tells the service); the rest stays mapped until the
                    // program unmaps the whole map.
                    long cutStart = AddressSpace.RoundUp(Math.Max(inStart, hugeStart), HugePageService.HugePageSize);
                    long cutEnd = Math.Min(inEnd, hugeEnd) & ~(long)(HugePageService.HugePageSize - 1);
                    Reserve(cutStart, Math.Max(0, cutEnd - cutStart));
                }
                reserveFrom = Math.Max(reserveFrom, Math.Min(inEnd, hugeEnd));
            }
            // Turning the range back into reservation unmaps whatever is there (our arena
            // pages, which the engine learns of through its UNMAP event, or a mapping the
            // program placed there with MAP_FIXED) and keeps the region whole.
            Reserve(reserveFrom, Math.Max(0, inEnd - reserveFrom));
            foreach (var (mapStart, arena) in Overlapping(inStart, inEnd))
            {
                if (arena.MappedPageCount > 0)
                    continue;
                _mappings.Remove(mapStart);
                arena.Dispose();
                _mmapSpace.Give(mapStart, arena.Length);
            }
        }
        return 0;
    }

    /// <summary>
    /// mremap of a mapping in the region, or of part of one, as the kernel would do it with
    /// the contents kept encrypted: shrinking unmaps the range's tail; growing moves it
    /// (with MREMAP_MAYMOVE) into a new arena, copied, and unmaps the old range; growing in
    /// place is refused with ENOMEM, which mremap may always answer. The errors are the
    /// kernel's: EINVAL for a misaligned start or a zero size, EFAULT for a range that is
    /// not wholly mapped inside one mapping.
    /// </summary>
    public nint Remap(nint old, ulong oldSize, ulong newSize, int flags, out int error)
    {
        error = 0;
        if ((old & (PageSize - 1)) != 0 || newSize == 0 || oldSize == 0 || oldSize > (ulong)(long.MaxValue - old) - PageSize)
        {
            error = Libc.EINVAL;
            return Libc.MAP_FAILED;
        }
        Arena? arena = null;
        long start = old, end = start + AddressSpace.RoundUp((long)oldSize, PageSize);
        lock (_lock)
        {
            foreach (var (hugeStart, (hugeArena, _)) in _hugeMappings)
                if (hugeStart <= start && start < hugeStart + hugeArena.Length)
                {
                    error = Libc.EINVAL; // a map in 2 MiB pages does not move (README)
                    return Libc.MAP_FAILED;
                }
            foreach (var (mapStart, candidate) in _mappings)
                if (mapStart <= start && end <= mapStart + candidate.Length)
                {
                    arena = candidate.HoldsAllPages(old, end - start) ? candidate : null;
                    break;
                }
        }
        if (arena == null)
        {
            error = Libc.EFAULT; // a hole the program unmapped, or past the mapping's end
            return Libc.MAP_FAILED;
        }
        if (!_mmapSpace.CanEverHold(newSize, AddressSpace.Unit))
        {
            error = Libc.ENOMEM; // as the kernel answers for a length no address space holds
            return Libc.MAP_FAILED;
        }
        long oldLength = AddressSpace.RoundUp((long)oldSize, PageSize);
        long newLength = AddressSpace.RoundUp((long)newSize, PageSize);
        if (newLength <= oldLength)
        {
            if (newLength < oldLength && (error = Unmap(old + (nint)newLength, (ulong)(oldLength - newLength))) != 0)
                return Libc.MAP_FAILED;
            return old;
        }
        const int MREMAP_MAYMOVE = 1;
        // A reservation's contents cannot be copied (parts of it may be inaccessible): it
        // shrinks in place (above), and does not move (ENOMEM, as for a move that finds no
        // room). Nor does a model map: moved, its pages would be copied into anonymous
        // memory sealed under the program's key, and the grown part would read zeros
        // where the kernel would map more of the file.
        if ((flags & MREMAP_MAYMOVE) == 0 || arena.MappedAsReservation || arena.Source != null)
        {
            error = Libc.ENOMEM; // growing in place would run into the next mapping
            return Libc.MAP_FAILED;
        }
        // Into a new arena, or not at all: the mapping's contents are never moved out
        // into plaintext.
        nint moved = TryMap(newLength, inaccessible: false, out _, out _);
        if (moved == 0)
        {
            error = Libc.ENOMEM;
            return Libc.MAP_FAILED;
        }
        // Not memcpy: a part the program made inaccessible would kill it with SIGSEGV
        // here, where the kernel would have moved it. Refused (EFAULT), nothing moved.
        if (!Libc.CopyMapped((void*)moved, (void*)old, (nuint)oldLength))
        {
            Unmap(moved, (ulong)newLength);
            error = Libc.EFAULT;
            return Libc.MAP_FAILED;
        }
        Unmap(old, (ulong)oldLength);
        return moved;
    }

    private List<(long Start, Arena Arena)> Overlapping(long start, long end)
    {
        var hits = new List<(long, Arena)>();
        foreach (var (mapStart, arena) in _mappings)
            if (mapStart < end && mapStart + arena.Length > start)
                hits.Add((mapStart, arena));
        return hits;
    }

    private static void Reserve(long start, long length)
    {
        if (length > 0)
            Libc.mmap((nint)start, (nuint)length, Libc.PROT_NONE,
                Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE | Libc.MAP_FIXED, -1, 0);
    }

    private long UnitOf(long address) => (address - _mallocSpace.Base) >> AddressSpace.UnitShift;
}
