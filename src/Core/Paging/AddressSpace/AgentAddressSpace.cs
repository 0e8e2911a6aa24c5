using System.Runtime.InteropServices;
using Tibet.Core.Custodian;
using Tibet.Core.Interop;

namespace Tibet.Core.Paging.AddressSpace;

/// <summary>
/// Another process's address space, served by the custodian: pages go in through the
/// process's userfaultfd (UFFDIO_COPY works from here), and come out through the process's
/// own thread (native/served.c), which moves them with UFFDIO_MOVE inside its mm and
/// copies them into a window shared with the custodian.
/// </summary>
/// <remarks>
/// <para>Why an agent: UFFDIO_MOVE issued on another process's userfaultfd fails with
/// EINVAL (Linux 6.18; bench/scripts/custodian-probe.sh). In the process's own mm the move
/// is atomic against its writers, as in <see cref="LocalAddressSpace"/>: a write lands
/// before it and is taken along, or faults after it and waits for the engine, which holds
/// its lock until the page is sealed.</para>
/// <para>One request per eviction batch, naming all its runs (<see cref="BeginTakeOuts"/>);
/// its answer says per window slot whether the page was moved, gone (nothing mapped: the
/// program discarded it), met EAGAIN (a huge page that could not be split just then: the
/// move is issued on the agent's scratch userfaultfd, which asks for no events; see
/// Evictor.TakeOutOneRun) or was refused. The engine's take-out calls are answered from it, and only pages that met
/// EAGAIN or were not asked yet are asked for again. So a page is never asked for twice once moved: the second move would find
/// it gone, and its contents, in the window, would be taken for a discard.</para>
/// <para>Blocking: the engine's handler waits for the answer. Only this process's engine
/// waits (each served process has its own); a stopped process holds only itself.</para>
/// </remarks>
internal sealed unsafe class AgentAddressSpace : UffdAddressSpace, IDisposable
{
    private const int PageSize = Userfaultfd.PageSize;
    private const int MaxPages = ServedProtocol.MaxTakePages;

    private enum Outcome : byte { Unknown, Moved, Gone, Again, Refused }

    private readonly int _agent;
    private readonly nint _window;
    private readonly int _windowPages;
    // Per window slot: what the agent answered for the page asked into it, in this batch.
    private readonly Outcome[] _outcomes = new Outcome[MaxPages];
    // Per window slot: the address asked into it (an answer holds for that address only).
    private readonly nint[] _asked = new nint[MaxPages];
    private readonly byte* _request;
    private bool _broken;

    /// <param name="agent">The custodian's end of the process's agent connection (owned from now on).</param>
    /// <param name="window">The take-out window, mapped shared with the process; at most
    /// <see cref="ServedProtocol.MaxTakePages"/> pages.</param>
    public AgentAddressSpace(Userfaultfd uffd, int agent, nint window, int windowPages) : base(uffd)
    {
        if (windowPages is <= 0 or > MaxPages)
            throw new ArgumentOutOfRangeException(nameof(windowPages), $"a take-out window holds 1 to {MaxPages} pages");
        _agent = agent;
        _window = window;
        _windowPages = windowPages;
        _request = (byte*)NativeMemory.AllocZeroed((nuint)(sizeof(ServedTakeHeader) + MaxPages * sizeof(ServedTake)));
    }

    public override bool CanTakeOut => true;

    /// <summary>Whether the agent stopped answering (the process is gone): nothing more is taken.</summary>
    public bool Broken => _broken;

    /// <summary>Asks for every run of the batch in one request: one round trip to the
    /// process's thread per eviction batch, not per run.</summary>
    public override void BeginTakeOuts(ReadOnlySpan<TakeOutRun> runs)
    {
        Array.Clear(_outcomes);
        Array.Clear(_asked);
        if (!_broken)
            Ask(runs);
    }

    public override int TakeOut(int slot, nint address, nuint length, out long done)
    {
        done = 0;
        int pages = (int)Math.Min((ulong)length / PageSize, (ulong)(_windowPages - slot));
        if (pages <= 0 || _broken)
            return Libc.EBUSY;
        if (_asked[slot] != address || _outcomes[slot] is Outcome.Unknown or Outcome.Again)
        {
            // Not asked in this batch, or the kernel said EAGAIN: ask again from here, once,
            // keeping what was moved already (the caller refuses the rest if EAGAIN stays).
            Span<TakeOutRun> again = [new TakeOutRun(address, pages, slot)];
            if (!Ask(again))
                return Libc.EBUSY;
        }
        int moved = 0;
        while (moved < pages && _asked[slot + moved] == address + moved * PageSize && _outcomes[slot + moved] == Outcome.Moved)
            moved++;
        done = (long)moved * PageSize;
        if (moved == pages)
            return 0;
        if (moved > 0)
            return Libc.EAGAIN; // partial: the caller asks again for the rest
        return _outcomes[slot] switch
        {
            Outcome.Gone => Libc.ENOENT,
            Outcome.Again => Libc.EAGAIN,
            _ => Libc.EBUSY,
        };
    }

