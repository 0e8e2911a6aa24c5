namespace Tibet.Core.Paging.AddressSpace;

/// <summary>
/// The page-table operations the engine performs on one served address space: put pages
/// in (and wake who waits for them), answer a fault with SIGBUS, and take pages out.
/// </summary>
/// <remarks>
/// <para>Everything the engine does to the program's memory goes through here; the rest
/// of the engine only keeps books. Three implementations: <see cref="UffdAddressSpace"/>
/// (a userfaultfd: this process's, or a forked child's), <see cref="LocalAddressSpace"/>
/// (this process, with take-out by UFFDIO_MOVE) and <see cref="AgentAddressSpace"/>
/// (another process, served by the custodian, with take-out by its own thread).</para>
/// <para>Why a seam: serving a process from outside (the custodian of a later issue)
/// changes only how these are done. UFFDIO_COPY, ZEROPAGE, WAKE and POISON work on a
/// userfaultfd received from another process; UFFDIO_MOVE does not (EINVAL on Linux 6.18,
/// the two mms differ), so there take-out needs an agent inside the served process.</para>
/// <para>Every method returns 0 or a positive errno and never throws, allocates or calls
/// malloc: the fault path decides what an error means. Partial progress is reported as
/// the kernel reports it.</para>
/// <para>An abstract class, not an interface: the runtime resolves interface calls
/// lazily at each call site, and that resolution called malloc on the handler thread's
/// first faults (26 calls, caught by the malloc probe test); virtual calls go through
/// the method table and need nothing at run time.</para>
/// </remarks>
internal abstract class AddressSpaceOps
{
    /// <summary>Installs <paramref name="length"/> bytes from <paramref name="source"/> (engine
    /// memory) into missing pages at <paramref name="address"/> and wakes their waiters.
    /// <paramref name="writeProtect"/>: installed write-protected (UFFDIO_COPY_MODE_WP), so
    /// that the first write to each page reaches the engine as a write-protect fault.</summary>
    public abstract int Copy(nint address, nint source, nuint length, bool writeProtect, out long done);

    /// <summary>Write-protects present pages (UFFDIO_WRITEPROTECT): their next write
    /// reaches the engine as a write-protect fault first. Missing pages are left as they are.</summary>
    public abstract int Protect(nint address, nuint length);

    /// <summary>Lifts write protection from present pages (UFFDIO_WRITEPROTECT) and wakes
    /// the writers waiting on them; on missing pages it only wakes.</summary>
    public abstract int Unprotect(nint address, nuint length);

    /// <summary>Installs zero pages and wakes their waiters.</summary>
    public abstract int ZeroPage(nint address, nuint length);

    /// <summary>Wakes threads waiting on the range without installing anything: they
    /// retry, and fault again if the page is still missing.</summary>
    public abstract int Wake(nint address, nuint length);

    /// <summary>Marks missing pages poisoned (UFFDIO_POISON): their readers get SIGBUS.</summary>
    public abstract int Poison(nint address, nuint length);

    /// <summary>
    /// Replaces the 4 KiB pages of a fully present, 2 MiB-aligned range by one transparent
    /// huge page (MADV_COLLAPSE), so the program reads it with one TLB entry instead of
    /// 512. Contents are unchanged. Taking one page out later splits it again. ENOSYS
    /// where not possible (from another process it would be process_madvise).
    /// </summary>
    public abstract int Collapse(nint address, nuint length);

    /// <summary>
    /// Slots of staging: each a 2 MiB-aligned area of 2 MiB of engine memory, backed by a
    /// transparent huge page, where a whole range of a model map is prepared for
    /// <see cref="PlaceStaged"/> (the fault service fills one, its range reader the other).
    /// 0 where ranges cannot be placed whole (another process's address space: UFFDIO_MOVE
    /// needs one mm; transparent huge pages disabled).
    /// </summary>
    public virtual int HugeStagingSlots => 0;

    /// <summary>Where staging slot <paramref name="slot"/> is, in engine memory.</summary>
    public virtual nint HugeStaging(int slot) => 0;

