using Tibet.Core.Files;
using Tibet.Core.Interop;
using Tibet.Core.Paging;
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

    public Redirector(PageEngine engine, InterposerConfig config, SealedFiles sealedFiles)
    {
        _engine = engine;
        _verbosity = config.Verbosity;
        _fileMapThreshold = config.ThresholdBytes;
        _sealedFiles = sealedFiles;
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

    public nint Allocate(long size, long alignment)
    {
        long length = AddressSpace.RoundUp(Math.Max(size, 1), PageSize);
        long reserved = AddressSpace.RoundUp(2 * length, AddressSpace.Unit);
        lock (_lock)
        {
            long address = _mallocSpace.Take(reserved, alignment);
            if (address == 0) return 0;
            var arena = _engine.CreateArenaAt((nint)address, length, "malloc");
            _blocks[address] = new Block(arena, reserved);
            _blockSizes[UnitOf(address)] = (nuint)length;
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
                Native.ProcessCalls.WriteError($"tibet: free(0x{pointer:x}) of a pointer tibet never returned; ignored");
                return;
            }
            _blockSizes[UnitOf(pointer)] = 0;
            block.Arena.Dispose();
            _mallocSpace.Give(pointer, block.Reserved);
        }
    }

    public nint Reallocate(nint pointer, long size)
    {
        Block? old;
        lock (_lock)
        {
            if (!_blocks.TryGetValue(pointer, out old))
                return 0;
            if (size <= old.Arena.Length)
                return pointer; // shrinking keeps the block; its usable size stays truthful
            long length = AddressSpace.RoundUp(size, PageSize);
            if (length <= old.Reserved)
            {
                // Grow in place into the block's own reservation: no copy.
                old.Arena.Extend(length);
                _blockSizes[UnitOf(pointer)] = (nuint)length;
                return pointer;
            }
        }
        nint grown = Allocate(size, 16);
        if (grown == 0)
            return 0;
        Libc.memcpy((void*)grown, (void*)pointer, (nuint)old.Arena.Length);
        Free(pointer);
        return grown;
    }

    public nint Map(long length)
    {
        long rounded = AddressSpace.RoundUp(length, PageSize);
        lock (_lock)
        {
            long address = _mmapSpace.Take(rounded, AddressSpace.Unit);
            if (address == 0) return 0;
            _mappings[address] = _engine.CreateArenaAt((nint)address, rounded, "mmap");
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
    public nint MapFile(long length, int prot, int flags, int fd, long offset, out int error)
    {
        error = 0;
        int type = flags & Libc.MAP_TYPE;
        bool fixedAddress = (flags & (Libc.MAP_FIXED | Libc.MAP_FIXED_NOREPLACE)) != 0;
        SealedFileAccess? sealedFile = _sealedFiles.Classify(fd);
        if (sealedFile != null)
        {
            if ((type != Libc.MAP_PRIVATE && (prot & Libc.PROT_WRITE) != 0) || fixedAddress || length <= 0 || (offset & (PageSize - 1)) != 0)
            {
                Native.ProcessCalls.WriteError($"tibet: refused a {(fixedAddress ? "fixed-address" : "writable shared")} map of sealed model '{sealedFile.Path}': " +
                                               "sealed models are mapped read-only or private (MAP_PRIVATE), never written back");
                error = length <= 0 || (offset & (PageSize - 1)) != 0 ? Libc.EINVAL : Libc.EACCES;
                return 0;
            }
        }
        else if (prot != Libc.PROT_READ || fixedAddress || length < _fileMapThreshold
                 || (type != Libc.MAP_SHARED && type != Libc.MAP_PRIVATE) || !GgufFiles.StartsWithMagic(fd))
        {
            return 0;
        }

        long rounded = AddressSpace.RoundUp(length, PageSize);
        Arena arena;
        long address;
        lock (_lock)
        {
            address = _mmapSpace.Take(rounded, AddressSpace.Unit);
            if (address == 0) return 0;
            arena = _engine.CreateArenaAt((nint)address, rounded, sealedFile != null ? "sealed gguf" : "gguf");
        }
        bool bypassedPageCache = true;
        try
        {
            if (sealedFile != null)
            {
                // Nothing is read now: each page comes from the file, decrypted or zeroed,
                // when the program first touches it.
                var access = sealedFile;
                arena.AttachSource(new SealedFileSource(access.View, (int)access.Source.DangerousGetHandle(), offset,
                    onTampered: () => _sealedFiles.ReportTampering(access)));
            }
            else
            {
                // Likewise read on first touch, with O_DIRECT past the page cache.
                var source = FileSource.Open(fd, offset);
                bypassedPageCache = source.BypassesPageCache;
                if (source.PagesLeftInPageCache != 0)
                    Native.ProcessCalls.WriteError(source.PagesLeftInPageCache > 0
                        ? $"tibet: {source.PagesLeftInPageCache} pages of the model file open as descriptor {fd} stay in the page cache, in plaintext: " +
                          "the kernel would not drop them (another process maps the file, or it is being written). Stop the other user of the file, or seal the model (tibet seal)."
                        : $"tibet: cannot tell whether the page cache still holds the model file open as descriptor {fd} (neither cachestat nor mincore answered).");
                try
                {
                    arena.AttachSource(source);
                }
                catch
                {
                    source.Release();
                    throw;
                }
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
            Native.ProcessCalls.WriteError($"tibet: {(sealedFile.View.IsLive ? "live" : "dead")} map of sealed model '{sealedFile.Path}' " +
                                           $"({rounded >> 10} KiB at offset {offset}) at 0x{address:x}: pages are read from the file on first touch");
        else if (_verbosity > 0)
            Native.ProcessCalls.WriteError($"tibet: GGUF map of descriptor {fd} ({rounded >> 10} KiB at offset {offset}) served from an encrypted arena at 0x{address:x}: " +
                                           "pages are read from the file on first touch" +
                                           (bypassedPageCache ? "" : "; the file system refuses O_DIRECT, so each read goes through the page cache and is dropped from it at once"));
        return (nint)address;
    }

    /// <summary>munmap of a range that touches the mapping region: 0, or an errno.</summary>
    public int Unmap(nint address, long length)
    {
        if ((address & (PageSize - 1)) != 0 || length <= 0)
            return Libc.EINVAL;
        long start = address;
        long end = start + AddressSpace.RoundUp(length, PageSize);
        long inStart = Math.Max(start, _mmapSpace.Base);
        long inEnd = Math.Min(end, _mmapSpace.Limit);

        // Whatever lies outside our region is somebody else's mapping.
        if (start < inStart && Libc.munmap((nint)start, (nuint)(inStart - start)) != 0) return Libc.LastErrno;
        if (inEnd < end && Libc.munmap((nint)inEnd, (nuint)(end - inEnd)) != 0) return Libc.LastErrno;

        lock (_lock)
        {
            // Turning the range back into reservation unmaps whatever is there (our arena
            // pages, which the engine learns of through its UNMAP event, or a mapping the
            // program placed there with MAP_FIXED) and keeps the region whole.
            Reserve(inStart, inEnd - inStart);
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

    public nint Remap(nint old, long oldSize, long newSize, int flags, out int error)
    {
        error = 0;
        long oldLength = AddressSpace.RoundUp(oldSize, PageSize);
        long newLength = AddressSpace.RoundUp(newSize, PageSize);
        Arena? arena;
        lock (_lock)
            _mappings.TryGetValue(old, out arena);
        if (arena == null || (old & (PageSize - 1)) != 0 || newSize <= 0 || oldLength > arena.Length)
        {
            error = Libc.EINVAL;
            return Libc.MAP_FAILED;
        }
        if (newLength <= oldLength)
        {
            if (newLength < oldLength && (error = Unmap(old + (nint)newLength, oldLength - newLength)) != 0)
                return Libc.MAP_FAILED;
            return old;
        }
        const int MREMAP_MAYMOVE = 1;
        if ((flags & MREMAP_MAYMOVE) == 0)
        {
            error = Libc.ENOMEM; // growing in place would run into the next mapping
            return Libc.MAP_FAILED;
        }
        nint moved = Map(newLength);
        if (moved == 0)
        {
            error = Libc.ENOMEM;
            return Libc.MAP_FAILED;
        }
        Libc.memcpy((void*)moved, (void*)old, (nuint)oldLength);
        Unmap(old, oldLength);
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
