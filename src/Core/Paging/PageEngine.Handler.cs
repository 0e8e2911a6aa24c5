using System.Diagnostics;
using Tibet.Core.Interop;
using Tibet.Core.Paging.Reporting;
using Tibet.Core.Paging.AddressSpace;
using Tibet.Core.Paging.Events;
using static Tibet.Core.Interop.UserfaultfdAbi;

namespace Tibet.Core.Paging;

// The handler threads (one, or one per CPU taking turns with the baton): reading
// messages, dispatching them, and idling.
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
    /// <remarks>With a handler per CPU, the first that meets the failure serves in the
    /// degraded mode, and the others end: one thread reads every message from then on.</remarks>
    private void HandlerLoop(object? state)
    {
        int index = (int)state!;
        Threading.ServiceCpus.PinCurrentThread(_serviceCpus.Handler(index));
        try
        {
            try
            {
                WarmUpHandlerThread(index);
            }
            finally
            {
                _handlersReady.Signal(); // the constructor waits for every handler to be pinned and warm
            }
            ServeNormally(index);
        }
        catch (Exception e)
        {
            Fail(e);
        }
        if (_reporter.Failure != null && !_stopping && Interlocked.Exchange(ref _degradedServer, 1) == 0)
        {
            BecomeTheOnlyHandler(index);
            ServeAfterFailure(index);
        }
    }

    /// <summary>
    /// Runs on each handler thread, before it serves, what a step runs that a thread does
    /// once: a cipher's round trip and the compressor (the sealer's self-test), the look at
    /// a thread's CPU, the waits. With a handler per CPU, one may serve for the first time
    /// long after start-up, when the service passes to it, and the first use on a thread
    /// of what the native libraries keep per thread calls malloc (seen: 8 bytes from the
    /// dynamic linker, MallocFreedomTests), which the fault path must not.
    /// </summary>
    private void WarmUpHandlerThread(int index)
    {
        if (_handlers.Length == 1)
            return; // the one handler serves from the start: the constructor warmed up the rest
        lock (_baton)
        lock (_gate)
        {
            _sealer.WarmUp(_options.Cipher, _faults.Buffer);
            Threading.ThreadCpu.Of(Libc.gettid(), _threadCpuBuffer);
        }
        Libc.PollFd wake = new() { Fd = _wakeFds[index], Events = Libc.POLLIN };
        Libc.poll(&wake, 1, 0);
        Thread.Yield();
        _ = Stopwatch.GetTimestamp();
        _ = GC.GetAllocatedBytesForCurrentThread();
    }

    /// <summary>Marks the engine failed (the first failure wins) and wakes the reporter and
    /// every handler: the reporter writes the line, one handler switches to SIGBUS-only
    /// service, the others end.</summary>
    private void Fail(Exception failure)
    {
        _reporter.Fail(failure);
        KickAllHandlers();
    }

    /// <summary>The handler that won <see cref="_degradedServer"/> becomes the only one:
    /// it waits out a step another handler may still be in (that one sees the failure at
    /// its next step and ends), and takes the kicks from now on.</summary>
    private void BecomeTheOnlyHandler(int index)
    {
        lock (_baton)
            _activeHandler = index;
    }

    private void ServeNormally(int index)
    {
        long allocationBaseline = GC.GetAllocatedBytesForCurrentThread();
        long spinTicks = _options.SpinMicroseconds * Stopwatch.Frequency / 1_000_000;
        long lastWork = Stopwatch.GetTimestamp();
        int cpu = _serviceCpus.Handler(index), partner = _serviceCpus.PartnerOf(index);

        while (!_stopping && _reporter.Failure == null)
        {
            if (_activeHandler != index)
            {
                SleepPassive(index);
                lastWork = Stopwatch.GetTimestamp();
                continue;
            }
            bool worked;
            // The baton for the whole step: inside it the lock may be let go (around
            // decryption, sealing, file reads), and no other handler may step in then.
            lock (_baton)
            {
                lock (_gate)
                {
                    if (_reporter.Failure != null)
                        break; // an API call failed under the lock
                    _faults.HandlerServesOn(cpu, partner);
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
                    _evictor.EndStep(); // a range placed ahead may have made room it did not fill
                    _handlerAllocated[index] = GC.GetAllocatedBytesForCurrentThread() - allocationBaseline;
                }
                // With the baton, not the lock: the look reads /proc, and API calls need not wait for it.
                ConsiderHandover(index);
            }

            long now = Stopwatch.GetTimestamp();
            if (worked)
            {
                lastWork = now;
                continue;
            }
            // Not on the faulting thread's own CPU: there the spin would take the CPU the
            // thread runs on, and waking this handler costs little (see ConsiderHandover).
            if (now - lastWork < spinTicks && !_faultsLookedLocal)
            {
                // Yielding, not pausing, even on a CPU of its own (see Threading.IdleWait):
                // between faults the program may want this CPU. Redis at half budget:
                // SET 0.40x native yielding, 0.20x pausing.
                Thread.Yield();
                continue;
            }
            Sleep(index);
        }
    }

    /// <summary>Waits in poll for any userfaultfd, a child's exit or a kick; while
    /// signals are held for reports, wakes up in time to send them.</summary>
    private void Sleep(int index)
    {
        int count;
        int timeout;
        lock (_gate)
        {
            count = FillPollSet(index);
            // A budget shared with another engine (ResidentBudgetShare) is watched every
            // 5 ms while this engine holds pages: when the other's grow, these give way.
            timeout = _reporter.HeldSignals > 0 ? 10 : _evictor.WatchesSharedBudget ? 5 : -1;
        }
        // This handler's poll set is replaced only under the lock, by FillPollSet on this thread.
        fixed (Libc.PollFd* fds = _pollSets[index])
        {
            Libc.poll(fds, (nuint)count, timeout);
            if ((fds[1].Revents & Libc.POLLIN) != 0)
            {
                ulong drained;
                Libc.read(_wakeFds[index], &drained, sizeof(ulong));
            }
        }
    }

    /// <summary>A handler that does not serve sleeps on its own eventfd alone, not on the
    /// userfaultfd, so that a fault wakes one thread. A kick that reaches it anyway (the
    /// service passed on meanwhile) is passed on to the one that serves.</summary>
    private void SleepPassive(int index)
    {
        Libc.PollFd wake = new() { Fd = _wakeFds[index], Events = Libc.POLLIN };
        Libc.poll(&wake, 1, -1);
        ulong drained;
        bool kicked = Libc.read(_wakeFds[index], &drained, sizeof(ulong)) > 0;
        int active = _activeHandler;
        if (kicked && active != index && !_stopping)
            KickHandler(active);
    }

    /// <summary>How many faults the serving handler serves between two looks at a faulting
    /// thread's CPU (a read of /proc/TID/stat, 5–10 µs).</summary>
    private const int FaultsPerLook = 16;

    /// <summary>Looks in a row that must name the same other CPU before the service passes
    /// on (64 faults): a program whose threads fault on several CPUs keeps its handler.
    /// A hand-over wakes a handler on a CPU the program may keep busy (llama.cpp's threads
    /// spin at their barriers), where it may wait for a time slice: with 2 looks, 22
    /// hand-overs in 32 tokens at half budget, 47 against 54 tokens/s with one handler;
    /// with 4, 3 hand-overs, and level (46.5 against 46.1).</summary>
    private const int LooksToHandOver = 4;

    /// <summary>The least time between two hand-overs (5 ms): a program whose thread the
    /// scheduler moves back and forth keeps its handler rather than waking one per move
    /// (seen with the custodian: 190–300 hand-overs a second, and p99 above 1 ms).</summary>
    private static readonly long HandoverIntervalTicks = Stopwatch.Frequency / 200;

    /// <summary>
    /// After a step, every <see cref="FaultsPerLook"/> faults, finds the CPU the last
    /// faulting thread took its fault on, and when the last
    /// <see cref="LooksToHandOver"/> looks named the same CPU with a handler of its own
    /// other than <paramref name="index"/>, makes that handler the serving one and wakes
    /// it. It steps in once this step ends (the baton); this handler then sleeps.
    /// </summary>
    /// <remarks>Why: the handler on the faulting thread's CPU runs as soon as the thread
    /// sleeps, with no wake-up sent to another CPU, which on these VMs is the larger part
    /// of a fault's cost (see Threading.ServiceCpus). Every handler polling the userfaultfd
    /// at once was slower than one: each fault then woke them all (random touches under an
    /// 8M budget: 20–24k/s against 25–31k with one handler, 60k with one on the program's
    /// CPU).</remarks>
    private void ConsiderHandover(int index)
    {
        if (_threadCpuBuffer == null || _faultsSinceLook < FaultsPerLook)
            return;
        _faultsSinceLook = 0;
        int target = HandlerOnCpu(Threading.ThreadCpu.Of((int)_lastFaultThread, _threadCpuBuffer));
        _faultsLookedLocal = target == index;
        if (target < 0 || target == index)
        {
            _candidate = -1;
            _candidateVotes = 0;
            return;
        }
        _candidateVotes = target == _candidate ? _candidateVotes + 1 : 1;
        _candidate = target;
        long now = Stopwatch.GetTimestamp();
        if (_candidateVotes < LooksToHandOver || now - _lastHandover < HandoverIntervalTicks)
            return;
        _lastHandover = now;
        _candidate = -1;
        _candidateVotes = 0;
        _handovers++;
        _faultsLookedLocal = true; // the new handler's, by the looks that chose it
        _activeHandler = target;
        KickHandler(target);
    }

    /// <summary>The degraded mode of the failure policy (see <see cref="HandlerLoop"/>).</summary>
    private void ServeAfterFailure(int index)
    {
        try
        {
            lock (_gate)
                WipePlaintextBuffers();
            WaitForFailureReport(index);
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
                Sleep(index);
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

    private void WaitForFailureReport(int index)
    {
        long deadline = Stopwatch.GetTimestamp() + ReportWaitMilliseconds * Stopwatch.Frequency / 1000;
        Libc.PollFd wake = new() { Fd = _wakeFds[index], Events = Libc.POLLIN };
        while (!_reporter.FailureReported && Stopwatch.GetTimestamp() < deadline)
        {
            if (Libc.poll(&wake, 1, 10) > 0)
            {
                ulong drained;
                Libc.read(_wakeFds[index], &drained, sizeof(ulong));
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
                _faultsSinceLook++;
                _lastFaultThread = message.pagefault_feat_ptid; // for ConsiderHandover, after this step
            }
            else
            {
                _events.Handle(in message);
            }
        }
        return true;
    }

    /// <summary>Fills handler <paramref name="index"/>'s poll set: the userfaultfd, its wake
    /// eventfd, and each child's userfaultfd and pidfd. Returns how many entries are used.</summary>
    private int FillPollSet(int index)
    {
        int needed = 2 + _children.PollEntries;
        if (_pollSets[index].Length < needed)
            _pollSets[index] = new Libc.PollFd[needed * 2];
        Libc.PollFd[] pollSet = _pollSets[index];
        pollSet[0] = new Libc.PollFd { Fd = _uffd.Descriptor, Events = Libc.POLLIN };
        pollSet[1] = new Libc.PollFd { Fd = _wakeFds[index], Events = Libc.POLLIN };
        return _children.AppendPollSet(pollSet, 2);
    }
}
