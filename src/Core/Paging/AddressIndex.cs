namespace Tibet.Core.Paging;

/// <summary>A range of addresses served by a handler (an arena of either page size).</summary>
internal interface IAddressRange
{
    nint Address { get; }
    long Length { get; }
}

/// <summary>
/// Ranges sorted by address, searched on the fault path: the array is rebuilt (under
/// the owner's lock) when a range comes or goes, and searched without allocating.
/// </summary>
internal static class AddressIndex
{
    public static T[] Build<T>(T?[] slots) where T : class, IAddressRange
    {
        var list = new List<T>();
        foreach (var range in slots)
            if (range != null) list.Add(range);
        list.Sort(static (x, y) => x.Address.CompareTo(y.Address));
        return list.ToArray();
    }

    /// <summary>Puts <paramref name="range"/> in the first free slot (the table doubles when
    /// full) and returns the slot: resident-set elements name ranges by slot.</summary>
    public static int TakeSlot<T>(ref T?[] slots, T range) where T : class, IAddressRange
    {
        int slot = Array.IndexOf(slots, null);
        if (slot < 0)
        {
            slot = slots.Length;
            Array.Resize(ref slots, slots.Length * 2);
        }
        slots[slot] = range;
        return slot;
    }

    /// <summary>The range holding <paramref name="address"/>, or null.</summary>
    public static T? Find<T>(ReadOnlySpan<T> sorted, nint address) where T : class, IAddressRange
    {
        int lo = 0, hi = sorted.Length - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            T range = sorted[mid];
            if (address < range.Address) hi = mid - 1;
            else if (address >= range.Address + (nint)range.Length) lo = mid + 1;
            else return range;
        }
        return null;
    }
}
