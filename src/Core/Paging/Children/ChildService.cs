using Tibet.Core.Crypto;
using Tibet.Core.Interop;
using Tibet.Core.Paging.AddressSpace;
using Tibet.Core.Paging.Events;
using Tibet.Core.Paging.Faults;
using Tibet.Core.Paging.Reporting;
using Tibet.Core.Paging.Sealing;
using Tibet.Core.Storage;
using static Tibet.Core.Interop.UserfaultfdAbi;

namespace Tibet.Core.Paging.Children;

/// <summary>
/// The engine's child service: forked children get the arenas as they were at fork time,
/// served from here through the userfaultfd each fork event brings.
/// </summary>
/// <remarks>Called under the engine lock. Serving a child's fault is allocation-free; the
/// fork event itself allocates (a snapshot of the page tables is needed there anyway).</remarks>
internal sealed unsafe class ChildService : IDisposable
{
    private const long SYS_pidfd_open = 434;
    private const int PageSize = Userfaultfd.PageSize;

    // No limit on children served at once: a child above any limit would read zeros (or
    // have to die). The table grows on the fork event, the one place in the handler that
    // allocates (a snapshot of the page tables is needed there anyway).
    private readonly List<ForkedChild> _children = [];
    private int _peakChildren;
    private readonly ArenaTable _arenas;
    private readonly PageSealer _sealer;
    private readonly FaultService _faults;
    private readonly FailureReporter _reporter;
    private readonly ProgramEvents _events;

    public ChildService(ArenaTable arenas, PageSealer sealer, FaultService faults, FailureReporter reporter, ProgramEvents events)
    {
        _arenas = arenas;
        _sealer = sealer;
        _faults = faults;
        _reporter = reporter;
        _events = events;
    }

    /// <summary>Children served now.</summary>
    public int Count => _children.Count;

    /// <summary>The most children served at once.</summary>
    public int Peak => _peakChildren;

    /// <summary>
    /// One arena as a forked child sees it: a copy of the page table taken when the fork
    /// event was read, and the arena's key (kept alive by a reference). The ciphertext it
    /// points to stays valid because the store defers frees while any child lives.
    /// </summary>
    private sealed class ChildRegion(nint address, long pageCount, PageEntry* entries, PageCipher cipher, IPageSource? source,
        ulong arenaId, string label)
    {
        public readonly ulong ArenaId = arenaId;
        public readonly string Label = label;
        public readonly nint Address = address;
        public readonly long PageCount = pageCount;
        public readonly PageEntry* Entries = entries;
        public readonly PageCipher Cipher = cipher;
        public readonly IPageSource? Source = source;

        public ChildRegion Copy()
        {
            var entries = (PageEntry*)KernelMemory.Map((nuint)(PageCount * sizeof(PageEntry)));
            Buffer.MemoryCopy(Entries, entries, PageCount * sizeof(PageEntry), PageCount * sizeof(PageEntry));
            Cipher.Retain();
            Source?.Retain();
            return new ChildRegion(Address, PageCount, entries, Cipher, Source, ArenaId, Label);
        }

        public void Release()
        {
            KernelMemory.Unmap((nint)Entries, (nuint)(PageCount * sizeof(PageEntry)));
            Cipher.Release();
            Source?.Release();
        }
    }

    private sealed class ForkedChild(Userfaultfd uffd, ChildRegion[] regions)
    {
        public readonly Userfaultfd Uffd = uffd;
        public readonly AddressSpaceOps Space = new UffdAddressSpace(uffd);
        public readonly ChildRegion[] Regions = regions; // sorted by address
        public int Pid;
        public int PidFd = -1;

        // Faults read but not served yet, in order. Serving a fault can read more
        // messages (UFFDIO_COPY answers EAGAIN until the child's pending event is read),
        // so messages never wait in the shared read buffer, which that read reuses.
        private ChildFault[] _faults = new ChildFault[64];
        private int _faultHead;
        private int _faultCount;

        public void EnqueueFault(nint address, uint threadId, bool writeProtect)
        {
            if (_faultCount == _faults.Length)
            {
                // A child with more blocked threads than slots: rare, and never dropped.
                var grown = new ChildFault[_faults.Length * 2];
                for (int i = 0; i < _faultCount; i++)
                    grown[i] = _faults[(_faultHead + i) % _faults.Length];
                _faults = grown;
                _faultHead = 0;
            }
            _faults[(_faultHead + _faultCount++) % _faults.Length] = new ChildFault(address, threadId, writeProtect);
        }

