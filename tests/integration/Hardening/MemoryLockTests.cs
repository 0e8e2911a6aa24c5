using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Hardening;

/// <summary>
/// The buffers plaintext passes through are mlocked, and a failed mlock is never ignored.
/// tibet-run raises the soft RLIMIT_MEMLOCK to the hard limit before it starts the program;
/// where the hard limit itself is too small, the interposer says once on stderr what is not
/// locked. Root's CAP_IPC_LOCK would lock past any limit (and CAP_SYS_RESOURCE would let
/// tibet-run lift the hard limit), so the runs drop both with setpriv.
/// </summary>
public sealed class MemoryLockTests
{
    private const string LineStart = "tibet: mlock of a ";

    private static string[] Limited(string limit) =>
    [
        TibetRun.Require("prlimit", "util-linux"), $"--memlock={limit}",
        TibetRun.Require("setpriv", "util-linux"), "--inh-caps=-ipc_lock,-sys_resource", "--bounding-set=-ipc_lock,-sys_resource",
    ];

    [Fact]
    public void Under_a_64_KiB_hard_limit_the_program_says_once_what_is_not_locked()
    {
        string[] command = [.. Limited("65536:65536"), TibetRun.Launcher, "--budget", "1M", "--", "grep", "Max locked memory", "/proc/self/limits"];
        var run = TibetRun.Run(command[0], command[1..]);

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Matches(@"Max locked memory\s+65536\s+65536", run.Stdout); // nothing could raise it
        string line = Assert.Single(run.Stderr.Split('\n'), l => l.StartsWith(LineStart, StringComparison.Ordinal));
        Assert.Contains("RLIMIT_MEMLOCK 64 KiB", line);
        Assert.Contains("may be swapped out", line);
    }

    [Fact]
    public void Tibet_run_raises_a_low_soft_limit_to_the_hard_one_and_everything_is_locked()
    {
        string[] command = [.. Limited("65536:8388608"), TibetRun.Launcher, "--budget", "1M", "--", "grep", "Max locked memory", "/proc/self/limits"];
        var run = TibetRun.Run(command[0], command[1..]);

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Matches(@"Max locked memory\s+8388608\s+8388608", run.Stdout);
        Assert.DoesNotContain(LineStart, run.Stderr);

        // Control: the same limits without tibet-run's raise make the interposer say it.
        string library = Path.Combine(RepoPaths.Root, "out", "lib", "libtibet.so");
        string[] direct = [.. Limited("65536:8388608"), "env", "LD_PRELOAD=" + library, "TIBET_BUDGET=1048576", "grep", "Max locked memory", "/proc/self/limits"];
        var alone = TibetRun.Run(direct[0], direct[1..]);
        Assert.True(alone.ExitCode == 0, alone.ToString());
        Assert.Matches(@"Max locked memory\s+65536\s+8388608", alone.Stdout);
        Assert.Contains(LineStart, alone.Stderr);
    }
}