    /// <summary>One request for <paramref name="runs"/>; merges the answer into the
    /// outcomes of their slots. A page already moved into its slot keeps that outcome:
    /// asked again, the agent finds it gone, rightly, and its contents are in the window.</summary>
    private bool Ask(ReadOnlySpan<TakeOutRun> runs)
    {
        var header = (ServedTakeHeader*)_request;
        var entries = (ServedTake*)(_request + sizeof(ServedTakeHeader));
        int count = 0;
        foreach (TakeOutRun run in runs)
        {
            int pages = Math.Min(run.Pages, _windowPages - run.Slot);
            if (pages <= 0)
                continue;
            entries[count++] = new ServedTake { Start = (ulong)run.Address, Pages = (uint)pages, Slot = (uint)run.Slot };
            for (int i = 0; i < pages; i++)
            {
                if (_asked[run.Slot + i] != run.Address + i * PageSize)
                    _outcomes[run.Slot + i] = Outcome.Unknown;
                _asked[run.Slot + i] = run.Address + i * PageSize;
            }
        }
        if (count == 0)
            return true;
        header->Count = (uint)count;
        nuint size = (nuint)(sizeof(ServedTakeHeader) + count * sizeof(ServedTake));
        ServedTaken answer;
        if (Libc.send(_agent, _request, size, Libc.MSG_NOSIGNAL) != (nint)size || !ReceiveAnswer(&answer))
        {
            _broken = true;
            return false;
        }
        for (int k = 0; k < count; k++)
            for (uint i = 0; i < entries[k].Pages; i++)
            {
                int slot = (int)(entries[k].Slot + i);
                ulong bit = 1UL << slot;
                if (_outcomes[slot] == Outcome.Moved)
                    continue;
                _outcomes[slot] = (answer.Moved & bit) != 0 ? Outcome.Moved
                    : (answer.Gone & bit) != 0 ? Outcome.Gone
                    : (answer.Again & bit) != 0 ? Outcome.Again
                    : Outcome.Refused;
            }
        return true;
    }

    /// <summary>Waits for the answer, spinning first for 200 µs (the agent answers within
    /// tens of microseconds, and a sleeping handler's wake-up costs about 100 µs on these
    /// VMs; measured: random-touch p50 14 µs with the spin, 20 without).</summary>
    private bool ReceiveAnswer(ServedTaken* answer)
    {
        long spinUntil = System.Diagnostics.Stopwatch.GetTimestamp() + System.Diagnostics.Stopwatch.Frequency / 5000; // 200 µs
        while (true)
        {
            nint n = Libc.recv(_agent, answer, (nuint)sizeof(ServedTaken), Libc.MSG_DONTWAIT);
            if (n == sizeof(ServedTaken))
                return true;
            if (n >= 0 || Libc.LastErrno is not (Libc.EAGAIN or Libc.EINTR))
                return false;
            if (System.Diagnostics.Stopwatch.GetTimestamp() > spinUntil)
                break;
            Thread.Yield();
        }
        while (true)
        {
            nint n = Libc.recv(_agent, answer, (nuint)sizeof(ServedTaken), 0);
            if (n == sizeof(ServedTaken))
                return true;
            if (n < 0 && Libc.LastErrno == Libc.EINTR)
                continue;
            return false; // the process is gone (0), or its agent spoke nonsense
        }
    }

    public override bool TookOutDespiteError(int slot, nint address) => false;

    public override nint TakenPage(int slot) => _window + slot * PageSize;

    /// <remarks>The engine has wiped every page it took; the window stays mapped.</remarks>
    public override void ReleaseTaken(int slots)
    {
    }

    public void Dispose()
    {
        Libc.close(_agent);
        Libc.memset((void*)_window, 0, (nuint)(_windowPages * PageSize));
        Libc.munmap(_window, (nuint)(_windowPages * PageSize));
        NativeMemory.Free(_request);
    }
}
