using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Programs;

/// <summary>
/// PostgreSQL 15 under tibet-run: initdb, the server (as the postgres user: it refuses to
/// run as root), pgbench, then a sort and a hash join whose memory (work_mem) the
/// backends allocate with malloc. The backends are the postmaster's forked children: the
/// custodian serves their large allocations. Before the custodian the whole server ran
/// unencrypted ("the program ran unencrypted": userfaultfd was not permitted to the
/// postgres user); now tibet-run --user hands it a /dev/userfaultfd descriptor, and the
/// custodian enables the fork events the postgres user may not.
/// shared_buffers is shared memory (MAP_SHARED), which tibet does not redirect: README.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public partial class PostgresTests
{
    private const string Bin = "/usr/lib/postgresql/15/bin";
    private const int SortRows = 300_000;

    [Fact]
    public void Pgbench_passes_and_the_backends_sorts_and_hash_joins_are_served_by_the_custodian()
    {
        if (!File.Exists(Path.Combine(Bin, "postgres")) || !File.Exists(Path.Combine(Bin, "pgbench")))
            throw new InvalidOperationException($"PostgreSQL 15 is not installed in {Bin}: install the Debian packages 'postgresql' and 'postgresql-contrib' (scripts/install-deps.sh does).");
        string psql = TibetRun.Require("psql", "postgresql-client");
        string library = TibetRun.LibraryForOtherUsers;
        string dir = Directory.CreateTempSubdirectory("tibet-pg-").FullName;
        string data = Path.Combine(dir, "data");
        string serverLog = Path.Combine(dir, "server.log");
        const int port = 5471;
        Process? launcher = null;
        try
        {
            Chown(dir, "postgres");
            var initdb = TibetRun.Run(TibetRun.Launcher, ["-q", "--library", library, "--user", "postgres", "--",
                Path.Combine(Bin, "initdb"), "-D", data, "-A", "trust", "-U", "postgres", "--locale=C", "-E", "UTF8"], TimeSpan.FromMinutes(3));
            Assert.True(initdb.ExitCode == 0, initdb.ToString());
            Assert.DoesNotContain("unencrypted", initdb.Stderr);

            var start = new ProcessStartInfo("/bin/sh") { UseShellExecute = false };
            foreach (string a in (string[])["-c", "exec \"$@\" 2>\"$0\" >&2", serverLog, TibetRun.Launcher, "-q", "-v", "--budget", "8M", "--library", library,
                         "--user", "postgres", "--", Path.Combine(Bin, "postgres"), "-D", data, "-p", $"{port}", "-k", dir, "-c", "listen_addresses="])
                start.ArgumentList.Add(a);
            launcher = Process.Start(start)!;
            string[] connect = ["-h", dir, "-p", $"{port}", "-U", "postgres"];
            WaitForServer(psql, connect, serverLog);

            var init = TibetRun.Run(Path.Combine(Bin, "pgbench"), [.. connect, "-i", "-s", "5", "postgres"], TimeSpan.FromMinutes(3));
            Assert.True(init.ExitCode == 0, $"{init}\n{File.ReadAllText(serverLog)}");
            var bench = TibetRun.Run(Path.Combine(Bin, "pgbench"), [.. connect, "-c", "4", "-T", "5", "postgres"], TimeSpan.FromMinutes(3));
            Assert.True(bench.ExitCode == 0 && bench.Stdout.Contains("number of failed transactions: 0"), $"{bench}\n{File.ReadAllText(serverLog)}");

            // A sort in memory (work_mem) of 300000 md5 strings: the same digest as computed here.
            var sort = Query(psql, connect, launcher, serverLog,
                $"set work_mem='64MB'; select count(*), md5(string_agg(m, '' order by m)) from (select md5(g::text) m from generate_series(1, {SortRows}) g order by 1) s;");
            Assert.True(sort.ExitCode == 0, sort.ToString());
            Assert.Equal($"{SortRows}|{ExpectedSortDigest()}", sort.Stdout.Trim().Split('\n')[^1]);
            var join = Query(psql, connect, launcher, serverLog,
                "set work_mem='64MB'; select count(*), sum(a.g) from generate_series(1, 500000) a(g) join generate_series(1, 500000) b(g) using (g);");
            Assert.True(join.ExitCode == 0, join.ToString());
            Assert.Equal("500000|125000250000", join.Stdout.Trim().Split('\n')[^1]);

            // A fast shutdown; the custodian then says what it served per backend (-v).
            int postmaster = int.Parse(File.ReadAllLines(Path.Combine(data, "postmaster.pid"))[0]);
            Assert.Equal(0, Tibet.Core.Interop.Libc.kill(postmaster, 2)); // SIGINT: PostgreSQL's fast shutdown
        }
        finally
        {
            if (launcher != null)
            {
                if (!launcher.WaitForExit(TimeSpan.FromSeconds(60)))
                {
                    launcher.Kill(entireProcessTree: true);
                    launcher.WaitForExit();
                }
                launcher.Dispose();
            }
        }
        try
        {
            string log = File.ReadAllText(serverLog);
            Assert.DoesNotContain("unencrypted", log);
            Assert.Contains("encrypted RAM on for pid", log); // the postmaster's own engine started
            var served = ServedLine().Matches(log).Select(m => (Ranges: long.Parse(m.Groups[1].Value), Faults: long.Parse(m.Groups[2].Value), Evictions: long.Parse(m.Groups[3].Value))).ToList();
            Assert.True(served.Count(s => s.Ranges > 0 && s.Faults > 0) >= 2, log);
            // The backend that sorted 300000 strings in 64 MB of work_mem, under an 8 MiB budget.
            Assert.True(served.Any(s => s.Evictions > 1000), log);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>Runs <paramref name="sql"/> through psql; if it does not finish within 5
    /// minutes, the failure says where each thread of the server and of its custodian
    /// waits, and what the server logged.</summary>
    private static TibetRun.Result Query(string psql, string[] connect, Process launcher, string serverLog, string sql)
    {
        try
        {
            return TibetRun.Run(psql, [.. connect, "-At", "-c", sql, "postgres"], TimeSpan.FromMinutes(5));
        }
        catch (TimeoutException e)
        {
            throw new TimeoutException($"{e.Message}\nthe server, as it waits:\n{ProcessTree.Describe(launcher.Id)}"
                                       + $"\nits custodian:\n{ProcessTree.Describe(CustodianFinder.PidServing(launcher.Id))}\nserver log:\n{File.ReadAllText(serverLog)}", e);
        }
    }

    private static void WaitForServer(string psql, string[] connect, string serverLog)
    {
        for (int i = 0; i < 300; i++)
        {
            if (TibetRun.Run(psql, [.. connect, "-At", "-c", "select 1", "postgres"]).Stdout.Trim() == "1")
                return;
            Thread.Sleep(100);
        }
        throw new TimeoutException($"the PostgreSQL server did not accept connections\n{(File.Exists(serverLog) ? File.ReadAllText(serverLog) : "")}");
    }

    private static string ExpectedSortDigest()
    {
        var sorted = Enumerable.Range(1, SortRows).Select(g => Convert.ToHexStringLower(MD5.HashData(Encoding.ASCII.GetBytes(g.ToString(System.Globalization.CultureInfo.InvariantCulture)))))
            .Order(StringComparer.Ordinal);
        return Convert.ToHexStringLower(MD5.HashData(Encoding.ASCII.GetBytes(string.Concat(sorted))));
    }

    private static void Chown(string path, string user)
    {
        var chown = TibetRun.Run("/bin/chown", [user, path]);
        Assert.True(chown.ExitCode == 0, chown.ToString());
    }

    [GeneratedRegex(@"tibet custodian: pid \d+ ended: (\d+) ranges, \d+ MiB served; (\d+) faults, (\d+) evictions")]
    private static partial Regex ServedLine();
}
