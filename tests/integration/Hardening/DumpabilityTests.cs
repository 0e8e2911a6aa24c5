using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Hardening;

/// <summary>
/// A program under tibet-run is non-dumpable: a process of the same user without
/// CAP_SYS_PTRACE cannot open its /proc/PID/mem (where its keys live too), while root
/// (with CAP_SYS_PTRACE, as the memory-scanning tests use) still can; tibet-run
/// --dumpable (TIBET_DUMPABLE=1) leaves it readable, for debugging.
/// </summary>
/// <remarks>
/// "The same user without privileges" is played two ways. uid 0 stripped of every
/// capability (setpriv with the noroot securebits, so that exec gives none back) runs
/// tibet-run itself: tibet-run preloads only where the kernel offers userfaultfd, and
/// uid 0 may open /dev/userfaultfd. And the unprivileged user nobody runs the program
/// with the interposer preloaded directly (tibet-run would not preload where userfaultfd
/// is refused, which it is for nobody here): the interposer makes the process
/// non-dumpable before anything else, engine or not.
/// </remarks>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class DumpabilityTests
{
    private const int EACCES = 13;
    private static readonly Lazy<string> Peek = new(() => NativeBuild.Compile("prog_peek.c"));

    private static string[] Capless => [TibetRun.Require("setpriv", "util-linux"), "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all",
        "--securebits=+noroot,+noroot_locked,+no_setuid_fixup,+no_setuid_fixup_locked,+keep_caps_locked"];

    private static string[] Nobody => [TibetRun.Require("setpriv", "util-linux"), "--reuid=65534", "--regid=65534", "--clear-groups"];

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_capless_process_of_the_same_uid_reads_the_memory_only_with_dumpable(bool dumpable)
    {
        using var held = HeldProgram.Start([.. Capless, TibetRun.Launcher, "--budget", "1M", .. (dumpable ? ["--dumpable"] : Array.Empty<string>()), "--", HeldProgram.Path]);
        AssertReadable(held, Capless, dumpable);
        AssertReadable(held, [], expected: true); // root keeps CAP_SYS_PTRACE
        Assert.Equal(0, held.Finish().ExitCode);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void An_unprivileged_user_reads_the_memory_of_its_own_interposed_program_only_with_dumpable(bool dumpable)
    {
        string library = TibetRun.LibraryForOtherUsers; // nobody loads it
        string[] environment = ["env", "LD_PRELOAD=" + library, "TIBET_DUMPABLE=" + (dumpable ? "1" : "0")];
        using var held = HeldProgram.Start([.. Nobody, .. environment, HeldProgram.Path]);
        AssertReadable(held, Nobody, dumpable);
        AssertReadable(held, [], expected: true);
        var (exitCode, stderr) = held.Finish();
        Assert.Equal(0, exitCode);
        // nobody may not use userfaultfd here, and the interposer says it runs unencrypted.
        Assert.Contains("unencrypted", stderr);
    }

    private static void AssertReadable(HeldProgram held, string[] asWhom, bool expected)
    {
        string[] command = [.. asWhom, Peek.Value, held.Pid.ToString(System.Globalization.CultureInfo.InvariantCulture), held.CanaryAddress,
            HeldProgram.Canary.Length.ToString(System.Globalization.CultureInfo.InvariantCulture)];
        var result = TibetRun.Run(command[0], command[1..]);
        Assert.True(result.ExitCode == 0, result.ToString());
        string who = asWhom.Length == 0 ? "root" : string.Join(' ', asWhom);
        if (expected)
            Assert.True(result.Stdout.Trim() == "read " + HeldProgram.Canary, $"{who} should read the canary: {result}");
        else
            Assert.True(result.Stdout.Trim() == $"open-error {EACCES}", $"{who} should be refused /proc/{held.Pid}/mem (EACCES): {result}");
    }
}
