namespace Tibet.Core.Paging.Eviction;

/// <summary>
/// Which resident page the engine seals next when a fault needs room under the budget.
/// Handed to the engine in <see cref="EngineOptions.Eviction"/>, as System.IO.Pipelines
/// takes its pools and schedulers: the engine owns the mechanism (moving, sealing,
/// dropping), the policy only the order.
/// </summary>
/// <remarks>
/// What a policy can know: userfaultfd reports the first touch of a page that is not
/// mapped, and nothing about touches of resident pages; this kernel kind has no usable
/// per-page accessed bit (see docs/design/engine-groundwork.md, section 3). So a policy
/// sees admissions, and for a page evicted before, its refault distance: how many pages
/// were evicted between its eviction and its return (Linux's workingset detection uses
/// the same measure).
/// </remarks>
public abstract class EvictionPolicy
{
    private protected EvictionPolicy()
    {
    }

    /// <summary>Seals the page that became resident first. With a working set larger than
    /// the budget, a cyclic scan (a model read in the same order every token) misses on
    /// every page.</summary>
    public static EvictionPolicy Fifo { get; } = new FifoPolicy();

    /// <summary>The default: keeps a stable protected set of pages that came back after
    /// eviction, and cycles the rest through a small probation queue. A cyclic scan over
    /// twice the budget hits on close to half its pages (the optimum), where FIFO hits on
    /// none. See <see cref="ScanResistantResidentSet"/>.</summary>
    public static EvictionPolicy ScanResistant { get; } = new ScanResistantPolicy();

    /// <summary>The name used by <c>--eviction</c> and in statistics.</summary>
    public abstract string Name { get; }

    /// <summary>The policy named <paramref name="name"/> ("fifo", "scan-resistant"), or null.</summary>
    public static EvictionPolicy? FromName(string? name) => name switch
    {
        "fifo" => Fifo,
        "scan-resistant" => ScanResistant,
        _ => null,
    };

    /// <summary>A fresh, empty resident set for one engine with a budget of
    /// <paramref name="budgetPages"/> pages (long.MaxValue: unlimited).
    /// <paramref name="runPages"/> is the most pages one fault brings in (its read-ahead
    /// run): a policy keeps room for that many outside what it protects.</summary>
    internal abstract ResidentSet CreateSet(long budgetPages, IResidency residency, int runPages);

    public override string ToString() => Name;

    private sealed class FifoPolicy : EvictionPolicy
    {
        public override string Name => "fifo";

        internal override ResidentSet CreateSet(long budgetPages, IResidency residency, int runPages) => new FifoResidentSet(residency);
    }

    private sealed class ScanResistantPolicy : EvictionPolicy
    {
        public override string Name => "scan-resistant";

        internal override ResidentSet CreateSet(long budgetPages, IResidency residency, int runPages) => new ScanResistantResidentSet(budgetPages, residency, runPages);
    }
}
