using Tibet.Core.Interop;
using Tibet.Core.Paging.Eviction;
using static Tibet.Core.Interop.UserfaultfdAbi;

namespace Tibet.Core.Paging;

// The fault path: allocation-free, malloc-free, under the engine lock.
public sealed unsafe partial class PageEngine
{
    private void HandleFault(in uffd_msg message)
    {
        _faults++;
        // Pages this fault brings in stay until the next fault (see Evictor).
        _evictor.BeginFault();
        nint address = (nint)(message.pagefault_address & ~(ulong)(PageSize - 1));
        bool write = (message.pagefault_flags & UFFD_PAGEFAULT_FLAG_WRITE) != 0;

        // Events handled while serving (see DrainEvents) can change the pages under us;
        // then the decrypted buffer is stale and the fault is served afresh.
        while (true)
        {
            Arena? arena = _arenas.Find(address);
            if (arena == null)
            {
                // A range released meanwhile; unregistering already woke the thread.
                _space.Wake(address, PageSize);
                return;
            }
            long index = (address - arena.Address) / PageSize;
            PageState state = arena.Entries[index].State;
            if (state is PageState.Resident or PageState.Poisoned or PageState.Unmapped)
            {
                ServeSpuriousFault(arena, index, state, message.pagefault_feat_ptid);
                return;
            }
            if (TryServeMissingPage(arena, index, write, message.pagefault_feat_ptid))
            {
                // The thread runs again; restore some headroom under the budget now, so
                // that the next faults find room without evicting one page at a time.
                _evictor.EvictAfterFault();
                return;
            }
        }
    }

    /// <returns>False when an event changed the pages mid-way and the fault must be re-served.</returns>
    private bool TryServeMissingPage(Arena arena, long index, bool write, uint threadId)
    {
        try
        {
            return TryServeMissingPageCore(arena, index, write, threadId);
        }
        finally
        {
            arena.Source?.EndOfFault();
        }
    }

    private bool TryServeMissingPageCore(Arena arena, long index, bool write, uint threadId)
    {
        int count = ReadAheadRun(arena, index);
        long epoch = _eventEpoch;
        // Room for the faulting page only: the thread waits for this part. The read-ahead
        // run makes its own room after the thread is running again.
        _evictor.MakeRoom(1);
        if (_eventEpoch != epoch)
            return false;

        byte* buffer = (byte*)_injectBuffer;
        ref PageEntry first = ref arena.Entries[index];
        PageVerdict fromSource = first.State == PageState.Untouched && arena.Source != null
            ? FillFromSource(arena.Source, index, buffer)
            : PageVerdict.Zero;
        if (first.State == PageState.Sealed)
        {
            if (!_sealer.TryOpen(arena.Cipher, index, in first, buffer))
            {
                PoisonPage(arena, index, ref first, threadId, TamperKind.SealedPage);
                return true;
            }
        }
        else if (fromSource == PageVerdict.Tampered)
        {
            PoisonPage(arena, index, ref first, threadId, TamperKind.SourcePage);
            return true;
        }
        else if (fromSource == PageVerdict.Zero)
        {
            _zeroFills++;
            if (count == 1 && !write)
                return TryInjectZeroPage(arena, index);
        }

        // The faulting thread is woken by the first page alone; the read-ahead run is
        // decrypted while it works on that page, and wakes it again if it has already
        // moved on and faulted into the run.
        bool injected = TryInject(arena, index, 1, buffer);
        Libc.memset(buffer, 0, PageSize);
        if (injected)
            RecordFaultServed();
        if (!injected)
            return false;
        if (count == 1)
            return true;
        _evictor.MakeRoom(count - 1);
        if (_eventEpoch != epoch)
            return true;

        int filled = 0;
        for (; filled < count - 1; filled++)
        {
            long page = index + 1 + filled;
            ref PageEntry entry = ref arena.Entries[page];
            if (entry.State is not (PageState.Sealed or PageState.Untouched or PageState.Zero))
                break; // an event (or the thread itself) changed it meanwhile
            byte* slot = buffer + (long)filled * PageSize;
            if (entry.State == PageState.Untouched && arena.Source != null)
            {
                PageVerdict verdict = FillFromSource(arena.Source, page, slot);
                if (verdict == PageVerdict.Tampered)
                    break; // poisoned when someone touches it
                if (verdict == PageVerdict.Zero)
                    _zeroFills++;
                continue;
            }
            if (entry.State != PageState.Sealed)
            {
                _zeroFills++;
                continue; // the buffer is all zeros between uses
            }
            if (!_sealer.TryOpen(arena.Cipher, page, in entry, slot))
                break; // a bad page ahead is poisoned when someone touches it
        }
        _readAheadPages += filled;
        if (filled > 0 && _eventEpoch == epoch)
            TryInject(arena, index + 1, filled, buffer);
        Libc.memset(buffer, 0, (nuint)((long)filled * PageSize));
        return true;
    }

