namespace Tibet.Core.Paging.Eviction;

/// <summary>Answers whether a queued element still names a resident page (its ticket
/// matches the page's). Implemented by the engine's <see cref="Evictor"/>.</summary>
internal interface IResidency
{
    bool IsLiveResident(in ResidentQueue.Element element);
}

/// <summary>
/// The engine's resident pages, in the order a policy wants them evicted. Called on the
/// fault path under the engine lock: implementations allocate nothing (native rings only)
/// and never call back into the engine except through <see cref="IResidency"/>.
/// </summary>
/// <remarks>Elements may go stale (the page was unmapped, discarded or evicted by another
/// path); the engine skips a stale element it is handed, and sets compact them away.</remarks>
internal abstract class ResidentSet : IDisposable
{
    /// <summary>The refault distance of a page that was never evicted (a first touch).</summary>
    public const uint FirstTouch = uint.MaxValue;

    /// <summary>A page became resident. <paramref name="refaultDistance"/> is the number of
    /// evictions since this page was itself evicted, or <see cref="FirstTouch"/>.</summary>
    public abstract void Admit(in ResidentQueue.Element element, uint refaultDistance);

    /// <summary>The next candidate for eviction (possibly stale).</summary>
    public abstract bool TryTakeNext(out ResidentQueue.Element element);

    /// <summary>The candidate <see cref="TryTakeNext"/> would return, left where it is.</summary>
    public abstract bool TryPeekNext(out ResidentQueue.Element element);

    /// <summary>A candidate the kernel refused to move: it stays resident and is tried
    /// again after the pages that can be moved.</summary>
    public abstract void Return(in ResidentQueue.Element element);

    /// <summary>A candidate the engine may not evict now (the fault being served brought it
    /// in): back at the most recently admitted end.</summary>
    public abstract void Keep(in ResidentQueue.Element element);

    /// <summary>Faults now bring in runs of up to <paramref name="pages"/> pages at once (a
    /// model map's 2 MiB ranges), more than the set was sized for: a policy that keeps
    /// room for whole runs grows it, or a run evicts its own pages before they are used.</summary>
    public virtual void ExpectRuns(int pages)
    {
    }

    /// <summary>The next <paramref name="pages"/> admissions are one 2 MiB range placed
    /// whole, which eviction takes out whole (Evictor.TryEvictRange): a policy that splits
    /// pages between parts keeps these together, or a range evicted through one part takes
    /// the pages the other part was keeping.</summary>
    public virtual void BeginRun(int pages)
    {
    }

    /// <summary>This engine may now hold <paramref name="pages"/> of the budget (it shares
    /// it with another engine, whose pages take the rest): a policy that sizes its parts by
    /// the budget sizes them by this instead.</summary>
    public virtual void Resize(long pages)
    {
    }

    /// <summary>Queued elements, stale ones included.</summary>
    public abstract long Count { get; }

    /// <summary>Elements the rings hold without growing (for tests that bound memory).</summary>
    public abstract long Capacity { get; }

    public abstract void Dispose();
}
