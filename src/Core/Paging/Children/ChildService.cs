using Tibet.Core.Diagnostics;
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
/// <remarks>
/// <para>Called under the engine lock. Serving a child's fault is allocation-free; the
/// fork event itself allocates (a snapshot of the page tables is needed there anyway).</para>
/// <para>Eviction in children: a page a child reads from a sealed copy is installed
/// write-protected, and stays clean until the child writes it. When a child holds more
/// clean pages than the budget, the oldest are taken out by the child's agent (a thread
/// the child starts after fork, see <see cref="ChildAgents"/>), and go back to sealed: the
/// copy in the store (the parent's, pinned while children live) is still their contents,
/// so nothing is encrypted. Pages the child wrote stay resident; so do pages it shares
/// with its parent copy-on-write, and every page of a child without an agent (a grandchild,
/// or when the agent could not start).</para>
/// </remarks>
internal sealed unsafe class ChildService : IDisposable
{
    private const int PageSize = Userfaultfd.PageSize;

    // No limit on children served at once: a child above any limit would read zeros (or
    // have to die). The table grows on the fork event, the one place in the handler that
    // allocates (a snapshot of the page tables is needed there anyway).
    private readonly List<ForkedChild> _children = [];
    private int _peakChildren;
    private int _probes;
    private readonly ArenaTable _arenas;
    private readonly PageSealer _sealer;
    private readonly FaultService _faults;
    private readonly FailureReporter _reporter;
    private readonly ProgramEvents _events;
    private readonly ChildAgents? _agents;
    private readonly long _budgetPages;
    private readonly bool _tracksWrites;
    private long _evictions;

    /// <param name="agents">Where children's agents connect; null: children's pages are
    /// never evicted.</param>
    /// <param name="budgetPages">Clean pages a child may hold before its agent takes the
    /// oldest out (the engine's budget: each child gets its own).</param>
    /// <param name="tracksWrites">The arenas are registered for write protection, so a
    /// child's clean pages can be told from written ones.</param>
    public ChildService(ArenaTable arenas, PageSealer sealer, FaultService faults, FailureReporter reporter, ProgramEvents events,
        ChildAgents? agents, long budgetPages, bool tracksWrites)
    {
        _arenas = arenas;
        _sealer = sealer;
        _faults = faults;
        _reporter = reporter;
        _events = events;
        _tracksWrites = tracksWrites;
        _agents = tracksWrites ? agents : null;
        _budgetPages = budgetPages;
    }

    /// <summary>Pages children's agents took out (children's evictions).</summary>
    public long Evictions => _evictions;

