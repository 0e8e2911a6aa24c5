using System.Diagnostics;
using System.Net.Sockets;
using System.Text.Json;
using Tibet.IntegrationTests.Identities;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Programs;

/// <summary>
/// Live statistics of a running tree: <c>tibet stats</c> on the terminal and
/// <c>tibet-run --metrics HOST:PORT</c> in the Prometheus text format, both read from
/// the socket each process under tibet answers on (tibet-stats-PID). The program here
/// (native/prog_child_reads_all.c) forks a child that reads 64 MiB it inherited under a
/// 4 MiB budget and then waits, so the figures include a forked child with evictions.
/// </summary>
public class LiveStatisticsTests
{
    [Fact]
    public void Tibet_stats_shows_a_running_program_and_its_forked_child()
    {
        using var run = WaitingTree.Start([]);
        var table = TibetCli.Run(Path.GetTempPath(), "stats", $"{run.ProgramPid}", "--interval", "0.2");
        Assert.True(table.ExitCode == 0, table.ToString());
        Assert.Contains($"{run.ProgramPid}", table.Stdout);
        Assert.Contains($"child {run.ChildPid}", table.Stdout);
        Assert.Contains("TOTAL", table.Stdout);

        // The child is done reading; its take-outs may still be catching up with its last
        // reads (on a loaded machine, for seconds): the figures are read until its clean
        // resident bytes are down to the budget, for at most 60 s. Above the budget may stay
        // what the child's last fault put in (take-outs never take those: a writer could
        // livelock), at most one run of a fault: 512 pages.
        TibetCli.Result json;
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (true)
        {
            json = TibetCli.Run(Path.GetTempPath(), "stats", $"{run.ProgramPid}", "--json", "--interval", "0.2");
            Assert.True(json.ExitCode == 0, json.ToString());
            using var reading = JsonDocument.Parse(json.Stdout);
            JsonElement rows = reading.RootElement.GetProperty("processes")[0].GetProperty("stats").GetProperty("children");
            if (rows.GetArrayLength() == 1 && rows[0].GetProperty("cleanResidentBytes").GetInt64() <= (4 << 20) + (512 << 12) || DateTime.UtcNow > deadline)
                break;
            Thread.Sleep(500);
        }
        using var document = JsonDocument.Parse(json.Stdout);
        JsonElement process = Assert.Single(document.RootElement.GetProperty("processes").EnumerateArray());
        JsonElement stats = process.GetProperty("stats");
        Assert.True(stats.GetProperty("encrypted").GetBoolean(), json.Stdout);
        Assert.True(stats.GetProperty("evictions").GetInt64() > 1000, json.Stdout); // the parent filled 64 MiB under 4 MiB
        JsonElement child = Assert.Single(stats.GetProperty("children").EnumerateArray());
        Assert.Equal(run.ChildPid, child.GetProperty("pid").GetInt32());
        Assert.True(child.GetProperty("agent").GetBoolean(), json.Stdout);
        Assert.True(child.GetProperty("evictions").GetInt64() > 16384, json.Stdout); // it read 64 MiB twice
        Assert.True(child.GetProperty("cleanResidentBytes").GetInt64() <= (4 << 20) + (512 << 12), json.Stdout);
    }

