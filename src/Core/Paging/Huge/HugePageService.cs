using System.Diagnostics;
using Tibet.Core.Crypto;
using Tibet.Core.Interop;
using Tibet.Core.Paging.Eviction;
using Tibet.Core.Storage;
using static Tibet.Core.Interop.UserfaultfdAbi;

namespace Tibet.Core.Paging.Huge;

/// <summary>
/// Serves read-only file maps (models) in 2 MiB pages from the hugetlb pool, within a
/// budget of its own: a fault reads 2 MiB from the map's source (the plain file with
/// O_DIRECT, or the sealed file decrypted page by page) and installs it with one
/// UFFDIO_COPY; eviction drops a page (MADV_DONTNEED) without sealing anything, because
/// its contents can be read from the source again.
/// </summary>
/// <remarks>
/// <para><b>Why.</b> On this machine kind every 4 KiB trap costs about 10 µs and 4 KiB
/// UFFDIO_COPY tops out near 0.12 GB/s, while a 2 MiB UFFDIO_COPY runs at about
/// 12 GB/s (docs/design/engine-groundwork.md, section 4). A model larger than its budget
/// is read in full every token, so the unit of service decides the speed.</para>
/// <para><b>Writes.</b> Pages are installed write-protected (UFFDIO_COPY_MODE_WP). The
/// map is read-only, but a program may mprotect it writable: its first write to a page
/// arrives as a write-protect fault, the page becomes <see cref="HugePageState.Written"/>
/// and stays resident from then on (it cannot be re-read), so no write is ever lost.</para>
/// <para><b>Own userfaultfd, own thread.</b> Dropping a page with MADV_DONTNEED from the
/// handler must not raise a REMOVE event the same handler would have to read, so this
/// service's userfaultfd asks for UNMAP events only (the program's munmap, even a raw
/// one, is seen) and is served by its own thread, beside the 4 KiB engine's.</para>
/// <para><b>Forks.</b> The arenas are MADV_DONTFORK: a forked child has no such map and
/// gets SIGSEGV if it touches one, never zeros (hugetlb memory of a child that lost the
/// registration would read as zeros).</para>
/// <para><b>Fault path.</b> No allocation and no malloc: the 2 MiB buffer, the message
/// buffer and the resident set are native and made at start.</para>
/// </remarks>
public sealed unsafe class HugePageService : IDisposable, IResidency
{
    public const int HugePageSize = 2 << 20;
    private const int SmallPage = Userfaultfd.PageSize;
    private const int SmallPagesPerHugePage = HugePageSize / SmallPage;
    private const int MessagesPerRead = 16;

    private readonly Lock _gate = new();
    private readonly Userfaultfd _uffd;
    private readonly long _budgetPages;
    private readonly ResidentSet _residentSet;
    private readonly nint _buffer;
    private readonly uffd_msg* _messages;
    private readonly int _wakeFd;
    private readonly Thread _handler;
    private readonly Action<string> _report;
    private readonly PageCipher _warmUpCipher;
    private readonly bool _keepSealedCopies;
    private volatile bool _stopping;
    private HugePageArena?[] _arenas = new HugePageArena?[4];
    private HugePageArena[] _arenasByAddress = [];
    private ulong _lastTicket;
    private EvictionClock _evictionClock;
    private long _residentPages, _peakResidentPages, _writtenPages;
    private long _faults, _evictions, _refaults, _sourcedBytes, _poisonedPages, _writeFaults;
    private long _sealedBytes, _decryptedBytes, _authenticationFailures;
    private long _handlerAllocatedBytes;
    private readonly Diagnostics.LatencyHistogram _faultLatency = new();
    private string? _failure;
    private bool _writtenAnnounced;

