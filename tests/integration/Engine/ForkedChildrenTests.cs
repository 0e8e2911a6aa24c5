using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Engine;

/// <summary>
/// Forked children are served from the parent's handler with the contents their pages
/// had at fork time (tests/integration/native/prog_fork_children.c checks every byte in
/// each child). Run under tibet-run with a budget far below the data, so that most
/// inherited pages were sealed and must be decrypted for the child.
/// </summary>
public class ForkedChildrenTests
{
    private static readonly string[] Tight = ["--threshold", "64K", "--budget", "1M"];

    /// <summary>There is no limit on children served at once (the engine's table grows):
    /// above any limit a child would read zeros or have to die.</summary>
    [Fact]
    public void Eighty_children_at_once_each_read_their_fork_time_pages()
    {
        string program = NativeBuild.Compile("prog_fork_children.c", "-pthread");
        var native = TibetRun.Native([program, "many", "80"]);
        Assert.True(native.ExitCode == 0 && native.Stdout.Contains("fork-many: OK 80"), "native control run failed: " + native);

        var encrypted = TibetRun.Encrypted(Tight, [program, "many", "80"], TimeSpan.FromMinutes(4));
        Assert.True(encrypted.ExitCode == 0, encrypted.ToString());
        Assert.Contains("fork-many: OK 80", encrypted.Stdout);
        Assert.DoesNotContain("forked children at once", encrypted.Stderr);
        // All 80 were served at the same time, and they read sealed pages, not zeros.
        Assert.True(encrypted.Stat("peakForkedChildren") >= 80, encrypted.ToString());
        Assert.True(encrypted.Stat("decrypts") > 80 * 500, encrypted.ToString());
        Assert.Equal(0, encrypted.Stat("authenticationFailures"));
    }

    /// <summary>
    /// Serving a child's fault can read more of its messages (UFFDIO_COPY answers EAGAIN
    /// until the child's own event is read). Children with several threads faulting at
    /// once, and one more thread discarding pages (REMOVE events) all the time, make that
    /// happen constantly; a message lost there leaves a thread blocked for ever (the run
    /// times out), one handled twice or served wrong shows as a wrong byte.
    /// </summary>
    [Fact]
    public void Children_whose_threads_fault_while_their_own_events_arrive_read_exact_fork_time_pages()
    {
        string program = NativeBuild.Compile("prog_fork_children.c", "-pthread");
        string[] command = [program, "stress", "6", "8", "6"];
        var native = TibetRun.Native(command);
        Assert.True(native.ExitCode == 0 && native.Stdout.Contains("fork-stress: OK"), "native control run failed: " + native);

        var encrypted = TibetRun.Encrypted(Tight, command, TimeSpan.FromMinutes(4));
        Assert.True(encrypted.ExitCode == 0, encrypted.ToString());
        Assert.Contains("fork-stress: OK 6 8 6", encrypted.Stdout);
        Assert.True(encrypted.Stat("decrypts") > 6 * 8 * 500, encrypted.ToString());
        Assert.Equal(0, encrypted.Stat("authenticationFailures"));
    }
}
