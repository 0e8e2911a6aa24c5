using System.Diagnostics;
using System.Text.RegularExpressions;
using Tibet.Core.Audit;
using Tibet.IntegrationTests.Sealing;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Hardening;

/// <summary>
/// The audit log is written only to a regular file: a symbolic link, /dev/null or a FIFO
/// would take the record and keep nothing (or put it somewhere else), so the append fails
/// and a sealed model stays dead with a line that says why. Each record is fsync'd. A
/// lock held elsewhere for longer than the timeout fails the append too, and the model
/// stays dead. Both directly and in real tibet-run runs of a program reading a sealed model.
/// </summary>
public sealed partial class AuditLogHardeningTests(SealedRunWorld world) : IClassFixture<SealedRunWorld>
{
    private static readonly AuditEntry Entry = new() { Object = "m.gguf", Decision = AuditDecision.Granted, Reason = "Valid", Program = "/usr/bin/test" };

    public static TheoryData<string> Refused => new() { "symlink", "dev-null", "fifo" };

    [Theory]
    [MemberData(nameof(Refused))]
    public void Anything_but_a_regular_file_is_refused_and_nothing_is_written(string kind)
    {
        var (path, expected, target) = Make(kind);
        var e = Assert.Throws<AuditLogException>(() => new AuditLog(path).Append(Entry));
        Assert.Contains(expected, e.Message);
        Assert.Contains("regular file", e.Message);
        if (target != null)
            Assert.Equal(0, new FileInfo(target).Length); // the link's target was not appended to
    }

    [Theory]
    [MemberData(nameof(Refused))]
    public void Under_tibet_run_such_a_log_keeps_the_sealed_model_dead_with_a_line_saying_why(string kind)
    {
        var (path, expected, _) = Make(kind);
        var run = ReadLive(path);

        Assert.True(run.Result.ExitCode == 0, run.ToString());
        Assert.Equal(world.ExpectedDeadHash, run.Hash);
        string line = Assert.Single(run.Result.Stderr.Split('\n'), l => l.Contains("dead material", StringComparison.Ordinal));
        Assert.Contains("could not be recorded in the audit log", line);
        Assert.Contains(expected, line);
    }

    [Fact]
    public void A_lock_held_past_the_timeout_fails_the_append_and_a_released_one_does_not()
    {
        string path = world.PathOf($"locked-{Guid.NewGuid():N}.jsonl");
        new AuditLog(path).Append(Entry);
        using (HoldLock(path))
        {
            var e = Assert.Throws<AuditLogException>(() => new AuditLog(path, TimeSpan.FromMilliseconds(300)).Append(Entry));
            Assert.Contains("held its lock for more than", e.Message);
        }
        new AuditLog(path, TimeSpan.FromMilliseconds(300)).Append(Entry);
        Assert.Equal(2, File.ReadAllLines(path).Length);
        Assert.True(AuditVerifier.VerifyFile(path).IsIntact);
    }

    [Fact]
    public void Under_tibet_run_a_lock_held_elsewhere_keeps_the_sealed_model_dead_and_says_so()
    {
        string path = world.PathOf($"held-{Guid.NewGuid():N}.jsonl");
        File.WriteAllText(path, "");
        ReaderRun run;
        using (HoldLock(path))
            run = ReadLive(path);

        Assert.True(run.Result.ExitCode == 0, run.ToString());
        Assert.Equal(world.ExpectedDeadHash, run.Hash);
        Assert.Contains("held its lock for more than", Assert.Single(run.Result.Stderr.Split('\n'), l => l.Contains("dead material", StringComparison.Ordinal)));
        Assert.Equal(0, new FileInfo(path).Length);
    }

