using System.Diagnostics;
using System.Text;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Programs;

/// <summary>
/// Programs that fork while other threads allocate, and forked children that allocate.
/// </summary>
/// <remarks>
/// Redis hung on fork under tibet: a thread inside jemalloc, holding a jemalloc mutex,
/// called tibet's mmap hook; the runtime attached the thread (pthread_getattr_np reallocs)
/// and that realloc went back into jemalloc, onto the mutex its own thread held; the main
/// thread's fork() then waited in jemalloc's prefork handler for the same mutex. tibet now
/// allocates only from its own heap. The stress program makes that interleaving as often as
/// it can: every allocating thread is new, so its first call into tibet attaches it.
/// </remarks>
public class ForkSafetyTests
{
    private const string Jemalloc = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";
    private const int Forks = 10_000;
    private static readonly string[] Options = ["--threshold", "64K", "--budget", "16M"];

    /// <remarks>A hang is the failure this test looks for, so it has a timeout far above any
    /// machine's run time, and on timeout its message carries every thread's stack.</remarks>
    private static readonly TimeSpan HangTimeout = TimeSpan.FromMinutes(40);

    [Fact]
    public void Forking_in_a_loop_while_new_threads_allocate_never_hangs_under_jemalloc()
    {
        if (!File.Exists(Jemalloc))
            throw new InvalidOperationException($"{Jemalloc} is missing: install the Debian package 'libjemalloc2' (Redis links it).");
        // tibet-run puts libtibet.so first in LD_PRELOAD, before jemalloc: Redis's order.
        RunStress(new Dictionary<string, string?> { ["LD_PRELOAD"] = Jemalloc });
    }

    [Fact]
    public void Forking_in_a_loop_while_new_threads_allocate_never_hangs_under_glibc_malloc() =>
        RunStress(new Dictionary<string, string?> { ["LD_PRELOAD"] = null });

    /// <summary>Without the custodian (TIBET_CUSTODIAN=0), nothing serves a forked child's
    /// own large allocations.</summary>
    private static readonly Dictionary<string, string?> NoCustodian = new() { ["TIBET_CUSTODIAN"] = "0" };

    /// <summary>With the custodian, a forked child's large allocations are served: no
    /// line, and no ENOMEM even under --require-encryption.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_forked_childs_large_allocations_are_served_by_the_custodian(bool requireEncryption)
    {
        string program = NativeBuild.Compile("prog_child_alloc.c");
        var run = TibetRun.Encrypted(requireEncryption ? ["--require-encryption", "-v", .. Options] : ["-v", .. Options], [program]);
        Assert.True(run.ExitCode == 0 && run.Stdout.Contains("child_alloc: OK"), run.ToString());
        for (int child = 1; child <= 2; child++)
        {
            Assert.Equal(2, Count(run.Stdout, $"child {child}: malloc served"));
            Assert.Contains($"child {child}: mmap served", run.Stdout);
        }
        Assert.DoesNotContain("a forked child of pid", run.Stderr);
        // Each child's allocations were the custodian's: two ranges, since the second
        // malloc takes back the block the first freed (still registered, its contents
        // discarded), and the mmap is a range of its own.
        string[] served = run.Stderr.Split('\n').Where(l => l.StartsWith("tibet custodian: pid ", StringComparison.Ordinal)).ToArray();
        Assert.True(served.Length == 2 && served.All(l => l.Contains(" ended: 2 ranges")), run.ToString());
    }

    /// <summary>A child made by a raw fork system call copies its parent's connection to the
    /// custodian without tibet knowing: it must not use it (it would register its memory
    /// on its parent's userfaultfd). Its large allocations run in plaintext, said once; the
    /// served child it was forked from goes on unharmed.</summary>
    [Fact]
    public void A_child_of_a_raw_fork_uses_nothing_of_its_parents_connection_and_says_so()
    {
        string program = NativeBuild.Compile("prog_raw_fork.c");
        var run = TibetRun.Encrypted(["-v", .. Options], [program]);
        Assert.True(run.ExitCode == 0 && run.Stdout.Contains("raw_fork: OK"), run.ToString());
        string line = Assert.Single(run.Stderr.Split('\n'), l => l.Contains("a forked child of pid"));
        Assert.Contains("forked by a raw system call", line);
        // The served child's two blocks were the custodian's.
        Assert.Contains(" ended: 2 ranges", run.Stderr);
    }

