using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Tibet.IntegrationTests.Identities;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Programs;

/// <summary>
/// A forked child's own large allocations are served by the custodian, the process
/// tibet-run starts beside the program (src/Core/Custodian, src/Interposer/native/served.c):
/// sealed beyond the budget like the program's, read back exactly, after the parent has
/// gone too, by a grandchild, and never as zeros when the custodian dies.
/// </summary>
public class CustodianTests
{
    private const int MiB = 64;
    private const int Pages = MiB * 256;
    private const int BudgetPages = 2048; // --budget 8M
    private static readonly byte[] Marker = Encoding.ASCII.GetBytes("tibet-served-canary:");

    /// <summary>The child holds 64 MiB under an 8 MiB budget. A scan from outside
    /// (pagemap) finds at most the budget's worth of its pages in plaintext; before the
    /// custodian, all of them.</summary>
    [Fact]
    public void A_forked_childs_own_allocations_are_sealed_beyond_the_budget_and_read_back_exactly()
    {
        using var run = ServedChild.Start("wait");
        int found = MemoryScanner.CountInPresentPages(run.ChildPid, Marker);
        Assert.True(found <= BudgetPages, $"{found} of {Pages} pages of the child in plaintext, above the {BudgetPages}-page budget\n{run}");
        run.Go();
        Assert.Equal($"served: 0 bad pages of {Pages}", run.Result());
        var launcher = run.WaitForLauncher();
        Assert.True(launcher.ExitCode == 0, launcher.ToString());
        // The custodian says what it served when the child ends (-v).
        string line = Assert.Single(launcher.Stderr.Split('\n'), l => l.StartsWith("tibet custodian: pid ", StringComparison.Ordinal));
        Assert.Contains($"pid {run.ChildPid} ended: 2 ranges, {MiB} MiB served", line);
        Assert.DoesNotContain("not encrypted", launcher.Stderr);
    }

    /// <summary><c>tibet stats</c> shows the custodian as a process of the tree, with a row
    /// per process it serves: its faults, resident and sealed bytes and evictions.</summary>
    [Fact]
    public void Tibet_stats_shows_the_custodian_and_the_child_it_serves()
    {
        using var run = ServedChild.Start("wait");
        int custodian = run.CustodianPid();
        var table = TibetCli.Run(Path.GetTempPath(), "stats", $"{custodian}", "--interval", "0.2");
        Assert.True(table.ExitCode == 0 && table.Stdout.Contains("(custodian)") && table.Stdout.Contains($"served {run.ChildPid}"), table.ToString());

        var json = TibetCli.Run(Path.GetTempPath(), "stats", $"{custodian}", "--json", "--interval", "0.2");
        Assert.True(json.ExitCode == 0, json.ToString());
        using var document = JsonDocument.Parse(json.Stdout);
        JsonElement stats = Assert.Single(document.RootElement.GetProperty("processes").EnumerateArray()).GetProperty("stats");
        Assert.True(stats.GetProperty("custodian").GetBoolean(), json.Stdout);
        JsonElement child = Assert.Single(stats.GetProperty("children").EnumerateArray());
        Assert.Equal(run.ChildPid, child.GetProperty("pid").GetInt32());
        Assert.True(child.GetProperty("served").GetBoolean(), json.Stdout);
        Assert.True(child.GetProperty("residentBytes").GetInt64() <= BudgetPages * 4096L, json.Stdout);
        // 64 MiB written under 8 MiB: most of it sealed.
        Assert.True(child.GetProperty("sealedBytes").GetInt64() >= (48L << 20), json.Stdout);
        Assert.True(child.GetProperty("evictions").GetInt64() >= Pages - BudgetPages, json.Stdout);
    }

    /// <summary>
    /// A served child grows a served mapping with mremap (MREMAP_MAYMOVE), shrinks it in
    /// place, and maps more: every byte reads right, and every range is served. Before,
    /// the grown part was registered with the child's userfaultfd but unknown to the
    /// custodian, and the child died of SIGBUS; and a mapping over the shrunk tail was
    /// refused (plaintext, said). Natively the same program passes.
    /// </summary>
    [Fact]
    public void A_served_child_that_remaps_its_mappings_reads_every_byte_and_stays_served()
    {
        string program = NativeBuild.Compile("prog_served_remap.c");
        using var directory = new TempDirectory();
        var native = TibetRun.Run(program, [directory.File("native.bin")], TimeSpan.FromMinutes(2));
        Assert.True(native.ExitCode == 0 && native.Stdout.Contains("remap: 0 bad bytes") && native.Stdout.Contains("file: Z Y"), native.ToString());

        var run = TibetRun.Encrypted(["-v", "--budget", "8M"], [program, directory.File("tibet.bin")], TimeSpan.FromMinutes(3));
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains("remap: 0 bad bytes", run.Stdout);
        // A file mapped over a served mapping (MAP_FIXED) is the program's again: its
        // mremap is the kernel's, and writes reach the file (before: a private copy took them).
        Assert.Contains("file: Z Y", run.Stdout);
        Assert.DoesNotContain("not encrypted", run.Stderr);
        // 16 MiB, its 64 MiB move, and the 32 MiB map (over the old tail where the kernel
        // put it there: "yes" in the output; the trim is what lets it be served).
        string line = Assert.Single(run.Stderr.Split('\n'), l => l.StartsWith("tibet custodian: pid ", StringComparison.Ordinal));
        Assert.Contains("ended: 4 ranges, 128 MiB served", line);
    }

