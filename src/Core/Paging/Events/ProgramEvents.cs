using Tibet.Core.Paging.AddressSpace;
using Tibet.Core.Paging.Eviction;
using Tibet.Core.Paging.Sealing;
using Tibet.Core.Storage;
using static Tibet.Core.Interop.UserfaultfdAbi;

namespace Tibet.Core.Paging.Events;

/// <summary>
/// The engine's part for what the program does to its arenas, as the userfaultfd
/// reports it (madvise, munmap, mremap, fork), and for the order messages are taken in:
/// events are handled as soon as they are read, faults read with them wait in a queue.
/// </summary>
/// <remarks>
/// <para>The kernel refuses to install pages into the arenas (UFFDIO_COPY, and a MOVE into
/// them, answer EAGAIN) while an event waits to be read, so whoever meets EAGAIN there
/// calls <see cref="Drain"/>. A take-out is issued on the scratch area's userfaultfd and
/// never waits for these events (Eviction.Evictor.TakeOutOneRun). An event
/// can change the pages a fault is being served from: <see cref="Epoch"/> counts events,
/// and the fault service starts a fault afresh when it moved.</para>
/// <para>Called under the engine lock, on the fault path: allocation-free (the queue and
/// the read buffer are native memory).</para>
/// </remarks>
internal sealed unsafe class ProgramEvents : IDisposable
{
    public const int MessagesPerRead = 64;
    private const int QueueCapacity = 16384;
    private const int PageSize = Userfaultfd.PageSize;

    private readonly Userfaultfd _uffd;
    private readonly ArenaTable _arenas;
    private readonly PageSealer _sealer;
    private readonly Evictor _evictor;
    private readonly AddressSpaceOps _space;
    private readonly Action<int> _onFork;
    private readonly Action<Arena> _onAdoptedArenaUnmapped;
    private readonly bool _tracksWrites;
    private readonly uffd_msg* _queue;
    private readonly uffd_msg* _readBuffer;
    private int _head;
    private int _count;
    private long _epoch;
    private long _removes, _unmaps, _remaps;

    /// <param name="onFork">Takes a forked child's new userfaultfd (see ChildService).</param>
    /// <param name="tracksWrites">The arenas are registered for write protection (see
    /// <see cref="DiscardPage"/> for what that changes here).</param>
    /// <param name="onAdoptedArenaUnmapped">Releases the books of a served process's arena
    /// that it unmapped whole (see PageEngine.AdoptArena).</param>
    public ProgramEvents(Userfaultfd uffd, ArenaTable arenas, PageSealer sealer, Evictor evictor, AddressSpaceOps space,
        bool tracksWrites, Action<int> onFork, Action<Arena> onAdoptedArenaUnmapped)
    {
        _onAdoptedArenaUnmapped = onAdoptedArenaUnmapped;
        _tracksWrites = tracksWrites;
        _uffd = uffd;
        _arenas = arenas;
        _sealer = sealer;
        _evictor = evictor;
        _space = space;
        _onFork = onFork;
        _queue = (uffd_msg*)KernelMemory.Map((nuint)(QueueCapacity * sizeof(uffd_msg)));
        _readBuffer = (uffd_msg*)KernelMemory.Map((nuint)(MessagesPerRead * sizeof(uffd_msg)));
    }

    /// <summary>For tests (EngineOptions.ProtectAfterDiscardFails): the protection of pages
    /// the program gave up is never set in time, as on a loaded machine.</summary>
    internal bool ProtectAfterDiscardFails { get; init; }

    /// <summary>For tests (EngineOptions.AfterGivingUp).</summary>
    internal Action<Arena>? AfterGivingUp { get; init; }

    /// <summary>Events handled so far: a change means pages may have changed under a fault.</summary>
    public long Epoch => _epoch;

    public long Removes => _removes;
    public long Unmaps => _unmaps;
    public long Remaps => _remaps;

    /// <summary>A buffer of <see cref="MessagesPerRead"/> messages for whoever reads a
    /// userfaultfd under the engine lock (children's, and in failure mode). Never held
    /// across a call that may read again.</summary>
    public uffd_msg* ReadBuffer => _readBuffer;

    /// <summary>Faults read and not yet served.</summary>
    public int QueuedFaults => _count;

    public bool TryDequeue(out uffd_msg message)
    {
        if (_count == 0)
        {
            message = default;
            return false;
        }
        message = _queue[_head];
        _head = (_head + 1) % QueueCapacity;
        _count--;
        return true;
    }

    /// <summary>Forgets a page the program unmapped (or an arena being released): frees
    /// its ciphertext and takes it off the resident books.</summary>
    public void Unmap(ref PageEntry entry)
    {
        _sealer.Forget(ref entry);
        _evictor.Forget(ref entry);
        entry.State = PageState.Unmapped;
    }