    /// <summary>
    /// A program killed by a signal runs no exit handler, so it cannot write the statistics
    /// --stats-json and --stats asked for. The custodian, which outlives it, writes the
    /// figures it last read from the program (marked endedWithoutStatistics) over a stale
    /// file of an earlier run, and prints the summary, saying what happened. A program
    /// that ends normally writes its own, which the custodian leaves alone.
    /// </summary>
    [Fact]
    public void A_program_killed_by_a_signal_leaves_its_last_statistics_and_one_that_exits_its_own()
    {
        string python = TibetRun.Require("python3", "python3");
        string statsFile = Path.Combine(Path.GetTempPath(), $"tibet-killed-{Guid.NewGuid():N}.json");
        const string Fill = "a = bytearray(96 << 20)\nfor i in range(0, len(a), 4096): a[i] = 1\n";
        TibetRun.Result Run(string end)
        {
            File.WriteAllText(statsFile, "{\"stale\": true}"); // an earlier run's
            return TibetRun.Run(TibetRun.Launcher, ["-q", "--budget", "16M", "--stats", "--stats-json", statsFile, "--", python, "-c", Fill + end]);
        }
        try
        {
            // Held for 1.5 s after the fill, so that the figures read last include it.
            var killed = Run("import os, time\ntime.sleep(1.5)\nos.kill(os.getpid(), 9)\n");
            Assert.True(killed.ExitCode == 128 + 9, killed.ToString());
            using (var document = JsonDocument.Parse(File.ReadAllText(statsFile)))
            {
                JsonElement stats = document.RootElement;
                Assert.False(stats.TryGetProperty("stale", out _), "the stale file was left in place\n" + killed);
                Assert.True(stats.GetProperty("endedWithoutStatistics").GetBoolean(), stats.ToString());
                Assert.True(stats.GetProperty("secondsBeforeEnd").GetDouble() >= 0, stats.ToString());
                Assert.True(stats.GetProperty("encrypted").GetBoolean(), stats.ToString());
                // 96 MiB written under 16 MiB: the figures are of after the fill, in which the
                // custodian, which serves it, evicted some 80 MiB (64 MiB leaves room for the
                // resident pages' count at the moment of the reading).
                Assert.True(stats.GetProperty("evictions").GetInt64() >= (64 << 20) / 4096, stats.ToString());
            }
            Assert.Contains("ended without writing its statistics (killed by a signal, ended by _exit, or became by exec a program tibet does not reach)", killed.Stderr);
            Assert.Contains("tibet-run: statistics for pid", killed.Stderr);

            var exited = Run("");
            Assert.True(exited.ExitCode == 0, exited.ToString());
            using (var document = JsonDocument.Parse(File.ReadAllText(statsFile)))
            {
                Assert.False(document.RootElement.TryGetProperty("stale", out _), exited.ToString());
                Assert.False(document.RootElement.TryGetProperty("endedWithoutStatistics", out _), "the custodian replaced the program's own statistics\n" + exited);
            }
            Assert.DoesNotContain("ended without writing its statistics", exited.Stderr);
        }
        finally
        {
            File.Delete(statsFile);
        }
    }

    /// <summary>
    /// With --stats alone there is no file of the user's to look at: the program writes its
    /// statistics to a file of the run's as well, which tells the custodian whether it
    /// printed them, and which the custodian removes. Killed, the program leaves the
    /// summary printed by the custodian; ended normally, only its own.
    /// </summary>
    [Fact]
    public void With_stats_alone_a_killed_program_still_gets_its_summary_and_no_file_is_left()
    {
        string python = TibetRun.Require("python3", "python3");
        const string Fill = "import os, sys, time\nprint(os.getpid(), flush=True)\na = bytearray(96 << 20)\nfor i in range(0, len(a), 4096): a[i] = 1\n";
        string temp = Path.GetTempPath();
        TibetRun.Result Run(string end) => TibetRun.Run(TibetRun.Launcher, ["-q", "--budget", "16M", "--stats", "--", python, "-c", Fill + end]);
        string[] Left(TibetRun.Result run) => Directory.GetFiles(temp, $"tibet-stats-{run.Stdout.Trim()}-*.json");

        var killed = Run("time.sleep(1.5)\nos.kill(os.getpid(), 9)\n");
        Assert.True(killed.ExitCode == 128 + 9, killed.ToString());
        Assert.Contains("ended without writing its statistics (killed by a signal, ended by _exit, or became by exec a program tibet does not reach); its figures from", killed.Stderr);
        Assert.Contains("(its last figures)", killed.Stderr);
        Assert.Contains("pages evicted", killed.Stderr);
        Assert.Empty(Left(killed));

        var exited = Run("");
        Assert.True(exited.ExitCode == 0, exited.ToString());
        Assert.Single(exited.Stderr.Split('\n'), line => line.StartsWith("tibet-run: statistics for", StringComparison.Ordinal));
        Assert.DoesNotContain("ended without writing its statistics", exited.Stderr);
        Assert.Empty(Left(exited));
    }