    private HugePageService(long budgetBytes, EvictionPolicy eviction, PageCipherSuite cipher, Action<string> report, bool keepSealedCopies)
    {
        _report = report;
        _keepSealedCopies = keepSealedCopies;
        _budgetPages = Math.Max(1, budgetBytes / HugePageSize);
        _residentSet = eviction.CreateSet(_budgetPages, this, runPages: 1);
        _uffd = Userfaultfd.Open(UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_WP_HUGETLBFS_SHMEM);
        _buffer = KernelMemory.Map(HugePageSize);
        // Plaintext passes through it: keep it out of swap and core dumps.
        Libc.mlock(_buffer, HugePageSize);
        Libc.madvise(_buffer, HugePageSize, Libc.MADV_DONTDUMP);
        _messages = (uffd_msg*)KernelMemory.Map((nuint)(MessagesPerRead * sizeof(uffd_msg)));
        _wakeFd = Libc.eventfd(0, Libc.EFD_CLOEXEC | Libc.EFD_NONBLOCK);
        if (_wakeFd < 0)
            throw new InvalidOperationException($"eventfd failed: {Libc.Describe(Libc.LastErrno)}");
        _faultLatency.Record(0);
        _faultLatency.Clear();
        _ = Stopwatch.GetTimestamp();
        _ = GC.GetAllocatedBytesForCurrentThread();
        Threading.LockWarmUp.ForceContention(_gate);
        Cipher = cipher;
        _sealedSize = (nuint)((HugePageSize + cipher.TagSize + 4095) & ~4095);
        _warmUpCipher = new PageCipher(0, cipher);
        _handler = new Thread(HandlerLoop) { IsBackground = true, Name = "tibet-uffd-2m" };
        _handler.Start();
    }

    /// <summary>Starts a service with <paramref name="budgetBytes"/> of 2 MiB pages (at least
    /// one). The hugetlb pool must hold that many free pages; see <see cref="FreePoolPages"/>.</summary>
    /// <param name="keepSealedCopies">Seal each page into RAM on its first touch and bring
    /// it back by decryption, instead of reading it from its source again. Off by default:
    /// measured on this machine kind (llama.cpp, half of a 100 MB model resident, 2
    /// threads on 2 vCPUs), re-reading the file with O_DIRECT gave 20.8 tokens/s and
    /// decrypting from RAM 13.8–17.2, because decryption takes the CPU the program's
    /// threads spin on, while the read waits on the (host-cached) disk. On a slow disk the
    /// copy wins; it costs RAM the size of the touched model.</param>
    /// <exception cref="UserfaultfdUnavailableException">userfaultfd cannot be used, or
    /// cannot write-protect hugetlb memory on this kernel.</exception>
    public static HugePageService Start(long budgetBytes, EvictionPolicy? eviction = null, Action<string>? report = null, bool keepSealedCopies = false,
        PageCipherSuite? cipher = null)
        => new(budgetBytes, eviction ?? EvictionPolicy.ScanResistant, cipher ?? PageCipherSuite.Aes256Gcm,
            report ?? (line => Console.Error.WriteLine(line)), keepSealedCopies);

    /// <summary>Free 2 MiB pages in the hugetlb pool (HugePages_Free in /proc/meminfo), or 0.</summary>
    public static long FreePoolPages()
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/meminfo"))
                if (line.StartsWith("HugePages_Free:", StringComparison.Ordinal))
                    return long.Parse(line.AsSpan(15).Trim(), System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (IOException)
        {
        }
        return 0;
    }

    /// <summary>
    /// Calls, on the handler thread before it serves anything, every native function it
    /// calls and takes its lock once: a thread's first call of each P/Invoke allocates a
    /// little (32 bytes, measured), as does its first lock. No arena exists yet, so the
    /// read finds no message and the ioctl (a wake of an unregistered range) does nothing.
    /// </summary>
    private void WarmUpHandlerThread()
    {
        lock (_gate) { }
        Libc.memset((void*)_buffer, 0, SmallPage);
        Libc.madvise(_buffer, 0, Libc.MADV_DONTNEED);
        _ = IsMapped(_buffer);
        Libc.PollFd none = default;
        Libc.poll(&none, 0, 0);
        _ = Libc.getpid();
        Libc.syscall(Libc.SYS_tgkill, 0, 0, 0); // EINVAL: never a signal
        _ = _uffd.ReadMessages(_messages, MessagesPerRead);
        _uffd.Wake(_buffer, SmallPage);
        Files.PositionalRead.Prepare(-1);
        _ = Stopwatch.GetTimestamp();
        // The cipher's native calls, sealing and opening one small page.
        var page = new Span<byte>((void*)_buffer, SmallPage);
        var sealedPage = new Span<byte>((byte*)_buffer + SmallPage, SmallPage + _warmUpCipher.TagSize);
        ulong nonce = _warmUpCipher.Seal(0, 0, page, sealedPage);
        _warmUpCipher.Open(0, 0, nonce, sealedPage, page);
        Libc.memset((void*)_buffer, 0, 3 * SmallPage);
        KernelMemory.Unmap(KernelMemory.Map(SmallPage), SmallPage);
    }

