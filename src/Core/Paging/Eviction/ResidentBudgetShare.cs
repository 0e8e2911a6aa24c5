namespace Tibet.Core.Paging.Eviction;

/// <summary>
/// One budget for two engines that serve the same process: with <c>tibet-run --serve
/// custodian</c> (the default) the custodian's engine serves the program's large anonymous
/// allocations and the program's own engine its model maps. Both keep one count of the
/// process's resident pages, each adding its own changes atomically, and each evicts its
/// own pages while the count is above the budget, so that the process holds one budget of
/// plaintext, not one per engine.
/// </summary>
/// <remarks>
/// <para>Handed to the engine in <see cref="EngineOptions.BudgetShare"/>, as the watermarks
/// are. Used on the fault path: implementations allocate nothing and take no lock.</para>
/// <para>A fault adds the pages it is about to bring in before it evicts for them (see
/// Evictor.MakeRoom), so two engines that fault at once each see the other's pages and
/// make room for both. Only when an engine has too few pages of its own to evict is the
/// budget exceeded, by at most the faulting page (Evictor.RunThatFits), until the other
/// engine gives way (within 5 ms: an engine that shares its budget looks again that often
/// while it holds pages).</para>
/// <para>Who gives way: each engine is owed half the budget when it wants it, and either
/// may use what the other leaves. An engine below its half whose faults need room while
/// the other holds more than its half still evicts its own pages (the budget holds), but
/// posts a <em>demand</em>; the other evicts that many of its own, down to its half, on its
/// next fault or look. Without this the engine that faults most took the whole budget:
/// llama.cpp's model map (clean pages, faulted every token) drained the compute buffers
/// the custodian serves, and each of their pages then came back through the custodian,
/// every token (6 tokens/s at half budget against 16 with one engine).</para>
/// </remarks>
public abstract class ResidentBudgetShare
{
    /// <summary>Whether the counts are shared with the other engine now (the program's side
    /// has them only once the custodian serves it).</summary>
    public virtual bool Live => true;

    /// <summary>The process's resident pages and the pages faults are making room for, as
    /// both engines counted them (this engine's own are <paramref name="mine"/>): what the
    /// budget bounds. Never fewer than <paramref name="mine"/>, whatever the other side
    /// wrote (it may be the served process itself).</summary>
    public abstract long Combined(long mine);

    /// <summary>The process's resident pages alone (for the peak: a room being made is
    /// not plaintext yet), never fewer than <paramref name="mine"/>.</summary>
    public abstract long Resident(long mine);

    /// <summary>A fault is about to bring in <paramref name="pages"/>: counted now, so that
    /// the other engine makes room for them too. Negative: what it did not bring in.</summary>
    public abstract void Reserve(long pages);

    /// <summary><paramref name="pages"/> became resident here, <paramref name="reserved"/>
    /// of them counted already by <see cref="Reserve"/>.</summary>
    public abstract void Admitted(long pages, long reserved);

    /// <summary><paramref name="pages"/> left this engine's books.</summary>
    public abstract void Left(long pages);

    /// <summary>Asks the other engine to give way: <paramref name="pages"/> more of its own
    /// to evict, the demand standing at most at <paramref name="cap"/>.</summary>
    public abstract void AddDemand(long pages, long cap);

    /// <summary>This engine is no longer owed room: what it asked of the other and the
    /// other has not met yet is withdrawn.</summary>
    public abstract void WithdrawDemand();

    /// <summary>Takes up to <paramref name="max"/> pages of the other engine's demand (what
    /// this engine then evicts for it); 0 when none stands.</summary>
    public abstract long TakeDemand(long max);

    /// <summary>Of a demand taken, <paramref name="pages"/> were not met (nothing movable to
    /// evict): they stand again.</summary>
    public abstract void ReturnDemand(long pages);
}

/// <summary>A <see cref="ResidentBudgetShare"/> over four 64-bit counts in memory both
/// engines' processes map (a page the custodian creates per served process): the combined
/// count, the resident pages, and the demand standing on each side (what the program's
/// engine is asked to evict, then the custodian's), each written by the side that asks.</summary>
public sealed unsafe class SharedCounterBudgetShare : ResidentBudgetShare
{
    private readonly long* _counts;
    private readonly int _mine, _theirs; // the demand slots: asked of this engine, of the other

    /// <param name="counts">Four aligned 64-bit counts, mapped for as long as the engine lives.</param>
    /// <param name="custodianSide">This is the custodian's engine (else the program's).</param>
    public SharedCounterBudgetShare(nint counts, bool custodianSide)
    {
        ArgumentOutOfRangeException.ThrowIfNotEqual(counts & 7, 0, nameof(counts));
        _counts = (long*)counts;
        _mine = custodianSide ? 3 : 2;
        _theirs = custodianSide ? 2 : 3;
    }

    public override long Combined(long mine) => Math.Max(Volatile.Read(ref _counts[0]), mine);

    public override long Resident(long mine) => Math.Max(Volatile.Read(ref _counts[1]), mine);

    public override void Reserve(long pages) => Interlocked.Add(ref _counts[0], pages);

    public override void Admitted(long pages, long reserved)
    {
        Interlocked.Add(ref _counts[0], pages - reserved);
        Interlocked.Add(ref _counts[1], pages);
    }

    public override void Left(long pages)
    {
        Interlocked.Add(ref _counts[0], -pages);
        Interlocked.Add(ref _counts[1], -pages);
    }

    public override void AddDemand(long pages, long cap)
    {
        long seen = Volatile.Read(ref _counts[_theirs]);
        while (true)
        {
            long wanted = Math.Min(cap, Math.Max(0, seen) + pages);
            if (wanted <= seen)
                return;
            long was = Interlocked.CompareExchange(ref _counts[_theirs], wanted, seen);
            if (was == seen)
                return;
            seen = was;
        }
    }

    public override void WithdrawDemand()
    {
        if (Volatile.Read(ref _counts[_theirs]) != 0)
            Interlocked.Exchange(ref _counts[_theirs], 0);
    }

    public override void ReturnDemand(long pages)
    {
        if (pages > 0)
            Interlocked.Add(ref _counts[_mine], pages);
    }

    public override long TakeDemand(long max)
    {
        long seen = Volatile.Read(ref _counts[_mine]);
        while (true)
        {
            // The other side may be the served process itself: a negative or huge demand
            // it wrote takes at most max, and only ever this engine's own pages.
            long taken = Math.Clamp(seen, 0, Math.Max(0, max));
            if (taken == 0)
                return 0;
            long was = Interlocked.CompareExchange(ref _counts[_mine], seen - taken, seen);
            if (was == seen)
                return taken;
            seen = was;
        }
    }
}