    public void Dispose()
    {
        KernelMemory.Unmap((nint)_queue, (nuint)(QueueCapacity * sizeof(uffd_msg)));
        KernelMemory.Unmap((nint)_readBuffer, (nuint)(MessagesPerRead * sizeof(uffd_msg)));
    }

    /// <summary>
    /// Reads what the kernel has: faults are queued, events are handled at once, as
    /// <see cref="Drain"/> does. A fork event must be: reading it lets the kernel
    /// change page tables again, so a fault read in the same batch and served before the
    /// snapshot would put a page into the parent that the child never got, and the
    /// snapshot would then call it resident, which the child would read as zeros.
    /// </summary>
    public int ReadIntoQueue()
    {
        int total = 0;
        while (_count + MessagesPerRead <= QueueCapacity)
        {
            int n = _uffd.ReadMessages(_readBuffer, MessagesPerRead);
            for (int i = 0; i < n; i++)
            {
                if (_readBuffer[i].@event == UFFD_EVENT_PAGEFAULT)
                    _queue[(_head + _count++) % QueueCapacity] = _readBuffer[i];
                else
                    Handle(in _readBuffer[i]);
            }
            total += n;
            if (n < MessagesPerRead) break;
        }
        return total;
    }

    /// <summary>
    /// Reads pending messages, handling events at once and queueing faults. Called when
    /// an ioctl reports EAGAIN: the kernel refuses to change page tables while an event
    /// (munmap, madvise, mremap) waits to be read, and the faults it delivers first must
    /// not be lost meanwhile.
    /// </summary>
    public void Drain()
    {
        while (true)
        {
            int n = _uffd.ReadMessages(_readBuffer, MessagesPerRead);
            for (int i = 0; i < n; i++)
            {
                if (_readBuffer[i].@event == UFFD_EVENT_PAGEFAULT)
                {
                    if (_count == QueueCapacity)
                        throw new InvalidOperationException("userfaultfd message queue overflow");
                    _queue[(_head + _count++) % QueueCapacity] = _readBuffer[i];
                }
                else
                {
                    Handle(in _readBuffer[i]);
                }
            }
            if (n < MessagesPerRead) return;
        }
    }

    public void Handle(in uffd_msg message)
    {
        _epoch++;
        switch (message.@event)
        {
            case UFFD_EVENT_REMOVE:
                _removes++;
                ForEachPage((nint)message.remove_start, (nint)message.remove_end, unmap: false);
                break;
            case UFFD_EVENT_UNMAP:
                _unmaps++;
                ForEachPage((nint)message.remove_start, (nint)message.remove_end, unmap: true);
                // A thread blocked on a page that no longer exists retries and gets SIGSEGV.
                _space.Wake((nint)message.remove_start, (nuint)(message.remove_end - message.remove_start));
                break;
            case UFFD_EVENT_REMAP:
                _remaps++;
                HandleRemap((nint)message.remap_from, (nint)message.remap_to, (long)message.remap_len);
                break;
            case UFFD_EVENT_FORK:
                _onFork((int)message.fork_ufd);
                break;
        }
    }

    /// <summary>
    /// madvise(MADV_DONTNEED or MADV_FREE): the program gives the contents up. Sealed
    /// pages become zero pages and their ciphertext is freed. Returns whether the page
    /// was resident and left the books (<paramref name="offTheBooks"/>: its range is
    /// write-protected, see ForEachPage).
    /// </summary>
    /// <remarks>
    /// <para>A resident page is still mapped when this runs: the kernel zaps it only after
    /// the event is read (MADV_DONTNEED), or not at all (MADV_FREE, until reclaim). Kept on
    /// the books as resident, an eviction in that window took the given-up contents out
    /// and sealed them, and the program then read them back instead of zeros (caught by
    /// ReadAheadTests: a discarded block read old bytes).</para>
    /// <para>So, where writes are tracked, it leaves the books as a zero page at once, and
    /// its mapping is write-protected: after MADV_DONTNEED the next touch faults on a
    /// missing page and gets zeros; after MADV_FREE a read may still see the old bytes
    /// (which MADV_FREE allows), and a write, which must survive, is a write-protect
    /// fault that puts the page back on the books (FaultService.ServeWriteProtectFault).
    /// When the protection cannot be set in time, it stays on the books as resident,
    /// marked given up (PageEntry.FlagGivenUp): eviction never seals it, but protects it
    /// then and lets it leave the books, or leaves it for later (Evictor.SetAsideGivenUp).
    /// Without write tracking it stays on the books as resident, and the window remains.</para>
    /// <para>One race is left: after MADV_FREE, the program may write a page after madvise
    /// returns and before the protection is set (the kernel refuses it until the madvising
    /// thread has run again). That write lands, and is kept, but the page is then off the
    /// books: plaintext outside the budget until it is written again, discarded or unmapped
    /// (seen once in a CI run of EventTests). The interposer makes a libc madvise(MADV_FREE)
    /// of served memory a MADV_DONTNEED (native/shim.c), so only a raw system call, or a
    /// test, gets here with MADV_FREE.</para>
    /// </remarks>
    private bool DiscardPage(Arena arena, long index, bool offTheBooks)
    {
        ref PageEntry entry = ref arena.Entries[index];
        // Zero, also in a model map (natively a discarded page of a file map reads as the
        // file again): Zero is how the fault service tells a page the program gave up and
        // the kernel has not zapped yet from one it must serve (AdmitFoundMapped,
        // ServeWriteProtectFault). The README lists it among the known limitations.
        const PageState discarded = PageState.Zero;
        switch (entry.State)
        {
            case PageState.Sealed:
                _sealer.Forget(ref entry);
                entry.State = discarded;
                break;
            case PageState.Untouched:
            case PageState.Poisoned:
                entry.State = discarded;
                break;
            case PageState.Resident:
                // Its kept copy (if any) is not what it will read once the kernel zaps it.
                _sealer.Forget(ref entry);
                if (!offTheBooks)
                {
                    // Eviction leaves it be until it can be protected (Evictor.SetAsideGivenUp).
                    entry.Flags |= PageEntry.FlagGivenUp;
                    break;
                }
                _evictor.Forget(ref entry);
                entry.State = discarded;
                return true;
        }
        return false;
    }

