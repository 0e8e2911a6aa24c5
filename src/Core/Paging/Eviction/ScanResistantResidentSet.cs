using System.Diagnostics;

namespace Tibet.Core.Paging.Eviction;

/// <summary>
/// <see cref="EvictionPolicy.ScanResistant"/>: a protected set of pages that proved they
/// come back, and a probation queue through which everything else cycles.
/// </summary>
/// <remarks>
/// <para>The engine sees only misses, so "hot" has to be read from refaults. A page's
/// first touch enters probation. A page that faults again after eviction has shown it is
/// reused, and enters the protected set while the set has room (up to the budget minus
/// the probation floor). Probation is evicted first, oldest first; protected pages are
/// evicted only when probation is empty (or by an explicit trim).</para>
/// <para>Why this resists scans: when a model larger than the budget is read in the same
/// order every token, FIFO evicts each page just before it is needed again and misses
/// on all of them. Here the first pages to refault fill the protected set and stay; the
/// rest cycle through probation. The hit rate is (budget − floor) / working set, against
/// an optimum of budget / working set.</para>
/// <para>A full protected set still has to follow a changing working set. A refault with
/// a short distance (at most the probation floor: the page would have been a hit with a
/// probation twice as long) may displace the oldest protected page, which goes back to
/// probation for a second chance. Displacement is paid for with credit earned at one per
/// <see cref="AdmissionsPerDisplacement"/> probation admissions, so a scan that barely
/// exceeds the budget, whose refaults are all short, churns the protected set slowly
/// instead of turning it into FIFO.</para>
/// </remarks>
internal sealed class ScanResistantResidentSet : ResidentSet
{
    /// <summary>Probation admissions that earn one displacement of a protected page.</summary>
    internal const int AdmissionsPerDisplacement = 16;
    private const int CreditCap = 16 * AdmissionsPerDisplacement;

    private readonly IResidency _residency;
    private readonly ResidentQueue _probation = new();
    private readonly ResidentQueue _protected = new();
    // Pages the kernel refused to move (mprotected read-only, shared with a child): tried
    // last, so that they never stand in front of movable pages while the budget is exceeded.
    private readonly ResidentQueue _refused = new();
    private long _budgetPages; // this engine's part of the budget (see Resize)
    private int _runPages;
    private long _protectedMax;
    private long _probationFloor;
    private long _turnedAwaySinceCompaction;
    private int _credit;
    // A range placed whole (BeginRun): its pages still to come, and where the first went.
    private int _runLeft;
    private ResidentQueue? _runQueue;

    /// <param name="runPages">The most pages one fault brings in: probation keeps room for
    /// a few such runs, or read-ahead would evict its own pages before they are used.</param>
    public ScanResistantResidentSet(long budgetPages, IResidency residency, int runPages)
    {
        Debug.Assert(budgetPages > 0 && runPages > 0);
        _residency = residency;
        _budgetPages = budgetPages;
        Size(runPages);
    }

    /// <remarks>Measured with llama.cpp at a quarter of its model's budget: with probation
    /// sized for 64-page runs, 512-page ranges evicted each other before use (6.9 tok/s,
    /// below FIFO's 9.8); sized for them, 13–14.6 tok/s.</remarks>
    public override void ExpectRuns(int pages)
    {
        if (pages > _runPages)
            Size(pages);
    }

    /// <remarks>Measured with llama.cpp at half its model's budget under --serve custodian:
    /// sized by the whole budget while the custodian's engine held 7 MiB of it, probation
    /// was squeezed to a fraction of one 2 MiB run (18 515 faults, 8.8 tok/s); sized by what
    /// the model's engine may hold, as with one engine (3 607 faults, 16 tok/s).</remarks>
    public override void Resize(long pages)
    {
        _budgetPages = Math.Max(1, pages);
        Size(_runPages);
    }

