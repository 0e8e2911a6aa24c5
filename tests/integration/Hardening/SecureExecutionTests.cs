using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Hardening;

/// <summary>
/// In a set-user-ID program (AT_SECURE) the interposer ignores every TIBET_* variable: the
/// environment belongs to the unprivileged caller, who must not choose where the privileged
/// program writes (statistics, audit records) nor steer it otherwise. The program
/// (native/prog_secure_exec.c) is made set-user-ID root by the test and run as nobody; it
/// loads libtibet.so with dlopen, because the dynamic loader ignores LD_PRELOAD paths with a
/// slash in secure-execution mode. The same binary without the set-user-ID bit is the
/// control: there the same variables are obeyed.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class SecureExecutionTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("tibet-secure-exec-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public void A_set_user_id_program_ignores_TIBET_variables_and_writes_nowhere_they_name()
    {
        var (setuid, plain, outbox) = Prepare();
        string statsPattern = Path.Combine(outbox, "stats-%p.json");

        var run = AsNobody(setuid, new() { ["TIBET_STATS_JSON"] = statsPattern, ["TIBET_AUDIT_LOG"] = Path.Combine(outbox, "audit.jsonl"), ["TIBET_VERBOSE"] = "2" });
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal("at_secure 1 euid 0 uffd yes", run.Stdout.Trim()); // the interposer ran, privileged, with its engine
        Assert.Empty(Directory.GetFiles(outbox));
        Assert.DoesNotContain("tibet: encrypted RAM on", run.Stderr); // TIBET_VERBOSE was ignored too

        // A malformed variable stops an ordinary program before main; the set-user-ID one never reads it.
        var hostile = AsNobody(setuid, new() { ["TIBET_BUDGET"] = "garbage" });
        Assert.True(hostile.ExitCode == 0, hostile.ToString());
        var obeyed = AsNobody(plain, new() { ["TIBET_BUDGET"] = "garbage" });
        Assert.Equal(2, obeyed.ExitCode);
        Assert.Contains("TIBET_BUDGET='garbage'", obeyed.Stderr);

        // Control: where the environment may speak (root, no set-user-ID), the statistics go where it says.
        var root = TibetRun.Run(plain, [Library], environment: new Dictionary<string, string?> { ["TIBET_STATS_JSON"] = statsPattern });
        Assert.True(root.ExitCode == 0, root.ToString());
        Assert.Equal("at_secure 0 euid 0 uffd yes", root.Stdout.Trim());
        Assert.Single(Directory.GetFiles(outbox, "stats-*.json"));
    }

    // nobody runs the programs, so it must be able to load the library.
    private static string Library => TibetRun.LibraryForOtherUsers;

    private (string SetUid, string Plain, string Outbox) Prepare()
    {
        string built = NativeBuild.Compile("prog_secure_exec.c", "-ldl");
        string setuid = Path.Combine(_directory, "prog_secure_exec_setuid");
        string plain = Path.Combine(_directory, "prog_secure_exec");
        File.Copy(built, setuid);
        File.Copy(built, plain);
        // nobody must reach the programs, and may write only into the outbox.
        File.SetUnixFileMode(_directory, (UnixFileMode)0b111_101_101);
        File.SetUnixFileMode(plain, (UnixFileMode)0b111_101_101);
        File.SetUnixFileMode(setuid, UnixFileMode.SetUser | (UnixFileMode)0b111_101_101);
        string outbox = Path.Combine(_directory, "outbox");
        Directory.CreateDirectory(outbox);
        File.SetUnixFileMode(outbox, UnixFileMode.StickyBit | (UnixFileMode)0b111_111_111);
        Assert.True((File.GetUnixFileMode(setuid) & UnixFileMode.SetUser) != 0, "the copy must be set-user-ID");
        return (setuid, plain, outbox);
    }

    private static TibetRun.Result AsNobody(string program, Dictionary<string, string?> environment)
    {
        string setpriv = TibetRun.Require("setpriv", "util-linux");
        return TibetRun.Run(setpriv, ["--reuid=65534", "--regid=65534", "--clear-groups", program, Library], environment: environment);
    }
}
