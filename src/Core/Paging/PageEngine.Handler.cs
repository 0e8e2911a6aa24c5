using System.Diagnostics;
using Tibet.Core.Interop;
using Tibet.Core.Paging.Reporting;
using Tibet.Core.Paging.AddressSpace;
using Tibet.Core.Paging.Events;
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
        Threading.ServiceCpus.PinCurrentThread(_serviceCpus.Handler);
        try
        {
            ServeNormally();
        }
        catch (Exception e)
        {
            Fail(e);
        }
        if (_reporter.Failure != null && !_stopping)
            ServeAfterFailure();
    }

    /// <summary>Marks the engine failed (the first failure wins) and wakes both threads:
    /// the reporter writes the line, the handler switches to SIGBUS-only service.</summary>
    private void Fail(Exception failure)
    {
        _reporter.Fail(failure);
        KickHandler();
    }

    private void ServeNormally()
    {
        long allocationBaseline = GC.GetAllocatedBytesForCurrentThread();
        long spinTicks = _options.SpinMicroseconds * Stopwatch.Frequency / 1_000_000;
        long lastWork = Stopwatch.GetTimestamp();

        while (!_stopping && _reporter.Failure == null)
        {
            bool worked;
            lock (_gate)
            {
                if (_reporter.Failure != null)
                    break; // an API call failed under the lock
                worked = _reporter.ReleaseHeldSignals(all: false);
                worked |= PumpLocked();
                if (!worked)
                    worked = _evictor.EvictInBackground();
                if (!worked)
                    worked = _faults.DecryptAhead();
                // The work above may have read faults into the queue (an install that met
                // EAGAIN drains the userfaultfd): the kernel has no message left to wake
                // the poll for them.
                worked |= _events.QueuedFaults > 0;
                _evictor.DiscardRecycled();
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
                // Yielding, not pausing, even on a CPU of its own (see Threading.IdleWait):
                // between faults the program may want this CPU. Redis at half budget:
                // SET 0.40x native yielding, 0.20x pausing.
                Thread.Yield();
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
            // A budget shared with another engine (ResidentBudgetShare) is watched every
            // 5 ms while this engine holds pages: when the other's grow, these give way.
            timeout = _reporter.HeldSignals > 0 ? 10 : _evictor.WatchesSharedBudget ? 5 : -1;
        }
        // _pollSet is replaced only under the lock, by FillPollSet on this thread.
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
                _reporter.ReleaseHeldSignals(all: true);
                AnswerStrandedFaults();
            }
            while (!_stopping)
            {
                lock (_gate)
                {
                    AnswerWithSigbus(_uffd, _space, Libc.getpid());
                    _children.AnswerWithSigbus(_answerWithSigbus ??= AnswerWithSigbus);
                }
                Sleep();
            }
        }
        catch (Exception)
        {
            FailureReporter.EndProcessWithSigbus();
        }
    }

    /// <summary>The fault being served (this process's or a child's), answered with
    /// SIGBUS if the failure strikes meanwhile.</summary>
    private StrandedFault _inFlight;
    private Action<Userfaultfd, AddressSpaceOps, int>? _answerWithSigbus;

    private void AnswerStrandedFaults()
    {
        int pid = Libc.getpid();
        if (_inFlight.Space is { } space)
            _reporter.RaiseSigbus(space, (nint)(_inFlight.Address & ~(ulong)(PageSize - 1)), _inFlight.ThreadId, _inFlight.Pid == 0 ? pid : _inFlight.Pid);
        _inFlight = default;
        while (_events.TryDequeue(out uffd_msg message))
            if (message.@event == UFFD_EVENT_PAGEFAULT)
                _reporter.RaiseSigbus(_space, (nint)(message.pagefault_address & ~(ulong)(PageSize - 1)), message.pagefault_feat_ptid, pid);
        _children.RaiseStranded();
    }

    private void WaitForFailureReport()
    {
        long deadline = Stopwatch.GetTimestamp() + ReportWaitMilliseconds * Stopwatch.Frequency / 1000;
        Libc.PollFd wake = new() { Fd = _wakeFd, Events = Libc.POLLIN };
        while (!_reporter.FailureReported && Stopwatch.GetTimestamp() < deadline)
        {
            if (Libc.poll(&wake, 1, 10) > 0)
            {
                ulong drained;
                Libc.read(_wakeFd, &drained, sizeof(ulong));
            }
        }
        if (!_reporter.FailureReported)
            FailureReporter.WriteFixedFailureLine();
    }

    /// <summary>Plaintext that a failed operation may have left behind: the pages being
    /// injected or sealed, and pages moved out for eviction but never sealed.</summary>
    private void WipePlaintextBuffers()
    {
        _faults.Wipe();
        _sealer.Wipe();
        _takeOut?.Wipe();
    }

    /// <summary>Reads every message of <paramref name="uffd"/>: faults get SIGBUS, events
    /// are acknowledged (reading them is what the kernel waits for), a fork's new
    /// userfaultfd is kept and served the same way.</summary>
    private void AnswerWithSigbus(Userfaultfd uffd, AddressSpaceOps space, int pid)
    {
        int n;
        uffd_msg* buffer = _events.ReadBuffer;
        while ((n = uffd.ReadMessages(buffer, ProgramEvents.MessagesPerRead)) > 0)
        {
            for (int i = 0; i < n; i++)
            {
                uffd_msg message = buffer[i];
                switch (message.@event)
                {
                    case UFFD_EVENT_PAGEFAULT:
                        _reporter.RaiseSigbus(space, (nint)(message.pagefault_address & ~(ulong)(PageSize - 1)),
                            message.pagefault_feat_ptid, pid);
                        break;
                    case UFFD_EVENT_UNMAP:
                        space.Wake((nint)message.remove_start, (nuint)(message.remove_end - message.remove_start));
                        break;
                    case UFFD_EVENT_FORK:
                        _children.AdoptUnserved((int)message.fork_ufd);
                        break;
                }
            }
        }
    }

    /// <summary>Reads what the kernel has and serves everything queued. True if there was anything.</summary>
    private bool PumpLocked()
    {
        bool childWork = _children.Count > 0 && _children.Pump(ref _inFlight);
        int read = _events.ReadIntoQueue() + (childWork ? 1 : 0);
        if (_events.QueuedFaults == 0)
            return read > 0;

        long received = Stopwatch.GetTimestamp();
        while (_events.TryDequeue(out uffd_msg message))
        {
            if (message.@event == UFFD_EVENT_PAGEFAULT)
            {
                _inFlight = new StrandedFault(_space, message.pagefault_address, message.pagefault_feat_ptid, 0);
                _faults.Serve(in message, received);
                _inFlight = default;
            }
            else
            {
                _events.Handle(in message);
            }
        }
        return true;
    }

    /// <summary>Fills <see cref="_pollSet"/>: the userfaultfd, the wake eventfd, and each
    /// child's userfaultfd and pidfd. Returns how many entries are used.</summary>
    private int FillPollSet()
    {
        int needed = 2 + _children.PollEntries;
        if (_pollSet.Length < needed)
            _pollSet = new Libc.PollFd[needed * 2];
        _pollSet[0] = new Libc.PollFd { Fd = _uffd.Descriptor, Events = Libc.POLLIN };
        _pollSet[1] = new Libc.PollFd { Fd = _wakeFd, Events = Libc.POLLIN };
        return _children.AppendPollSet(_pollSet, 2);
    }
}