    public long BudgetBytes => _budgetPages * HugePageSize;

    /// <summary>
    /// Maps a 2 MiB-page arena of <paramref name="length"/> bytes (rounded up to 2 MiB)
    /// over <paramref name="address"/>, a 2 MiB-aligned reservation of the caller's that
    /// goes back to PROT_NONE when the arena is released. The arena reads as
    /// <paramref name="source"/>, which it owns from now on.
    /// </summary>
    public HugePageArena CreateArena(nint address, long length, PageSource source, string label)
    {
        ArgumentNullException.ThrowIfNull(source);
        if ((address & (HugePageSize - 1)) != 0)
            throw new ArgumentException("A huge-page arena must start 2 MiB-aligned.", nameof(address));
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        long rounded = (length + HugePageSize - 1) & ~(long)(HugePageSize - 1);
        nint mapped = Libc.mmap(address, (nuint)rounded, Libc.PROT_READ,
            Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_HUGETLB | Libc.MAP_NORESERVE | Libc.MAP_FIXED, -1, 0);
        if (mapped != address)
        {
            int errno = Libc.LastErrno;
            GiveBack(address, (nuint)rounded);
            throw new OutOfMemoryException($"mmap of a {rounded}-byte hugetlb arena failed: {Libc.Describe(errno)}");
        }
        Libc.madvise(address, (nuint)rounded, Libc.MADV_DONTDUMP);
        Libc.madvise(address, (nuint)rounded, Libc.MADV_DONTFORK);
        try
        {
            ulong ioctls = _uffd.Register(address, (nuint)rounded, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP);
            const ulong needed = (1UL << _UFFDIO_COPY) | (1UL << _UFFDIO_WAKE) | (1UL << _UFFDIO_WRITEPROTECT);
            if ((ioctls & needed) != needed)
                throw new UserfaultfdUnavailableException($"the kernel registered a hugetlb arena without UFFDIO_COPY/WAKE/WRITEPROTECT (ioctls 0x{ioctls:x})");
        }
        catch
        {
            GiveBack(address, (nuint)rounded);
            throw;
        }
        var arena = new HugePageArena(this, address, rounded, source, label);
        lock (_gate)
        {
            arena.Slot = AddressIndex.TakeSlot(ref _arenas, arena);
            RebuildIndex();
        }
        return arena;
    }

    /// <summary>The program unmapped [<paramref name="start"/>, <paramref name="end"/>)
    /// of the arena (whole 2 MiB pages only): those pages are forgotten.</summary>
    internal void Forget(HugePageArena arena, nint start, nint end)
    {
        lock (_gate)
            ForgetLocked(arena, start, end);
    }

    internal void Release(HugePageArena arena)
    {
        lock (_gate)
        {
            if (arena.Released)
                return;
            _uffd.Unregister(arena.Address, (nuint)arena.Length);
            ForgetLocked(arena, arena.Address, arena.Address + (nint)arena.Length);
            _arenas[arena.Slot] = null;
            RebuildIndex();
            arena.Released = true;
        }
        GiveBack(arena.Address, (nuint)arena.Length);
        arena.Source.Release();
        arena.Cipher.Release();
    }

