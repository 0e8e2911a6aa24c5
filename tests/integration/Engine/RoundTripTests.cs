using System.Security.Cryptography;
using Tibet.Core.Paging;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Engine;

public class RoundTripTests
{
    [Theory]
    [InlineData("aes-256-gcm")]
    [InlineData("aegis-256")]
    public void Quarter_gigabyte_of_random_data_survives_eviction_under_an_eighth_budget(string cipher)
    {
        const long size = 256L << 20;
        const long budget = size / 8;
        using var engine = Engines.Create(new EngineOptions
        {
            ResidentBudgetBytes = budget,
            Cipher = Tibet.Core.Crypto.PageCipherSuite.FromName(cipher)!,
        });
        Engines.RequireEviction(engine);
        using var arena = engine.CreateArena(size, "256MiB");

        var chunk = new byte[1 << 20];
        var random = new Random(20261123);
        using (var expected = IncrementalHash.CreateHash(HashAlgorithmName.SHA256))
        using (var actual = IncrementalHash.CreateHash(HashAlgorithmName.SHA256))
        {
            for (long offset = 0; offset < size; offset += chunk.Length)
            {
                random.NextBytes(chunk);
                expected.AppendData(chunk);
                ArenaMemory.Write(arena.Address + (nint)offset, chunk);
            }
            for (long offset = 0; offset < size; offset += chunk.Length)
            {
                ArenaMemory.Read(arena.Address + (nint)offset, chunk);
                actual.AppendData(chunk);
            }
            Assert.Equal(Convert.ToHexString(expected.GetHashAndReset()), Convert.ToHexString(actual.GetHashAndReset()));
        }

        var stats = engine.GetStats();
        // Everything written beyond the budget had to be sealed and then decrypted again.
        Assert.True(stats.Evictions >= (size - budget) / 4096, stats.ToJson());
        Assert.True(stats.Decrypts >= (size - budget) / 4096, stats.ToJson());
        Assert.True(stats.PeakResidentBytes <= budget, stats.ToJson());
        Assert.Equal(0, stats.AuthenticationFailures);
        Assert.Equal(cipher, stats.Cipher);
        // Every page is sealed raw (random data does not compress), with the suite's tag;
        // the store holds the sealed pages and the copies kept by resident clean pages.
        Assert.Equal((stats.SealedPages + stats.CleanCopies) * (4096L + Tibet.Core.Crypto.PageCipherSuite.FromName(cipher)!.TagSize), stats.SealedBytes);
        // No allocation per fault: 60,000+ faults allocating even 24 bytes each would be
        // over a megabyte. A one-off of a few dozen bytes (the runtime's first contended
        // wait on the engine lock, when the machine is busy) is tolerated.
        Assert.True(stats.HandlerAllocatedBytes < 1024, stats.ToJson());
    }

    [Fact]
    public void Compressible_pages_are_stored_compressed_and_read_back_exact()
    {
        const int pages = 2048;
        using var engine = Engines.Create(new EngineOptions { Compression = CompressionMode.Auto });
        Engines.RequireEviction(engine);
        using var arena = engine.CreateArena(pages * 4096L);
        byte[] text = System.Text.Encoding.ASCII.GetBytes(string.Concat(
            Enumerable.Range(0, pages * 4096 / 30).Select(i => $"record {i,8} status=ok value={i % 97,4};\n")))[..(pages * 4096)];
        ArenaMemory.Write(arena.Address, text);
        arena.Evict();

        var sealedStats = engine.GetStats();
        Assert.Equal(pages, sealedStats.SealedPages);
        Assert.Equal(pages, sealedStats.CompressedSeals);
        Assert.True(sealedStats.SealedBytes <= pages * 2048L, sealedStats.ToJson());

        var back = new byte[text.Length];
        ArenaMemory.Read(arena.Address, back);
        Assert.True(back.AsSpan().SequenceEqual(text));
        Assert.Equal(pages, engine.GetStats().Decompressions);
    }

    [Fact]
    public void Zero_pages_are_recorded_without_ciphertext_and_untouched_pages_read_as_zero()
    {
        const int pages = 256;
        using var engine = Engines.Create();
        Engines.RequireEviction(engine);
        using var arena = engine.CreateArena(pages * 4096L);
        // Touch every other page with zeros written explicitly, leave the rest untouched.
        for (int i = 0; i < pages; i += 2)
            ArenaMemory.Fill(arena.Address + i * 4096, 0, 4096);
        arena.Evict();

        var stats = engine.GetStats();
        Assert.Equal(0, stats.SealedPages);
        Assert.Equal(0, stats.SealedBytes);
        Assert.Equal(pages / 2, stats.ZeroEvictions);
        Assert.Equal(PageState.Zero, arena.GetPageState(0));
        Assert.Equal(PageState.Untouched, arena.GetPageState(1));

        var back = new byte[pages * 4096];
        back.AsSpan().Fill(0xEE);
        ArenaMemory.Read(arena.Address, back);
        Assert.False(back.AsSpan().ContainsAnyExcept((byte)0));
        Assert.Equal(0, engine.GetStats().Decrypts);
    }

    [Fact]
    public void Sealed_pages_of_an_arena_never_share_a_nonce()
    {
        const int pages = 512;
        using var engine = Engines.Create();
        Engines.RequireEviction(engine);
        using var arena = engine.CreateArena(pages * 4096L);
        var page = new byte[4096];
        var seen = new HashSet<ulong>();
        for (int round = 0; round < 4; round++)
        {
            for (int i = 0; i < pages; i++)
            {
                BitConverter.TryWriteBytes(page, round * pages + i + 1);
                ArenaMemory.Write(arena.Address + i * 4096, page);
            }
            arena.Evict();
            foreach (ulong nonce in engine.SealedNonces(arena))
                Assert.True(seen.Add(nonce), $"nonce {nonce} was used twice");
        }
        Assert.Equal(4 * pages, seen.Count);
        Assert.Equal((ulong)(4 * pages), arena.Cipher.SealCount);
    }

    /// <summary>Without a budget nothing is ever dequeued, so the eviction order must
    /// shed pages that left residency, or it grows with every fault.</summary>
    [Fact]
    public void Eviction_order_does_not_grow_without_bound_when_there_is_no_budget()
    {
        const int pages = 4096;
        using var engine = Engines.Create();
        Engines.RequireEviction(engine);
        using var arena = engine.CreateArena(pages * 4096L);
        var buffer = new byte[pages * 4096];
        new Random(11).NextBytes(buffer);
        ArenaMemory.Write(arena.Address, buffer);
        long initialCapacity = engine.ResidentQueueCapacity;
        for (int cycle = 0; cycle < 40; cycle++)
        {
            arena.Evict();
            ArenaMemory.Read(arena.Address, buffer);
        }
        // 40 cycles queue 160K pages; a ring that kept them all would be 16x larger.
        Assert.True(engine.ResidentQueueCapacity <= Math.Max(initialCapacity, 2 * pages),
            $"ring capacity grew to {engine.ResidentQueueCapacity}");
    }
}