    /// <summary>
    /// Moves staging slot <paramref name="slot"/> into the missing, 2 MiB-aligned range at
    /// <paramref name="address"/> with UFFDIO_MOVE, which moves the huge page's table entry
    /// itself: no copy, and the program reads the range through one TLB entry. Wakes no one:
    /// the caller protects the range if it keeps a copy, then wakes it.
    /// <paramref name="done"/>: bytes moved (all or none while the slot holds a huge page);
    /// what was not moved stays staged until <see cref="DiscardStaged"/>.
    /// <paramref name="huge"/>: whether it went in as a huge page (the kernel may have had
    /// none free: then as 4 KiB pages). <paramref name="stagedHuge"/>: the slot holds a
    /// huge page taken out of a map whole (<see cref="TakeOutRange"/>), known huge.
    /// </summary>
    public virtual int PlaceStaged(int slot, nint address, bool stagedHuge, out long done, out bool huge)
    {
        done = 0;
        huge = false;
        return Interop.Libc.ENOSYS;
    }

    /// <summary>Wipes what staging slot <paramref name="slot"/> holds and gives its memory back.</summary>
    public virtual void DiscardStaged(int slot)
    {
    }

    /// <summary>
    /// Takes the present, 2 MiB-aligned range at <paramref name="address"/> out of the
    /// address space into the empty staging slot <paramref name="slot"/> with UFFDIO_MOVE,
    /// atomically against writers, as <see cref="TakeOut"/> does for pages: a huge page
    /// moves as its one table entry, so the range leaves with one TLB flush, is not split,
    /// and its page can be filled again and placed elsewhere without the kernel freeing,
    /// allocating or zeroing 2 MiB. <paramref name="done"/>: bytes moved, from the first on;
    /// what was moved stays in the slot until it is placed or discarded. ENOSYS where
    /// <see cref="RecyclingSlot"/> is -1.
    /// </summary>
    public virtual int TakeOutRange(int slot, nint address, out long done)
    {
        done = 0;
        return Interop.Libc.ENOSYS;
    }

    /// <summary>The staging slot <see cref="TakeOutRange"/> can move a range into (the
    /// evictor's), or -1 where ranges cannot be taken out whole.</summary>
    public virtual int RecyclingSlot => -1;

    /// <summary>Whether <see cref="TakeOut"/> works on this address space.</summary>
    public abstract bool CanTakeOut { get; }

    /// <summary>
    /// Takes present pages out of the address space, atomically against its writers (a
    /// write lands before and is taken along, or faults after), into the engine's take-out
    /// area at page slot <paramref name="slot"/> and on. <paramref name="done"/>: bytes taken.
    /// ENOENT: nothing mapped there. EBUSY: shared (copy-on-write with a child) or pinned.
    /// </summary>
    public abstract int TakeOut(int slot, nint address, nuint length, out long done);

    /// <summary>A batch of take-outs begins: these runs follow, each with
    /// <see cref="TakeOut"/> (see <see cref="AgentAddressSpace"/>, which asks for all of them
    /// in one request).</summary>
    public virtual void BeginTakeOuts(ReadOnlySpan<TakeOutRun> runs)
    {
    }

    /// <summary>After a take-out reported an error: whether the page was taken all the same
    /// (the page tables are the truth; see <see cref="LocalAddressSpace"/>).</summary>
    public abstract bool TookOutDespiteError(int slot, nint address);

    /// <summary>Where the page taken out into <paramref name="slot"/> is, in engine memory.</summary>
    public abstract nint TakenPage(int slot);

    /// <summary>Gives the take-out area's first <paramref name="slots"/> pages back (the
    /// engine has wiped each page it sealed).</summary>
    public abstract void ReleaseTaken(int slots);
}

/// <summary>Pages of one run of neighbours to take out, into the take-out area from <see cref="Slot"/> on.</summary>
internal readonly record struct TakeOutRun(nint Address, int Pages, int Slot);
