using System.Globalization;
using Tibet.Core.Custodian;
using Tibet.Core.Interop;
using Tibet.Core.Sealing;
using Tibet.IntegrationTests.Hardening;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Sealing;

/// <summary>
/// With --identity, the custodian keeps the identity: the program gets a grant, asks the
/// custodian for each sealed model it opens, and receives only that model's data key. The
/// scans read memory from outside (pagemap and /proc/PID/mem), while the program holds a
/// live sealed model mapped and read.
/// </summary>
public class IdentityCustodyTests(SealedRunWorld world) : IClassFixture<SealedRunWorld>
{
    private HeldProgram HoldLiveModel(IDictionary<string, string?>? environment = null) =>
        HeldProgram.Start([TibetRun.Launcher, "--audit-log", world.PathOf($"audit-{Guid.NewGuid():N}.jsonl"), "--threshold", "64K", "--budget", "256K",
            "--identity", world.Alice, "--claim", world.ClaimPath("valid"), "--",
            world.Reader, world.SealedModel, world.DataOffset.ToString(CultureInfo.InvariantCulture), world.DataLength.ToString(CultureInfo.InvariantCulture), "mmap-hold"],
            environment);

    /// <summary>Counts <paramref name="secret"/> in the program and in its custodian while
    /// the program holds the live model mapped and read, then lets it finish.</summary>
    private (int InProgram, int InCustodian) ScanWhileLive(byte[] secret)
    {
        using var held = HoldLiveModel();
        int inProgram = MemoryScanner.CountInPresentPages(held.Pid, secret);
        int inCustodian = MemoryScanner.CountInPresentPages(CustodianFinder.PidServing(held.Pid), secret);
        var (exitCode, stderr) = held.Finish();
        Assert.True(exitCode == 0, stderr);
        Assert.DoesNotContain("dead material", stderr);
        return (inProgram, inCustodian);
    }

    [Fact]
    public void The_identity_s_secret_is_in_the_custodian_and_not_in_a_program_that_reads_a_live_model()
    {
        var (inProgram, inCustodian) = ScanWhileLive(world.AliceAgreementSecret);

        Assert.True(inCustodian > 0, "the scan must find the X25519 secret where it is, in the custodian: else it proves nothing about the program");
        Assert.Equal(0, inProgram);
    }

    [Fact]
    public void The_data_key_of_a_live_model_is_in_the_custodian_and_not_in_the_program_that_reads_it()
    {
        var (inProgram, inCustodian) = ScanWhileLive(world.SealedModelDataKey);

        Assert.True(inCustodian > 0, "the scan must find the data key where it is, in the custodian: else it proves nothing about the program");
        Assert.Equal(0, inProgram);
    }

    [Fact]
    public void Without_a_custodian_the_identity_s_secret_is_handed_to_the_program()
    {
        // TIBET_CUSTODIAN=0: the documented fallback (docs/threat-model.md). The same scan
        // finds the secret in the program, which is what the test above rules out.
        byte[] secret = world.AliceAgreementSecret;
        int inProgram;
        using (var held = HoldLiveModel(new Dictionary<string, string?> { ["TIBET_CUSTODIAN"] = "0" }))
        {
            inProgram = MemoryScanner.CountInPresentPages(held.Pid, secret);
            var (exitCode, stderr) = held.Finish();
            Assert.True(exitCode == 0, stderr);
            Assert.DoesNotContain("dead material", stderr);
        }

        Assert.True(inProgram > 0, "without a custodian the program unwraps data keys itself, so it holds the X25519 secret");
    }

    [Fact]
    public unsafe void The_custodian_refuses_a_request_without_the_program_s_grant()
    {
        string stderr;
        bool answered;
        int status;
        SealAccessReason reason;
        string message, problem;
        bool opened;
        using (var held = HoldLiveModel())
        {
            string environment = File.ReadAllText($"/proc/{held.Pid}/environ");
            string name = environment.Split('\0').Single(v => v.StartsWith("TIBET_CUSTODIAN_SOCKET=", StringComparison.Ordinal))["TIBET_CUSTODIAN_SOCKET=".Length..];
            using var model = File.OpenHandle(world.SealedModel);
            // Root may connect (the custodian accepts the tree's uids and root); a guessed
            // token is what an intruder of the tree's users without the grant would have.
            byte[] guessed = new byte[Tibet.Core.Identity.CustodianGrant.TokenSize];
            answered = CustodianClient.RequestSealedAccess(name, (int)model.DangerousGetHandle(), guessed, -1,
                out status, out reason, out message, out var pages, out problem);
            opened = pages != null;
            pages?.Dispose();
            (_, stderr) = held.Finish();
        }

        Assert.True(answered, $"the custodian did not answer: {problem}");
        Assert.Equal(SealedAccessAnswer.Refused, status);
        Assert.NotEqual(SealAccessReason.Live, reason);
        Assert.Contains("grant", message);
        Assert.False(opened, "a refused request must open no page session");
        Assert.Contains("refused a sealed-model request", stderr);
    }
}
