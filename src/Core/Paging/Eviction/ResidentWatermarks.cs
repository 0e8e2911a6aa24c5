namespace Tibet.Core.Paging.Eviction;

/// <summary>
/// When the engine seals pages ahead of need. Faults that find the budget full must evict
/// before they are served, one small step each, while the thread waits; so when the
/// handler is otherwise idle (and after each fault, a slice at a time) it keeps the
/// resident pages between two watermarks below the budget.
/// </summary>
/// <remarks>Handed to the engine in <see cref="EngineOptions.Watermarks"/>. Background
/// eviction starts when resident pages exceed <c>budget − HighHeadroomPages</c> and seals
/// down to <c>budget − LowHeadroomPages</c>. On a small budget neither headroom exceeds
/// <see cref="MaxFractionOfBudget"/> of it, and neither does one fault's read-ahead run.</remarks>
public sealed record ResidentWatermarks
{
    /// <summary>Headroom below the budget at which background eviction starts.</summary>
    public int HighHeadroomPages { get; init; } = 64;

    /// <summary>Headroom below the budget at which it stops (at least <see cref="HighHeadroomPages"/>).</summary>
    public int LowHeadroomPages { get; init; } = 64;

    /// <summary>Pages sealed after each served fault while above the high watermark (the
    /// rest when the handler is idle): what a busy program pays per fault.</summary>
    public int AfterFaultPages { get; init; } = 16;

    /// <summary>
    /// For an engine whose every take-out is a round trip to the served process's own
    /// thread (the custodian's, AgentAddressSpace): the high watermark as usual, the low
    /// one 256 pages further down. With both at 64 pages, a busy process at its budget
    /// paid a round trip per fault for a page or two (1.9 pages a step for scattered
    /// faults; Redis at half budget: SET 0.19× native served by the custodian, against
    /// 0.27× in the program). Now a step after a fault takes 16 pages and an idle one a
    /// full batch. A full batch after each fault measured no faster for Redis and doubled
    /// the p99 of scattered touches at a quarter budget (190 µs against 97: the next fault
    /// waits for 64 pages to be sealed).
    /// </summary>
    public static ResidentWatermarks ForRoundTrips { get; } = new()
    {
        HighHeadroomPages = 64,
        LowHeadroomPages = 64 + 256,
    };

    /// <summary>The largest share of the budget a headroom, or one read-ahead run, may take.</summary>
    public double MaxFractionOfBudget { get; init; } = 0.25;

    /// <summary>Resident pages above which background eviction starts.</summary>
    internal long HighPages(long budgetPages) => budgetPages - Math.Min(HighHeadroomPages, (long)(budgetPages * MaxFractionOfBudget));

    /// <summary>Resident pages at which background eviction stops.</summary>
    internal long LowPages(long budgetPages) => budgetPages - Math.Min(LowHeadroomPages, (long)(budgetPages * MaxFractionOfBudget));

    /// <summary>The most pages one fault's read-ahead run may bring in.</summary>
    internal int ReadAheadLimit(long budgetPages) => (int)Math.Clamp((long)(budgetPages * MaxFractionOfBudget), 1, int.MaxValue);

    internal void Validate()
    {
        if (HighHeadroomPages < 0)
            throw new ArgumentOutOfRangeException(nameof(HighHeadroomPages), HighHeadroomPages, "The high watermark's headroom must be at least 0 pages.");
        if (AfterFaultPages < 1)
            throw new ArgumentOutOfRangeException(nameof(AfterFaultPages), AfterFaultPages, "At least one page is sealed after a fault.");
        if (LowHeadroomPages < HighHeadroomPages)
            throw new ArgumentOutOfRangeException(nameof(LowHeadroomPages), LowHeadroomPages, "The low watermark's headroom must be at least the high one's.");
        if (MaxFractionOfBudget is <= 0 or > 0.5)
            throw new ArgumentOutOfRangeException(nameof(MaxFractionOfBudget), MaxFractionOfBudget, "The fraction must be above 0 and at most 0.5.");
    }
}
