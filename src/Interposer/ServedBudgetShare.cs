using Tibet.Core.Paging.Eviction;
using Tibet.Interposer.Native;

namespace Tibet.Interposer;

/// <summary>
/// The program's engine's side of the budget it shares with the custodian's engine for
/// this process (tibet-run --serve custodian, the default; see
/// <see cref="ResidentBudgetShare"/>). The counts are in a page the custodian sends when it
/// first serves this process (native/served.c); until then the custodian holds nothing
/// here, and this engine's changes are kept and added once it comes.
/// </summary>
/// <remarks>Called under the engine's lock only, so the pending counts need none. Asking
/// for the page is one load in native code (no system call): it is asked on the fault path
/// until it comes.</remarks>
internal sealed unsafe class ServedBudgetShare : ResidentBudgetShare
{
    private SharedCounterBudgetShare? _shared; // null until the custodian serves this process
    private long _pendingCombined, _pendingResident; // this engine's changes before then

    private SharedCounterBudgetShare? Shared
    {
        get
        {
            if (_shared == null && Shim.ServedShare() is var counts && counts != null)
            {
                var shared = new SharedCounterBudgetShare((nint)counts, custodianSide: false); // the page stays mapped for the process's life
                shared.Admitted(_pendingResident, _pendingResident - _pendingCombined);
                _pendingCombined = _pendingResident = 0;
                _shared = shared;
            }
            return _shared;
        }
    }

    public override bool Live => Shared != null;

    public override long Combined(long mine) => Shared?.Combined(mine) ?? mine;

    public override long Resident(long mine) => Shared?.Resident(mine) ?? mine;

    public override void Reserve(long pages)
    {
        if (Shared is { } shared)
            shared.Reserve(pages);
        else
            _pendingCombined += pages;
    }

    public override void Admitted(long pages, long reserved)
    {
        if (Shared is { } shared)
        {
            shared.Admitted(pages, reserved);
        }
        else
        {
            _pendingCombined += pages - reserved;
            _pendingResident += pages;
        }
    }

    public override void Left(long pages)
    {
        if (Shared is { } shared)
        {
            shared.Left(pages);
        }
        else
        {
            _pendingCombined -= pages;
            _pendingResident -= pages;
        }
    }

    // Before the custodian serves this process it holds none of its pages: no demand
    // either way.
    public override void AddDemand(long pages, long cap) => Shared?.AddDemand(pages, cap);

    public override long TakeDemand(long max) => Shared?.TakeDemand(max) ?? 0;

    public override void WithdrawDemand() => Shared?.WithdrawDemand();

    public override void ReturnDemand(long pages) => Shared?.ReturnDemand(pages);
}
