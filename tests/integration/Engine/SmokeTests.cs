using System.Security.Cryptography;
using Tibet.Core.Paging;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Engine;

public class SmokeTests
{
    [Fact]
    public void Data_written_evicted_and_faulted_back_is_byte_exact()
    {
        const int size = 16 << 20;
        using var engine = Engines.Create(new EngineOptions { ResidentBudgetBytes = 2 << 20 });
        Engines.RequireEviction(engine);
        using var arena = engine.CreateArena(size);
        var data = new byte[size];
        new Random(7).NextBytes(data);
        ArenaMemory.Write(arena.Address, data);
        var back = new byte[size];
        ArenaMemory.Read(arena.Address, back);
        Assert.Equal(SHA256.HashData(data), SHA256.HashData(back));
        var stats = engine.GetStats();
        Assert.True(stats.Evictions > 0, stats.ToJson());
        Assert.True(stats.Decrypts > 0, stats.ToJson());
    }
}
