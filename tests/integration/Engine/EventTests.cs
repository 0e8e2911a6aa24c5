using Tibet.Core.Interop;
using Tibet.Core.Paging;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Engine;

public class EventTests
{
    private static byte[] Pattern(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    [Theory]
    [InlineData(Libc.MADV_DONTNEED)]
    [InlineData(Libc.MADV_FREE)]
    public void Discarded_sealed_pages_read_as_zeros_and_free_their_ciphertext(int advice)
    {
        const int pages = 128;
        using var engine = Engines.Create();
        Engines.RequireEviction(engine);
        using var arena = engine.CreateArena(pages * 4096L);
        ArenaMemory.Write(arena.Address, Pattern(pages * 4096, 1));
        arena.Evict();
        long sealedBefore = engine.GetStats().SealedBytes;
        Assert.True(sealedBefore >= pages * 4096L);

        NativeCalls.Check(Libc.madvise(arena.Address, pages * 4096, advice), "madvise");

        var stats = engine.GetStats();
        Assert.Equal(0, stats.SealedBytes);
        Assert.Equal(0, stats.SealedPages);
        Assert.True(stats.RemoveEvents >= 1, stats.ToJson());
        Assert.Equal(PageState.Zero, arena.GetPageState(5));
        var back = new byte[pages * 4096];
        back.AsSpan().Fill(0xEE);
        ArenaMemory.Read(arena.Address, back);
        Assert.False(back.AsSpan().ContainsAnyExcept((byte)0));
    }

    /// <summary>
    /// MADV_FREE leaves resident pages mapped; a program may write them again, and what it
    /// writes must survive. The engine takes freed resident pages off its books at once
    /// (so that no eviction seals contents the program gave up) and write-protects them:
    /// the new write must survive an eviction and read back exact, whether it reached the
    /// engine as a write-protect fault or landed before the protection was set. Pages
    /// freed and not written read as zeros or their old bytes, both of which MADV_FREE allows.
    /// </summary>
    [Fact]
    public void Pages_written_after_madv_free_survive_eviction()
    {
        const int pages = 64;
        using var engine = Engines.Create();
        Engines.RequireEviction(engine);
        using var arena = engine.CreateArena(pages * 4096L);
        byte[] old = Pattern(pages * 4096, 3);
        ArenaMemory.Write(arena.Address, old);

        NativeCalls.Check(Libc.madvise(arena.Address, pages * 4096, Libc.MADV_FREE), "madvise");
        byte[] written = Pattern(pages / 2 * 4096, 4);
        ArenaMemory.Write(arena.Address, written); // the first half written again
        arena.Evict();

        var back = new byte[pages * 4096];
        ArenaMemory.Read(arena.Address, back);
        Assert.True(back.AsSpan(0, written.Length).SequenceEqual(written), "a page written after MADV_FREE lost its new contents");
        for (int p = pages / 2; p < pages; p++)
        {
            var page = back.AsSpan(p * 4096, 4096);
            Assert.True(!page.ContainsAnyExcept((byte)0) || page.SequenceEqual(old.AsSpan(p * 4096, 4096)),
                $"freed page {p} reads neither zeros nor its old bytes");
        }
        // Whether they were sealed depends on a race the engine cannot see (see
        // ProgramEvents.DiscardPage): what is checked is that no written byte was lost.
        Assert.Equal(0, engine.GetStats().AuthenticationFailures);
    }

    /// <summary>
    /// Pages the program gives up with MADV_DONTNEED whose mapping the engine cannot
    /// write-protect in time (a loaded machine, where the madvising thread waits for a CPU:
    /// EngineOptions.ProtectAfterDiscardFails), evicted right then, before the kernel zaps
    /// them (EngineOptions.AfterGivingUp): the program reads zeros, never the bytes it gave
    /// up. Before, the eviction sealed those bytes and the program read them back (seen
    /// once in a loaded CI run of ReadAheadTests). And a page given up with MADV_FREE and
    /// written again keeps what was written, also when the program writes it before the
    /// event is handled (the madvising thread runs on once the event is read; seen in one
    /// run of this test in four when the hook still evicted after the range's first page,
    /// taking pages the event had not reached yet, which the event then discarded).
    /// </summary>
    [Fact]
    public void Pages_given_up_and_evicted_before_the_kernel_zaps_them_read_zeros()
    {
        const int pages = 64;
        Arena? target = null;
        int evictionsInTheWindow = 0;
        using var engine = Engines.Create(new EngineOptions
        {
            ProtectAfterDiscardFails = true,
            AfterGivingUp = arena =>
            {
                if (arena != target)
                    return;
                arena.Evict(); // on the thread that read the event, which holds the engine lock
                evictionsInTheWindow++;
            },
        });
        Engines.RequireEviction(engine);
        using var arena = engine.CreateArena(pages * 4096L, "given-up");
        target = arena;
        var back = new byte[pages * 4096];
        for (int round = 0; round < 20; round++)
        {
            ArenaMemory.Write(arena.Address, Pattern(pages * 4096, 100 + round));
            NativeCalls.Check(Libc.madvise(arena.Address, pages * 4096, Libc.MADV_DONTNEED), "madvise");
            ArenaMemory.Read(arena.Address, back);
            Assert.False(back.AsSpan().ContainsAnyExcept((byte)0),
                $"round {round}: a page given up with MADV_DONTNEED read back bytes it had before: " + engine.GetStats().ToJson());
        }

        byte[] written = Pattern(pages * 4096, 7);
        ArenaMemory.Write(arena.Address, written);
        NativeCalls.Check(Libc.madvise(arena.Address, pages * 4096, Libc.MADV_FREE), "madvise");
        ArenaMemory.Write(arena.Address, written); // the program's data again
        arena.Evict();
        ArenaMemory.Read(arena.Address, back);
        Assert.True(back.AsSpan().SequenceEqual(written), "a page written after MADV_FREE lost its new contents");

        Assert.True(evictionsInTheWindow >= 20, $"the arena was evicted in the window only {evictionsInTheWindow} times");
        Assert.Equal(0, engine.GetStats().AuthenticationFailures);
    }

    [Fact]
    public void Discarded_resident_pages_read_as_zeros_and_neighbours_keep_their_data()
    {
        const int pages = 64;
        using var engine = Engines.Create();
        using var arena = engine.CreateArena(pages * 4096L);
        byte[] data = Pattern(pages * 4096, 2);
        ArenaMemory.Write(arena.Address, data);

        NativeCalls.Check(Libc.madvise(arena.Address + 16 * 4096, 16 * 4096, Libc.MADV_DONTNEED), "madvise");

        var back = new byte[pages * 4096];
        ArenaMemory.Read(arena.Address, back);
        Assert.True(back.AsSpan(0, 16 * 4096).SequenceEqual(data.AsSpan(0, 16 * 4096)));
        Assert.False(back.AsSpan(16 * 4096, 16 * 4096).ContainsAnyExcept((byte)0));
        Assert.True(back.AsSpan(32 * 4096).SequenceEqual(data.AsSpan(32 * 4096)));

        // And the discarded pages are evicted as zeros: nothing is stored for them.
        if (engine.Features.CanEvict)
        {
            arena.Evict();
            Assert.Equal((pages - 16) * (long)(4096 + Tibet.Core.Crypto.PageCipherSuite.Aes256Gcm.TagSize), engine.GetStats().SealedBytes);
        }
    }

    [Fact]
    public void Unmapping_part_of_an_arena_frees_its_ciphertext_and_keeps_the_rest()
    {
        const int pages = 96;
        using var engine = Engines.Create();
        Engines.RequireEviction(engine);
        var arena = engine.CreateArena(pages * 4096L);
        byte[] data = Pattern(pages * 4096, 3);
        ArenaMemory.Write(arena.Address, data);
        arena.Evict();

        NativeCalls.Check(Libc.munmap(arena.Address + 32 * 4096, 32 * 4096), "munmap");

        var stats = engine.GetStats();
        Assert.Equal(1, stats.UnmapEvents);
        Assert.Equal(64, stats.SealedPages);
        Assert.Equal(PageState.Unmapped, arena.GetPageState(40));
        var back = new byte[32 * 4096];
        ArenaMemory.Read(arena.Address + 64 * 4096, back);
        Assert.True(back.AsSpan().SequenceEqual(data.AsSpan(64 * 4096)));
        arena.Dispose();
        Assert.Equal(0, engine.GetStats().SealedBytes);
    }

    [Fact]
    public void Moving_a_whole_arena_with_mremap_keeps_its_sealed_pages()
    {
        const int pages = 64;
        using var engine = Engines.Create();
        Engines.RequireEviction(engine);
        using var arena = engine.CreateArena(pages * 4096L);
        byte[] data = Pattern(pages * 4096, 4);
        ArenaMemory.Write(arena.Address, data);
        arena.Evict();
        nint before = arena.Address;

        // Reserve a destination and move the whole arena there.
        nint target = Libc.mmap(0, pages * 4096, Libc.PROT_NONE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS, -1, 0);
        Assert.NotEqual(-1, target);
        nint moved = Libc.mremap(before, pages * 4096, pages * 4096,
            Libc.MREMAP_MAYMOVE | Libc.MREMAP_FIXED, target);
        Assert.Equal(target, moved);
        Assert.Equal(moved, arena.Address);
        Assert.Equal(1, engine.GetStats().RemapEvents);

        var back = new byte[pages * 4096];
        ArenaMemory.Read(arena.Address, back);
        Assert.True(back.AsSpan().SequenceEqual(data));
    }

    [Fact]
    public void Disposing_arenas_gives_store_memory_back()
    {
        using var engine = Engines.Create();
        Engines.RequireEviction(engine);
        var arenas = Enumerable.Range(0, 4).Select(i => engine.CreateArena(8L << 20, $"a{i}")).ToList();
        foreach (var arena in arenas)
        {
            ArenaMemory.Write(arena.Address, Pattern(8 << 20, 9));
            arena.Evict();
        }
        Assert.True(engine.GetStats().StoreMappedBytes >= 32L << 20);
        arenas.ForEach(a => a.Dispose());
        var stats = engine.GetStats();
        Assert.Equal(0, stats.SealedBytes);
        Assert.Equal(0, stats.ResidentBytes);
        // One spare chunk per size class may stay mapped.
        Assert.True(stats.StoreMappedBytes <= 1 << 20, stats.ToJson());
    }
}
