namespace Tibet.Core.Paging.Eviction;

/// <summary>
/// Counts evictions, so that a page that comes back can say how many pages were evicted
/// since it was: its refault distance (see <see cref="ResidentSet.Admit"/>). A page keeps
/// the low 32 bits of the count it left at (0: never evicted); a distance past 2^32 reads
/// shorter than it was, which only makes the policy's guess worse, never a page wrong.
/// </summary>
internal struct EvictionClock
{
    private ulong _evictions;

    /// <summary>Counts one eviction and returns the page's stamp (never 0).</summary>
    public uint Stamp()
    {
        uint stamp = (uint)++_evictions;
        return stamp == 0 ? 1 : stamp;
    }

    /// <summary>The refault distance of a page stamped <paramref name="stamp"/>, or
    /// <see cref="ResidentSet.FirstTouch"/> for a page never evicted (stamp 0).</summary>
    public readonly uint DistanceSince(uint stamp) =>
        stamp == 0 ? ResidentSet.FirstTouch : Math.Min((uint)_evictions - stamp, ResidentSet.FirstTouch - 1);
}
