using System.Text.Json;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Programs;

/// <summary>
/// The statistics a process writes at exit record every way memory ran unencrypted: the
/// whole process when the engine could not start, and forked children's allocations.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public class UnencryptedReportTests
{
    private static readonly string[] Options = ["-q", "--threshold", "64K", "--budget", "16M"];

    /// <summary>An unprivileged user may not use userfaultfd (the adverse case is made here:
    /// vm.unprivileged_userfaultfd is 0 for the test). The program runs, says so on stderr
    /// while it runs, and its statistics say the whole process was unencrypted and why.</summary>
    [Fact]
    public void A_process_that_cannot_use_userfaultfd_says_so_and_its_statistics_record_it()
    {
        string program = NativeBuild.Compile("prog_alloc.c");
        string library = TibetRun.LibraryForOtherUsers; // nobody loads it
        string directory = Directory.CreateTempSubdirectory("tibet-unencrypted-").FullName;
        File.SetUnixFileMode(directory, (UnixFileMode)0x1ff); // nobody writes its statistics here
        const string sysctl = "/proc/sys/vm/unprivileged_userfaultfd";
        string before = File.ReadAllText(sysctl).Trim();
        try
        {
            if (before != "0")
                File.WriteAllText(sysctl, "0");
            string setpriv = TibetRun.Require("setpriv", "util-linux");
            var run = TibetRun.Run(setpriv, ["--reuid=65534", "--regid=65534", "--clear-groups", "env",
                "LD_PRELOAD=" + library, "TIBET_STATS_JSON=" + Path.Combine(directory, "stats-%p.json"), program]);
            Assert.True(run.ExitCode == 0, run.ToString());
            Assert.Contains("the whole process runs unencrypted", run.Stderr);

            string[] files = Directory.GetFiles(directory, "stats-*.json");
            Assert.True(files.Length == 1, $"expected one statistics file, found {files.Length}\n{run}");
            using var stats = JsonDocument.Parse(File.ReadAllText(files[0]));
            Assert.False(stats.RootElement.GetProperty("encrypted").GetBoolean());
            Assert.Equal("userfaultfdMissing", stats.RootElement.GetProperty("unencrypted").GetProperty("wholeProcess").GetString());
        }
        finally
        {
            if (before != "0")
                File.WriteAllText(sysctl, before);
            Directory.Delete(directory, recursive: true);
        }
    }

    /// <summary>Forked children count their large allocations into a page they share with
    /// the parent: the statistics hold them, and --stats prints them as unencrypted.</summary>
    [Fact]
    public void Forked_childrens_plaintext_allocations_are_in_the_statistics_and_the_summary()
    {
        string program = NativeBuild.Compile("prog_child_alloc.c");
        // With the custodian, the children's allocations are served: nothing to report.
        var served = TibetRun.Encrypted([.. Options, "--stats"], [program]);
        Assert.True(served.ExitCode == 0 && served.Stdout.Contains("child_alloc: OK"), served.ToString());
        Assert.Equal(0, served.Stats!.Value.GetProperty("unencrypted").GetProperty("forkedChild").GetProperty("count").GetInt64());
        Assert.DoesNotContain("UNENCRYPTED", served.Stderr);

        // Without it (TIBET_CUSTODIAN=0), they are plaintext, counted and said.
        var noCustodian = new Dictionary<string, string?> { ["TIBET_CUSTODIAN"] = "0" };
        var run = TibetRun.Encrypted([.. Options, "--stats"], [program], environment: noCustodian);
        Assert.True(run.ExitCode == 0 && run.Stdout.Contains("child_alloc: OK"), run.ToString());
        JsonElement children = run.Stats!.Value.GetProperty("unencrypted").GetProperty("forkedChild");
        // Two children, each with two 1 MiB mallocs and one 1 MiB mmap.
        Assert.True(children.GetProperty("count").GetInt64() >= 6, run.ToString());
        Assert.True(children.GetProperty("bytes").GetInt64() >= 6L << 20, run.ToString());
        Assert.Equal(0, children.GetProperty("refused").GetInt64());
        Assert.True(run.Stats!.Value.GetProperty("encrypted").GetBoolean());
        Assert.Contains("UNENCRYPTED", run.Stderr);
        Assert.Contains("forkedChild", run.Stderr);

        var refused = TibetRun.Encrypted([.. Options, "--require-encryption"], [program], environment: noCustodian);
        Assert.True(refused.ExitCode == 0, refused.ToString());
        JsonElement refusedChildren = refused.Stats!.Value.GetProperty("unencrypted").GetProperty("forkedChild");
        Assert.Equal(0, refusedChildren.GetProperty("count").GetInt64());
        Assert.True(refusedChildren.GetProperty("refused").GetInt64() >= 6, refused.ToString());
    }
}