    public HugePageStats GetStats()
    {
        lock (_gate)
        {
            return new HugePageStats
            {
                BudgetBytes = _budgetPages * HugePageSize,
                Faults = _faults,
                Refaults = _refaults,
                Evictions = _evictions,
                SourcedBytes = _sourcedBytes,
                ResidentBytes = _residentPages * HugePageSize,
                PeakResidentBytes = _peakResidentPages * HugePageSize,
                WrittenBytes = _writtenPages * HugePageSize,
                WriteFaults = _writeFaults,
                PoisonedPages = _poisonedPages,
                SealedBytes = _sealedBytes,
                DecryptedBytes = _decryptedBytes,
                AuthenticationFailures = _authenticationFailures,
                FaultP50Nanoseconds = _faultLatency.Percentile(0.50),
                FaultP99Nanoseconds = _faultLatency.Percentile(0.99),
                HandlerAllocatedBytes = _handlerAllocatedBytes,
                Failure = _failure,
            };
        }
    }

    public void Dispose()
    {
        if (_stopping)
            return;
        _stopping = true;
        ulong one = 1;
        Libc.write(_wakeFd, &one, sizeof(ulong));
        _handler.Join();
        foreach (var arena in _arenas)
            arena?.Dispose();
        _residentSet.Dispose();
        _warmUpCipher.Release();
        _uffd.Dispose();
        Libc.memset((void*)_buffer, 0, HugePageSize);
        KernelMemory.Unmap(_buffer, HugePageSize);
        KernelMemory.Unmap((nint)_messages, (nuint)(MessagesPerRead * sizeof(uffd_msg)));
        Libc.close(_wakeFd);
    }

    bool IResidency.IsLiveResident(in ResidentQueue.Element element)
    {
        HugePageArena? arena = element.ArenaSlot < _arenas.Length ? _arenas[element.ArenaSlot] : null;
        return arena != null && element.PageIndex < arena.Entries.Length
            && arena.Entries[element.PageIndex].State == HugePageState.Resident
            && arena.Entries[element.PageIndex].ResidentTicket == element.Ticket;
    }

    // ---- The handler thread ----

    /// <summary>How long the handler waits idle before it wakes every waiter (see HandlerLoop).</summary>
    private const int IdleWakeMilliseconds = 250;

    /// <summary>Serves faults and UNMAP events. An unexpected failure is reported once,
    /// and from then on every fault gets SIGBUS (UFFDIO_POISON): never zeros, never a
    /// silent end of the program.</summary>
    // Fully optimized from the first call: a tiered method's on-stack replacement, as
    // this loop would get, allocates on the handler thread.
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private void HandlerLoop()
    {
        WarmUpHandlerThread();
        long baseline = GC.GetAllocatedBytesForCurrentThread();
        var fds = stackalloc Libc.PollFd[2];
        fds[0] = new Libc.PollFd { Fd = _uffd.Descriptor, Events = Libc.POLLIN };
        fds[1] = new Libc.PollFd { Fd = _wakeFd, Events = Libc.POLLIN };
        while (!_stopping)
        {
            // A thread was once found waiting on a 2 MiB page for good, the handler idle
            // in poll with no message to read (HugePageTests in CI; the lost wake-up's cause
            // is not known). So an idle handler wakes every waiter once in a while: one
            // whose page is still missing faults again at once, and is served.
            if (Libc.poll(fds, 2, IdleWakeMilliseconds) == 0)
            {
                lock (_gate)
                    foreach (HugePageArena arena in _arenasByAddress)
                        _uffd.Wake(arena.Address, (nuint)arena.Length);
                continue;
            }
            try
            {
                int count = _uffd.ReadMessages(_messages, MessagesPerRead);
                lock (_gate)
                {
                    for (int i = 0; i < count; i++)
                        Dispatch(in _messages[i]);
                    _handlerAllocatedBytes = GC.GetAllocatedBytesForCurrentThread() - baseline;
                }
            }
            catch (Exception e) when (_failure == null)
            {
                Fail(e);
            }
        }
    }

