using System.Diagnostics;
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
/// <para>One request per run of up to 64 pages; its answer says per page whether it was
/// moved, gone (nothing mapped: the program discarded it), met EAGAIN (an event waits to
/// be read) or was refused. The engine's take-out asks page by page after a page that was
/// not moved; those calls are answered from the last answer, and only pages that met
/// EAGAIN are asked for again. So a page is never asked for twice once moved: the second
/// move would find it gone, and its contents, in the window, would be taken for a
/// discard.</para>
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
    private readonly Outcome[] _outcomes = new Outcome[MaxPages];
    private nint _answeredStart;
    private int _answeredSlot = -1;
    private int _answeredPages;
    private bool _broken;

    /// <param name="agent">The custodian's end of the process's agent connection (owned from now on).</param>
    /// <param name="window">The take-out window, mapped shared with the process.</param>
    public AgentAddressSpace(Userfaultfd uffd, int agent, nint window, int windowPages) : base(uffd)
    {
        _agent = agent;
        _window = window;
        _windowPages = windowPages;
    }

    public override bool CanTakeOut => true;

    /// <summary>Whether the agent stopped answering (the process is gone): nothing more is taken.</summary>
    public bool Broken => _broken;

    public override void BeginTakeOuts() => _answeredSlot = -1;

    public override int TakeOut(int slot, nint address, nuint length, out long done)
    {
        done = 0;
        int pages = (int)Math.Min((ulong)length / PageSize, (ulong)(_windowPages - slot));
        if (pages <= 0 || _broken)
            return Libc.EBUSY;

        int index = AnsweredIndex(slot, address);
        if (index < 0 || _outcomes[index] is Outcome.Unknown or Outcome.Again)
        {
            if (!Ask(slot, address, Math.Min(pages, MaxPages), index))
                return Libc.EBUSY;
            index = AnsweredIndex(slot, address);
            Debug.Assert(index >= 0);
        }

        int limit = Math.Min(pages, _answeredPages - index);
        int moved = 0;
        while (moved < limit && _outcomes[index + moved] == Outcome.Moved)
            moved++;
        done = (long)moved * PageSize;
        if (moved == pages)
            return 0;
        if (moved > 0 || index + moved >= _answeredPages)
            return moved > 0 ? Libc.EAGAIN : Libc.EBUSY; // partial: the caller asks again for the rest
        return _outcomes[index + moved] switch
        {
            Outcome.Gone => Libc.ENOENT,
            Outcome.Again => Libc.EAGAIN,
            _ => Libc.EBUSY,
        };
    }

    /// <summary>Where <paramref name="address"/> is in the last answer, or -1 if it is not
    /// there at the same window slot.</summary>
    private int AnsweredIndex(int slot, nint address)
    {
        if (_answeredSlot < 0 || address < _answeredStart)
            return -1;
        long index = (address - _answeredStart) / PageSize;
        return index < _answeredPages && _answeredSlot + index == slot ? (int)index : -1;
    }

    /// <summary>Asks the agent to move <paramref name="pages"/> pages from
    /// <paramref name="address"/>. <paramref name="known"/>: the address's index in the last
    /// answer, whose moved pages are kept (they are in the window already).</summary>
    private bool Ask(int slot, nint address, int pages, int known)
    {
        if (known >= 0)
        {
            // Asked again after EAGAIN: the answer for the pages from here on is merged in.
            pages = Math.Min(pages, _answeredPages - known);
        }
        ServedTake request = new() { Start = (ulong)address, Pages = (uint)pages, Slot = (uint)slot };
        ServedTaken answer;
        if (Libc.send(_agent, &request, (nuint)sizeof(ServedTake), Libc.MSG_NOSIGNAL) != sizeof(ServedTake)
            || !ReceiveAnswer(&answer))
        {
            _broken = true;
            return false;
        }
        if (known < 0)
        {
            _answeredStart = address;
            _answeredSlot = slot;
            _answeredPages = pages;
            known = 0;
        }
        for (int i = 0; i < pages; i++)
        {
            ulong bit = 1UL << i;
            ref Outcome outcome = ref _outcomes[known + i];
            if (outcome == Outcome.Moved)
                continue; // moved by an earlier request: this one found it gone, rightly
            outcome = (answer.Moved & bit) != 0 ? Outcome.Moved
                : (answer.Gone & bit) != 0 ? Outcome.Gone
                : (answer.Again & bit) != 0 ? Outcome.Again
                : Outcome.Refused;
        }
        return true;
    }

    private bool ReceiveAnswer(ServedTaken* answer)
    {
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
    }
}
