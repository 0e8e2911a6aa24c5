using System.Numerics;

namespace Tibet.Core.Diagnostics;

/// <summary>
/// A log-linear histogram of nanosecond latencies: 16 linear buckets per power of two,
/// so any percentile is within 1/16 (6%) of the true value. Recording is a few
/// instructions and allocates nothing; the counts live in one preallocated array.
/// </summary>
public sealed class LatencyHistogram
{
    private const int SubBuckets = 16;
    private const int SubBucketBits = 4;
    private const int MaxOctave = 40; // 2^40 ns ≈ 18 minutes
    private readonly long[] _counts = new long[(MaxOctave + 1) * SubBuckets];
    private long _total;
    private long _maxNanoseconds;

    public long Count => _total;

    public long MaxNanoseconds => _maxNanoseconds;

    public void Record(long nanoseconds)
    {
        if (nanoseconds < 0) nanoseconds = 0;
        _counts[BucketOf(nanoseconds)]++;
        _total++;
        if (nanoseconds > _maxNanoseconds) _maxNanoseconds = nanoseconds;
    }

    public void Clear()
    {
        Array.Clear(_counts);
        _total = 0;
        _maxNanoseconds = 0;
    }

    public void CopyTo(LatencyHistogram other)
    {
        Array.Copy(_counts, other._counts, _counts.Length);
        other._total = _total;
        other._maxNanoseconds = _maxNanoseconds;
    }

    /// <summary>The value at quantile <paramref name="q"/> (0..1), in nanoseconds: the
    /// middle of the bucket that holds it; 0 when nothing was recorded.</summary>
    public long Percentile(double q)
    {
        if (_total == 0) return 0;
        long rank = Math.Max(1, (long)Math.Ceiling(q * _total));
        long seen = 0;
        for (int i = 0; i < _counts.Length; i++)
        {
            seen += _counts[i];
            if (seen >= rank)
                return Math.Min(BucketMiddle(i), _maxNanoseconds);
        }
        return _maxNanoseconds;
    }

    private static int BucketOf(long v)
    {
        if (v < SubBuckets) return (int)v;
        int octave = BitOperations.Log2((ulong)v); // >= 4
        if (octave > MaxOctave) return _lastBucket;
        int sub = (int)(v >> (octave - SubBucketBits)) & (SubBuckets - 1);
        return (octave - SubBucketBits + 1) * SubBuckets + sub;
    }

    private static readonly int _lastBucket = (MaxOctave + 1) * SubBuckets - 1;

    private static long BucketMiddle(int index)
    {
        if (index < SubBuckets) return index;
        int octave = index / SubBuckets + SubBucketBits - 1;
        long sub = index % SubBuckets;
        long width = 1L << (octave - SubBucketBits);
        long low = (1L << octave) + sub * width;
        return low + width / 2;
    }
}
