using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Engine;

/// <summary>
/// Forked children are served from the parent's handler with the contents their pages
/// had at fork time (tests/integration/native/prog_fork_children.c checks every byte in
/// each child). Run under tibet-run with a budget far below the data, so that most
/// inherited pages were sealed and must be decrypted for the child.
/// </summary>
public class ForkedChildrenTests
{
    private static readonly string[] Tight = ["--threshold", "64K", "--budget", "1M"];

    /// <summary>There is no limit on children served at once (the engine's table grows):
    /// above any limit a child would read zeros or have to die.</summary>
    [Fact]
    public void Eighty_children_at_once_each_read_their_fork_time_pages()
    {
        string program = NativeBuild.Compile("prog_fork_children.c", "-pthread");
        var native = TibetRun.Native([program, "many", "80"]);
        Assert.True(native.ExitCode == 0 && native.Stdout.Contains("fork-many: OK 80"), "native control run failed: " + native);

        var encrypted = TibetRun.Encrypted(Tight, [program, "many", "80"], TimeSpan.FromMinutes(4));
        Assert.True(encrypted.ExitCode == 0, encrypted.ToString());
        Assert.Contains("fork-many: OK 80", encrypted.Stdout);
        Assert.DoesNotContain("forked children at once", encrypted.Stderr);
        // All 80 were served at the same time, and they read sealed pages, not zeros.
        Assert.True(encrypted.Stat("peakForkedChildren") >= 80, encrypted.ToString());
        Assert.True(encrypted.Stat("decrypts") > 80 * 500, encrypted.ToString());
        Assert.Equal(0, encrypted.Stat("authenticationFailures"));
    }

    /// <summary>
    /// Serving a child's fault can read more of its messages (UFFDIO_COPY answers EAGAIN
    /// until the child's own event is read). Children with several threads faulting at
    /// once, and one more thread discarding pages (REMOVE events) all the time, make that
    /// happen constantly; a message lost there leaves a thread blocked for ever (the run
    /// times out), one handled twice or served wrong shows as a wrong byte.
    /// </summary>
    [Fact]
    public void Children_whose_threads_fault_while_their_own_events_arrive_read_exact_fork_time_pages()
    {
        string program = NativeBuild.Compile("prog_fork_children.c", "-pthread");
        string[] command = [program, "stress", "6", "8", "6"];
        var native = TibetRun.Native(command);
        Assert.True(native.ExitCode == 0 && native.Stdout.Contains("fork-stress: OK"), "native control run failed: " + native);

        var encrypted = TibetRun.Encrypted(Tight, command, TimeSpan.FromMinutes(4));
        Assert.True(encrypted.ExitCode == 0, encrypted.ToString());
        Assert.Contains("fork-stress: OK 6 8 6", encrypted.Stdout);
        Assert.True(encrypted.Stat("decrypts") > 6 * 8 * 500, encrypted.ToString());
        Assert.Equal(0, encrypted.Stat("authenticationFailures"));
    }

    /// <summary>
    /// A child that reads all it inherited holds only about a budget of it in plaintext:
    /// its agent (native/agent.c) takes the oldest clean pages out again, and they go back
    /// to sealed. Measured from outside while the child waits: a scan of its present pages
    /// finds the page marker of tests/integration/native/prog_child_reads_all.c on every
    /// one of the 16384 pages without tibet, and under a 4 MiB budget (1024 pages) on at
    /// most the budget, plus the 1024 pages it wrote (those stay), plus what was resident
    /// in the parent at fork (shared with it, at most the budget), plus one take-out in
    /// flight and slack. Every word the child and the parent read is right.
    /// </summary>
    [Fact]
    public void A_child_that_reads_all_it_inherited_holds_about_a_budget_of_it_in_plaintext()
    {
        string program = NativeBuild.Compile("prog_child_reads_all.c");
        const int Pages = 64 * 256;

        var control = RunAndScanChild([program, "64"]);
        Assert.True(control.Found >= Pages, $"control: the marker must be on every page of the child without tibet ({control.Found} found)\n{control.Output}");

        string stats = Path.Combine(Path.GetTempPath(), $"tibet-child-evict-{Guid.NewGuid():N}.json");
        try
        {
            var encrypted = RunAndScanChild([TibetRun.Launcher, "-q", "--threshold", "64K", "--budget", "4M", "--stats-json", stats, "--", program, "64"]);
            using var json = JsonDocument.Parse(File.ReadAllText(stats));
            long childEvictions = json.RootElement.GetProperty("childEvictions").GetInt64();
            string context = $"{encrypted.Found} marked pages present in the child, {childEvictions} child evictions\n{encrypted.Output}";
            Assert.Contains("child: OK", encrypted.Output);
            Assert.Contains("parent: OK", encrypted.Output);
            Assert.True(childEvictions > Pages, context); // two rounds over 16384 pages
            Assert.True(encrypted.Found <= 1024 + 1024 + 1024 + 64 + 512, context);
            Assert.Equal(0, json.RootElement.GetProperty("authenticationFailures").GetInt64());
        }
        finally
        {
            File.Delete(stats);
        }
    }

