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

    /// <summary>The range holding <paramref name="address"/>, or null.</summary>
    public static T? Find<T>(T[] sorted, nint address) where T : class, IAddressRange
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