    /// <summary>
    /// The windows the custodian shares with a process are sealed at their size: a process
    /// of the tree (compromised, say) that shrinks one gets EPERM, and the custodian, whose
    /// next access would otherwise die of SIGBUS and take every process it serves with it,
    /// goes on serving.
    /// </summary>
    [Fact]
    public void A_served_child_cannot_shrink_the_window_it_shares_with_the_custodian()
    {
        string program = NativeBuild.Compile("prog_window_shrink.c");
        var run = TibetRun.Encrypted(["-q", "--budget", "4M"], [program], TimeSpan.FromMinutes(2));
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains("shrink: refused (errno 1)", run.Stdout); // EPERM: F_SEAL_SHRINK
        Assert.Contains("window: 0 bad pages of 8192", run.Stdout);
    }

    /// <summary>A daemon's child that starts working (its first large allocation) after its
    /// parent exited, and after the custodian's linger, still finds the custodian: the
    /// child holds it (a connection it inherited from its parent). Before, such a child ran
    /// its allocations in plaintext ("the custodian could not be reached").</summary>
    [Fact]
    public void A_daemon_child_whose_first_allocation_comes_after_its_parent_is_gone_is_served()
    {
        using var run = ServedChild.Start("late");
        int found = MemoryScanner.CountInPresentPages(run.ChildPid, Marker);
        Assert.True(found <= BudgetPages, $"{found} of {Pages} pages of the child in plaintext, above the {BudgetPages}-page budget\n{run}");
        run.Go();
        Assert.Equal($"served: 0 bad pages of {Pages}", run.Result());
        var launcher = run.WaitForLauncher();
        Assert.DoesNotContain("not encrypted", launcher.Stderr);
    }

    /// <summary>A daemon's first parent exits at once; its child's pages do not depend on
    /// it: they are the custodian's. Before, such a child read zeros where pages had been
    /// evicted, or its allocations ran in plaintext.</summary>
    [Fact]
    public void A_child_whose_parent_exited_reads_exactly_what_it_wrote()
    {
        using var run = ServedChild.Start("parent-exits");
        // The launcher ends with the parent; the child still holds its output streams.
        Assert.Equal(0, run.WaitForLauncherExitCode());
        int found = MemoryScanner.CountInPresentPages(run.ChildPid, Marker);
        Assert.True(found <= BudgetPages, $"{found} of {Pages} pages in plaintext in the orphaned child\n{run}");
        run.Go();
        Assert.Equal($"served: 0 bad pages of {Pages}", run.Result());
    }

    /// <summary>The served child's own fork: the grandchild's copies of the child's
    /// allocations reach the custodian through the fork event and are served from the
    /// child's books, sealed pages included.</summary>
    [Fact]
    public void A_grandchild_reads_its_fork_time_copy_of_a_served_childs_allocations()
    {
        using var run = ServedChild.Start("grandchild");
        run.Go();
        Assert.Equal($"served: 0 bad pages of {Pages}", run.Result());
        Assert.Equal(0, run.WaitForLauncher().ExitCode);
    }

    /// <summary>
    /// If the custodian is killed, nothing serves the child's sealed pages any more. The
    /// child's own thread keeps its userfaultfd, so the ranges stay registered, and answers
    /// each fault with UFFDIO_POISON: what the user sees is the child killed by SIGBUS on
    /// its first read of a sealed page (its parent reports signal 7), never zeros and
    /// never a process that hangs.
    /// </summary>
    [Fact]
    public void When_the_custodian_is_killed_a_served_child_gets_SIGBUS_not_zeros()
    {
        using var run = ServedChild.Start("wait");
        int custodian = run.CustodianPid();
        Process.GetProcessById(custodian).Kill();
        for (int i = 0; i < 100 && Directory.Exists($"/proc/{custodian}/task"); i++)
            Thread.Sleep(50);
        run.Go();
        var launcher = run.WaitForLauncher();
        Assert.True(launcher.Stdout.Contains("child killed by signal 7"), launcher.ToString());
        Assert.Equal(128 + 7, launcher.ExitCode);
        Assert.False(File.Exists(run.ResultPath), "the child wrote a result: it read its pages without the custodian");
    }

