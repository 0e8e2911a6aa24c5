using Tibet.Core.Interop;
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

    /// <summary>
    /// Long read-ahead runs are shared with the fill worker, which installs pages without
    /// the engine reading events meanwhile. A thread that discards blocks (MADV_DONTNEED)
    /// while another streams through the arena must then read zeros from each block it
    /// just discarded: a worker that installed a block's old contents after the discard
    /// would show them here. Each block is then written again with a new generation, and
    /// the streaming reader checks that no page holds another page's contents.
    /// </summary>
    [Fact]
    public unsafe void Discarded_pages_read_zeros_while_long_runs_are_shared_with_the_fill_worker()
    {
        const int pages = 4096, block = 16, rounds = 1500;
        using var engine = Engines.Create(new EngineOptions { ResidentBudgetBytes = 1024 * 4096L, FillThreads = 1 });
        Engines.RequireEviction(engine);
        using var arena = engine.CreateArena(pages * 4096L, "discards");
        nint baseAddress = arena.Address;
        static void Stamp(Span<byte> page, int index, int generation)
        {
            page.Fill((byte)(index * 7 + generation));
            BitConverter.TryWriteBytes(page, index);
            BitConverter.TryWriteBytes(page[4..], generation + 1);
        }
        var buffer = new byte[4096];
        for (int p = 0; p < pages; p++)
        {
            Stamp(buffer, p, 0);
            ArenaMemory.Write(baseAddress + p * 4096, buffer);
        }

        string? streamFailure = null;
        bool stop = false;
        var streamer = new Thread(() =>
        {
            var page = new byte[4096];
            while (!Volatile.Read(ref stop) && streamFailure == null)
            {
                arena.Evict();
                for (int p = 0; p < pages && streamFailure == null; p++)
                {
                    ArenaMemory.Read(baseAddress + p * 4096, page);
                    // Zeros (discarded), or some generation of this page; a copy racing the
                    // discarding thread's write may mix two generations, never two pages.
                    int index = BitConverter.ToInt32(page);
                    if (index != p && index != 0)
                        streamFailure = $"page {p} holds page {index}'s contents";
                }
            }
        });
        streamer.Start();
        var random = new Random(17);
        var read = new byte[block * 4096];
        try
        {
            for (int round = 1; round <= rounds; round++)
            {
                int first = random.Next(pages / block) * block;
                NativeCalls.Check(Libc.madvise(baseAddress + first * 4096, block * 4096, Libc.MADV_DONTNEED), "madvise");
                ArenaMemory.Read(baseAddress + first * 4096, read);
                Assert.False(read.AsSpan().ContainsAnyExcept((byte)0), $"round {round}: a discarded block read back old contents");
                for (int p = first; p < first + block; p++)
                {
                    Stamp(buffer, p, round);
                    ArenaMemory.Write(baseAddress + p * 4096, buffer);
                }
            }
        }
        finally
        {
            Volatile.Write(ref stop, true);
            streamer.Join();
        }
        Assert.Null(streamFailure);
        var stats = engine.GetStats();
        Assert.True(stats.WorkerDecrypts > 1000, "the fill worker was not used: " + stats.ToJson());
        Assert.Equal(0, stats.AuthenticationFailures);
    }
}
