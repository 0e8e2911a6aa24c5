using Xunit;

namespace Tibet.IntegrationTests.Engine;

/// <summary>
/// The handler's failure policy, driven by a real failure: the ciphertext store is limited
/// to one chunk (EngineOptions.StoreLimitBytes), so sealing a page fails inside the
/// handler exactly as a failed mmap would. The program must neither vanish silently nor
/// read zeros: one line names the failure, and the faulting thread dies of SIGBUS. The
/// writer runs in a child process (Tibet.EngineChild) so that the test can see how it died.
/// </summary>
public class HandlerFailureTests
{
    private const int SigBus = 7;
    private const string FailureLine = "tibet: the page handler failed (OutOfMemoryException: the ciphertext store reached its limit of 1048576 bytes";

    [Fact]
    public void A_failing_handler_writes_one_line_and_the_faulting_thread_dies_of_SIGBUS()
    {
        var (exitCode, stdout, stderr) = TamperTests.RunChild("handler-failure");

        Assert.Contains("writing", stdout);
        Assert.DoesNotContain("WRITE-RETURNED", stdout);
        Assert.True(exitCode == 128 + SigBus,
            $"expected death by SIGBUS (exit {128 + SigBus}), got {exitCode}\nstdout: {stdout}\nstderr: {stderr}");
        var lines = stderr.Split('\n').Where(line => line.Contains("the page handler failed")).ToList();
        Assert.True(lines.Count == 1, "expected exactly one failure line on stderr:\n" + stderr);
        Assert.StartsWith(FailureLine, lines[0]);
        Assert.Contains("raises SIGBUS", lines[0]);
        Assert.Contains("give the process more memory", lines[0]);
    }

    [Fact]
    public void The_failure_line_goes_to_the_engines_callback_when_one_is_set()
    {
        var (exitCode, stdout, stderr) = TamperTests.RunChild("handler-failure", "routed");

        Assert.True(exitCode == 128 + SigBus,
            $"expected death by SIGBUS (exit {128 + SigBus}), got {exitCode}\nstdout: {stdout}\nstderr: {stderr}");
        Assert.Contains("routed: " + FailureLine, stdout);
        Assert.DoesNotContain("the page handler failed", stderr);
        Assert.DoesNotContain("WRITE-RETURNED", stdout);
    }
}
