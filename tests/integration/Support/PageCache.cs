using System.Globalization;

namespace Tibet.IntegrationTests.Support;

/// <summary>How much of a file sits in the kernel's page cache, as util-linux fincore
/// reports it (fincore maps the file and asks mincore).</summary>
internal static class PageCache
{
    public static long CachedPages(string path)
    {
        string fincore = TibetRun.Require("fincore", "util-linux");
        var result = TibetRun.Run(fincore, ["--raw", "--noheadings", "--bytes", "--output", "PAGES", path]);
        if (result.ExitCode != 0)
            throw new InvalidOperationException($"fincore {path} failed: {result}");
        return long.Parse(result.Stdout.Trim(), CultureInfo.InvariantCulture);
    }
}
