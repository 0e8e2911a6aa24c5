using Tibet.Core.Paging;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Engine;

public class ConcurrencyTests
{
    /// <summary>
    /// Eight threads increment counters in pages that are being evicted continuously (a
    /// separate thread seals the whole arena in a loop, and the budget forces eviction on
    /// faults as well). Each counter has one owner, so the final values are known: a
    /// write lost to a racing eviction shows up as a short count.
    /// </summary>
    [Fact]
    public void Writers_racing_continuous_eviction_lose_no_write()
    {
        const int threads = 8;
        const int pages = 2048;
        const int slotsPerPage = 4096 / sizeof(ulong);
        const int incrementsPerThread = 40_000;
        using var engine = Engines.Create(new EngineOptions { ResidentBudgetBytes = 256 * 4096 });
        Engines.RequireEviction(engine);
        using var arena = engine.CreateArena(pages * 4096L, "counters");

        var expected = new ulong[pages * slotsPerPage];
        using var stop = new CancellationTokenSource();
        long evictionPasses = 0;
        var evictor = new Thread(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                arena.Evict();
                Interlocked.Increment(ref evictionPasses);
            }
        });
        evictor.Start();

        var writers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            var random = new Random(1000 + t);
            Span<byte> cell = stackalloc byte[sizeof(ulong)];
            for (int n = 0; n < incrementsPerThread; n++)
            {
                // Slots are owned by thread (slot % threads == t).
                int page = random.Next(pages);
                int slot = random.Next(slotsPerPage / threads) * threads + t;
                nint address = arena.Address + page * 4096 + slot * sizeof(ulong);
                ArenaMemory.Read(address, cell);
                ulong value = BitConverter.ToUInt64(cell) + 1;
                BitConverter.TryWriteBytes(cell, value);
                ArenaMemory.Write(address, cell);
                expected[page * slotsPerPage + slot]++;
            }
        })).ToList();
        writers.ForEach(w => w.Start());
        writers.ForEach(w => w.Join());
        stop.Cancel();
        evictor.Join();

        var actual = new byte[pages * 4096];
        ArenaMemory.Read(arena.Address, actual);
        int wrong = 0;
        for (int i = 0; i < expected.Length; i++)
            if (BitConverter.ToUInt64(actual, i * sizeof(ulong)) != expected[i]) wrong++;

        var stats = engine.GetStats();
        Assert.True(wrong == 0, $"{wrong} counters differ from the expected count; {stats.ToJson()}");
        Assert.Equal((ulong)(threads * incrementsPerThread), expected.Aggregate(0UL, (a, b) => a + b));
        Assert.True(evictionPasses > 10, $"the evictor ran only {evictionPasses} passes");
        Assert.True(stats.Evictions > pages, stats.ToJson());
        Assert.Equal(0, stats.AuthenticationFailures);
    }

    /// <summary>
    /// The kernel's own view (mincore) of how many arena pages are mapped never exceeds
    /// the budget while a writer streams through an arena eight times its size.
    /// </summary>
    [Fact]
    public void Resident_pages_seen_by_the_kernel_stay_within_the_budget()
    {
        const long budget = 4L << 20;
        const long size = 8 * budget;
        using var engine = Engines.Create(new EngineOptions { ResidentBudgetBytes = budget });
        Engines.RequireEviction(engine);
        using var arena = engine.CreateArena(size);

        long maxPresent = 0;
        long samples = 0;
        bool writing = true;
        var monitor = new Thread(() =>
        {
            while (Volatile.Read(ref writing))
            {
                // Under the engine's lock no page is mapped or moved out meanwhile, so the
                // scan is one consistent picture however slowly it runs.
                maxPresent = Math.Max(maxPresent, engine.ObserveUnderLock(() => NativeCalls.CountPresentPages(arena.Address, size)));
                samples++;
            }
        });
        monitor.Start();
        var chunk = new byte[64 << 10];
        var random = new Random(5);
        for (int pass = 0; pass < 3; pass++)
        {
            for (long offset = 0; offset < size; offset += chunk.Length)
            {
                random.NextBytes(chunk);
                ArenaMemory.Write(arena.Address + (nint)offset, chunk);
            }
        }
        Volatile.Write(ref writing, false);
        monitor.Join();

        var stats = engine.GetStats();
        Assert.True(samples > 10, $"only {samples} samples");
        Assert.True(maxPresent <= budget / 4096,
            $"kernel saw {maxPresent} pages mapped, budget {budget / 4096}; {stats.ToJson()}");
        Assert.True(stats.PeakResidentBytes <= budget, stats.ToJson());
    }
}