    [Fact]
    public void Each_record_is_fsynced_after_its_write()
    {
        string strace = TibetRun.Require("strace", "strace");
        string path = world.PathOf($"synced-{Guid.NewGuid():N}.jsonl");
        string trace = world.PathOf($"trace-{Guid.NewGuid():N}.txt");
        var result = TibetRun.Run(strace, ["-f", "-qq", "-e", "trace=openat,fcntl,write,fsync", "-o", trace, TibetRun.Launcher,
            "--audit-log", path, "--threshold", "64K", "--identity", world.Alice, "--claim", world.ClaimPath("valid"), "--",
            world.Reader, world.SealedModel, world.DataOffset.ToString(System.Globalization.CultureInfo.InvariantCulture), "4096", "pread"]);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("granted", Assert.Single(SealedRunWorld.ReadAudit(path)).GetProperty("decision").GetString());

        // Follow the log's descriptor on the thread that appended: opened with O_NOFOLLOW,
        // moved high, one write of the record, then fsync of the same descriptor.
        string[] lines = File.ReadAllLines(trace);
        int opened = Array.FindIndex(lines, l => l.Contains($"openat(AT_FDCWD, \"{path}\"", StringComparison.Ordinal) && l.Contains("O_NOFOLLOW", StringComparison.Ordinal));
        Assert.True(opened >= 0, "no O_NOFOLLOW open of the audit log in the trace");
        string thread = lines[opened].Split(' ')[0] + " ";
        var own = lines.Skip(opened).Where(l => l.StartsWith(thread, StringComparison.Ordinal)).ToList();
        int fd = (int)ResultOf(own, 0);
        int moved = own.FindIndex(l => l.Contains($"fcntl({fd}, F_DUPFD_CLOEXEC", StringComparison.Ordinal));
        if (moved >= 0)
            fd = (int)ResultOf(own, moved);
        int write = own.FindIndex(l => l.Contains($"write({fd}, \"{{", StringComparison.Ordinal));
        Assert.True(write >= 0, $"no write of a record to descriptor {fd}:\n{string.Join('\n', own.Take(40))}");
        int fsync = own.FindIndex(write, l => l.Contains($"fsync({fd}", StringComparison.Ordinal));
        Assert.True(fsync > write, $"the record written to descriptor {fd} was not fsync'd:\n{string.Join('\n', own.Skip(write).Take(20))}");
        Assert.Equal(0, ResultOf(own, fsync));
    }

    /// <summary>The return value of the call on line <paramref name="at"/> of one thread's
    /// trace, also when strace split it into "unfinished" and "resumed" lines.</summary>
    private static long ResultOf(List<string> threadLines, int at)
    {
        for (int i = at; i < threadLines.Count; i++)
        {
            if (i > at && !threadLines[i].Contains("resumed>", StringComparison.Ordinal))
                continue;
            var match = ReturnValue().Match(threadLines[i]);
            if (match.Success)
                return long.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
            if (!threadLines[i].Contains("<unfinished ...>", StringComparison.Ordinal))
                break;
        }
        throw new InvalidOperationException($"no return value for: {threadLines[at]}");
    }

    /// <summary>The reader on the sealed model's data with alice's identity and a valid claim,
    /// which would make it live, and <paramref name="auditLog"/> as the log. The log is not
    /// read back here (SealedRunWorld.Read would: a FIFO would block the test).</summary>
    private ReaderRun ReadLive(string auditLog)
    {
        var result = TibetRun.Encrypted(["--audit-log", auditLog, "--threshold", "64K", "--budget", "256K", "--identity", world.Alice, "--claim", world.ClaimPath("valid")],
            [world.Reader, world.SealedModel, world.DataOffset.ToString(System.Globalization.CultureInfo.InvariantCulture),
             world.DataLength.ToString(System.Globalization.CultureInfo.InvariantCulture), "read"]);
        return new ReaderRun(result, []);
    }

    private (string Path, string Expected, string? Target) Make(string kind)
    {
        string name = world.PathOf($"{kind}-{Guid.NewGuid():N}.jsonl");
        switch (kind)
        {
            case "symlink":
                string target = world.PathOf($"target-{Guid.NewGuid():N}.jsonl");
                File.WriteAllText(target, "");
                File.CreateSymbolicLink(name, target);
                return (name, "is a symbolic link", target);
            case "dev-null":
                return ("/dev/null", "is a character device", null);
            case "fifo":
                var made = TibetRun.Run(TibetRun.Require("mkfifo", "coreutils"), [name]);
                Assert.True(made.ExitCode == 0, made.ToString());
                return (name, "is a FIFO", null);
            default:
                throw new ArgumentOutOfRangeException(nameof(kind));
        }
    }

    /// <summary>Another process (flock(1)) holding the log's exclusive lock until disposed.</summary>
    private static IDisposable HoldLock(string path)
    {
        var start = new ProcessStartInfo(TibetRun.Require("flock", "util-linux"))
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        // flock takes the lock, then the shell says so and waits for its input to end.
        foreach (string argument in new[] { "--exclusive", path, "/bin/sh", "-c", "echo locked; cat >/dev/null" })
            start.ArgumentList.Add(argument);
        var holder = Process.Start(start)!;
        Assert.Equal("locked", holder.StandardOutput.ReadLine());
        return new Holder(holder);
    }

    private sealed class Holder(Process process) : IDisposable
    {
        public void Dispose()
        {
            process.StandardInput.Close();
            process.WaitForExit();
            process.Dispose();
        }
    }

    [GeneratedRegex(@"= (-?\d+)(?: [A-Z]+ \(.*\))?$")]
    private static partial Regex ReturnValue();
}