    /// <summary>The first failure is reported once; from then on every fault gets SIGBUS.</summary>
    private void Fail(Exception e)
    {
        if (_failure != null)
            return;
        _failure = $"tibet: the 2 MiB page handler failed ({e.GetType().Name}: {e.Message}); from now on every touch of a model page that is not resident gets SIGBUS";
        _report(_failure);
    }

    private void Dispatch(in uffd_msg message)
    {
        switch (message.@event)
        {
            case UFFD_EVENT_PAGEFAULT:
                long received = Stopwatch.GetTimestamp();
                try
                {
                    HandleFault((nint)message.pagefault_address, message.pagefault_flags, message.pagefault_feat_ptid);
                }
                catch (Exception e)
                {
                    // Its message is consumed: without a signal this thread would wait forever.
                    Fail(e);
                    RaiseSigbus((nint)message.pagefault_address & ~(nint)(HugePageSize - 1), message.pagefault_feat_ptid);
                }
                _faultLatency.Record((long)((Stopwatch.GetTimestamp() - received) * (1e9 / Stopwatch.Frequency)));
                break;
            case UFFD_EVENT_UNMAP:
                nint start = (nint)message.remove_start, end = (nint)message.remove_end;
                foreach (var arena in _arenasByAddress)
                    if (arena.Address < end && arena.Address + (nint)arena.Length > start)
                        ForgetLocked(arena, Math.Max(start, arena.Address), Math.Min(end, arena.Address + (nint)arena.Length));
                break;
        }
    }

    private void HandleFault(nint address, ulong flags, uint threadId)
    {
        nint page = address & ~(nint)(HugePageSize - 1);
        HugePageArena? arena = Find(page);
        if (arena == null)
        {
            _uffd.Wake(page, HugePageSize);
            return;
        }
        long index = (page - arena.Address) / HugePageSize;
        ref HugePageEntry entry = ref arena.Entries[index];
        if (_failure != null)
        {
            RaiseSigbus(page, threadId);
            return;
        }
        if ((flags & UFFD_PAGEFAULT_FLAG_WP) != 0)
        {
            ServeWrite(page, ref entry);
            return;
        }
        switch (entry.State)
        {
            case HugePageState.Absent:
                break;
            case HugePageState.Poisoned:
                RaiseSigbus(page, threadId);
                return;
            case HugePageState.Resident or HugePageState.Written when IsMapped(page):
                // A fault that raced with its own service: the page is there now.
                _uffd.Wake(page, HugePageSize);
                return;
            case HugePageState.Resident:
                // The books say resident, the page tables say missing: serve it again
                // (its resident-set element goes stale with the ticket; a sealed copy stays).
                _residentPages--;
                entry.State = HugePageState.Absent;
                entry.ResidentTicket = 0;
                break;
            default:
                // Unmapped, or written and gone (only the program's own madvise can do
                // that): its UNMAP event, or the kernel's zero-fill, is what the program asked for.
                _uffd.Wake(page, HugePageSize);
                return;
        }

        _faults++;
        MakeRoom();
        PageVerdict verdict = entry.Sealed != 0 ? Open(arena, index, ref entry) : FillFromSource(arena, index, ref entry);
        if (verdict == PageVerdict.Tampered)
        {
            Libc.memset((void*)_buffer, 0, HugePageSize);
            FreeSealed(ref entry);
            entry.State = HugePageState.Poisoned;
            _poisonedPages++;
            arena.Source.EndOfFault();
            ReportTampered(arena, index);
            RaiseSigbus(page, threadId);
            return;
        }
        int rc = _uffd.Copy(page, _buffer, HugePageSize, UFFDIO_COPY_MODE_WP, out _);
        arena.Source.EndOfFault();
        Libc.memset((void*)_buffer, 0, HugePageSize);
        if (rc == 0 || (rc == Libc.EEXIST && IsMapped(page)))
        {
            if (rc == Libc.EEXIST)
                _uffd.Wake(page, HugePageSize);
            MarkResident(arena, index, ref entry);
            return;
        }
        if (rc is Libc.ENOENT or Libc.EFAULT)
        {
            _uffd.Wake(page, HugePageSize); // unmapped meanwhile: its UNMAP event follows
            return;
        }
        // ENOMEM, or EEXIST with nothing mapped: the hugetlb pool ran dry (another process
        // took its pages, or written pages hold more than the budget). Loud, never zeros.
        throw new InvalidOperationException($"UFFDIO_COPY of a 2 MiB page failed ({Libc.Describe(rc)}) with {_residentPages} pages resident: " +
                                            "the hugetlb pool has no free page left (HugePages_Free in /proc/meminfo); give the program a larger pool");
    }

