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

    public static void RequireEviction(PageEngine engine)
    {
        if (!engine.Features.CanEvict)
            throw new InvalidOperationException(
                "This test needs eviction (UFFDIO_MOVE, Linux 6.8+), which this kernel lacks: "
                + string.Join("; ", engine.Features.Shortcomings()));
    }
}
