using Tibet.Core.Crypto;
using Tibet.Core.Interop;
using Tibet.Core.Storage;
using static Tibet.Core.Interop.UserfaultfdAbi;

namespace Tibet.Core.Paging;

// Forked children: each gets the arenas as they were at fork time, served from here.
public sealed unsafe partial class PageEngine
{
    private const int MaxForkedChildren = 64;
    private const long SYS_pidfd_open = 434;
    private readonly List<ForkedChild> _children = [];

    /// <summary>
    /// One arena as a forked child sees it: a copy of the page table taken when the fork
    /// event was read, and the arena's key (kept alive by a reference). The ciphertext it
    /// points to stays valid because the store defers frees while any child lives.
    /// </summary>
    private sealed class ChildRegion(nint address, long pageCount, PageEntry* entries, PageCipher cipher, IPageSource? source)
    {
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
            return new ChildRegion(Address, PageCount, entries, Cipher, Source);
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
        public readonly ChildRegion[] Regions = regions; // sorted by address
        public int Pid;
        public int PidFd = -1;
        public readonly Queue<nint> PendingFaults = new(16);

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

        public void Dispose(CiphertextStore store)
        {
            foreach (var region in Regions) region.Release();
            Uffd.Dispose();
            if (PidFd >= 0) Libc.close(PidFd);
            store.Unpin();
        }
    }

