using System.Diagnostics;

namespace Tibet.Bench;

/// <summary>Latency percentiles over Stopwatch tick samples (nearest rank).</summary>
internal static class Percentiles
{
    private static readonly double MicrosecondsPerTick = 1e6 / Stopwatch.Frequency;

    public static double TicksToMicroseconds(long ticks) => ticks * MicrosecondsPerTick;

    /// <summary>Sorts a copy of the first <paramref name="count"/> samples and returns the
    /// p50 and p99 in microseconds.</summary>
    public static (double P50, double P99) Of(long[] samples, int count)
    {
        if (count == 0) return (0, 0);
        long[] sorted = samples[..count];
        Array.Sort(sorted);
        return (TicksToMicroseconds(Rank(sorted, 0.50)), TicksToMicroseconds(Rank(sorted, 0.99)));
    }

    public static double Microseconds(long[] samples, int count, double q)
    {
        if (count == 0) return 0;
        long[] sorted = samples[..count];
        Array.Sort(sorted);
        return TicksToMicroseconds(Rank(sorted, q));
    }

    private static long Rank(long[] sorted, double q)
    {
        int rank = (int)Math.Ceiling(q * sorted.Length);
        return sorted[Math.Clamp(rank - 1, 0, sorted.Length - 1)];
    }

    public static double Median(IEnumerable<double> values)
    {
        double[] v = values.ToArray();
        if (v.Length == 0) return 0;
        Array.Sort(v);
        return v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
    }
}