    /// <summary>
    /// The custodian's statistics variables come from tibet-run alone: ones inherited from
    /// whoever started tibet-run neither make the custodian write over a file nor remove
    /// one (the custodian may run as root), even when the program is killed.
    /// </summary>
    [Fact]
    public void Inherited_statistics_variables_of_the_custodian_touch_no_file()
    {
        string python = TibetRun.Require("python3", "python3");
        string written = Path.Combine(Path.GetTempPath(), $"tibet-victim-{Guid.NewGuid():N}.json");
        string removed = Path.Combine(Path.GetTempPath(), $"tibet-victim-{Guid.NewGuid():N}.txt");
        File.WriteAllText(written, "keep me");
        File.WriteAllText(removed, "keep me too");
        try
        {
            var run = TibetRun.Run(TibetRun.Launcher, ["-q", "--budget", "16M", "--", python, "-c", "import os, time\ntime.sleep(0.5)\nos.kill(os.getpid(), 9)\n"],
                environment: new Dictionary<string, string?>
                {
                    ["TIBET_WITNESS_STATS_JSON"] = written,
                    ["TIBET_WITNESS_STATS_PRIVATE"] = removed,
                    ["TIBET_WITNESS_STATS_SUMMARY"] = "1",
                });
            Assert.True(run.ExitCode == 128 + 9, run.ToString());
            Assert.Equal("keep me", File.ReadAllText(written));
            Assert.Equal("keep me too", File.ReadAllText(removed));
            Assert.DoesNotContain("ended without writing its statistics", run.Stderr);
        }
        finally
        {
            File.Delete(written);
            File.Delete(removed);
        }
    }

    [Fact]
    public void Tibet_stats_of_a_process_not_under_tibet_says_so()
    {
        var result = TibetCli.Run(Path.GetTempPath(), "stats", "1", "--interval", "0.1");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("pid 1 does not answer", result.Stderr);
        Assert.Contains("not running under tibet-run", result.Stderr);
    }

    [Fact]
    public async Task Metrics_are_served_in_the_Prometheus_text_format()
    {
        int port = FreePort();
        using var run = WaitingTree.Start(["--metrics", $"127.0.0.1:{port}"]);
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        string text = await http.GetStringAsync($"http://127.0.0.1:{port}/metrics");
        Assert.Contains($"tibet_up{{pid=\"{run.ProgramPid}\"}} 1", text);
        Assert.Contains($"tibet_encrypted{{pid=\"{run.ProgramPid}\"}} 1", text);
        Assert.Contains("# TYPE tibet_faults_total counter", text);
        Assert.True(Value(text, $"tibet_child_evictions_total{{pid=\"{run.ProgramPid}\"}}") > 16384, text);
        Assert.True(Value(text, $"tibet_child_faults_total{{pid=\"{run.ProgramPid}\",child=\"{run.ChildPid}\"}}") > 16384, text);
        Assert.Equal(0, Value(text, $"tibet_unencrypted_bytes{{pid=\"{run.ProgramPid}\",reason=\"forkedChild\"}}"));
    }

    [Fact]
    public void A_port_in_use_stops_tibet_run_before_the_program_starts()
    {
        using var taken = new TcpListener(System.Net.IPAddress.Loopback, 0);
        taken.Start();
        int port = ((System.Net.IPEndPoint)taken.LocalEndpoint).Port;
        string marker = Path.Combine(Path.GetTempPath(), $"tibet-metrics-{Guid.NewGuid():N}");
        var run = TibetRun.Run(TibetRun.Launcher, ["-q", "--metrics", $"127.0.0.1:{port}", "--", "touch", marker]);
        Assert.Equal(2, run.ExitCode);
        Assert.Contains($"--metrics 127.0.0.1:{port}: cannot listen there", run.Stderr);
        Assert.False(File.Exists(marker), "the program ran although tibet-run could not serve its metrics");

        var malformed = TibetRun.Run(TibetRun.Launcher, ["-q", "--metrics", "127.0.0.1", "--", "true"]);
        Assert.Equal(2, malformed.ExitCode);
        Assert.Contains("is not HOST:PORT", malformed.Stderr);
    }