        public bool TryDequeueFault(out ChildFault fault)
        {
            if (_faultCount == 0)
            {
                fault = default;
                return false;
            }
            fault = _faults[_faultHead];
            _faultHead = (_faultHead + 1) % _faults.Length;
            _faultCount--;
            return true;
        }

        public ChildRegion? Find(nint address)
        {
            int lo = 0, hi = Regions.Length - 1;
            while (lo <= hi)
            {
                int mid = (lo + hi) >>> 1;
                ChildRegion r = Regions[mid];
                if (address < r.Address) hi = mid - 1;
                else if (address >= r.Address + (nint)(r.PageCount * PageSize)) lo = mid + 1;
                else return r;
            }
            return null;
        }

        public void Dispose(SealedPageStore store)
        {
            foreach (var region in Regions) region.Release();
            Uffd.Dispose();
            if (PidFd >= 0) Libc.close(PidFd);
            store.Unpin();
        }
    }

    /// <summary>See <see cref="PageEngine.ChildForked"/>.</summary>
    public void ChildForked(int pid)
    {
        for (int i = _children.Count - 1; i >= 0; i--)
        {
            ForkedChild child = _children[i];
            if (child.Pid != 0) continue;
            child.Pid = pid;
            child.PidFd = (int)Libc.syscall(SYS_pidfd_open, pid, 0, 0);
            if (child.PidFd < 0)
            {
                // Already gone (and reaped): nothing left to serve.
                child.Dispose(_sealer.Store);
                _children.RemoveAt(i);
            }
            break;
        }
    }

    /// <summary>See <see cref="PageEngine.HandOverChildren"/>.</summary>
    public (int Children, long Pages) HandOver()
    {
        int children = 0;
        long pages = 0;
        foreach (ForkedChild child in _children)
        {
            if (child.PidFd >= 0 && ChildExited(child.PidFd))
                continue;
            long before = pages;
            foreach (ChildRegion region in child.Regions)
                for (long index = 0; index < region.PageCount; index++)
                {
                    PageState state = region.Entries[index].State;
                    if (state != PageState.Sealed && !(state == PageState.Untouched && region.Source != null))
                        continue;
                    ServeChildFault(child, new ChildFault(region.Address + (nint)(index * PageSize), ThreadId: 0, WriteProtect: false));
                    pages++;
                }
            // Faults the child made meanwhile: their pages are in it now.
            while (child.TryDequeueFault(out ChildFault fault))
                ServeChildFault(child, in fault);
            if (pages > before)
                children++;
        }
        return (children, pages);
    }

    /// <summary>The parent forked: the child's arenas are served as they are now.</summary>
    public void AdoptFromParent(int descriptor) => AdoptChild(descriptor, SnapshotArenas());

    /// <summary>A fork after a handler failure: the child is only answered with SIGBUS.</summary>
    public void AdoptUnserved(int descriptor) => AdoptChild(descriptor, []);

    private ChildRegion[] SnapshotArenas()
    {
        var regions = new ChildRegion[_arenas.ByAddress.Length];
        for (int i = 0; i < regions.Length; i++)
        {
            Arena arena = _arenas.ByAddress[i];
            regions[i] = new ChildRegion(arena.Address, arena.PageCount, arena.Entries, arena.Cipher, arena.Source, arena.Id, arena.Label).Copy();
        }
        return regions;
    }

    private void AdoptChild(int descriptor, ChildRegion[] regions)
    {
        _sealer.Store.Pin();
        AddChild(new ForkedChild(Userfaultfd.Adopt(descriptor), regions));
    }

    private void AddChild(ForkedChild child)
    {
        _children.Add(child);
        _peakChildren = Math.Max(_peakChildren, _children.Count);
    }

    /// <summary>Poll entries the children need: a userfaultfd and a pidfd each.</summary>
    public int PollEntries => 2 * _children.Count;

    /// <summary>Appends each child's userfaultfd and pidfd to <paramref name="fds"/> from
    /// <paramref name="n"/> on (room for <see cref="PollEntries"/>); returns the new count.</summary>
    public int AppendPollSet(Libc.PollFd[] fds, int n)
    {
        foreach (var child in _children)
        {
            fds[n++] = new Libc.PollFd { Fd = child.Uffd.Descriptor, Events = Libc.POLLIN };
            if (child.PidFd >= 0)
                fds[n++] = new Libc.PollFd { Fd = child.PidFd, Events = Libc.POLLIN };
        }
        return n;
    }