    /// <summary>
    /// Write-protects the present pages of a range the program just gave up (missing ones
    /// are left as they are). The kernel answers EAGAIN until the thread that called
    /// madvise, woken by our reading of the event, has run again; that takes a scheduler
    /// round on this VM, so the reader yields its CPU meanwhile, for at most 2 ms. False
    /// if it could not: the pages then stay on the books as resident, marked given up, so
    /// that no eviction seals the bytes they gave up (see DiscardPage).
    /// </summary>
    /// <remarks>Not longer: the reader holds the engine lock, and under the custodian the
    /// madvising thread is another process's, which may wait for the custodian itself. With
    /// 200 ms, a CI run of the fork stress test under the custodian spun here for minutes.</remarks>
    private bool TryProtect(nint address, nuint length)
    {
        long deadline = System.Diagnostics.Stopwatch.GetTimestamp() + System.Diagnostics.Stopwatch.Frequency / 500;
        while (true)
        {
            int rc = _space.Protect(address, length);
            if (rc == 0)
                return true;
            if (rc != Interop.Libc.EAGAIN || System.Diagnostics.Stopwatch.GetTimestamp() > deadline)
                return false;
            Thread.Yield();
        }
    }

    private void ForEachPage(nint start, nint end, bool unmap)
    {
        nint cursor = start & ~(nint)(PageSize - 1);
        while (cursor < end)
        {
            Arena? arena = _arenas.Find(cursor);
            if (arena == null)
            {
                cursor = _arenas.NextStart(cursor, end);
                continue;
            }
            long first = (cursor - arena.Address) / PageSize;
            long last = Math.Min(arena.PageCount, (end - arena.Address + PageSize - 1) / PageSize);
            // Pages the kernel has not zapped yet (or, after MADV_FREE, may never zap) may
            // leave the books only once a write to them reaches the engine (see DiscardPage).
            bool offTheBooks = !unmap && _tracksWrites && !ProtectAfterDiscardFails
                               && TryProtect(arena.PageAddress(first), (nuint)((last - first) * PageSize));
            bool givenUpOnTheBooks = false;
            for (long i = first; i < last; i++)
            {
                if (unmap) Unmap(ref arena.Entries[i]);
                else
                {
                    DiscardPage(arena, i, offTheBooks);
                    givenUpOnTheBooks |= arena.Entries[i].IsGivenUp;
                }
            }
            if (givenUpOnTheBooks)
                AfterGivingUp?.Invoke(arena); // EngineOptions.AfterGivingUp: tests only
            cursor = arena.Address + (nint)arena.Length;
            // A served process freed a block: its books go with it.
            if (unmap && arena.Adopted && first == 0 && last == arena.PageCount)
                _onAdoptedArenaUnmapped(arena);
        }
    }

    /// <summary>
    /// mremap of a whole arena moves its page table along; the kernel moved the pages
    /// and the registration. Moving part of an arena is the interposer's job (it sees
    /// the call before the kernel does); here it is reported, not guessed at.
    /// </summary>
    private void HandleRemap(nint from, nint to, long length)
    {
        Arena? arena = _arenas.Find(from);
        if (arena == null) return;
        if (arena.Address == from && arena.Length == length)
        {
            arena.Address = to;
            _arenas.Reindex();
            return;
        }
        Console.Error.WriteLine(
            $"tibet: mremap moved {length} bytes from 0x{from:x} to 0x{to:x}, part of arena '{arena.Label}'; " +
            "moving part of an arena is not supported by the engine, and the moved pages are no longer served.");
    }
}