    /// <summary>
    /// closerange: a child that closes every descriptor (daemons and workers do) ends its
    /// connections to the custodian, and is still served: before, the custodian let its
    /// userfaultfd go and the child read 14351 of 16384 pages as zeros.
    /// daemonize: a child that forks and exits at once leaves a grandchild whose inherited
    /// pages its engine served: they are put into the grandchild first (said in one line),
    /// and it reads every byte right (before: 14351 pages of zeros).
    /// </summary>
    [Theory]
    [InlineData("closerange")]
    [InlineData("daemonize")]
    public void A_served_child_that_closes_its_descriptors_or_daemonizes_loses_nothing(string what)
    {
        string program = NativeBuild.Compile("prog_served_edges.c");
        string result = Path.Combine(Path.GetTempPath(), $"tibet-edges-{Guid.NewGuid():N}");
        try
        {
            var run = TibetRun.Encrypted(["-q", "--budget", "8M"], [program, what, result], TimeSpan.FromMinutes(2));
            Assert.True(run.ExitCode == 0, run.ToString());
            for (int i = 0; i < 600 && !File.Exists(result); i++)
                Thread.Sleep(100);
            Assert.True(File.Exists(result), $"no result\n{run}");
            Assert.Equal($"edges: 0 bad pages of {Pages}", File.ReadAllText(result).Trim());
            if (what == "daemonize")
                Assert.Contains("forked children of it still use memory it served", run.Stderr);
        }
        finally
        {
            File.Delete(result);
        }
    }

    /// <summary>prog_served_child under tibet-run in the background.</summary>
    private sealed class ServedChild : IDisposable
    {
        private readonly string _dir;
        private readonly Process _launcher;
        private readonly Task<string> _stdout, _stderr;

        private ServedChild(string dir, Process launcher)
        {
            _dir = dir;
            _launcher = launcher;
            _stdout = launcher.StandardOutput.ReadToEndAsync();
            _stderr = launcher.StandardError.ReadToEndAsync();
        }

        public int ChildPid { get; private set; }

        public string ResultPath => Path.Combine(_dir, "result");

        public static ServedChild Start(string mode)
        {
            string program = NativeBuild.Compile("prog_served_child.c");
            string dir = Directory.CreateTempSubdirectory("tibet-served-").FullName;
            var start = new ProcessStartInfo(TibetRun.Launcher) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (string a in (string[])["-q", "-v", "--budget", "8M", "--", program, mode, $"{MiB}", dir])
                start.ArgumentList.Add(a);
            var run = new ServedChild(dir, Process.Start(start)!);
            if (mode == "late")
            {
                // The parent has exited; a custodian that stayed only for the program and
                // for processes it serves would be gone a linger later.
                if (run.WaitForLauncherExitCode() != 0)
                    throw new InvalidOperationException($"the parent failed\n{run}");
                Thread.Sleep(3 * Tibet.Core.Custodian.CustodianService.Linger);
                File.WriteAllText(Path.Combine(dir, "allocate"), "allocate\n");
            }
            run.ChildPid = int.Parse(run.WaitFor("child.pid").Trim());
            run.WaitFor("ready");
            return run;
        }

        public void Go() => File.WriteAllText(Path.Combine(_dir, "go"), "go\n");

        public string Result() => WaitFor("result").Trim();

        /// <summary>The custodian (tibet-run became the program: its pid is the launcher's).</summary>
        public int CustodianPid() => CustodianFinder.PidServing(_launcher.Id);

        /// <summary>Waits for tibet-run to exit, not for its output streams to end.</summary>
        public int WaitForLauncherExitCode()
        {
            if (!_launcher.WaitForExit(TimeSpan.FromMinutes(3)))
                throw new TimeoutException($"tibet-run did not end\n{this}");
            return _launcher.ExitCode;
        }

        public TibetRun.Result WaitForLauncher()
        {
            if (!_launcher.WaitForExit(TimeSpan.FromMinutes(3)))
                throw new TimeoutException($"tibet-run did not end\n{this}");
            _launcher.WaitForExit();
            return new TibetRun.Result(_launcher.ExitCode, _stdout.Result, _stderr.Result, null);
        }

        private string WaitFor(string name)
        {
            string path = Path.Combine(_dir, name);
            for (int i = 0; i < 1200 && !File.Exists(path); i++)
            {
                if (_launcher.HasExited && _launcher.ExitCode != 0)
                    break;
                Thread.Sleep(50);
            }
            return File.Exists(path) ? File.ReadAllText(path) : throw new TimeoutException($"prog_served_child wrote no {name}\n{this}");
        }

        public override string ToString() =>
            (_launcher.HasExited ? $"tibet-run exited {_launcher.ExitCode}" : "tibet-run is still running")
            + (_stdout.IsCompleted ? $"\nstdout: {_stdout.Result}" : "") + (_stderr.IsCompleted ? $"\nstderr: {_stderr.Result}" : "");

        public void Dispose()
        {
            Go(); // a child still waiting ends
            if (!_launcher.WaitForExit(TimeSpan.FromSeconds(30)))
                _launcher.Kill(entireProcessTree: true);
            if (ChildPid > 0 && Directory.Exists($"/proc/{ChildPid}/task"))
            {
                try { Process.GetProcessById(ChildPid).Kill(); } catch (ArgumentException) { } catch (InvalidOperationException) { }
            }
            _launcher.Dispose();
            Directory.Delete(_dir, recursive: true);
        }
    }
}
