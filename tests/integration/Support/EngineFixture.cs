using Tibet.Core.Paging;

namespace Tibet.IntegrationTests.Support;

/// <summary>
/// Creates engines for tests, failing with the reason when userfaultfd is unusable
/// here (a test never passes by skipping the kernel).
/// </summary>
internal static class Engines
{
    public static PageEngine Create(EngineOptions? options = null)
    {
        try
        {
            return PageEngine.Create(options);
        }
        catch (UserfaultfdUnavailableException e)
        {
            throw new InvalidOperationException(
                "These tests need a working userfaultfd (they run as root in CI). " + e.Message, e);
        }
    }

    /// <summary>Reads the whole of <paramref name="arena"/> back and asserts it holds
    /// exactly <paramref name="written"/>, and that the engine is healthy: its handler has
    /// not failed, and no page failed authentication.</summary>
    public static void AssertReadsBack(PageEngine engine, Arena arena, byte[] written, string what)
    {
        var read = new byte[written.Length];
        ArenaMemory.Read(arena.Address, read);
        var stats = engine.GetStats();
        Xunit.Assert.True(written.AsSpan().SequenceEqual(read), $"{what}: the pages read back differ; {stats.ToJson()}");
        Xunit.Assert.False(stats.HandlerFailed, stats.ToJson());
        Xunit.Assert.Equal(0, stats.AuthenticationFailures);
    }

    public static void RequireEviction(PageEngine engine)
    {
        if (!engine.Features.CanEvict)
            throw new InvalidOperationException(
                "This test needs eviction (UFFDIO_MOVE, Linux 6.8+), which this kernel lacks: "
                + string.Join("; ", engine.Features.Shortcomings()));
    }
}
