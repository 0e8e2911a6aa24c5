namespace Tibet.IntegrationTests.Support;

/// <summary>
/// What a program with model maps may hold above its budget under the default
/// (<c>tibet-run --serve custodian</c>): its model maps are served by its own engine, its
/// other large allocations by the custodian's, and the two share one budget
/// (Tibet.Core.Paging.Eviction.ResidentBudgetShare). When one engine holds the whole budget
/// and the other faults, the faulting page comes in before the first engine gives way
/// (within 5 ms): one page per engine per fault in flight, measured at most 4 pages with
/// llama.cpp under a 256 KiB budget. The README states the bound.
/// </summary>
internal static class SharedBudget
{
    public const long SlackBytes = 16 * 4096;
}
