using Tibet.Core.Interop;

namespace Tibet.Interposer;

/// <summary>
/// One reserved stretch of virtual memory (PROT_NONE, no backing) out of which
/// redirected allocations are carved. Because every redirected pointer lies inside a
/// known range, the shim can tell ours from the host allocator's with one comparison,
/// even in a forked child. First fit over a sorted free list, in 64 KiB units.
/// Not thread-safe: the redirector calls it under its lock.
/// </summary>
internal sealed class AddressSpace
{
    public const int UnitShift = 16;
    public const long Unit = 1L << UnitShift;

    private readonly List<(long Start, long Length)> _free = [];

    public AddressSpace(long size, string what)
    {
        nint p = Libc.mmap(0, (nuint)size, Libc.PROT_NONE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE, -1, 0);
        if (p == Libc.MAP_FAILED)
            throw new InvalidOperationException($"cannot reserve {size >> 30} GiB of address space for {what}: {Libc.Describe(Libc.LastErrno)}");
        // Align the start to a unit so that unit indices are plain shifts.
        long start = ((long)p + Unit - 1) & ~(Unit - 1);
        Base = start;
        Limit = (long)p + size;
        Limit &= ~(Unit - 1);
        _free.Add((Base, Limit - Base));
    }

    public long Base { get; }

    public long Limit { get; }

    /// <summary>The most one stretch can ever be: the whole space.</summary>
    public long Capacity => Limit - Base;

    /// <summary>Whether a stretch of <paramref name="length"/> bytes aligned to
    /// <paramref name="alignment"/> could be taken from this space when it is empty.
    /// Sizes come from the program and may be anything up to 2^64-1: nothing here is
    /// rounded or doubled before it is known to fit.</summary>
    public bool CanEverHold(ulong length, ulong alignment) =>
        length <= (ulong)Capacity && alignment <= (ulong)Capacity;

    /// <summary>Takes <paramref name="length"/> bytes (rounded up to units) aligned to
    /// <paramref name="alignment"/> (a power of two); 0 when no free stretch is large
    /// enough. The free list is left as it was unless a stretch is taken.</summary>
    public long Take(long length, long alignment)
    {
        // Checked here as well as by the callers: a negative or oversized length would
        // otherwise split the free list into nonsense and drain the space for good.
        if (length <= 0 || length > Capacity || alignment <= 0 || alignment > Capacity || (alignment & (alignment - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(length), $"cannot take {length} bytes aligned to {alignment} from a space of {Capacity} bytes");
        length = RoundUp(length, Unit);
        alignment = Math.Max(alignment, Unit);
        for (int i = 0; i < _free.Count; i++)
        {
            var (start, size) = _free[i];
            long aligned = RoundUp(start, alignment);
            long waste = aligned - start;
            if (size < waste + length) // all three are below 2^48: no overflow
                continue;
            _free.RemoveAt(i);
            if (size - waste - length > 0) _free.Insert(i, (aligned + length, size - waste - length));
            if (waste > 0) _free.Insert(i, (start, waste));
            return aligned;
        }
        return 0;
    }

    /// <summary>Returns a range to the free list, merging it with its neighbours.</summary>
    public void Give(long start, long length)
    {
        if (length <= 0 || start < Base || length > Limit - start)
            throw new ArgumentOutOfRangeException(nameof(length), $"cannot give back {length} bytes at 0x{start:x}: outside the space");
        length = RoundUp(length, Unit);
        int i = 0;
        while (i < _free.Count && _free[i].Start < start) i++;
        _free.Insert(i, (start, length));
        if (i + 1 < _free.Count && _free[i].Start + _free[i].Length == _free[i + 1].Start)
        {
            _free[i] = (_free[i].Start, _free[i].Length + _free[i + 1].Length);
            _free.RemoveAt(i + 1);
        }
        if (i > 0 && _free[i - 1].Start + _free[i - 1].Length == _free[i].Start)
        {
            _free[i - 1] = (_free[i - 1].Start, _free[i - 1].Length + _free[i].Length);
            _free.RemoveAt(i);
        }
    }

    public static long RoundUp(long value, long to) => (value + to - 1) & ~(to - 1);
}