    /// <summary>Serves every child's pending messages and retires children that exited.</summary>
    public bool Pump(ref StrandedFault inFlight)
    {
        bool worked = false;
        for (int i = _children.Count - 1; i >= 0; i--)
        {
            ForkedChild child = _children[i];
            if (ReadChildMessages(child) > 0)
                worked = true;
            while (child.TryDequeueFault(out ChildFault fault))
            {
                worked = true;
                inFlight = new StrandedFault(child.Space, (ulong)fault.Address, fault.ThreadId, child.Pid);
                ServeChildFault(child, in fault);
                inFlight = default;
            }
            if (child.PidFd >= 0 && ChildExited(child.PidFd))
            {
                child.Dispose(_sealer.Store);
                _children.RemoveAt(i);
                worked = true;
            }
        }
        return worked;
    }

    private static bool ChildExited(int pidFd)
    {
        Libc.PollFd fd = new() { Fd = pidFd, Events = Libc.POLLIN };
        return Libc.poll(&fd, 1, 0) > 0;
    }

    /// <summary>
    /// Reads everything the child's userfaultfd has: faults are queued on the child, events
    /// handled at once (a fork event must be: see ProgramEvents.ReadIntoQueue). Nothing
    /// here reads again, so the shared read buffer is never refilled while it is iterated.
    /// </summary>
    private int ReadChildMessages(ForkedChild child)
    {
        int total = 0;
        int n;
        while ((n = child.Uffd.ReadMessages(_events.ReadBuffer, ProgramEvents.MessagesPerRead)) > 0)
        {
            total += n;
            for (int m = 0; m < n; m++)
            {
                if (_events.ReadBuffer[m].@event == UFFD_EVENT_PAGEFAULT)
                    child.EnqueueFault((nint)(_events.ReadBuffer[m].pagefault_address & ~(ulong)(PageSize - 1)), _events.ReadBuffer[m].pagefault_feat_ptid,
                        (_events.ReadBuffer[m].pagefault_flags & UFFD_PAGEFAULT_FLAG_WP) != 0);
                else
                    HandleChildEvent(child, in _events.ReadBuffer[m]);
            }
            if (n < ProgramEvents.MessagesPerRead)
                break;
        }
        return total;
    }

    private void HandleChildEvent(ForkedChild child, in uffd_msg message)
    {
        switch (message.@event)
        {
            case UFFD_EVENT_REMOVE:
            case UFFD_EVENT_UNMAP:
                var state = message.@event == UFFD_EVENT_REMOVE ? PageState.Zero : PageState.Unmapped;
                for (nint a = (nint)message.remove_start; a < (nint)message.remove_end; a += PageSize)
                {
                    ChildRegion? region = child.Find(a);
                    if (region == null) continue;
                    ref PageEntry entry = ref region.Entries[(a - region.Address) / PageSize];
                    // Ciphertext belongs to the parent's store: never freed from here.
                    if (state == PageState.Unmapped || entry.State != PageState.Resident)
                        entry.State = state;
                }
                if (message.@event == UFFD_EVENT_UNMAP)
                    child.Space.Wake((nint)message.remove_start, (nuint)(message.remove_end - message.remove_start));
                break;
            case UFFD_EVENT_FORK:
                // A grandchild sees what the child saw.
                AdoptChild((int)message.fork_ufd, CopyRegions(child.Regions));
                break;
        }
    }

    private static ChildRegion[] CopyRegions(ChildRegion[] regions)
    {
        var copies = new ChildRegion[regions.Length];
        for (int i = 0; i < regions.Length; i++)
            copies[i] = regions[i].Copy();
        return copies;
    }

    private readonly record struct ChildFault(nint Address, uint ThreadId, bool WriteProtect);

