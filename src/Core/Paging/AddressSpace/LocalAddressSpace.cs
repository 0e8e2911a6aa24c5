using System.Diagnostics;
using Tibet.Core.Interop;
using Tibet.Core.Paging.Collapse;
using Tibet.Core.Storage;
using static Tibet.Core.Interop.UserfaultfdAbi;

namespace Tibet.Core.Paging.AddressSpace;

/// <summary>
/// This process's address space: installs through the arenas' userfaultfd, and takes
/// pages out with UFFDIO_MOVE into a scratch area registered on a second userfaultfd.
/// </summary>
/// <remarks>
/// <para>The move is atomic against writers: a write either landed before it (and is
/// taken along) or faults after it, and waits for the engine, which holds its lock until
/// the page is sealed. The scratch area is given back with MADV_DONTNEED; because its
/// userfaultfd has no REMOVE events, the engine never waits on an event of its own.</para>
/// <para>The scratch userfaultfd registers write-protect mode only: a read of an empty
/// scratch page is then an ordinary zero-fill by the kernel, never a message the engine
/// would have to answer.</para>
/// </remarks>
internal sealed unsafe class LocalAddressSpace : UffdAddressSpace, IDisposable
{
    private const int PageSize = Userfaultfd.PageSize;

    private readonly Userfaultfd _scratchUffd;
    private readonly nint _scratch;
    private readonly nuint _scratchLength;
    private readonly nint _staging;

    /// <param name="arenas">The userfaultfd the arenas are registered on.</param>
    /// <param name="takeOutPages">Pages the take-out area holds (the eviction batch).</param>
    /// <exception cref="UserfaultfdUnavailableException">The kernel cannot move pages.</exception>
    public LocalAddressSpace(Userfaultfd arenas, bool placesRanges, int takeOutPages) : base(arenas)
    {
        _scratchUffd = Userfaultfd.Open(UFFD_FEATURE_MOVE | UFFD_FEATURE_PAGEFAULT_FLAG_WP);
        _scratchLength = (nuint)(takeOutPages * PageSize);
        _scratch = KernelMemory.Map(_scratchLength);
        Libc.madvise(_scratch, _scratchLength, Libc.MADV_NOHUGEPAGE);
        // Plaintext sits here between the move and the sealing.
        Libc.madvise(_scratch, _scratchLength, Libc.MADV_DONTDUMP);
        ulong ioctls = _scratchUffd.Register(_scratch, _scratchLength, UFFDIO_REGISTER_MODE_WP);
        if ((ioctls & (1UL << _UFFDIO_MOVE)) == 0)
        {
            Dispose();
            throw new UserfaultfdUnavailableException("The kernel registered the scratch area without UFFDIO_MOVE; eviction cannot work.");
        }
        // A rare path (a move the kernel refused, as for pages shared with a child): its
        // mincore binding is resolved now (dlsym calls malloc), not on the handler's first
        // refused move. Compiling it (CodeWarmUp) does not bind the native call.
        _ = TookOutDespiteError(0, _scratch);
        _staging = placesRanges && TransparentHugePages.Enabled ? MapStaging() : 0;
        // The recycling slot receives whole ranges taken out of arenas: a UFFDIO_MOVE's
        // destination must be registered on the userfaultfd it is issued on. Write-protect
        // mode only, as the take-out area: a touch of it is never a message to answer.
        _recycles = _staging != 0
                    && (_scratchUffd.Register(HugeStaging(RecyclingSlotIndex), StagingLength, UFFDIO_REGISTER_MODE_WP) & (1UL << _UFFDIO_MOVE)) != 0;
    }

    private readonly bool _recycles;

    /// <summary>The staging slots: 2 MiB-aligned, allowed transparent huge pages
    /// (MADV_HUGEPAGE, so a slot's first touch gets one with THP "madvise" too), and like an
    /// arena in everything UFFDIO_MOVE compares (read-write, private, anonymous, not
    /// locked). Never inherited by a forked child: a page shared with a child could not be
    /// moved.</summary>
    private static nint MapStaging()
    {
        nint staging = KernelMemory.MapAligned(StagingLength * StagingSlots, StagingLength);
        Libc.madvise(staging, StagingLength * StagingSlots, Libc.MADV_HUGEPAGE);
        Libc.madvise(staging, StagingLength * StagingSlots, Libc.MADV_DONTDUMP); // plaintext, between the read and the move
        Libc.madvise(staging, StagingLength * StagingSlots, Libc.MADV_DONTFORK);
        return staging;
    }

