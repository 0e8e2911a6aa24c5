using Tibet.Core.Paging;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Engine;

/// <summary>
/// Clean pages are dropped, not sealed again: a page brought back from its sealed copy is
/// installed write-protected and keeps that copy; evicted before any write, it is sealed
/// by the copy (no encryption, the same ciphertext in the same slot). Its first write
/// reaches the engine as a write-protect fault, which frees the copy, so the next eviction
/// seals what was written. Measured on the real kernel: the ciphertext bytes in the store
/// are compared, not counters alone.
/// </summary>
public unsafe class WriteTrackingTests
{
    private const int PageSize = 4096;

    private static byte[] Sealed(PageEngine engine, Arena arena, long page)
    {
        Assert.True(engine.TryLocateCiphertext(arena, page, out nint slot, out int length), $"page {page} is not sealed");
        return new ReadOnlySpan<byte>((void*)slot, length).ToArray();
    }

    /// <summary>An arena of <paramref name="pages"/> random pages, written and then all sealed.</summary>
    private static Arena SealedRandomArena(PageEngine engine, int pages, int seed, out byte[] data)
    {
        Engines.RequireEviction(engine);
        var arena = engine.CreateArena(pages * (long)PageSize, "tracked");
        data = new byte[pages * PageSize];
        new Random(seed).NextBytes(data);
        ArenaMemory.Write(arena.Address, data);
        arena.Evict();
        return arena;
    }

    [Fact]
    public void A_page_read_back_and_evicted_unwritten_keeps_its_ciphertext_and_a_written_one_is_sealed_anew()
    {
        const int pages = 256;
        using var engine = Engines.Create(new EngineOptions { ResidentBudgetBytes = 512 * PageSize });
        using var arena = SealedRandomArena(engine, pages, 20261206, out byte[] data);
        var first = new byte[pages][];
        for (int p = 0; p < pages; p++)
            first[p] = Sealed(engine, arena, p);

        // Read everything back (the copies are kept), write to every fourth page, evict.
        var back = new byte[pages * PageSize];
        ArenaMemory.Read(arena.Address, back);
        Assert.True(data.AsSpan().SequenceEqual(back), "contents changed on the way back");
        var before = engine.GetStats();
        Assert.Equal(pages, before.CleanCopies);
        for (int p = 0; p < pages; p += 4)
        {
            data[p * PageSize + 100] ^= 0xFF;
            ArenaMemory.Write(arena.Address + p * PageSize + 100, data.AsSpan(p * PageSize + 100, 1));
        }
        var written = engine.GetStats();
        Assert.Equal(pages / 4, written.WriteFaults - before.WriteFaults);
        Assert.Equal(pages - pages / 4, written.CleanCopies);
        arena.Evict();

        var after = engine.GetStats();
        Assert.Equal(pages - pages / 4, after.CleanEvictions - before.CleanEvictions);
        for (int p = 0; p < pages; p++)
        {
            byte[] now = Sealed(engine, arena, p);
            if (p % 4 == 0)
                Assert.False(now.AsSpan().SequenceEqual(first[p]), $"written page {p} kept its old ciphertext");
            else
                Assert.True(now.AsSpan().SequenceEqual(first[p]), $"clean page {p} was encrypted again");
        }
        ArenaMemory.Read(arena.Address, back);
        Assert.True(data.AsSpan().SequenceEqual(back), "contents differ after the clean and written evictions");
        Assert.Equal(0, after.AuthenticationFailures);
    }

    [Fact]
    public void Without_write_tracking_every_eviction_seals_anew()
    {
        const int pages = 64;
        using var engine = Engines.Create(new EngineOptions { ResidentBudgetBytes = 512 * PageSize, TrackWrites = false });
        using var arena = SealedRandomArena(engine, pages, 7, out _);
        byte[] first = Sealed(engine, arena, 3);
        ArenaMemory.Read(arena.Address, new byte[pages * PageSize]);
        arena.Evict();
        Assert.False(Sealed(engine, arena, 3).AsSpan().SequenceEqual(first));
        var stats = engine.GetStats();
        Assert.Equal(0, stats.CleanEvictions);
        Assert.Equal(0, stats.WriteFaults);
    }

