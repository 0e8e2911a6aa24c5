using System.Text;
using System.Text.Json;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Programs;

/// <summary>
/// Redis's BGSAVE child, a fork, reads the whole data set to write the dump. Under
/// tibet-run its inherited arenas are served by the parent's engine, and its agent
/// (src/Interposer/native/agent.c) has the pages it read taken out again above the
/// budget, so the child does not end up holding the data set in plaintext.
/// </summary>
public class BgsaveChildTests
{
    private const int Values = 32768; // 4 KiB each: 128 MiB, eight times the budget
    private static readonly byte[] ValueMarker = Encoding.ASCII.GetBytes("value:"); // DEBUG POPULATE's values

    /// <summary>
    /// <para>The save is slowed to 200 µs per key (rdb-key-save-delay), about 6.5 s in all.
    /// Four seconds in, the child has read more than half of the values. A scan of its
    /// present pages from outside (pagemap) then counts the values it holds in plaintext.</para>
    /// <para>Natively that is nearly all of them: the child shares the parent's pages. Under
    /// a 16 MiB budget it is at most 40 % (the bound for Redis): its own clean budget,
    /// plus what was resident in the parent at the fork, which it shares.</para>
    /// <para>Before the agent, everything the child had read stayed in it. The dump must
    /// be valid, and the data set's digest unchanged.</para>
    /// </summary>
    [Fact]
    public void A_BGSAVE_child_holds_at_most_40_percent_of_the_values_in_plaintext()
    {
        int native = ValuesInTheSavingChild(null, 7491, out _);
        Assert.True(native >= Values * 3 / 4, $"control: natively the child must share most of the {Values} values ({native} found)");

        string stats = Path.Combine(Path.GetTempPath(), $"tibet-bgsave-{Guid.NewGuid():N}.json");
        try
        {
            int found = ValuesInTheSavingChild(["-q", "--budget", "16M", "--stats-json", stats], 7492, out string stderr);
            using var json = JsonDocument.Parse(File.ReadAllText(stats));
            long childEvictions = json.RootElement.GetProperty("childEvictions").GetInt64();
            string context = $"{found} of {Values} values in plaintext in the saving child, {childEvictions} child evictions\n{stderr}";
            Assert.True(found <= Values * 4 / 10, context);
            Assert.True(childEvictions > 4096, context);
            Assert.Equal(0, json.RootElement.GetProperty("authenticationFailures").GetInt64());
        }
        finally
        {
            File.Delete(stats);
        }
    }

    /// <summary>Fills Redis, starts a slowed BGSAVE, scans the child 4 s in, and checks
    /// that the save completes with a valid dump and an unchanged digest.</summary>
    private static int ValuesInTheSavingChild(string[]? launcherOptions, int port, out string stderr)
    {
        string checkRdb = TibetRun.Require("redis-check-rdb", "redis-tools");
        string dir = Directory.CreateTempSubdirectory("tibet-bgsave-").FullName;
        try
        {
            int found;
            using (var redis = RedisServer.Start(port, launcherOptions, dir))
            {
                Assert.Equal("OK", redis.Cli("DEBUG", "POPULATE", $"{Values}", "key", "4096"));
                string digest = redis.Cli("DEBUG", "DIGEST");
                Assert.Equal("OK", redis.Cli("CONFIG", "SET", "rdb-key-save-delay", "200"));
                Assert.Contains("Background saving started", redis.Cli("BGSAVE"));
                Thread.Sleep(4000);
                int child = RedisServer.ChildNamed(redis.Pid, "redis");
                found = MemoryScanner.CountInPresentPages(child, ValueMarker);
                Assert.True(redis.Info("rdb_bgsave_in_progress") == 1,
                    "the save ended before the scan, so the scan saw no saving child: slow it down (rdb-key-save-delay)");

                var deadline = DateTime.UtcNow.AddMinutes(2);
                while (redis.Info("rdb_bgsave_in_progress") != 0 && DateTime.UtcNow < deadline)
                    Thread.Sleep(200);
                Assert.Equal("ok", redis.InfoText("rdb_last_bgsave_status"));
                Assert.Equal(digest, redis.Cli("DEBUG", "DIGEST"));
                stderr = redis.Stderr;
            }
            var check = TibetRun.Run(checkRdb, [Path.Combine(dir, "dump.rdb")]);
            Assert.True(check.ExitCode == 0 && check.Stdout.Contains("RDB looks OK"), check.ToString());
            return found;
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
