using System.Text.RegularExpressions;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Engine;

public class MallocFreedomTests
{
    /// <summary>
    /// A faulting thread may hold the host allocator's locks (under the interposer,
    /// jemalloc's own metadata can sit in arena memory), so the handler must never call
    /// malloc. An LD_PRELOAD probe counts malloc-family calls by thread name while the
    /// child drives faults, read-ahead, eviction, compression and madvise.
    /// </summary>
    [Fact]
    public void The_handler_thread_never_calls_malloc()
    {
        string probe = NativeBuild.Compile("malloc_probe.c", "-shared", "-fPIC");
        string soPath = probe + ".so";
        File.Copy(probe, soPath, overwrite: true);
        var (code, stdout, stderr) = TamperTests.RunChildWith(
            new Dictionary<string, string>
            {
                ["LD_PRELOAD"] = soPath,
                ["TIBET_MALLOC_PROBE"] = soPath,
                // Compile each method once, fully, on first use: no tier-up or on-stack
                // replacement that would run the JIT (which mallocs) on the handler later.
                ["DOTNET_TieredCompilation"] = "0",
            },
            "malloc-probe");
        Assert.True(code == 0, $"child failed ({code}): {stdout}\n{stderr}");

        var counts = Regex.Match(stdout, @"handler-mallocs (\d+) control-mallocs (\d+)");
        Assert.True(counts.Success, stdout);
        var work = Regex.Match(stdout, @"faults (\d+) evictions (\d+) decrypts (\d+) decompressions (\d+) removes (\d+)");
        Assert.True(work.Success, stdout);
        // The probe works: the control thread's ten AllocHGlobal/FreeHGlobal pairs counted.
        Assert.True(long.Parse(counts.Groups[2].Value) >= 20, stdout);
        // The handler really did the work…
        Assert.True(long.Parse(work.Groups[1].Value) > 1000, stdout);
        Assert.True(long.Parse(work.Groups[2].Value) > 1000, stdout);
        Assert.True(long.Parse(work.Groups[4].Value) > 100, stdout);
        Assert.True(long.Parse(work.Groups[5].Value) >= 2, stdout);
        // …without one malloc.
        Assert.Equal("0", counts.Groups[1].Value);
    }
}