    private const nuint StagingLength = 2 << 20;
    // 0: the fault service's; 1: the range reader's; 2: the evictor's, for recycling.
    private const int StagingSlots = 3;
    private const int RecyclingSlotIndex = 2;

    public override int RecyclingSlot => _recycles ? RecyclingSlotIndex : -1;

    public override int TakeOutRange(int slot, nint address, out long done)
    {
        Debug.Assert(slot == RecyclingSlotIndex && _recycles && (address & ((nint)StagingLength - 1)) == 0);
        return _scratchUffd.Move(HugeStaging(slot), address, StagingLength, out done);
    }

    public override int HugeStagingSlots => _staging == 0 ? 0 : StagingSlots;

    public override nint HugeStaging(int slot)
    {
        Debug.Assert(_staging != 0 && (uint)slot < StagingSlots);
        return _staging + slot * (nint)StagingLength;
    }

    /// <remarks>The slot's first touch (the read into it) normally got a huge page; where
    /// the kernel had none free it got 4 KiB pages, which MADV_COLLAPSE gathers into one
    /// now if it can (on a huge page it only looks: 3–16 µs here, but it drains the LRU
    /// caches of every CPU first, and waits for that: up to 1 ms under load). A huge page
    /// moved out of a map whole (<paramref name="stagedHuge"/>) is not looked at again:
    /// llama.cpp at half budget, 6 interleaved runs: medians 54 tokens/s against 50.</remarks>
    public override int PlaceStaged(int slot, nint address, bool stagedHuge, out long done, out bool huge)
    {
        Debug.Assert((address & ((nint)StagingLength - 1)) == 0);
        nint staged = HugeStaging(slot);
        huge = stagedHuge || Libc.madvise(staged, StagingLength, Libc.MADV_COLLAPSE) == 0;
        return Uffd.Move(address, staged, StagingLength, out done);
    }

    public override void DiscardStaged(int slot)
    {
        nint staged = HugeStaging(slot);
        Libc.memset((void*)staged, 0, StagingLength);
        Libc.madvise(staged, StagingLength, Libc.MADV_DONTNEED);
    }

    public override bool CanTakeOut => true;

    public override int Collapse(nint address, nuint length) =>
        Libc.madvise(address, length, Libc.MADV_COLLAPSE) == 0 ? 0 : Libc.LastErrno;

    public override int TakeOut(int slot, nint address, nuint length, out long done) =>
        _scratchUffd.Move(_scratch + slot * PageSize, address, length, out done);

    /// <remarks>Linux 6.18 was caught answering EEXIST to a single-page move that had put
    /// the page into the (empty) scratch slot. Taken at its word, the page stayed on the
    /// books as resident, its only copy sat in scratch until the next batch dropped it,
    /// and a later move found the arena slot empty: the page's contents were lost (a
    /// stress test of 3 million faults lost one page in about three runs). So every failed
    /// move is checked against the page tables: two mincore calls on a failure, nothing
    /// on success.</remarks>
    public override bool TookOutDespiteError(int slot, nint address)
    {
        byte scratchPage = 0, arenaPage = 0;
        return Libc.mincore(_scratch + slot * PageSize, PageSize, &scratchPage) == 0 && (scratchPage & 1) != 0
            && Libc.mincore(address, PageSize, &arenaPage) == 0 && (arenaPage & 1) == 0;
    }

    public override nint TakenPage(int slot) => _scratch + slot * PageSize;

    /// <remarks>The engine wipes each page it took as it seals it; writing zeros over the
    /// rest here would only fault in pages to be dropped.</remarks>
    public override void ReleaseTaken(int slots) =>
        Libc.madvise(_scratch, (nuint)(slots * PageSize), Libc.MADV_DONTNEED);

    /// <summary>Clears the whole take-out area: after a failure, pages may sit there
    /// taken out and never sealed.</summary>
    public void Wipe()
    {
        Libc.memset((void*)_scratch, 0, _scratchLength);
        Libc.madvise(_scratch, _scratchLength, Libc.MADV_DONTNEED);
    }

    public void Dispose()
    {
        _scratchUffd.Dispose();
        KernelMemory.Unmap(_scratch, _scratchLength);
        if (_staging != 0)
        {
            for (int slot = 0; slot < StagingSlots; slot++)
                DiscardStaged(slot);
            KernelMemory.Unmap(_staging, StagingLength * StagingSlots);
        }
    }
}