    [Fact]
    public void Without_the_custodian_a_forked_child_that_allocates_is_announced_once_on_the_original_stderr()
    {
        string program = NativeBuild.Compile("prog_child_alloc.c");
        var run = TibetRun.Encrypted(Options, [program], environment: NoCustodian);
        Assert.True(run.ExitCode == 0 && run.Stdout.Contains("child_alloc: OK"), run.ToString());
        for (int child = 1; child <= 2; child++)
        {
            Assert.Equal(2, Count(run.Stdout, $"child {child}: malloc served"));
            Assert.Contains($"child {child}: mmap served", run.Stdout);
        }
        // Each child pointed its stderr at /dev/null first: these lines came through tibet's
        // own duplicate of the original stderr. One line per child, not per allocation.
        string[] lines = run.Stderr.Split('\n').Where(l => l.Contains("a forked child of pid")).ToArray();
        Assert.True(lines.Length == 2, run.ToString());
        Assert.All(lines, l => Assert.Contains("bytes that are not encrypted (this tree has no custodian", l));
        Assert.NotEqual(lines[0].Split(',')[0], lines[1].Split(',')[0]); // two different pids
    }

    [Fact]
    public void Without_the_custodian_under_require_encryption_a_forked_childs_large_allocation_fails_with_ENOMEM()
    {
        string program = NativeBuild.Compile("prog_child_alloc.c");
        var run = TibetRun.Encrypted(["--require-encryption", .. Options], [program], environment: NoCustodian);
        Assert.True(run.ExitCode == 0 && run.Stdout.Contains("child_alloc: OK"), run.ToString());
        for (int child = 1; child <= 2; child++)
        {
            Assert.Equal(2, Count(run.Stdout, $"child {child}: malloc ENOMEM"));
            Assert.Contains($"child {child}: mmap ENOMEM", run.Stdout);
        }
        string[] lines = run.Stderr.Split('\n').Where(l => l.Contains("a forked child of pid")).ToArray();
        Assert.True(lines.Length == 2, run.ToString());
        Assert.All(lines, l => Assert.Contains("was refused 1048576 bytes (ENOMEM)", l));
    }

    private static int Count(string text, string what)
    {
        int n = 0;
        for (int at = text.IndexOf(what, StringComparison.Ordinal); at >= 0; at = text.IndexOf(what, at + what.Length, StringComparison.Ordinal))
            n++;
        return n;
    }

    private static void RunStress(IDictionary<string, string?> environment)
    {
        string program = NativeBuild.Compile("prog_fork_stress.c", "-pthread");
        var start = new ProcessStartInfo(TibetRun.Launcher)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string a in (string[])[.. Options, "--", program, $"{Forks}"])
            start.ArgumentList.Add(a);
        foreach (var (name, value) in environment)
        {
            if (value == null) start.Environment.Remove(name);
            else start.Environment[name] = value;
        }
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(HangTimeout))
        {
            string stacks = DumpStacks(process.Id);
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            Assert.Fail($"prog_fork_stress did not finish {Forks} forks in {HangTimeout.TotalMinutes} minutes: a hang. " +
                        $"stdout: {stdout.Result}\nstderr: {stderr.Result}\nstacks:\n{stacks}");
        }
        process.WaitForExit();
        Assert.True(process.ExitCode == 0 && stdout.Result.Contains($"fork_stress: OK {Forks} forks"),
            $"exit {process.ExitCode}\nstdout: {stdout.Result}\nstderr: {stderr.Result}");
    }

    /// <summary>Every thread's stack in the process tree under <paramref name="root"/>: the
    /// user stacks from gdb, and the kernel's view (state, wait channel, kernel stack).</summary>
    private static string DumpStacks(int root)
    {
        var parents = new Dictionary<int, int>();
        foreach (string dir in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid)) continue;
            try
            {
                string stat = File.ReadAllText(Path.Combine(dir, "stat"));
                string[] fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                parents[pid] = int.Parse(fields[1]);
            }
            catch (IOException) { } // gone meanwhile
        }
        var tree = new List<int> { root };
        for (int i = 0; i < tree.Count; i++)
            tree.AddRange(parents.Where(p => p.Value == tree[i]).Select(p => p.Key));

        var report = new StringBuilder();
        foreach (int pid in tree)
        {
            report.AppendLine($"=== pid {pid}");
            try
            {
                foreach (string task in Directory.GetDirectories($"/proc/{pid}/task"))
                {
                    string Read(string name) { try { return File.ReadAllText(Path.Combine(task, name)).Trim(); } catch (IOException) { return "?"; } }
                    report.AppendLine($"--- task {Path.GetFileName(task)} '{Read("comm")}' wchan {Read("wchan")}\n{Read("stack")}");
                }
            }
            catch (IOException) { continue; }
            try
            {
                var (_, gdbOut, gdbErr) = NativeBuild.Run("gdb", ["-p", $"{pid}", "-batch", "-ex", "thread apply all bt 40"]);
                report.AppendLine(gdbOut).AppendLine(gdbErr);
            }
            catch (InvalidOperationException e)
            {
                report.AppendLine($"(no gdb: {e.Message})");
            }
        }
        return report.ToString();
    }
}
