using System.Text;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Programs;

/// <summary>
/// Secure by default: with no options, tibet-run seals memory beyond a finite budget,
/// says so in one line that names the flag to change it, and an unlimited budget must be
/// asked for and is announced as what it is.
/// </summary>
public class DefaultBudgetTests
{
    private const long DefaultBudget = 64L << 20;

    [Fact]
    public void With_no_options_the_budget_is_finite_and_announced_once()
    {
        var result = TibetRun.Encrypted([], ["/bin/true"]);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal(DefaultBudget, result.Stat("residentBudgetBytes"));
        string[] lines = result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        string line = Assert.Single(lines, l => l.Contains("budget"));
        Assert.Contains("64 MiB", line);
        Assert.Contains("--budget SIZE", line);
        Assert.Contains("-q", line);
    }

    [Fact]
    public void Quiet_silences_the_line_and_an_explicit_budget_needs_none()
    {
        var quiet = TibetRun.Encrypted(["-q"], ["/bin/true"]);
        Assert.True(quiet.ExitCode == 0, quiet.ToString());
        Assert.Equal("", quiet.Stderr);
        Assert.Equal(DefaultBudget, quiet.Stat("residentBudgetBytes"));

        var chosen = TibetRun.Encrypted(["--budget", "8M"], ["/bin/true"]);
        Assert.True(chosen.ExitCode == 0, chosen.ToString());
        Assert.Equal("", chosen.Stderr);
        Assert.Equal(8L << 20, chosen.Stat("residentBudgetBytes"));
    }

    [Fact]
    public void Unlimited_must_be_asked_for_and_says_what_it_gives_up()
    {
        var result = TibetRun.Encrypted(["--budget", "unlimited"], ["/bin/true"]);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal(long.MaxValue, result.Stat("residentBudgetBytes"));
        Assert.Contains("no page is ever sealed", result.Stderr);
    }

    /// <summary>A program preloaded without tibet-run gets the same default.</summary>
    [Fact]
    public void The_interposer_alone_defaults_to_the_same_budget()
    {
        string stats = Path.Combine(Path.GetTempPath(), $"tibet-default-{Guid.NewGuid():N}.json");
        try
        {
            var result = TibetRun.Run("/usr/bin/env", ["LD_PRELOAD=" + Path.Combine(RepoPaths.Root, "out", "lib", "libtibet.so"), "TIBET_STATS_JSON=" + stats, "/bin/true"]);
            Assert.True(result.ExitCode == 0, result.ToString());
            using var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(stats));
            Assert.Equal(DefaultBudget, json.RootElement.GetProperty("residentBudgetBytes").GetInt64());
        }
        finally
        {
            File.Delete(stats);
        }
    }

    /// <summary>
    /// The promise with no options: Redis holding 256 MB of 4 KiB values keeps most of them
    /// sealed. Every value carries a marker; a scan of the server's present pages (pagemap,
    /// from outside) counts the values in plaintext: all of them natively, at most 40% under
    /// tibet-run's default budget.
    /// </summary>
    [Fact]
    public void Redis_with_no_options_keeps_most_of_256_MB_of_values_sealed()
    {
        const int values = 65536;
        byte[] marker = Encoding.ASCII.GetBytes("tibet-canary-3f9a0c:");
        string dir = Directory.CreateTempSubdirectory("tibet-redis-default-").FullName;
        try
        {
            int native = FillAndCount(null, 7471, dir, values, marker, out _);
            Assert.True(native >= values * 9 / 10, $"control: natively {native} of {values} values should be found in plaintext");

            int encrypted = FillAndCount([], 7472, dir, values, marker, out string stderr);
            Assert.True(encrypted <= values * 4 / 10,
                $"{encrypted} of {values} values are in plaintext in the server's present memory under the default budget (at most 40% allowed)\n{stderr}");
            Assert.Contains("64 MiB", stderr);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>A statically linked program cannot be preloaded: tibet-run says so before it
    /// starts, and refuses it under --require-encryption.</summary>
    [Fact]
    public void A_static_program_is_announced_as_unencrypted_and_refused_when_encryption_is_required()
    {
        string program = NativeBuild.Compile("prog_alloc.c", "-static");
        var result = TibetRun.Run(TibetRun.Launcher, ["-q", "--", program]);
        Assert.Contains("statically linked", result.Stderr);
        Assert.Contains("runs unencrypted", result.Stderr);

        var refused = TibetRun.Run(TibetRun.Launcher, ["-q", "--require-encryption", "--", program]);
        Assert.Equal(2, refused.ExitCode);
        Assert.Contains("statically linked", refused.Stderr);
        Assert.Contains("--require-encryption", refused.Stderr);
        Assert.Equal("", refused.Stdout);
    }

    private static int FillAndCount(string[]? launcherOptions, int port, string dir, int values, byte[] marker, out string stderr)
    {
        using var redis = RedisServer.Start(port, launcherOptions, dir);
        // Each value: the marker, its number, and padding to 4 KiB, made inside the server.
        string script = $"for i = 1, {values} do redis.call('SET', 'key:' .. i, '{Encoding.ASCII.GetString(marker)}' .. i .. string.rep('v', 4076)) end return 1";
        Assert.Equal("1", redis.Cli("EVAL", script, "0"));
        Assert.True(redis.Info("used_memory") > 256L << 20, "the values take less than 256 MB");
        // The first value still reads back exactly: sealed is not lost.
        Assert.StartsWith(Encoding.ASCII.GetString(marker) + "1v", redis.Cli("GET", "key:1"));
        int found = MemoryScanner.CountInPresentPages(redis.Pid, marker);
        stderr = redis.Stderr;
        return found;
    }
}