    /// <summary>Each child served now, for the statistics (allocates: not for the fault path).</summary>
    public ChildStats[] Snapshot()
    {
        var children = new ChildStats[_children.Count];
        for (int i = 0; i < children.Length; i++)
        {
            ForkedChild child = _children[i];
            children[i] = new ChildStats(child.Pid, child.Faults, child.CleanResident * PageSize, child.Evictions, child.AgentFd >= 0);
        }
        return children;
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
    private sealed class ChildRegion(nint address, long pageCount, PageEntry* entries, PageCipher cipher, PageSource? source,
        ulong arenaId, string label)
    {
        public readonly ulong ArenaId = arenaId;
        public readonly string Label = label;
        public readonly nint Address = address;
        public readonly long PageCount = pageCount;
        public readonly PageEntry* Entries = entries;
        public readonly PageCipher Cipher = cipher;
        public readonly PageSource? Source = source;

        /// <param name="keepCleanMarks">A grandchild's copy of a child's table keeps the
        /// child's marks: a page the child's agent had moved out before the fork is missing
        /// in the grandchild too, and must be served from its copy, not as zeros. The
        /// parent's tickets mean nothing in a child and are cleared.</param>
        public ChildRegion Copy(bool keepCleanMarks = false)
        {
            var entries = (PageEntry*)KernelMemory.Map((nuint)(PageCount * sizeof(PageEntry)));
            Buffer.MemoryCopy(Entries, entries, PageCount * sizeof(PageEntry), PageCount * sizeof(PageEntry));
            // In a child's copy the ticket marks pages this service installed clean (see
            // InstalledClean); the parent's tickets, or a child's marks, mean nothing in it.
            if (!keepCleanMarks)
                for (long i = 0; i < PageCount; i++)
                    entries[i].ResidentTicket = 0;
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

    private sealed class ForkedChild(Userfaultfd uffd, ChildRegion[] regions, int cleanRingLength, bool fromParent)
    {
        public readonly Userfaultfd Uffd = uffd;
        public readonly AddressSpaceOps Space = new UffdAddressSpace(uffd);
        public readonly ChildRegion[] Regions = regions; // sorted by address
        public int Pid;
        public int PidFd = -1;

        // What the child's agent keeps if this engine dies first (see InheritedContents):
        // null for a child that gets no agent.
        public InheritedContents? Contents;

        // The agent's connection (-1: none), and the eviction books. Clean: addresses of
        // pages installed clean, oldest first (a ring; an address may be stale or twice).
        // CleanResident counts the pages marked InstalledClean.
        public int AgentFd = -1;
        public long Faults, Evictions; // for the statistics
        // Native memory, not the GC heap: the fork event that creates it runs on the handler,
        // whose allocations are bounded (a budget's worth of addresses would not fit that bound).
        public readonly nint* Clean = cleanRingLength > 0 ? (nint*)KernelMemory.Map((nuint)(cleanRingLength * sizeof(nint))) : null;
        private readonly int _cleanLength = cleanRingLength;
        public int CleanHead, CleanCount;
        // Pushes so far, and the count when the newest fault began: what that fault put in
        // is never taken out before the next fault (the thread it woke may not have run
        // yet; taking its page would make it fault again, and again: seen as a livelock of
        // a writer whose page was installed, taken out and installed again).
        public long Pushes, NewestFaultFirstPush;
        // The parent handed this child every page before it ended (see HandOver): nothing
        // may be taken out of it any more, since nothing could serve it back.
        public bool HandedOver;
        public long CleanResident;
        // The take-out in flight: its first page and length (0: none).
        public nint TakeOutStart;
        public int TakeOutPages;
        // A child of the program (its fork reported), not a grandchild.
        public readonly bool FromParent = fromParent;
        // Faults on pages of the take-out in flight, held until it is answered: a page must
        // not come back, nor become writable, while the agent may still move it.
        public ChildFault[] Held = new ChildFault[16];
        public int HeldCount;

        public void Hold(in ChildFault fault)
        {
            if (HeldCount == Held.Length)
                Array.Resize(ref Held, Held.Length * 2); // rare: more writers than slots; never dropped
            Held[HeldCount++] = fault;
        }

        public bool InTakeOut(nint address) =>
            TakeOutPages > 0 && address >= TakeOutStart && address < TakeOutStart + (nint)TakeOutPages * PageSize;

        /// <summary>Whether the child's pages can be taken out: it has an agent's books and
        /// was not handed its pages for good.</summary>
        public bool Evictable => Clean != null && !HandedOver;

        public void PushClean(nint address)
        {
            if (CleanCount == _cleanLength)
            {
                // Full: the oldest stays resident, unevicted (the ring is sized to the budget).
                CleanHead = (CleanHead + 1) % _cleanLength;
                CleanCount--;
            }
            Clean[(CleanHead + CleanCount++) % _cleanLength] = address;
            Pushes++;
        }

        /// <summary>Whether the oldest candidate was pushed before the newest fault began.</summary>
        public bool OldestPredatesNewestFault => Pushes - CleanCount < NewestFaultFirstPush;

        public bool TryPeekClean(out nint address)
        {
            address = CleanCount > 0 ? Clean[CleanHead] : 0;
            return CleanCount > 0;
        }

        public void PopClean()
        {
            CleanHead = (CleanHead + 1) % _cleanLength;
            CleanCount--;
        }

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

        // Ranges the child moved with mremap: faults at To+k are served as From+k (a few
        // per child; a list, grown on the event, never on a fault).
        public readonly List<(nint From, nint To, long Length)> Remaps = [];

        /// <summary>The region and the address in it that serve a fault at
        /// <paramref name="address"/>: the address itself, or where a remap moved it from.</summary>
        public ChildRegion? FindServing(nint address, out nint origin)
        {
            origin = address;
            ChildRegion? region = Find(address);
            if (region != null)
                return region;
            for (int i = Remaps.Count - 1; i >= 0; i--)
            {
                var (from, to, length) = Remaps[i];
                if (address >= to && address < to + (nint)length)
                {
                    origin = from + (address - to);
                    return FindServing(origin, out origin);
                }
            }
            return null;
        }

        /// <summary>Whether <paramref name="address"/> is in a range the child moved away from.</summary>
        public bool IsRemapSource(nint address)
        {
            foreach (var (from, _, length) in Remaps)
                if (address >= from && address < from + (nint)length)
                    return true;
            return false;
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
            CloseAgent(); // custody ends before this descriptor does
            foreach (var region in Regions) region.Release();
            Uffd.Dispose();
            if (PidFd >= 0) Libc.close(PidFd);
            Contents?.Dispose();
            if (Clean != null) KernelMemory.Unmap((nint)Clean, (nuint)(_cleanLength * sizeof(nint)));
            store.Unpin();
        }

        /// <summary>Lets the agent go (ChildAgents.Release: custody ends first).</summary>
        public void CloseAgent()
        {
            if (AgentFd >= 0) ChildAgents.Release(AgentFd);
            AgentFd = -1;
            TakeOutPages = 0;
        }
    }

    /// <summary>See <see cref="PageEngine.ChildForked"/>. <paramref name="agentFd"/>: the
    /// engine's end of the child's agent connection (-1: none); owned here from now on.</summary>
    public void ChildForked(int pid, int agentFd)
    {
        if (_agents != null)
            agentFd = _agents.Add(agentFd);
        else if (agentFd >= 0)
            ChildAgents.Release(agentFd);
        for (int i = _children.Count - 1; i >= 0; i--)
        {
            ForkedChild child = _children[i];
            if (child.Pid != 0 || !child.FromParent) continue; // a grandchild's fork is never reported here
            child.Pid = pid;
            // Custody now, before the fork returns to the program, not once the agent's
            // hello is matched: a parent may end right after its fork. (The fork event,
            // which adopted the child, was read before the fork returned.)
            if (agentFd >= 0 && child.Contents != null)
                ChildAgents.GiveCustody(agentFd, child.Uffd.Descriptor, child.Contents.Descriptor);
            child.Contents?.CloseDescriptor(); // the agent has its own now, or never will
            child.PidFd = (int)Libc.syscall(Libc.SYS_pidfd_open, pid, 0, 0);
            if (child.PidFd < 0 && Libc.LastErrno == Libc.ESRCH)
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
            // No take-out may move a page after this: the one in flight is answered (or
            // given 2 s), and the agent is let go. A clean page that may have been moved
            // out is installed again below (EEXIST where it is still there).
            // Until it is answered, or the child ends: a page the agent moved after this
            // would be lost, since nothing serves the child once this process is gone.
            while (child.AgentFd >= 0 && child.TakeOutPages > 0 && !TryCollectTakeOut(child, ref _evictions, waitForChild: child.PidFd))
            {
            }
            child.CloseAgent();
            child.HandedOver = true;
            if (child.Pid != 0 && _agents?.TakeFor(child.Pid) is int pending and >= 0)
                ChildAgents.Release(pending); // an agent that had not been matched yet
            for (int h = 0; h < child.HeldCount; h++)
                ServeChildFault(child, in child.Held[h]);
            child.HeldCount = 0;
            long before = pages;
            foreach (ChildRegion region in child.Regions)
                for (long index = 0; index < region.PageCount; index++)
                {
                    ref PageEntry entry = ref region.Entries[index];
                    PageState state = entry.State;
                    bool takenOut = state == PageState.Resident && entry.ResidentTicket == InstalledClean && entry.SealedLength != 0;
                    if (state != PageState.Sealed && !(state == PageState.Untouched && region.Source != null) && !takenOut)
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
        // Ends whose agent's hello was never read (a parent that ends right after its
        // fork): let go too, or the agent, finding its connection ended without a release,
        // would take this process for killed and serve the child itself.
        _agents?.ReleaseAll();
        return (children, pages);
    }

    /// <summary>The parent forked: the child's arenas are served as they are now. Its agent
    /// (if it starts) takes its oldest clean pages out above the budget.</summary>
    public void AdoptFromParent(int descriptor)
    {
        ChildRegion[] regions = SnapshotArenas();
        int cleanRingLength = CleanRingLength(regions);
        ForkedChild child = AdoptChild(descriptor, regions, cleanRingLength, fromParent: true);
        if (cleanRingLength > 0) // it may get an agent
        {
            var ranges = new (nint, long, nint, bool)[regions.Length];
            for (int i = 0; i < regions.Length; i++)
                ranges[i] = (regions[i].Address, regions[i].PageCount, (nint)regions[i].Entries, regions[i].Source != null);
            child.Contents = InheritedContents.Create(ranges);
        }
    }

    /// <summary>A fork after a handler failure: the child is only answered with SIGBUS.</summary>
    public void AdoptUnserved(int descriptor) => AdoptChild(descriptor, [], 0, fromParent: true);

    /// <summary>
    /// Room for the eviction candidates of a child with an agent. A candidate that does not
    /// fit is dropped, and its page stays resident for good, above the budget. Take-outs lag
    /// behind a child that reads fast (one round trip per 64 pages, on a loaded machine), so
    /// a ring of the budget and a take-out's slack overflowed: LiveStatisticsTests' child
    /// kept about 5000 pages of a 1024-page budget in 1 of 8 runs. So: every page the child
    /// inherited, up to four budgets (at least the budget and 64 Ki pages), and the slack.
    /// The ring is mapped, not touched: it costs what the candidates use, at most 8 bytes a
    /// page; lengths above 16 Mi are capped (a child holding more clean pages than that
    /// keeps the oldest resident).
    /// </summary>
    private int CleanRingLength(ChildRegion[] regions)
    {
        if (_agents == null || _budgetPages == long.MaxValue)
            return 0;
        long inherited = 0;
        foreach (ChildRegion region in regions)
            inherited += region.PageCount;
        long room = Math.Min(inherited, Math.Max(_budgetPages * 4, _budgetPages + 65536));
        return (int)Math.Min(Math.Max(room, _budgetPages) + 1024, 1L << 24);
    }

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

    private ForkedChild AdoptChild(int descriptor, ChildRegion[] regions, int cleanRingLength, bool fromParent)
    {
        _sealer.Store.Pin();
        var child = new ForkedChild(Userfaultfd.Adopt(descriptor), regions, cleanRingLength, fromParent);
        AddChild(child);
        return child;
    }

    private void AddChild(ForkedChild child)
    {
        _children.Add(child);
        _peakChildren = Math.Max(_peakChildren, _children.Count);
    }

    /// <summary>Poll entries the children need: a userfaultfd, a pidfd and an agent each.</summary>
    public int PollEntries => 3 * _children.Count;

    /// <summary>Appends each child's userfaultfd and pidfd to <paramref name="fds"/> from
    /// <paramref name="n"/> on (room for <see cref="PollEntries"/>); returns the new count.</summary>
    public int AppendPollSet(Libc.PollFd[] fds, int n)
    {
        foreach (var child in _children)
        {
            fds[n++] = new Libc.PollFd { Fd = child.Uffd.Descriptor, Events = Libc.POLLIN };
            if (child.PidFd >= 0)
                fds[n++] = new Libc.PollFd { Fd = child.PidFd, Events = Libc.POLLIN };
            if (child.AgentFd >= 0 && child.TakeOutPages > 0)
                fds[n++] = new Libc.PollFd { Fd = child.AgentFd, Events = Libc.POLLIN };
        }
        return n;
    }

    /// <summary>Serves every child's pending messages and retires children that exited.</summary>
    public bool Pump(ref StrandedFault inFlight)
    {
        bool worked = false;
        if (_agents != null)
            MatchAgents();
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
            if (child.AgentFd >= 0 && child.TakeOutPages > 0 && TryCollectTakeOut(child, ref _evictions))
                worked = true;
            if (child.HeldCount > 0 && child.TakeOutPages == 0)
            {
                // Answered (or the agent went away): the held faults are served now.
                worked = true;
                for (int h = 0; h < child.HeldCount; h++)
                {
                    inFlight = new StrandedFault(child.Space, (ulong)child.Held[h].Address, child.Held[h].ThreadId, child.Pid);
                    ServeChildFault(child, in child.Held[h]);
                    inFlight = default;
                }
                child.HeldCount = 0;
            }
            // The next take-out only once the held faults are served: they must not wait
            // behind one take-out after another.
            if (child.AgentFd >= 0 && child.TakeOutPages == 0 && child.Evictable && child.CleanResident > _budgetPages)
                worked |= StartTakeOut(child);
            if ((child.PidFd >= 0 && ChildExited(child.PidFd)) || (child.PidFd < 0 && (++_probes & 63) == 0 && MemoryGone(child)))
            {
                child.Dispose(_sealer.Store);
                _children.RemoveAt(i);
                worked = true;
            }
        }
        return worked;
    }

    /// <summary>Gives each new agent connection to the child whose pid its agent named;
    /// one that names no child of this engine is closed.</summary>
    private void MatchAgents()
    {
        if (!_agents!.HasPending)
            return;
        _agents.ReadHellos();
        for (int i = _agents.PendingCount - 1; i >= 0; i--)
        {
            int pid = _agents.PidAt(i);
            if (pid == 0)
                continue;
            ForkedChild? owner = null;
            foreach (ForkedChild child in _children)
                if (child.Pid == pid && child.FromParent)
                    owner = child;
            if (owner == null)
            {
                if (!ForkNotYetReported())
                    ChildAgents.Release(_agents.TakeAt(i)); // no such child (any more)
                continue;
            }
            int fd = _agents.TakeAt(i);
            if (owner.AgentFd < 0 && owner.Evictable)
                owner.AgentFd = fd;
            else
                ChildAgents.Release(fd);
        }
    }

    /// <summary>Whether a child adopted from the parent still waits for its pid (its agent's
    /// hello can arrive before the fork is reported).</summary>
    private bool ForkNotYetReported()
    {
        foreach (ForkedChild child in _children)
            if (child.Pid == 0 && child.FromParent)
                return true;
        return false;
    }

    /// <summary>Asks the agent to take out the oldest run of clean pages (up to 64).</summary>
    private bool StartTakeOut(ForkedChild child)
    {
        nint start = 0;
        int pages = 0;
        while (pages < AgentMaxPages && child.OldestPredatesNewestFault && child.TryPeekClean(out nint address))
        {
            bool candidate = IsInstalledClean(child, address);
            if (pages > 0 && (address != start + (nint)pages * PageSize || !candidate))
                break; // the run ends; this one waits for the next take-out
            child.PopClean();
            if (!candidate)
                continue; // stale: written, discarded or already taken out
            if (pages == 0)
                start = address;
            pages++;
        }
        if (pages == 0)
            return false;
        AgentRequest request = new() { Start = (ulong)start, Pages = (uint)pages };
        if (Libc.send(child.AgentFd, &request, (nuint)sizeof(AgentRequest), Libc.MSG_NOSIGNAL) != sizeof(AgentRequest))
        {
            child.CloseAgent(); // gone: the child's pages stay resident, as without an agent
            return false;
        }
        child.TakeOutStart = start;
        child.TakeOutPages = pages;
        return true;
    }

    /// <summary>
    /// Reads the agent's answer to the take-out in flight (with <paramref name="waitForChild"/>,
    /// a child's pidfd, waiting for it while the child lives): the pages it moved out go back to sealed.
    /// False while the answer has not come. An agent gone before it answered leaves the
    /// pages as they are: one it took out is served again from its copy when the child
    /// touches it.
    /// </summary>
    private static bool TryCollectTakeOut(ForkedChild child, ref long evictions, int waitForChild = -1)
    {
        if (waitForChild >= 0)
        {
            // Blocks until the answer comes or the child ends (its pidfd): never on a guess.
            Libc.PollFd* fds = stackalloc Libc.PollFd[2];
            fds[0] = new Libc.PollFd { Fd = child.AgentFd, Events = Libc.POLLIN };
            fds[1] = new Libc.PollFd { Fd = waitForChild, Events = Libc.POLLIN };
            Libc.poll(fds, 2, -1);
            if ((fds[0].Revents & Libc.POLLIN) == 0 && (fds[1].Revents & Libc.POLLIN) != 0)
            {
                child.CloseAgent(); // ended: nothing of it needs serving
                return true;
            }
        }
        AgentAnswer answer;
        nint n = Libc.recv(child.AgentFd, &answer, (nuint)sizeof(AgentAnswer), Libc.MSG_DONTWAIT);
        if (n < 0 && Libc.LastErrno is Libc.EAGAIN or Libc.EINTR)
            return false;
        if (n != sizeof(AgentAnswer))
        {
            child.CloseAgent();
            return true;
        }
        for (int i = 0; i < child.TakeOutPages; i++)
        {
            nint address = child.TakeOutStart + (nint)i * PageSize;
            ChildRegion? region = child.Find(address);
            if (region == null)
                continue;
            ref PageEntry entry = ref region.Entries[(address - region.Address) / PageSize];
            if (entry.State != PageState.Resident || entry.ResidentTicket != InstalledClean || entry.SealedLength == 0)
                continue;
            if ((answer.Moved & (1UL << i)) != 0)
            {
                entry.State = PageState.Sealed; // its copy still holds its contents
                child.Evictions++;
                evictions++;
            }
            // Moved, or not movable (shared with a child of the child, or not there): no
            // longer a candidate, else it would be asked for again and again.
            entry.ResidentTicket = 0;
            child.CleanResident--;
        }
        child.TakeOutPages = 0;
        return true;
    }

    /// <summary>The most pages one take-out moves (a 64-bit answer).</summary>
    private const int AgentMaxPages = 64;

    /// <summary>
    /// In a child's copy of an entry, <see cref="PageEntry.ResidentTicket"/> (unused there
    /// otherwise) marks a page this service installed write-protected from its sealed copy
    /// and the child has not written: an eviction candidate, counted in CleanResident.
    /// </summary>
    private const ulong InstalledClean = 1;

    private static bool IsInstalledClean(ForkedChild child, nint address)
    {
        ChildRegion? region = child.Find(address);
        if (region == null)
            return false;
        ref PageEntry entry = ref region.Entries[(address - region.Address) / PageSize];
        return entry.State == PageState.Resident && entry.ResidentTicket == InstalledClean && entry.SealedLength != 0;
    }

    /// <summary>A page stops being an eviction candidate (written, discarded, unmapped).</summary>
    private static void ForgetClean(ForkedChild child, ref PageEntry entry)
    {
        if (entry.ResidentTicket != InstalledClean)
            return;
        entry.ResidentTicket = 0;
        if (child.Clean != null)
            child.CleanResident--; // a grandchild inherits marks but keeps no count
    }

    /// <summary>
    /// Whether a child whose pid is unknown (a raw fork, or a grandchild whose fork the
    /// custodian's engine saw only as an event) has ended: its address space is gone once
    /// every user of it has, and then each ioctl that changes it answers ESRCH. The probe
    /// installs nothing: the page it names (the last an x86-64 process may map) is in no
    /// range registered on this userfaultfd, so a living child answers ENOENT.
    /// </summary>
    private static bool MemoryGone(ForkedChild child) =>
        child.Space.ZeroPage(unchecked((nint)0x7FFF_FFFF_E000), PageSize) == Libc.ESRCH;

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
                    nint origin = a;
                    // mremap unmaps the range it moved from: those pages live on at the new address.
                    if (region != null && state == PageState.Unmapped && child.IsRemapSource(a)) continue;
                    region ??= child.FindServing(a, out origin);
                    if (region == null) continue;
                    ref PageEntry entry = ref region.Entries[(origin - region.Address) / PageSize];
                    ForgetClean(child, ref entry);
                    child.Contents?.Set(a, hasContents: false); // discarded: it reads zeros
                    // Ciphertext belongs to the parent's store: never freed from here.
                    if (state == PageState.Unmapped || entry.State != PageState.Resident)
                        entry.State = state;
                    else
                        entry.SealedLength = 0; // discarded: its copy no longer is its contents, it reads zeros
                }
                if (message.@event == UFFD_EVENT_UNMAP)
                    child.Space.Wake((nint)message.remove_start, (nuint)(message.remove_end - message.remove_start));
                break;
            case UFFD_EVENT_REMAP:
                // The child moved a range (mremap): its pages there are served from where
                // they were. Clean marks in the old range stop being candidates (the agent
                // would find nothing there anyway).
                child.Remaps.Add(((nint)message.remap_from, (nint)message.remap_to, (long)message.remap_len));
                if (child.Contents is { } contents)
                    for (long off = 0; off < (long)message.remap_len; off += PageSize)
                    {
                        contents.Set((nint)message.remap_to + (nint)off, contents.Get((nint)message.remap_from + (nint)off));
                        contents.Set((nint)message.remap_from + (nint)off, false);
                    }
                for (nint a = (nint)message.remap_from; a < (nint)(message.remap_from + message.remap_len); a += PageSize)
                    if (child.Find(a) is { } moved)
                        ForgetClean(child, ref moved.Entries[(a - moved.Address) / PageSize]);
                break;
            case UFFD_EVENT_FORK:
                // A grandchild sees what the child saw.
                AdoptChild((int)message.fork_ufd, CopyRegions(child.Regions), 0, fromParent: false); // no agent: only the program's own children get one
                break;
        }
    }

    private static ChildRegion[] CopyRegions(ChildRegion[] regions)
    {
        var copies = new ChildRegion[regions.Length];
        for (int i = 0; i < regions.Length; i++)
            copies[i] = regions[i].Copy(keepCleanMarks: true);
        return copies;
    }

    private readonly record struct ChildFault(nint Address, uint ThreadId, bool WriteProtect);

    /// <summary>A child touched a page it does not have: give it the fork-time contents.
    /// Or it wrote to one it inherited write-protected: make that writable.</summary>
    private void ServeChildFault(ForkedChild child, in ChildFault fault)
    {
        if (child.InTakeOut(fault.Address))
        {
            child.Hold(in fault); // served once the agent has answered (see Pump)
            return;
        }
        child.Faults++;
        child.NewestFaultFirstPush = child.Pushes;
        nint address = fault.Address;
        uint threadId = fault.ThreadId;
        if (fault.WriteProtect)
        {
            ServeChildWrite(child, in fault);
            return;
        }
        ChildRegion? region = child.FindServing(address, out nint origin);
        if (region == null)
        {
            // Registered memory the child has that no arena had at the fork: a range mremap
            // grew. New anonymous memory reads zeros.
            if (child.Space.ZeroPage(address, PageSize) != 0)
                child.Space.Wake(address, PageSize);
            return;
        }
        long index = (origin - region.Address) / PageSize;
        ref PageEntry entry = ref region.Entries[index];
        byte* buffer = _faults.Buffer;
        switch (entry.State)
        {
            case PageState.Resident when entry.ResidentTicket == InstalledClean && entry.SealedLength != 0:
                // Taken out by an agent that went away before it answered: served again
                // from its copy.
                if (!_sealer.TryOpen(region.Cipher, index, in entry, buffer))
                {
                    ForgetClean(child, ref entry);
                    PoisonChildPage(child, region, index, ref entry, threadId, TamperKind.SealedPage);
                    return;
                }
                InjectIntoChild(child, address, buffer, writeProtect: true);
                Libc.memset(buffer, 0, PageSize);
                if (child.Evictable && origin == address)
                    child.PushClean(address);
                break;
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
                // A page opened from its copy goes in write-protected where writes are
                // tracked: until the child writes it, the copy is its contents, and the
                // child's agent can take it out again.
                bool clean = _tracksWrites && entry.State == PageState.Sealed;
                InjectIntoChild(child, address, buffer, writeProtect: clean);
                Libc.memset(buffer, 0, PageSize);
                entry.State = PageState.Resident;
                if (clean && child.Evictable && origin == address) // a remapped page is not a candidate
                {
                    entry.ResidentTicket = InstalledClean;
                    child.CleanResident++;
                    child.PushClean(address);
                }
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
    /// A child wrote to a page installed write-protected: inherited so (the parent kept
    /// that page's sealed copy, see PageSealer.Retain; the protection is copied at fork),
    /// or installed so here. The page stops being an eviction candidate and is made
    /// writable, which wakes the writer. A write to a page the agent may be moving out
    /// right now waits for the agent's answer: made writable first, the write could land
    /// and then be moved out and wiped with the page.
    /// </summary>
    private void ServeChildWrite(ForkedChild child, in ChildFault fault)
    {
        nint address = fault.Address;
        ChildRegion? region = child.FindServing(address, out nint origin);
        if (region != null)
        {
            ref PageEntry entry = ref region.Entries[(origin - region.Address) / PageSize];
            if (entry.State == PageState.Resident)
            {
                ForgetClean(child, ref entry);
                entry.SealedLength = 0; // written: the copy no longer holds its contents
            }
        }
        UnprotectInChild(child, address);
    }

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

    private void InjectIntoChild(ForkedChild child, nint address, byte* page, bool writeProtect = false)
    {
        for (int attempt = 0; attempt < 100_000; attempt++)
        {
            int rc = child.Space.Copy(address, (nint)page, PageSize, writeProtect, out _);
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
        {
            while (child.TryDequeueFault(out ChildFault fault))
                _reporter.RaiseSigbus(child.Space, fault.Address, fault.ThreadId, child.Pid);
            for (int h = 0; h < child.HeldCount; h++)
                _reporter.RaiseSigbus(child.Space, child.Held[h].Address, child.Held[h].ThreadId, child.Pid);
            child.HeldCount = 0;
            child.CloseAgent(); // failure mode: nothing is taken out any more, nor polled
        }
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