    /// <summary>
    /// Writers race eviction: each thread increments a counter in each of its own pages
    /// while readers keep bringing other pages back clean and the budget (16 pages of 512)
    /// evicts all the time. A write that waited in a write-protect fault while its page
    /// was taken out, or one that landed on a page evicted as clean, would lose an
    /// increment.
    /// </summary>
    [Fact]
    public void Writes_racing_clean_evictions_are_never_lost()
    {
        const int pages = 512, writers = 3, rounds = 40;
        using var engine = Engines.Create(new EngineOptions { ResidentBudgetBytes = 16 * PageSize });
        Engines.RequireEviction(engine);
        using var arena = engine.CreateArena(pages * (long)PageSize, "race");
        nint baseAddress = arena.Address;
        var filler = new byte[PageSize];
        new Random(3).NextBytes(filler);
        for (int p = 0; p < pages; p++)
        {
            filler[0] = filler[1] = filler[2] = filler[3] = 0; // the counter
            ArenaMemory.Write(baseAddress + p * PageSize, filler);
        }

        bool stop = false;
        var reader = new Thread(() =>
        {
            var page = new byte[PageSize];
            var random = new Random(11);
            while (!Volatile.Read(ref stop))
                ArenaMemory.Read(baseAddress + random.Next(pages) * PageSize, page);
        });
        var threads = Enumerable.Range(0, writers).Select(w => new Thread(() =>
        {
            var counter = new byte[4];
            for (int round = 0; round < rounds; round++)
                for (int p = w; p < pages; p += writers)
                {
                    ArenaMemory.Read(baseAddress + p * PageSize, counter);
                    BitConverter.TryWriteBytes(counter, BitConverter.ToInt32(counter) + 1);
                    ArenaMemory.Write(baseAddress + p * PageSize, counter);
                }
        })).ToArray();
        reader.Start();
        foreach (var thread in threads) thread.Start();
        foreach (var thread in threads)
            Assert.True(thread.Join(TimeSpan.FromMinutes(3)), "a writer did not finish in 3 minutes");
        Volatile.Write(ref stop, true);
        reader.Join();

        var check = new byte[PageSize];
        for (int p = 0; p < pages; p++)
        {
            ArenaMemory.Read(baseAddress + p * PageSize, check);
            Assert.Equal(rounds, BitConverter.ToInt32(check));
            Assert.True(check.AsSpan(4).SequenceEqual(filler.AsSpan(4)), $"page {p} lost its filler");
        }
        var stats = engine.GetStats();
        Assert.True(stats.CleanEvictions > 100 && stats.WriteFaults > 100, stats.ToJson());
        Assert.Equal(0, stats.AuthenticationFailures);
    }

    /// <summary>
    /// A real program under tibet-run: a 16 MiB block read back twice under a 1 MiB budget
    /// is evicted by its kept copies; a forked child writes every page of its copy (the
    /// ones it inherited write-protected must be made writable, or it hangs); the parent's
    /// writes after the fork are sealed anew. Every byte is checked in both processes.
    /// With TIBET_TRACK_WRITES=0 the same run seals every eviction anew.
    /// </summary>
    [Fact]
    public void A_program_and_its_forked_child_read_and_write_exact_bytes_with_clean_evictions()
    {
        string program = NativeBuild.Compile("prog_clean_pages.c");
        var native = TibetRun.Native([program]);
        Assert.True(native.ExitCode == 0 && native.Stdout.Contains("clean-pages: OK"), "native control run failed: " + native);

        var tracked = TibetRun.Encrypted(["--threshold", "64K", "--budget", "1M"], [program], TimeSpan.FromMinutes(3));
        Assert.True(tracked.ExitCode == 0, tracked.ToString());
        Assert.Contains("clean-pages: OK", tracked.Stdout);
        // The second read pass evicts what the first brought back, unwritten: ~4000 pages.
        Assert.True(tracked.Stat("cleanEvictions") >= 3000, tracked.ToString());
        Assert.True(tracked.Stat("writeFaults") > 0, tracked.ToString());
        Assert.Equal(0, tracked.Stat("authenticationFailures"));

        string statsFile = Path.Combine(Path.GetTempPath(), $"tibet-untracked-{Guid.NewGuid():N}.json");
        var untracked = TibetRun.Run(TibetRun.Launcher, ["--threshold", "64K", "--budget", "1M", "--stats-json", statsFile, "--", program],
            TimeSpan.FromMinutes(3), environment: new Dictionary<string, string?> { ["TIBET_TRACK_WRITES"] = "0" });
        string json = File.Exists(statsFile) ? File.ReadAllText(statsFile) : "";
        File.Delete(statsFile);
        using var untrackedStats = System.Text.Json.JsonDocument.Parse(json.Length > 0 ? json : "{}");
        Assert.True(untrackedStats.RootElement.TryGetProperty("cleanEvictions", out var cleanUntracked), "no statistics from the untracked run: " + untracked);
        Assert.Equal(0, cleanUntracked.GetInt64());
        Assert.True(untrackedStats.RootElement.GetProperty("evictions").GetInt64() >= 3000, json);
        Assert.True(untracked.ExitCode == 0 && untracked.Stdout.Contains("clean-pages: OK"), untracked.ToString());
    }
}