    /// <summary>The program writes to a page it made writable: keep the page for good.</summary>
    private void ServeWrite(nint page, ref HugePageEntry entry)
    {
        _writeFaults++;
        if (entry.State == HugePageState.Resident)
        {
            // Its resident-set element goes stale below: it is never evicted.
            entry.State = HugePageState.Written;
            entry.ResidentTicket = 0;
            _writtenPages++;
            if (!_writtenAnnounced)
            {
                _writtenAnnounced = true;
                _report("tibet: the program writes to a model map it made writable; written 2 MiB pages stay resident (plaintext) until unmapped, beyond the huge-page budget if need be");
            }
        }
        _uffd.WriteProtect(page, HugePageSize, protect: false);
    }

    /// <summary>The page from its source; with sealed copies on, sealed into RAM at once,
    /// so that it never has to be read from the source again.</summary>
    private PageVerdict FillFromSource(HugePageArena arena, long index, ref HugePageEntry entry)
    {
        var plaintext = new Span<byte>((void*)_buffer, HugePageSize);
        PageVerdict verdict = arena.Source.FillRun(index * SmallPagesPerHugePage, SmallPagesPerHugePage, plaintext);
        if (verdict == PageVerdict.Tampered)
            return verdict;
        _sourcedBytes += HugePageSize;
        if (!_keepSealedCopies)
            return verdict;
        nint sealedPage = KernelMemory.Map(_sealedSize);
        entry.Nonce = arena.Cipher.Seal((ulong)index, 0, plaintext, new Span<byte>((void*)sealedPage, HugePageSize + arena.Cipher.TagSize));
        entry.Sealed = sealedPage;
        _sealedBytes += (long)_sealedSize;
        return verdict;
    }

    /// <summary>A page that comes back: authenticated and decrypted from RAM.</summary>
    private PageVerdict Open(HugePageArena arena, long index, ref HugePageEntry entry)
    {
        var sealedPage = new ReadOnlySpan<byte>((void*)entry.Sealed, HugePageSize + arena.Cipher.TagSize);
        if (arena.Cipher.Open((ulong)index, 0, entry.Nonce, sealedPage, new Span<byte>((void*)_buffer, HugePageSize)))
        {
            _decryptedBytes += HugePageSize;
            return PageVerdict.Keep;
        }
        _authenticationFailures++;
        return PageVerdict.Tampered;
    }

    /// <summary>A sealed 2 MiB page with its tag, rounded to 4 KiB.</summary>
    private readonly nuint _sealedSize;

    /// <summary>The AEAD of sealed copies (see keepSealedCopies).</summary>
    internal PageCipherSuite Cipher { get; }

    private void MarkResident(HugePageArena arena, long index, ref HugePageEntry entry)
    {
        uint distance = _evictionClock.DistanceSince(entry.EvictionStamp);
        if (distance != ResidentSet.FirstTouch)
            _refaults++;
        entry.State = HugePageState.Resident;
        entry.EvictionStamp = 0;
        entry.ResidentTicket = ++_lastTicket;
        _residentSet.Admit(new ResidentQueue.Element(arena.Slot, index, entry.ResidentTicket), distance);
        _residentPages++;
        if (_residentPages > _peakResidentPages)
            _peakResidentPages = _residentPages;
    }