    /// <summary>How many pages to serve for a fault at <paramref name="index"/>: the
    /// window of its stream doubles while its faults arrive where its last run ended
    /// (see <see cref="ReadAhead.SequentialStreams"/>), and covers only pages that are
    /// not mapped.</summary>
    private int ReadAheadRun(Arena arena, long index)
    {
        int window = arena.Streams.WindowFor(index, _options.ReadAheadMaxPages, out int stream);
        window = Math.Min(window, _evictor.ReadAheadLimit);

        int count = 1;
        while (count < window && index + count < arena.PageCount
               && arena.Entries[index + count].State is PageState.Untouched or PageState.Zero or PageState.Sealed)
            count++;
        arena.Streams.Advance(stream, index, count);
        return count;
    }

    private bool TryInjectZeroPage(Arena arena, long index)
    {
        nint address = arena.PageAddress(index);
        while (true)
        {
            int rc = _space.ZeroPage(address, PageSize);
            if (rc == 0 || rc == Libc.EEXIST)
            {
                if (rc == Libc.EEXIST) _space.Wake(address, PageSize);
                _evictor.Admit(arena, index, 1);
                return true;
            }
            if (rc != Libc.EAGAIN)
                return AbandonInjection(address, rc);
            long epoch = _eventEpoch;
            DrainEvents();
            if (_eventEpoch != epoch) return false;
        }
    }

    /// <summary>UFFDIO_COPY of <paramref name="count"/> prepared pages; wakes the faulting thread.</summary>
    private bool TryInject(Arena arena, long index, int count, byte* source)
    {
        int done = 0;
        while (done < count)
        {
            nint destination = arena.PageAddress(index + done);
            int rc = _space.Copy(destination, (nint)(source + (long)done * PageSize), (nuint)((count - done) * PageSize), out long copied);
            int pages = (int)(copied / PageSize);
            if (pages > 0)
                _evictor.Admit(arena, index + done, pages);
            done += pages;
            if (rc == 0 || pages > 0)
                continue;

            switch (rc)
            {
                case Libc.EAGAIN:
                    long epoch = _eventEpoch;
                    DrainEvents();
                    if (_eventEpoch != epoch)
                        return done > 0; // the faulting page is in; the rest waits for a fault of its own
                    break;
                case Libc.EEXIST:
                    // Already mapped, which only a page we had written off can be: count it back in.
                    _space.Wake(destination, PageSize);
                    _evictor.Admit(arena, index + done, 1);
                    done++;
                    break;
                default:
                    return AbandonInjection(destination, rc) || done > 0;
            }
        }
        return true;
    }

    private bool AbandonInjection(nint address, int errno)
    {
        // ENOENT/EFAULT: the range went away under us; its UNMAP event wakes the thread.
        if (errno is not (Libc.ENOENT or Libc.EFAULT or Libc.ESRCH))
            Console.Error.WriteLine($"tibet: cannot map page 0x{address:x}: {Libc.Describe(errno)}");
        _space.Wake(address, PageSize);
        return true;
    }

    /// <summary>
    /// A fault on a page the books say is mapped. Resident: the program discarded it with
    /// madvise (or the kernel reclaimed a MADV_FREE page), so it reads as zeros; if it is
    /// still mapped, the fault is stale and a wake is all it needs. Poisoned: poison again.
    /// </summary>
    private void ServeSpuriousFault(Arena arena, long index, PageState state, uint threadId)
    {
        nint address = arena.PageAddress(index);
        if (state == PageState.Resident)
        {
            int rc = _space.ZeroPage(address, PageSize);
            if (rc == 0) _zeroFills++;
            else _space.Wake(address, PageSize);
        }
        else if (state == PageState.Poisoned)
        {
            // Another thread on a page just found tampered: its SIGBUS waits for the report too.
            SignalFault(_space, address, threadId, Libc.getpid());
        }
        else
        {
            _space.Wake(address, PageSize);
        }
    }

    /// <summary>
    /// The page failed authentication: it is never mapped as data. The failure goes to
    /// the reporter thread (see PageEngine.Reporting.cs), and the reader gets SIGBUS
    /// (UFFDIO_POISON, or tgkill on kernels without it) once the report is out.
    /// </summary>
    private void PoisonPage(Arena arena, long index, ref PageEntry entry, uint threadId, TamperKind kind)
    {
        _authenticationFailures++;
        _sealer.Forget(ref entry);
        entry.State = PageState.Poisoned;
        nint address = arena.PageAddress(index);
        PostTamperReport(kind, arena.Id, arena.Label, index, address, kind == TamperKind.SourcePage ? arena.Source : null, 0);
        SignalFault(_space, address, threadId, Libc.getpid());
    }
}
