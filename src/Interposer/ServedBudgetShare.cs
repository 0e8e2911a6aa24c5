using Tibet.Core.Paging.Eviction;
using Tibet.Interposer.Native;

namespace Tibet.Interposer;

/// <summary>
/// The program's engine's side of the budget it shares with the custodian's engine for
/// this process (tibet-run --serve custodian, the default; see
/// <see cref="ResidentBudgetShare"/>). The counts are in a page the custodian sends when it
/// first serves this process (native/served.c); until then the custodian holds nothing
/// here, and this engine's resident pages are added once it comes.
/// </summary>
/// <remarks>Called under the engine's lock only, so <see cref="_unshared"/> needs none.</remarks>
internal sealed unsafe class ServedBudgetShare : ResidentBudgetShare
{
    private SharedCounterBudgetShare? _shared; // null until the custodian serves this process
    private long _unshared; // this engine's resident pages before then

    private SharedCounterBudgetShare? Shared
    {
        get
        {
            if (_shared == null && Shim.ServedShare() is var counts && counts != null)
            {
                _shared = new SharedCounterBudgetShare((nint)counts); // the page stays mapped for the process's life
                _shared.Admitted(_unshared, 0);
                _unshared = 0;
            }
            return _shared;
        }
    }

    public override long Combined(long mine) => Shared?.Combined(mine) ?? mine;

    public override long Resident(long mine) => Shared?.Resident(mine) ?? mine;

    public override void Reserve(long pages) => Shared?.Reserve(pages);

    public override void Admitted(long pages, long reserved)
    {
        if (Shared is { } shared)
            shared.Admitted(pages, reserved);
        else
            _unshared += pages;
    }

    public override void Left(long pages)
    {
        if (Shared is { } shared)
            shared.Left(pages);
        else
            _unshared -= pages;
    }
}
