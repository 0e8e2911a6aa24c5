using System.Diagnostics;
using Tibet.Core.Diagnostics;
using Tibet.Core.Paging;
using Tibet.Core.Paging.Eviction;

namespace Tibet.Bench;

/// <summary>
/// Replays a page-access pattern (cyclic, uniform random, Zipfian) over an encrypted
/// arena larger than its budget, and counts the misses the eviction policy let happen.
/// Shared by the cyclic-scan benchmark and the eviction policy tests.
/// </summary>
/// <remarks>Read-ahead is off (one page per fault), so every miss is exactly one
/// decryption and the hit rate measures the policy alone.</remarks>
public static class EvictionWorkload
{
    public enum Pattern
    {
        /// <summary>Every page in order, again and again: a model read once per token.</summary>
        Cyclic,
        /// <summary>Uniformly random pages.</summary>
        Random,
        /// <summary>Zipf (s = 1) over the pages, ranks scattered: a cache's hot keys.</summary>
        Zipf,
    }

    public sealed record Result(
        string Policy, Pattern Pattern, int Pages, int BudgetPages, long Accesses, long Misses,
        double HitRate, double OptimalHitRate, double Seconds, EngineStats Stats)
    {
        public double PagesPerSecond => Accesses / Seconds;
    }

    private const int PageSize = 4096;

    public static Result Run(EvictionPolicy policy, Pattern pattern, int pages, int budgetPages, int measuredPasses, int seed)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(pages, 2);
        ArgumentOutOfRangeException.ThrowIfLessThan(budgetPages, 1);
        int[] sequence = Sequence(pattern, pages, (long)pages * measuredPasses, seed, out double optimal, budgetPages);
        using var engine = PageEngine.Create(new EngineOptions
        {
            ResidentBudgetBytes = (long)budgetPages * PageSize,
            ReadAheadMaxPages = 1,
            Eviction = policy,
        });
        if (!engine.Features.CanEvict)
            throw new InvalidOperationException("Measuring eviction needs UFFDIO_MOVE (Linux 6.8+): " + string.Join("; ", engine.Features.Shortcomings()));
        using var arena = engine.CreateArena((long)pages * PageSize, "eviction-workload");

        // Every page holds data, so each eviction seals and each miss decrypts.
        var page = new byte[PageSize];
        for (int i = 0; i < pages; i++)
        {
            page.AsSpan().Fill((byte)(i % 251 + 1));
            ArenaMemory.Write(arena.Address + (nint)((long)i * PageSize), page);
        }
        // Warm-up: the same pattern, so that the measured part sees the policy's steady state.
        int[] warmUp = Sequence(pattern, pages, 2L * pages, seed + 1, out _, budgetPages);
        Touch(arena, warmUp);

        EngineStats before = engine.GetStats();
        var clock = Stopwatch.StartNew();
        Touch(arena, sequence);
        double seconds = clock.Elapsed.TotalSeconds;
        EngineStats after = engine.GetStats();
        long misses = after.Decrypts - before.Decrypts;
        return new Result(policy.Name, pattern, pages, budgetPages, sequence.Length, misses,
            1.0 - (double)misses / sequence.Length, optimal, seconds, after);
    }

    private static void Touch(Arena arena, int[] sequence)
    {
        Span<byte> one = stackalloc byte[1];
        foreach (int index in sequence)
            ArenaMemory.Read(arena.Address + (nint)((long)index * PageSize), one);
    }

    /// <summary>The page indices to touch, and the best hit rate any policy could reach
    /// on them with <paramref name="budgetPages"/> resident (approximately: the budget over
    /// the pages for cyclic and uniform, the probability mass of the hottest pages for Zipf).</summary>
    private static int[] Sequence(Pattern pattern, int pages, long length, int seed, out double optimal, int budgetPages)
    {
        var random = new Random(seed);
        var sequence = new int[length];
        double fraction = Math.Min(1.0, (double)budgetPages / pages);
        switch (pattern)
        {
            case Pattern.Cyclic:
                for (long i = 0; i < length; i++)
                    sequence[i] = (int)(i % pages);
                optimal = fraction;
                break;
            case Pattern.Random:
                for (long i = 0; i < length; i++)
                    sequence[i] = random.Next(pages);
                optimal = fraction;
                break;
            case Pattern.Zipf:
                var cumulative = new double[pages];
                double sum = 0;
                for (int rank = 0; rank < pages; rank++)
                    cumulative[rank] = sum += 1.0 / (rank + 1);
                // The same seed scatters the ranks the same way in warm-up and measurement.
                int[] pageOfRank = Enumerable.Range(0, pages).ToArray();
                new Random(pages).Shuffle(pageOfRank);
                for (long i = 0; i < length; i++)
                {
                    int rank = Array.BinarySearch(cumulative, random.NextDouble() * sum);
                    sequence[i] = pageOfRank[rank < 0 ? ~rank : rank];
                }
                optimal = cumulative[Math.Min(pages, budgetPages) - 1] / sum;
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(pattern));
        }
        return sequence;
    }
}
