using Tibet.Core.Paging;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Engine;

public class ReadAheadTests
{
    /// <summary>Two sequential readers of one arena, their touches interleaved as two
    /// threads scanning different rows of a tensor interleave: each stream must grow its
    /// own read-ahead window. With one expected-next-page per arena, no fault lands where
    /// the last run ended, and every page costs a fault of its own.</summary>
    [Fact]
    public void Interleaved_sequential_streams_each_get_read_ahead()
    {
        const int pages = 8192;
        using var engine = Engines.Create(new EngineOptions { ReadAheadMaxPages = 64 });
        Engines.RequireEviction(engine);
        using var arena = engine.CreateArena(pages * 4096L, "two-streams");
        var data = new byte[pages * 4096];
        new Random(5).NextBytes(data);
        ArenaMemory.Write(arena.Address, data);
        arena.Evict();

        long faultsBefore = engine.GetStats().Faults;
        Span<byte> page = stackalloc byte[4096];
        const int half = pages / 2;
        for (int i = 0; i < half; i++)
        {
            foreach (int index in (ReadOnlySpan<int>)[i, half + i])
            {
                ArenaMemory.Read(arena.Address + (nint)(index * 4096L), page);
                Assert.True(page.SequenceEqual(data.AsSpan(index * 4096, 4096)), $"page {index} read back wrong");
            }
        }
        var stats = engine.GetStats();
        long faults = stats.Faults - faultsBefore;
        // Windows double to 64 pages: about pages / 64 faults, plus the ramps. One fault per
        // page (8192) is what a single stream tracker gives.
        Assert.True(faults <= pages / 16, $"{faults} faults for {pages} pages read by two interleaved streams\n{stats.ToJson()}");
        Assert.Equal(0, stats.AuthenticationFailures);
    }
}