    /// <summary>
    /// Tells the engine the pid of the child the last fork created (the interposer's
    /// fork wrapper calls this), so that the child's snapshot is released when it exits.
    /// Children made by a raw fork syscall keep theirs until this process ends.
    /// </summary>
    public void ChildForked(int pid)
    {
        lock (_gate)
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
                    child.Dispose(_store);
                    _children.RemoveAt(i);
                }
                break;
            }
        }
        KickHandler();
    }

    private ChildRegion[] SnapshotArenas()
    {
        var regions = new ChildRegion[_arenasByAddress.Length];
        for (int i = 0; i < regions.Length; i++)
        {
            Arena arena = _arenasByAddress[i];
            regions[i] = new ChildRegion(arena.Address, arena.PageCount, arena.Entries, arena.Cipher, arena.Source).Copy();
        }
        return regions;
    }

    private void AdoptChild(int descriptor, ChildRegion[] regions)
    {
        var child = new ForkedChild(Userfaultfd.Adopt(descriptor), regions);
        _store.Pin();
        if (_children.Count >= MaxForkedChildren)
        {
            Console.Error.WriteLine($"tibet: more than {MaxForkedChildren} forked children at once; the newest is not served and reads zeros for evicted pages");
            child.Dispose(_store);
            return;
        }
        _children.Add(child);
    }

    private int FillPollSet(Libc.PollFd* fds)
    {
        int n = 0;
        fds[n++] = new Libc.PollFd { Fd = _uffd.Descriptor, Events = Libc.POLLIN };
        fds[n++] = new Libc.PollFd { Fd = _wakeFd, Events = Libc.POLLIN };
        foreach (var child in _children)
        {
            fds[n++] = new Libc.PollFd { Fd = child.Uffd.Descriptor, Events = Libc.POLLIN };
            if (child.PidFd >= 0)
                fds[n++] = new Libc.PollFd { Fd = child.PidFd, Events = Libc.POLLIN };
        }
        return n;
    }

    /// <summary>Serves every child's pending messages and retires children that exited.</summary>
    private bool PumpChildrenLocked()
    {
        bool worked = false;
        for (int i = _children.Count - 1; i >= 0; i--)
        {
            ForkedChild child = _children[i];
            int n;
            while ((n = child.Uffd.ReadMessages(_readBuffer, MessagesPerRead)) > 0)
            {
                worked = true;
                for (int m = 0; m < n; m++)
                    HandleChildMessage(child, _readBuffer[m]);
            }
            while (child.PendingFaults.TryDequeue(out nint address))
            {
                worked = true;
                ServeChildFault(child, address);
            }
            if (child.PidFd >= 0 && ChildExited(child.PidFd))
            {
                child.Dispose(_store);
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

    private void HandleChildMessage(ForkedChild child, uffd_msg message)
    {
        switch (message.@event)
        {
            case UFFD_EVENT_PAGEFAULT:
                ServeChildFault(child, (nint)(message.pagefault_address & ~(ulong)(PageSize - 1)));
                break;
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
                    child.Uffd.Wake((nint)message.remove_start, (nuint)(message.remove_end - message.remove_start));
                break;
            case UFFD_EVENT_FORK:
                // A grandchild sees what the child saw.
                AdoptChild((int)message.fork_ufd, Array.ConvertAll(child.Regions, r => r.Copy()));
                break;
        }
    }

    /// <summary>A child touched a page it does not have: give it the fork-time contents.</summary>
    private void ServeChildFault(ForkedChild child, nint address)
    {
        ChildRegion? region = child.Find(address);
        if (region == null)
        {
            child.Uffd.Wake(address, PageSize);
            return;
        }
        long index = (address - region.Address) / PageSize;
        ref PageEntry entry = ref region.Entries[index];
        byte* buffer = (byte*)_injectBuffer;
        switch (entry.State)
        {
            case PageState.Sealed:
                if (!TryOpen(region.Cipher, index, ref entry, buffer))
                {
                    PoisonChildPage(child, ref entry, address);
                    return;
                }
                InjectIntoChild(child, address, buffer);
                Libc.memset(buffer, 0, PageSize);
                entry.State = PageState.Resident;
                break;
            case PageState.Poisoned:
                if (child.Uffd.Poison(address, PageSize) != 0)
                    child.Uffd.Wake(address, PageSize);
                break;
            case PageState.Unmapped:
                child.Uffd.Wake(address, PageSize);
                break;
            case PageState.Untouched when region.Source != null:
                // Never touched in the parent: the child reads the source's page, as the parent would.
                PageVerdict verdict = FillFromSource(region.Source, index, buffer);
                region.Source.EndOfFault();
                if (verdict == PageVerdict.Tampered)
                {
                    PoisonChildPage(child, ref entry, address);
                    return;
                }
                InjectIntoChild(child, address, buffer);
                Libc.memset(buffer, 0, PageSize);
                entry.State = PageState.Resident;
                break;
            default:
                // Never touched, known zero, or resident at fork and discarded since.
                if (child.Uffd.ZeroPage(address, PageSize) != 0)
                    child.Uffd.Wake(address, PageSize);
                entry.State = PageState.Resident;
                break;
        }
    }

    /// <summary>The child's copy of a page failed authentication (or its source could not
    /// supply it): the child's reader gets SIGBUS, now and on every later touch.</summary>
    private void PoisonChildPage(ForkedChild child, ref PageEntry entry, nint address)
    {
        _authenticationFailures++;
        entry.State = PageState.Poisoned;
        if (child.Uffd.Poison(address, PageSize) != 0)
            child.Uffd.Wake(address, PageSize);
    }

    private void InjectIntoChild(ForkedChild child, nint address, byte* page)
    {
        for (int attempt = 0; attempt < 100_000; attempt++)
        {
            int rc = child.Uffd.Copy(address, (nint)page, PageSize, out _);
            if (rc == 0) return;
            if (rc == Libc.EEXIST) { child.Uffd.Wake(address, PageSize); return; }
            if (rc != Libc.EAGAIN) { child.Uffd.Wake(address, PageSize); return; }
            // The child's own event (madvise, munmap, fork) waits to be read first.
            int n = child.Uffd.ReadMessages(_readBuffer, MessagesPerRead);
            for (int m = 0; m < n; m++)
            {
                if (_readBuffer[m].@event == UFFD_EVENT_PAGEFAULT)
                    child.PendingFaults.Enqueue((nint)(_readBuffer[m].pagefault_address & ~(ulong)(PageSize - 1)));
                else
                    HandleChildMessage(child, _readBuffer[m]);
            }
        }
    }
}
