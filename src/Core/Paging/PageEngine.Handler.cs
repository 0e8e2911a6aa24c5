using System.Diagnostics;
using Tibet.Core.Interop;
using Tibet.Core.Paging.AddressSpace;
using static Tibet.Core.Interop.UserfaultfdAbi;

namespace Tibet.Core.Paging;

// The handler thread: reading messages, dispatching them, and idling.
public sealed unsafe partial class PageEngine
{
    /// <summary>
    /// The handler thread. <b>Failure policy:</b> an unexpected exception anywhere in
    /// normal service (a failed read of the userfaultfd, an mmap failure as the store
    /// grows, an exhausted nonce space, a full store; also one thrown by an API call that
    /// was evicting under the lock, see <see cref="Fail"/>) must neither end the program
    /// silently (an unhandled exception on this thread would) nor leave it reading zeros.
    /// So:
    /// <list type="number">
    /// <item>the plaintext buffers are wiped, and the failure is handed to the reporter,
    /// which writes one line naming it (<see cref="EngineOptions.OnHandlerFailure"/>, or
    /// stderr);</item>
    /// <item>once that line is out (or after <see cref="ReportWaitMilliseconds"/>, with a
    /// fixed line instead), the handler goes on serving the userfaultfd, and every
    /// child's, in a degraded mode: every fault is answered with SIGBUS for the faulting
    /// thread (UFFDIO_POISON, else tgkill with the thread id), events are read and
    /// acknowledged, and nothing else is done;</item>
    /// <item>the userfaultfd is never closed: a closed userfaultfd turns the registered
    /// ranges into ordinary anonymous memory, where every page that was sealed would
    /// read as zeros;</item>
    /// <item>resident pages stay readable, so the program runs until it touches a page
    /// that is not resident, and then dies of SIGBUS (exit status 135 from a shell)
    /// unless it handles the signal;</item>
    /// <item>if the userfaultfd cannot even be read any more, its blocked threads would
    /// wait forever: the process is sent SIGBUS as a whole.</item>
    /// </list>
    /// Eviction requested through the API afterwards throws, naming the failure.
    /// </summary>
    private void HandlerLoop()
    {
        try
        {
            ServeNormally();
        }
        catch (Exception e)
        {
            Fail(e);
        }
        if (_failure != null && !_stopping)
            ServeAfterFailure();
    }

    /// <summary>Marks the engine failed (the first failure wins) and wakes both threads:
    /// the reporter writes the line, the handler switches to SIGBUS-only service.</summary>
    private void Fail(Exception failure)
    {
        Interlocked.CompareExchange(ref _failure, failure, null);
        WakeReporter();
        KickHandler();
    }

