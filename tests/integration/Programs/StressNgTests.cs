using System.Text.RegularExpressions;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Programs;

/// <summary>
/// Debian's stress-ng forks its workers (the issue measured 1 fault in all before the
/// custodian: the workers ran unencrypted). Each stressor verifies what it wrote; under
/// tibet-run the workers' large allocations are served by the custodian, which says per
/// worker what it served when the worker ends (-v).
/// </summary>
public partial class StressNgTests
{
    [Theory]
    [InlineData("--vm", "--vm-bytes", "96M", true)]
    [InlineData("--mmap", "--mmap-bytes", "64M", true)]
    [InlineData("--malloc", "--malloc-bytes", "64M", false)]
    public void A_stressors_forked_workers_verify_their_memory_and_are_served_by_the_custodian(string stressor, string bytesOption, string bytes, bool evictsBeyondTheBudget)
    {
        string stressNg = TibetRun.Require("stress-ng", "stress-ng");
        string[] arguments = [stressor, "2", bytesOption, bytes, "--verify", "-t", "5", "--metrics-brief"];
        if (stressor == "--malloc")
            arguments = [.. arguments, "--malloc-thresh", "1M", "--malloc-max", "64"];
        var run = TibetRun.Encrypted(["-q", "-v", "--budget", "16M"], [stressNg, .. arguments], TimeSpan.FromMinutes(3));
        Assert.True(run.ExitCode == 0 && run.Stderr.Contains("successful run completed"), run.ToString());
        Assert.DoesNotContain("not encrypted", run.Stderr);

        var served = ServedLine().Matches(run.Stderr).Select(m => (Ranges: long.Parse(m.Groups[1].Value), Faults: long.Parse(m.Groups[2].Value), Evictions: long.Parse(m.Groups[3].Value))).ToList();
        // The two workers at least (stress-ng's per-stressor parent may allocate too).
        Assert.True(served.Count >= 2, run.ToString());
        Assert.True(served.Count(s => s.Ranges > 0 && s.Faults > 0) >= 2, run.ToString());
        if (evictsBeyondTheBudget)
            Assert.True(served.Count(s => s.Evictions > 0) >= 2, $"workers writing more than the budget must have pages sealed\n{run}");
    }

    [GeneratedRegex(@"tibet custodian: pid \d+ ended: (\d+) ranges, \d+ MiB served; (\d+) faults, (\d+) evictions")]
    private static partial Regex ServedLine();
}
