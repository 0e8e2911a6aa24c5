using System.Diagnostics;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Programs;

/// <summary>
/// Debian's Redis under tibet-run with a resident budget smaller than its data: the
/// data set survives heavy eviction, a BGSAVE child (a fork) writes a valid dump with
/// the same contents, and FLUSHALL gives the memory back.
/// </summary>
public class RedisTests
{
    [Fact]
    public void Redis_keeps_its_data_through_eviction_and_BGSAVE_and_gives_memory_back()
    {
        string server = TibetRun.Require("redis-server", "redis-server");
        string cli = TibetRun.Require("redis-cli", "redis-tools");
        string benchmark = TibetRun.Require("redis-benchmark", "redis-tools");
        string checkRdb = TibetRun.Require("redis-check-rdb", "redis-tools");
        string dir = Directory.CreateTempSubdirectory("tibet-redis-").FullName;
        const int port = 7461, plainPort = 7462;
        Process? redis = null;
        try
        {
            redis = Process.Start(new ProcessStartInfo(TibetRun.Launcher)
            {
                ArgumentList = { "--budget", "48M", "--", server, "--port", $"{port}", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                 "--enable-debug-command", "local", "--dir", dir },
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            })!;
            WaitForPing(cli, port);

            // ~150 MB of 4 KiB values: three times the budget.
            var fill = TibetRun.Run(benchmark, ["-h", "127.0.0.1", "-p", $"{port}", "-t", "set", "-n", "40000", "-r", "40000", "-d", "4096", "-q"], TimeSpan.FromMinutes(3));
            Assert.True(fill.ExitCode == 0, fill.ToString());
            long usedMemory = Info(cli, port, "used_memory");
            Assert.True(usedMemory > 100L << 20, $"only {usedMemory} bytes stored");

            string digest = Cli(cli, port, "DEBUG", "DIGEST");
            // Reading every value again faults the evicted pages back in.
            Assert.Equal(digest, Cli(cli, port, "DEBUG", "DIGEST"));

            Assert.Contains("Background saving started", Cli(cli, port, "BGSAVE"));
            var deadline = DateTime.UtcNow.AddMinutes(2);
            while (Info(cli, port, "rdb_bgsave_in_progress") != 0 && DateTime.UtcNow < deadline)
                Thread.Sleep(200);
            Assert.Equal("ok", InfoText(cli, port, "rdb_last_bgsave_status"));
            var check = TibetRun.Run(checkRdb, [Path.Combine(dir, "dump.rdb")]);
            Assert.True(check.ExitCode == 0 && check.Stdout.Contains("RDB looks OK"), check.ToString());
            Assert.Equal(digest, Cli(cli, port, "DEBUG", "DIGEST"));

            // The dump, loaded by a plain Redis, holds the same data.
            using (var plain = Process.Start(new ProcessStartInfo(server)
                   {
                       ArgumentList = { "--port", $"{plainPort}", "--bind", "127.0.0.1", "--dir", dir, "--dbfilename", "dump.rdb", "--save", "",
                                        "--appendonly", "no", "--enable-debug-command", "local" },
                       RedirectStandardOutput = true,
                   })!)
            {
                try
                {
                    WaitForPing(cli, plainPort);
                    Assert.Equal(digest, Cli(cli, plainPort, "DEBUG", "DIGEST"));
                }
                finally
                {
                    TibetRun.Run(cli, ["-p", $"{plainPort}", "SHUTDOWN", "NOSAVE"]);
                    plain.WaitForExit(10_000);
                }
            }

            int serverPid = ServerPid(redis.Id);
            long rssBefore = Rss(serverPid);
            Assert.Equal("OK", Cli(cli, port, "FLUSHALL"));
            Cli(cli, port, "MEMORY", "PURGE");
            Assert.True(Info(cli, port, "used_memory") < 10L << 20, "used_memory did not drop");
            // Giving back is what is tested, not how fast: on a loaded machine the purge and
            // the handler's events take longer, so RSS is watched for up to 20 s.
            long rssAfter = Rss(serverPid);
            for (int i = 0; i < 100 && rssAfter >= rssBefore / 2; i++)
            {
                Thread.Sleep(200);
                if (i % 10 == 9)
                    Cli(cli, port, "MEMORY", "PURGE");
                rssAfter = Rss(serverPid);
            }
            Assert.True(rssAfter < rssBefore / 2,
                $"RSS went from {rssBefore >> 20} MiB to {rssAfter >> 20} MiB\n{LargestMappings(serverPid)}\n{Cli(cli, port, "INFO", "memory")}");
        }
        finally
        {
            TibetRun.Run(cli, ["-p", $"{port}", "SHUTDOWN", "NOSAVE"]);
            if (redis != null && !redis.WaitForExit(20_000)) redis.Kill(entireProcessTree: true);
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>The server's mappings with the most resident memory, for a failure message.</summary>
    private static string LargestMappings(int pid)
    {
        var rows = new List<(long Rss, string Mapping)>();
        string mapping = "";
        foreach (string line in File.ReadLines($"/proc/{pid}/smaps"))
        {
            if (line.Length > 0 && char.IsAsciiHexDigit(line[0]) && line.Contains('-'))
                mapping = line;
            else if (line.StartsWith("Rss:"))
                rows.Add((long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]), mapping));
        }
        return "largest mappings by Rss (KiB):\n" + string.Join('\n', rows.OrderByDescending(r => r.Rss).Take(8).Select(r => $"{r.Rss,8} {r.Mapping}"));
    }

    private static string Cli(string cli, int port, params string[] command)
    {
        var result = TibetRun.Run(cli, ["-h", "127.0.0.1", "-p", $"{port}", .. command], TimeSpan.FromMinutes(2));
        Assert.True(result.ExitCode == 0, result.ToString());
        return result.Stdout.Trim();
    }

    private static string InfoText(string cli, int port, string field) =>
        Cli(cli, port, "INFO").Split('\n').Select(l => l.Trim()).First(l => l.StartsWith(field + ":"))[(field.Length + 1)..];

    private static long Info(string cli, int port, string field) => long.Parse(InfoText(cli, port, field));

    private static void WaitForPing(string cli, int port)
    {
        for (int i = 0; i < 100; i++)
        {
            if (TibetRun.Run(cli, ["-h", "127.0.0.1", "-p", $"{port}", "PING"]).Stdout.Contains("PONG")) return;
            Thread.Sleep(100);
        }
        throw new TimeoutException($"redis on port {port} did not answer PING");
    }

    /// <summary>tibet-run executes the program: the server has the launcher's pid.</summary>
    private static int ServerPid(int launcherPid) =>
        File.ReadAllText($"/proc/{launcherPid}/comm").StartsWith("redis-server", StringComparison.Ordinal) ? launcherPid
            : throw new InvalidOperationException($"pid {launcherPid}, started as tibet-run, is not redis-server");

    private static long Rss(int pid) =>
        long.Parse(File.ReadAllLines($"/proc/{pid}/status").First(l => l.StartsWith("VmRSS:")).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
}
