using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Programs;

/// <summary>
/// mremap of part of a large mapping (a middle part shrunk in place, a middle part and the
/// tail moved and grown) works under tibet-run as natively, with the moved contents kept
/// encrypted: in the program (its own engine, or the custodian serving it) and in a forked
/// child (the custodian). Before, the program's engine refused a part with EINVAL, and
/// under the custodian the kernel moved the part with its registration, so a touch of the
/// grown part died of SIGBUS. A part below the threshold moves too. Under a 4M budget, so
/// that the pages copied were sealed, and with --require-encryption, so that nothing may
/// fall back to plaintext.
/// </summary>
public class PartialRemapTests
{
    [Theory]
    [InlineData("custodian")]
    [InlineData("program")]
    public void Part_of_a_mapping_shrinks_moves_and_grows_as_natively(string serve)
    {
        string program = NativeBuild.Compile("prog_partial_remap.c");
        var native = TibetRun.Native([program], TimeSpan.FromMinutes(1));
        Assert.True(native.ExitCode == 0 && native.Stdout.Contains("process: ok") && native.Stdout.Contains("child: ok")
                    && native.Stdout.Contains("process: across a hole refused (EFAULT)"),
            "control, natively: " + native);

        var run = TibetRun.Encrypted(["--require-encryption", "--threshold", "64K", "--budget", "4M", "--serve", serve], [program],
            TimeSpan.FromMinutes(2));
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains("process: ok", run.Stdout);
        Assert.Contains("child: ok", run.Stdout);
        foreach (string who in (string[])["process", "child"])
        {
            // A hole answers EFAULT, as natively; a part the program made PROT_NONE cannot
            // be read to be copied, and is refused with EFAULT (natively it moves): never
            // a crash, never another error.
            Assert.Contains($"{who}: across a hole refused (EFAULT)", run.Stdout);
            Assert.Contains($"{who}: inaccessible part refused (EFAULT)", run.Stdout);
            Assert.Contains($"{who}: hostile size refused", run.Stdout); // and the part keeps its bytes (checked there)
        }
        Assert.DoesNotContain("mremap moved", run.Stderr); // the engine's report of a part the kernel moved
        Assert.True(run.Stat("evictions") > 0, "nothing was evicted under a 4M budget: " + run);
        Assert.Equal(0, run.Stat("authenticationFailures"));
    }
}
