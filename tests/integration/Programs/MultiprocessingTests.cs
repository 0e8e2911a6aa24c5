using System.Text.RegularExpressions;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Programs;

/// <summary>
/// Python's multiprocessing with the fork start method (the default on Linux before 3.14):
/// the pool's workers are forked children, and each allocates 200 MiB (a bytearray, a
/// malloc above the threshold). Under tibet-run the custodian serves them: the hashes
/// are the native ones, and each worker's pages beyond the budget were sealed.
/// </summary>
public partial class MultiprocessingTests
{
    private const string Script = """
        import hashlib, multiprocessing as mp
        def work(seed):
            n = 200 << 20
            b = bytearray(n)
            pattern = hashlib.sha256(str(seed).encode()).digest() * 2048
            for off in range(0, n, len(pattern)):
                b[off:off + len(pattern)] = pattern
            for i in range(0, n, 4096 * 97):
                b[i] = (i // 4096 + seed) & 0xff
            return seed, hashlib.sha256(b).hexdigest()
        if __name__ == "__main__":
            with mp.get_context("fork").Pool(2) as pool:
                for seed, digest in sorted(pool.map(work, range(4))):
                    print(seed, digest)
        """;

    [Fact]
    public void A_pool_of_fork_workers_allocating_200_MiB_each_gives_the_native_hashes_with_its_memory_sealed()
    {
        string python = TibetRun.Require("python3", "python3");
        var native = TibetRun.Native([python, "-c", Script], TimeSpan.FromMinutes(3));
        Assert.True(native.ExitCode == 0 && native.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length == 4, native.ToString());

        var run = TibetRun.Encrypted(["-q", "-v", "--budget", "16M"], [python, "-c", Script], TimeSpan.FromMinutes(5));
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal(native.Stdout, run.Stdout);
        Assert.DoesNotContain("not encrypted", run.Stderr);
        // Each worker's 200 MiB blocks were the custodian's, sealed beyond the 16 MiB budget.
        var workers = ServedLine().Matches(run.Stderr).Select(m => (MiB: long.Parse(m.Groups[1].Value), Evictions: long.Parse(m.Groups[2].Value), PeakKiB: long.Parse(m.Groups[3].Value))).ToList();
        Assert.True(workers.Count(w => w.MiB >= 200 && w.Evictions > 40_000) >= 2, run.ToString());
        Assert.All(workers, w => Assert.True(w.PeakKiB <= 16 * 1024, run.ToString()));
    }

    [GeneratedRegex(@"tibet custodian: pid \d+ ended: \d+ ranges, (\d+) MiB served; \d+ faults, (\d+) evictions \(\d+ clean\), peak resident (\d+) KiB")]
    private static partial Regex ServedLine();
}