    /// <summary>A child touched a page it does not have: give it the fork-time contents.
    /// Or it wrote to one it inherited write-protected: make that writable.</summary>
    private void ServeChildFault(ForkedChild child, in ChildFault fault)
    {
        nint address = fault.Address;
        uint threadId = fault.ThreadId;
        if (fault.WriteProtect)
        {
            UnprotectInChild(child, address);
            return;
        }
        ChildRegion? region = child.Find(address);
        if (region == null)
        {
            child.Space.Wake(address, PageSize);
            return;
        }
        long index = (address - region.Address) / PageSize;
        ref PageEntry entry = ref region.Entries[index];
        byte* buffer = _faults.Buffer;
        switch (entry.State)
        {
            case PageState.Sealed:
            case PageState.Untouched when region.Source != null:
                // Sealed in the parent, or never touched there: the child reads the source's
                // page, as the parent would.
                bool filled;
                TamperKind kind;
                if (entry.State == PageState.Sealed)
                {
                    filled = _sealer.TryOpen(region.Cipher, index, in entry, buffer);
                    kind = TamperKind.SealedPage;
                }
                else
                {
                    filled = _faults.FillFromSource(region.Source!, index, buffer) != PageVerdict.Tampered;
                    region.Source!.EndOfFault();
                    kind = TamperKind.SourcePage;
                }
                if (!filled)
                {
                    PoisonChildPage(child, region, index, ref entry, threadId, kind);
                    return;
                }
                InjectIntoChild(child, address, buffer);
                Libc.memset(buffer, 0, PageSize);
                entry.State = PageState.Resident;
                break;
            case PageState.Poisoned:
                _reporter.SignalFault(child.Space, address, threadId, child.Pid);
                break;
            case PageState.Unmapped:
                child.Space.Wake(address, PageSize);
                break;
            default:
                // Never touched, known zero, or resident at fork and discarded since.
                if (child.Space.ZeroPage(address, PageSize) != 0)
                    child.Space.Wake(address, PageSize);
                entry.State = PageState.Resident;
                break;
        }
    }

    /// <summary>The child's copy of a page failed authentication (or its source could not
    /// supply it): the child's reader gets SIGBUS, now and on every later touch, once the
    /// reporter has said so.</summary>
    private void PoisonChildPage(ForkedChild child, ChildRegion region, long index, ref PageEntry entry, uint threadId, TamperKind kind)
    {
        entry.State = PageState.Poisoned;
        nint address = region.Address + (nint)(index * PageSize);
        _reporter.Post(kind, region.ArenaId, region.Label, index, address,
            kind == TamperKind.SourcePage ? region.Source : null, child.Pid != 0 ? child.Pid : -1);
        _reporter.SignalFault(child.Space, address, threadId, child.Pid);
    }

    /// <summary>
    /// A child wrote to a page it inherited write-protected (the parent kept that page's
    /// sealed copy, see PageSealer.Retain; the protection is copied at fork). The child's
    /// pages are not evicted, so it only needs the page made writable, which wakes it.
    /// </summary>
    private void UnprotectInChild(ForkedChild child, nint address)
    {
        for (int attempt = 0; attempt < 100_000; attempt++)
        {
            int rc = child.Space.Unprotect(address, PageSize);
            if (rc == 0) return;
            if (rc != Libc.EAGAIN) break;
            ReadChildMessages(child); // the child's own event waits to be read first
        }
        child.Space.Wake(address, PageSize);
    }

    private void InjectIntoChild(ForkedChild child, nint address, byte* page)
    {
        for (int attempt = 0; attempt < 100_000; attempt++)
        {
            int rc = child.Space.Copy(address, (nint)page, PageSize, writeProtect: false, out _);
            if (rc == 0) return;
            if (rc == Libc.EEXIST) { child.Space.Wake(address, PageSize); return; }
            if (rc != Libc.EAGAIN) { child.Space.Wake(address, PageSize); return; }
            // The child's own event (madvise, munmap, fork) waits to be read first; the
            // faults read with it are queued behind the one being served.
            ReadChildMessages(child);
        }
    }

    /// <summary>Every child's queued faults get SIGBUS (the handler failed).</summary>
    public void RaiseStranded()
    {
        foreach (ForkedChild child in _children)
            while (child.TryDequeueFault(out ChildFault fault))
                _reporter.RaiseSigbus(child.Space, fault.Address, fault.ThreadId, child.Pid);
    }

    /// <summary>Failure mode: <paramref name="answer"/> reads each child's messages and
    /// answers its faults with SIGBUS; children that exited are let go.</summary>
    public void AnswerWithSigbus(Action<Userfaultfd, AddressSpaceOps, int> answer)
    {
        for (int i = _children.Count - 1; i >= 0; i--)
        {
            ForkedChild child = _children[i];
            answer(child.Uffd, child.Space, child.Pid);
            if (child.PidFd >= 0 && ChildExited(child.PidFd))
            {
                child.Dispose(_sealer.Store);
                _children.RemoveAt(i);
            }
        }
    }

    public void Dispose()
    {
        foreach (var child in _children)
            child.Dispose(_sealer.Store);
        _children.Clear();
    }
}