    /// <summary>
    /// Writes and discards racing take-outs: a child's threads read, write and
    /// madvise(DONTNEED) the pages it inherited while the engine has its agent take the
    /// clean ones out (a 512 KiB budget against 24 MiB). The first word of each page says
    /// what it must hold (tests/integration/native/prog_child_churn.c); a lost write, a
    /// wrong byte or a discarded page that came back fails the run. The take-outs must
    /// have happened, or the test proves nothing.
    /// </summary>
    [Theory]
    [InlineData(4, 4)]
    [InlineData(8, 6)]
    public void A_child_whose_threads_write_and_discard_while_its_pages_are_taken_out_loses_nothing(int threads, int rounds)
    {
        string program = NativeBuild.Compile("prog_child_churn.c", "-pthread");
        string[] command = [program, "24", $"{threads}", $"{rounds}"];
        var native = TibetRun.Native(command);
        Assert.True(native.ExitCode == 0 && native.Stdout.Contains("churn: OK"), "native control run failed: " + native);

        var encrypted = TibetRun.Encrypted(["--threshold", "64K", "--budget", "512K"], command, TimeSpan.FromMinutes(4));
        Assert.True(encrypted.ExitCode == 0, encrypted.ToString());
        Assert.Contains("churn: OK", encrypted.Stdout);
        Assert.True(encrypted.Stat("childEvictions") > 1000, encrypted.ToString());
        Assert.Equal(0, encrypted.Stat("authenticationFailures"));
    }

    /// <summary>A child that moves and grows an inherited allocation with mremap reads its
    /// fork-time bytes at the new address, zeros in the grown part and after a discard
    /// (tests/integration/native/prog_child_mremap.c). Before the child service followed
    /// mremap, the first read at the new address faulted for ever (the run timed out).</summary>
    [Fact]
    public void A_child_that_moves_its_pages_with_mremap_reads_them_at_the_new_address()
    {
        string program = NativeBuild.Compile("prog_child_mremap.c");
        var native = TibetRun.Native([program, "8"]);
        Assert.True(native.ExitCode == 0 && native.Stdout.Contains("mremap: OK"), "native control run failed: " + native);
        var encrypted = TibetRun.Encrypted(["--threshold", "64K", "--budget", "1M"], [program, "8"], TimeSpan.FromMinutes(2));
        Assert.True(encrypted.ExitCode == 0, encrypted.ToString());
        Assert.Contains("mremap: OK", encrypted.Stdout);
        Assert.True(encrypted.Stat("decrypts") > 1000, encrypted.ToString()); // the child read sealed pages
    }

    private static readonly byte[] ChildPageMarker = Encoding.ASCII.GetBytes("tibet-child-page-7c31:");

    /// <summary>Runs the command, waits for the child's READY line, counts the page marker
    /// in the child's present pages, then lets it finish.</summary>
    private static (int Found, string Output) RunAndScanChild(string[] command)
    {
        var start = new ProcessStartInfo(command[0]) { RedirectStandardOutput = true, RedirectStandardInput = true, UseShellExecute = false };
        foreach (string a in command[1..]) start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        var output = new StringBuilder();
        try
        {
            string? line;
            while ((line = process.StandardOutput.ReadLine()) != null && !line.StartsWith("CHILD ", StringComparison.Ordinal))
                output.AppendLine(line);
            Assert.True(line != null && line.EndsWith(" READY", StringComparison.Ordinal), $"the child never said READY\n{output}");
            output.AppendLine(line);
            int pid = int.Parse(line!.Split(' ')[1]);
            int found = MemoryScanner.CountInPresentPages(pid, ChildPageMarker);
            process.StandardInput.WriteLine("go");
            process.StandardInput.Close();
            output.Append(process.StandardOutput.ReadToEnd());
            Assert.True(process.WaitForExit(120_000), $"the program did not end\n{output}");
            Assert.True(process.ExitCode == 0, $"exit {process.ExitCode}\n{output}");
            return (found, output.ToString());
        }
        finally
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
        }
    }
}