    /// <summary>Drops resident pages until one more fits the budget. Written pages count
    /// against it but cannot be dropped (see <see cref="ServeWrite"/>): when only they are
    /// left, the budget is exceeded, as announced.</summary>
    private void MakeRoom()
    {
        while (_residentPages + 1 > _budgetPages && _residentSet.TryTakeNext(out ResidentQueue.Element element))
        {
            HugePageArena? arena = element.ArenaSlot < _arenas.Length ? _arenas[element.ArenaSlot] : null;
            if (arena == null || element.PageIndex >= arena.Entries.Length)
                continue;
            ref HugePageEntry entry = ref arena.Entries[element.PageIndex];
            if (entry.State != HugePageState.Resident || entry.ResidentTicket != element.Ticket)
                continue;
            // Its contents are the source's: dropping loses nothing. No REMOVE event is
            // raised (this userfaultfd does not ask for them), so the handler never waits
            // on itself; a thread that touches the page meanwhile faults and is served anew.
            if (Libc.madvise(arena.PageAddress(element.PageIndex), HugePageSize, Libc.MADV_DONTNEED) != 0)
                throw new InvalidOperationException($"MADV_DONTNEED of a 2 MiB page failed: {Libc.Describe(Libc.LastErrno)}");
            entry.State = HugePageState.Absent;
            entry.EvictionStamp = _evictionClock.Stamp();
            _residentPages--;
            _evictions++;
        }
    }

    private void ForgetLocked(HugePageArena arena, nint start, nint end)
    {
        long first = (start - arena.Address + HugePageSize - 1) / HugePageSize;
        long last = (end - arena.Address) / HugePageSize; // exclusive
        for (long i = first; i < last && i < arena.Entries.Length; i++)
        {
            ref HugePageEntry entry = ref arena.Entries[i];
            if (entry.State == HugePageState.Written)
                _writtenPages--;
            if (entry.State is HugePageState.Resident or HugePageState.Written)
                _residentPages--;
            entry.State = HugePageState.Unmapped;
            FreeSealed(ref entry);
        }
    }

    private void FreeSealed(ref HugePageEntry entry)
    {
        if (entry.Sealed == 0)
            return;
        KernelMemory.Unmap(entry.Sealed, _sealedSize);
        entry.Sealed = 0;
        _sealedBytes -= (long)_sealedSize;
    }

    /// <summary>SIGBUS for the thread blocked on <paramref name="page"/>: UFFDIO_POISON of
    /// the 2 MiB page, else tgkill with the thread id the kernel reported. Never zeros.</summary>
    private void RaiseSigbus(nint page, uint threadId)
    {
        if (_uffd.Poison(page, HugePageSize) == 0)
            return;
        if (threadId != 0)
            Libc.syscall(Libc.SYS_tgkill, Libc.getpid(), threadId, Libc.SIGBUS);
        _uffd.Wake(page, HugePageSize);
    }

    /// <summary>Whether a 2 MiB page is mapped (mincore of its first 4 KiB).</summary>
    private static bool IsMapped(nint page)
    {
        byte vector = 0;
        return Libc.mincore(page, SmallPage, &vector) == 0 && (vector & 1) != 0;
    }

    private void ReportTampered(HugePageArena arena, long index)
    {
        // Rare, and after the reader already has its SIGBUS pending: reported here, on
        // the handler thread, because the source's report may write and audit.
        long smallPage = index * SmallPagesPerHugePage;
        try
        {
            arena.Source.ReportTampered(smallPage);
        }
        catch (Exception e)
        {
            _report($"tibet: reporting a tampered 2 MiB page of '{arena.Label}' failed: {e.Message}");
        }
    }

    private HugePageArena? Find(nint address) => AddressIndex.Find(_arenasByAddress, address);

    private void RebuildIndex() => _arenasByAddress = AddressIndex.Build(_arenas);

    /// <summary>Back to an inaccessible reservation, in one step (MAP_FIXED replaces atomically).</summary>
    private static void GiveBack(nint address, nuint length) =>
        Libc.mmap(address, length, Libc.PROT_NONE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE | Libc.MAP_FIXED, -1, 0);
}