    [Fact]
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public void Statistics_are_not_answered_to_another_user()
    {
        string peek = NativeBuild.Compile("stats_peek.c");
        File.SetUnixFileMode(peek, (UnixFileMode)0b111_101_101);
        string setpriv = TibetRun.Require("setpriv", "util-linux");
        using var run = WaitingTree.Start([]);
        var asRoot = TibetRun.Run(peek, [$"{run.ProgramPid}"]);
        Assert.True(asRoot.ExitCode == 0 && !asRoot.Stdout.Contains("answered 0 bytes"), asRoot.ToString());
        var asNobody = TibetRun.Run(setpriv, ["--reuid=65534", "--regid=65534", "--clear-groups", peek, $"{run.ProgramPid}"]);
        Assert.True(asNobody.ExitCode == 0, asNobody.ToString());
        Assert.Contains("answered 0 bytes", asNobody.Stdout);
    }

    private static long Value(string text, string series)
    {
        string? line = text.Split('\n').FirstOrDefault(l => l.StartsWith(series + " ", StringComparison.Ordinal));
        Assert.True(line != null, $"no series {series} in:\n{text}");
        return long.Parse(line![(series.Length + 1)..], System.Globalization.CultureInfo.InvariantCulture);
    }

    private static int FreePort()
    {
        using var probe = new TcpListener(System.Net.IPAddress.Loopback, 0);
        probe.Start();
        return ((System.Net.IPEndPoint)probe.LocalEndpoint).Port;
    }

    /// <summary>tibet-run running prog_child_reads_all, its child done reading and waiting
    /// for a line on stdin; disposing lets it finish and checks that both sides read right.</summary>
    private sealed class WaitingTree : IDisposable
    {
        private readonly Process _process;
        public int ProgramPid { get; }
        public int ChildPid { get; }

        private WaitingTree(Process process, int programPid, int childPid)
        {
            _process = process;
            ProgramPid = programPid;
            ChildPid = childPid;
        }

        public static WaitingTree Start(string[] options)
        {
            string program = NativeBuild.Compile("prog_child_reads_all.c");
            var start = new ProcessStartInfo(TibetRun.Launcher) { RedirectStandardOutput = true, RedirectStandardInput = true, UseShellExecute = false };
            foreach (string a in (string[])["-q", "--threshold", "64K", "--budget", "4M", .. options, "--", program, "64"])
                start.ArgumentList.Add(a);
            var process = Process.Start(start)!;
            string? line = process.StandardOutput.ReadLine();
            if (line == null || !line.StartsWith("CHILD ", StringComparison.Ordinal))
            {
                process.Kill(entireProcessTree: true);
                throw new InvalidOperationException($"the program did not get to its waiting child: '{line}'");
            }
            int child = int.Parse(line.Split(' ')[1]);
            int parent = int.Parse(File.ReadAllLines($"/proc/{child}/status").First(l => l.StartsWith("PPid:")).Split('\t', ' ').Last(s => s.Length > 0));
            return new WaitingTree(process, parent, child);
        }

        public void Dispose()
        {
            _process.StandardInput.WriteLine("go");
            _process.StandardInput.Close();
            string rest = _process.StandardOutput.ReadToEnd();
            if (!_process.WaitForExit(60_000))
                _process.Kill(entireProcessTree: true);
            Assert.Contains("child: OK", rest);
            Assert.Contains("parent: OK", rest);
            _process.Dispose();
        }
    }
}