    /// <summary>A sixteenth of the budget, and room for four runs in small budgets. A
    /// protected set above its new limit shrinks as its pages are evicted.</summary>
    private void Size(int runPages)
    {
        _runPages = runPages;
        _probationFloor = Math.Max(1, Math.Max(_budgetPages / 16, Math.Min(_budgetPages / 2, 4L * runPages)));
        _protectedMax = _budgetPages - _probationFloor;
    }

    /// <summary>The most pages the protected set holds.</summary>
    internal long ProtectedMax => _protectedMax;

    internal long ProbationFloor => _probationFloor;

    public override long Count => _probation.Count + _protected.Count + _refused.Count;

    public override long Capacity => _probation.Capacity + _protected.Capacity + _refused.Capacity;

    /// <remarks>Admitted page by page, a range that filled the protected set's last room
    /// went part there, part to probation, and left whole through its probation part,
    /// taking the protected part along before its time. (llama.cpp at half its model's
    /// budget refaulted 27–29 ranges per token either way: the protected set is
    /// budget − floor, 19 of the 47 ranges it reads per token, and holds them.)</remarks>
    public override void BeginRun(int pages)
    {
        _runLeft = pages;
        _runQueue = null;
    }

    public override void Admit(in ResidentQueue.Element element, uint refaultDistance)
    {
        if (_runLeft > 0)
        {
            // A whole range goes where its first page goes: to the protected set only if
            // the whole range fits there, never by displacing (that is for pages).
            _runLeft--;
            _runQueue ??= refaultDistance != FirstTouch && _protectedMax > 0 && !ProtectedIsFull(_runLeft + 1) ? _protected : _probation;
            Append(_runQueue, element);
            if (_runQueue == _probation && _credit < CreditCap)
                _credit++;
            return;
        }
        if (refaultDistance != FirstTouch && _protectedMax > 0)
        {
            if (!ProtectedIsFull())
            {
                Append(_protected, element);
                return;
            }
            if (refaultDistance <= _probationFloor && _credit >= AdmissionsPerDisplacement)
            {
                _credit -= AdmissionsPerDisplacement;
                DemoteOldestProtected();
                Append(_protected, element);
                return;
            }
        }
        Append(_probation, element);
        if (_credit < CreditCap)
            _credit++;
    }

    public override bool TryTakeNext(out ResidentQueue.Element element)
        => _probation.TryDequeue(out element) || _protected.TryDequeue(out element) || _refused.TryDequeue(out element);

    public override bool TryPeekNext(out ResidentQueue.Element element)
        => _probation.TryPeek(out element) || _protected.TryPeek(out element) || _refused.TryPeek(out element);

    public override void Keep(in ResidentQueue.Element element) => Append(_probation, element);

    public override void Return(in ResidentQueue.Element element) => Append(_refused, element);

    /// <summary>Whether the protected set holds its maximum. Stale elements count until a
    /// compaction sheds them. A compaction walks the whole set, so one runs only after an
    /// eighth of the set's size in refaults were turned away as "full": its cost per
    /// admission stays constant.</summary>
    private bool ProtectedIsFull(int incoming = 1)
    {
        if (_protected.Count + incoming <= _protectedMax)
            return false;
        if (++_turnedAwaySinceCompaction >= Math.Max(1, _protectedMax / 8))
        {
            _protected.Compact(_residency);
            _turnedAwaySinceCompaction = 0;
        }
        return _protected.Count + incoming > _protectedMax;
    }

    private void DemoteOldestProtected()
    {
        while (_protected.TryDequeue(out ResidentQueue.Element oldest))
        {
            if (!_residency.IsLiveResident(in oldest))
                continue;
            Append(_probation, oldest);
            break;
        }
    }

    private void Append(ResidentQueue queue, in ResidentQueue.Element element)
    {
        if (queue.IsFull)
            queue.Compact(_residency);
        queue.Enqueue(element);
    }

    public override void Dispose()
    {
        _probation.Dispose();
        _protected.Dispose();
        _refused.Dispose();
    }
}