    private void ServeNormally()
    {
        long allocationBaseline = GC.GetAllocatedBytesForCurrentThread();
        long spinTicks = _options.SpinMicroseconds * Stopwatch.Frequency / 1_000_000;
        long lastWork = Stopwatch.GetTimestamp();

        while (!_stopping && _failure == null)
        {
            bool worked;
            lock (_gate)
            {
                if (_failure != null)
                    break; // an API call failed under the lock
                worked = ReleaseHeldSignals(all: false);
                worked |= PumpLocked();
                if (!worked)
                    worked = _evictor.EvictInBackground();
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
            Sleep();
        }
    }

    /// <summary>Waits in poll for any userfaultfd, a child's exit or a kick; while
    /// signals are held for reports, wakes up in time to send them.</summary>
    private void Sleep()
    {
        int count;
        int timeout;
        lock (_gate)
        {
            count = FillPollSet();
            timeout = _heldSignalCount > 0 ? 10 : -1;
        }
        fixed (Libc.PollFd* fds = _pollSet)
        {
            Libc.poll(fds, (nuint)count, timeout);
            if ((fds[1].Revents & Libc.POLLIN) != 0)
            {
                ulong drained;
                Libc.read(_wakeFd, &drained, sizeof(ulong));
            }
        }
    }

    /// <summary>The degraded mode of the failure policy (see <see cref="HandlerLoop"/>).</summary>
    private void ServeAfterFailure()
    {
        try
        {
            lock (_gate)
                WipePlaintextBuffers();
            WaitForFailureReport();
            lock (_gate)
            {
                ReleaseHeldSignals(all: true);
                AnswerStrandedFaults();
            }
            while (!_stopping)
            {
                lock (_gate)
                {
                    AnswerWithSigbus(_uffd, _space, Libc.getpid());
                    for (int i = _children.Count - 1; i >= 0; i--)
                    {
                        ForkedChild child = _children[i];
                        AnswerWithSigbus(child.Uffd, child.Space, child.Pid);
                        if (child.PidFd >= 0 && ChildExited(child.PidFd))
                        {
                            child.Dispose(_sealer.Store);
                            _children.RemoveAt(i);
                        }
                    }
                }
                Sleep();
            }
        }
        catch (Exception)
        {
            EndProcessWithSigbus();
        }
    }

    /// <summary>A fault read but not answered when the failure struck: the one being
    /// served, and those queued behind it (this process's and each child's).</summary>
    private readonly record struct StrandedFault(AddressSpaceOps? Space, ulong Address, uint ThreadId, int Pid);

    private StrandedFault _inFlight;

    private void AnswerStrandedFaults()
    {
        int pid = Libc.getpid();
        if (_inFlight.Space is { } space)
            RaiseSigbus(space, (nint)(_inFlight.Address & ~(ulong)(PageSize - 1)), _inFlight.ThreadId, _inFlight.Pid == 0 ? pid : _inFlight.Pid);
        _inFlight = default;
        while (_queueCount > 0)
        {
            uffd_msg message = _queue[_queueHead];
            _queueHead = (_queueHead + 1) % MessageQueueCapacity;
            _queueCount--;
            RaiseSigbus(_space, (nint)(message.pagefault_address & ~(ulong)(PageSize - 1)), message.pagefault_feat_ptid, pid);
        }
        foreach (ForkedChild child in _children)
            while (child.TryDequeueFault(out ChildFault fault))
                RaiseSigbus(child.Space, fault.Address, fault.ThreadId, child.Pid);
    }

    private void WaitForFailureReport()
    {
        long deadline = Stopwatch.GetTimestamp() + ReportWaitMilliseconds * Stopwatch.Frequency / 1000;
        Libc.PollFd wake = new() { Fd = _wakeFd, Events = Libc.POLLIN };
        while (!_failureReported && Stopwatch.GetTimestamp() < deadline)
        {
            if (Libc.poll(&wake, 1, 10) > 0)
            {
                ulong drained;
                Libc.read(_wakeFd, &drained, sizeof(ulong));
            }
        }
        if (!_failureReported)
            WriteFixedFailureLine();
    }

    /// <summary>Plaintext that a failed operation may have left behind: the pages being
    /// injected or sealed, and pages moved out for eviction but never sealed.</summary>
    private void WipePlaintextBuffers()
    {
        Libc.memset((void*)_injectBuffer, 0, _injectBufferLength);
        _sealer.Wipe();
        _takeOut?.Wipe();
    }

    /// <summary>Reads every message of <paramref name="uffd"/>: faults get SIGBUS, events
    /// are acknowledged (reading them is what the kernel waits for), a fork's new
    /// userfaultfd is kept and served the same way.</summary>
    private void AnswerWithSigbus(Userfaultfd uffd, AddressSpaceOps space, int pid)
    {
        int n;
        while ((n = uffd.ReadMessages(_readBuffer, MessagesPerRead)) > 0)
        {
            for (int i = 0; i < n; i++)
            {
                uffd_msg message = _readBuffer[i];
                switch (message.@event)
                {
                    case UFFD_EVENT_PAGEFAULT:
                        RaiseSigbus(space, (nint)(message.pagefault_address & ~(ulong)(PageSize - 1)),
                            message.pagefault_feat_ptid, pid);
                        break;
                    case UFFD_EVENT_UNMAP:
                        space.Wake((nint)message.remove_start, (nuint)(message.remove_end - message.remove_start));
                        break;
                    case UFFD_EVENT_FORK:
                        _sealer.Store.Pin();
                        AddChild(new ForkedChild(Userfaultfd.Adopt((int)message.fork_ufd), []));
                        break;
                }
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
                _inFlight = new StrandedFault(_space, message.pagefault_address, message.pagefault_feat_ptid, 0);
                HandleFault(in message);
                _inFlight = default;
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

    /// <summary>
    /// Reads what the kernel has: faults are queued, events are handled at once, as
    /// <see cref="DrainEvents"/> does. A fork event must be: reading it lets the kernel
    /// change page tables again, so a fault read in the same batch and served before the
    /// snapshot would put a page into the parent that the child never got, and the
    /// snapshot would then call it resident, which the child would read as zeros.
    /// </summary>
    private int ReadIntoQueue()
    {
        int total = 0;
        while (_queueCount + MessagesPerRead <= MessageQueueCapacity)
        {
            int n = _uffd.ReadMessages(_readBuffer, MessagesPerRead);
            for (int i = 0; i < n; i++)
            {
                if (_readBuffer[i].@event == UFFD_EVENT_PAGEFAULT)
                    _queue[(_queueHead + _queueCount++) % MessageQueueCapacity] = _readBuffer[i];
                else
                    HandleEvent(in _readBuffer[i]);
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
                _space.Wake((nint)message.remove_start, (nuint)(message.remove_end - message.remove_start));
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
                _sealer.Forget(ref entry);
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
            Arena? arena = _arenas.Find(cursor);
            if (arena == null)
            {
                cursor = _arenas.NextStart(cursor, end);
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
