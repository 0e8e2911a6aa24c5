using System.Diagnostics;
using Tibet.Core.Interop;
using static Tibet.Core.Interop.UserfaultfdAbi;

namespace Tibet.Core.Paging;

// The handler thread: reading messages, dispatching them, and idling.
public sealed unsafe partial class PageEngine
{
    private void HandlerLoop()
    {
        long allocationBaseline = GC.GetAllocatedBytesForCurrentThread();
        long spinTicks = _options.SpinMicroseconds * Stopwatch.Frequency / 1_000_000;
        long lastWork = Stopwatch.GetTimestamp();
        Libc.PollFd* fds = stackalloc Libc.PollFd[2 + 2 * MaxForkedChildren];

        while (!_stopping)
        {
            bool worked;
            lock (_gate)
            {
                worked = PumpLocked();
                if (!worked)
                    worked = EvictInBackgroundLocked();
                _handlerAllocatedBytes = GC.GetAllocatedBytesForCurrentThread() - allocationBaseline;
            }

            long now = Stopwatch.GetTimestamp();
            if (worked)
            {
                lastWork = now;
                continue;
            }
            if (now - lastWork < spinTicks)
            {
                Thread.SpinWait(8);
                continue;
            }

            int count;
            lock (_gate)
                count = FillPollSet(fds);
            Libc.poll(fds, (nuint)count, -1);
            if ((fds[1].Revents & Libc.POLLIN) != 0)
            {
                ulong drained;
                Libc.read(_wakeFd, &drained, sizeof(ulong));
            }
        }
    }

    /// <summary>Reads what the kernel has and serves everything queued. True if there was anything.</summary>
    private bool PumpLocked()
    {
        bool childWork = _children.Count > 0 && PumpChildrenLocked();
        int read = ReadIntoQueue() + (childWork ? 1 : 0);
        if (_queueCount == 0)
            return read > 0;

        long received = Stopwatch.GetTimestamp();
        while (_queueCount > 0)
        {
            uffd_msg message = _queue[_queueHead];
            _queueHead = (_queueHead + 1) % MessageQueueCapacity;
            _queueCount--;
            if (message.@event == UFFD_EVENT_PAGEFAULT)
            {
                _faultReceived = received;
                _faultRecorded = false;
                HandleFault(in message);
                RecordFaultServed();
            }
            else
            {
                HandleEvent(in message);
            }
        }
        return true;
    }

    /// <summary>
    /// Records how long the faulting thread waited: from reading its message to the wake
    /// (the first page's UFFDIO_COPY). Read-ahead done after the wake is not its wait.
    /// </summary>
    private void RecordFaultServed()
    {
        if (_faultRecorded)
            return;
        _faultRecorded = true;
        _faultLatency.Record((long)((Stopwatch.GetTimestamp() - _faultReceived) * NanosecondsPerTick));
    }

    private int ReadIntoQueue()
    {
        int total = 0;
        while (_queueCount + MessagesPerRead <= MessageQueueCapacity)
        {
            int n = _uffd.ReadMessages(_readBuffer, MessagesPerRead);
            for (int i = 0; i < n; i++)
                _queue[(_queueHead + _queueCount++) % MessageQueueCapacity] = _readBuffer[i];
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
    private void DrainEvents()
    {
        while (true)
        {
            int n = _uffd.ReadMessages(_readBuffer, MessagesPerRead);
            for (int i = 0; i < n; i++)
            {
                if (_readBuffer[i].@event == UFFD_EVENT_PAGEFAULT)
                {
                    if (_queueCount == MessageQueueCapacity)
                        throw new InvalidOperationException("userfaultfd message queue overflow");
                    _queue[(_queueHead + _queueCount++) % MessageQueueCapacity] = _readBuffer[i];
                }
                else
                {
                    HandleEvent(in _readBuffer[i]);
                }
            }
            if (n < MessagesPerRead) return;
        }
    }

    private void HandleEvent(in uffd_msg message)
    {
        _eventEpoch++;
        switch (message.@event)
        {
            case UFFD_EVENT_REMOVE:
                _removeEvents++;
                ForEachPage((nint)message.remove_start, (nint)message.remove_end, unmap: false);
                break;
            case UFFD_EVENT_UNMAP:
                _unmapEvents++;
                ForEachPage((nint)message.remove_start, (nint)message.remove_end, unmap: true);
                // A thread blocked on a page that no longer exists retries and gets SIGSEGV.
                _uffd.Wake((nint)message.remove_start, (nuint)(message.remove_end - message.remove_start));
                break;
            case UFFD_EVENT_REMAP:
                _remapEvents++;
                HandleRemap((nint)message.remap_from, (nint)message.remap_to, (long)message.remap_len);
                break;
            case UFFD_EVENT_FORK:
                AdoptChild((int)message.fork_ufd, SnapshotArenas());
                break;
        }
    }

    /// <summary>
    /// madvise(MADV_DONTNEED or MADV_FREE): the program gives the contents up. Sealed
    /// pages become zero pages and their ciphertext is freed. Resident pages stay on the
    /// books as resident: the kernel zaps them only after this event is read (and
    /// MADV_FREE may not zap them at all), and a later fault or eviction finds out which.
    /// </summary>
    private void DiscardPage(Arena arena, long index)
    {
        ref PageEntry entry = ref arena.Entries[index];
        switch (entry.State)
        {
            case PageState.Sealed:
                _store.Free(entry.Slot);
                entry.Slot = 0;
                _sealedPages--;
                entry.State = PageState.Zero;
                break;
            case PageState.Untouched:
            case PageState.Poisoned:
                entry.State = PageState.Zero;
                break;
        }
    }

    private void ForEachPage(nint start, nint end, bool unmap)
    {
        nint cursor = start & ~(nint)(PageSize - 1);
        while (cursor < end)
        {
            Arena? arena = FindArena(cursor);
            if (arena == null)
            {
                cursor = NextArenaStart(cursor, end);
                continue;
            }
            long first = (cursor - arena.Address) / PageSize;
            long last = Math.Min(arena.PageCount, (end - arena.Address + PageSize - 1) / PageSize);
            for (long i = first; i < last; i++)
            {
                if (unmap) DropPage(ref arena.Entries[i]);
                else DiscardPage(arena, i);
            }
            cursor = arena.Address + (nint)arena.Length;
        }
    }

    private nint NextArenaStart(nint after, nint end)
    {
        foreach (Arena a in _arenasByAddress)
            if (a.Address > after) return a.Address;
        return end;
    }

    /// <summary>
    /// mremap of a whole arena moves its page table along; the kernel moved the pages
    /// and the registration. Moving part of an arena is the interposer's job (it sees
    /// the call before the kernel does); here it is reported, not guessed at.
    /// </summary>
    private void HandleRemap(nint from, nint to, long length)
    {
        Arena? arena = FindArena(from);
        if (arena == null) return;
        if (arena.Address == from && arena.Length == length)
        {
            arena.Address = to;
            RebuildAddressIndex();
            return;
        }
        Console.Error.WriteLine(
            $"tibet: mremap moved {length} bytes from 0x{from:x} to 0x{to:x}, part of arena '{arena.Label}'; " +
            "moving part of an arena is not supported by the engine, and the moved pages are no longer served.");
    }
}
