using Tibet.Core.Identity;
using Tibet.IntegrationTests.Identities;
using Tibet.IntegrationTests.Support;
using Xunit;
using SecretIdentity = Tibet.Core.Identity.Identity;

namespace Tibet.IntegrationTests.Hardening;

/// <summary>
/// No secret of an identity reaches the program: the custodian keeps the X25519 secret and
/// the program receives a grant (IdentityCustodyTests). Without a custodian
/// (TIBET_CUSTODIAN=0) the X25519 secret is handed to the program; the Ed25519 signing
/// seed, with which whoever holds it could issue claims as the identity, never is: not in
/// the hand-off tibet-run prepares, not in the memfd_secret the program receives, not in
/// the program's memory.
/// </summary>
public sealed class HandOffTests : IDisposable
{
    private readonly TempDirectory _directory = new();
    private readonly SecretIdentity _identity = SecretIdentity.Generate();
    private readonly byte[] _agreementSecret = new byte[32];
    private readonly byte[] _signingSeed = new byte[32];

    public HandOffTests()
    {
        byte[] secrets = new byte[64];
        _identity.ExportSecrets(secrets);
        secrets.AsSpan(0, 32).CopyTo(_agreementSecret);
        secrets.AsSpan(32).CopyTo(_signingSeed);
    }

    public void Dispose()
    {
        _identity.Dispose();
        _directory.Dispose();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void The_prepared_hand_off_holds_the_agreement_secret_and_not_the_signing_seed(bool protectedByPassphrase)
    {
        string path = _directory.File("subject.id");
        using (var passphrase = protectedByPassphrase ? IdentityTestSupport.PassphraseOf("pass")() : null)
            IdentityFile.WriteSecret(path, _identity, passphrase: passphrase, cost: IdentityTestSupport.CheapCost);

        byte[] message = IdentityHandOff.Prepare(path, IdentityTestSupport.PassphraseOf("pass"), null, out _);

        Assert.True(message.AsSpan().IndexOf(_agreementSecret) >= 0, "the X25519 secret is what the program needs");
        Assert.True(message.AsSpan().IndexOf(_signingSeed) < 0, "the Ed25519 seed must not be handed over");
        var (opened, _) = IdentityHandOff.Open(message, "the test hand-off");
        using (opened)
        {
            Assert.Equal(_identity.Public, opened.Public);
            var e = Assert.Throws<InvalidOperationException>(() => Claim.Issue(opened, _identity.Public, ClearanceLevel.Secret,
                DateTimeOffset.UtcNow, DateTimeOffset.UtcNow.AddDays(1)));
            Assert.Contains("cannot sign", e.Message);
        }
    }

    /// <summary>Runs prog_handoff_dump under tibet-run --identity --inherit-identity (the
    /// interposer then leaves the descriptor open, so the program can map it) and returns
    /// what the descriptor holds.</summary>
    private byte[] DescriptorContents(string name, Dictionary<string, string?>? environment = null)
    {
        string path = _directory.File(name);
        IdentityFile.WriteSecret(path, _identity);
        string dumper = NativeBuild.Compile("prog_handoff_dump.c");
        var run = TibetRun.Encrypted(["--identity", path, "--inherit-identity"], [dumper], environment: environment);

        Assert.True(run.ExitCode == 0, run.ToString());
        string[] words = run.Stdout.Trim().Split(' ');
        Assert.True(words.Length == 4 && words[0] == "fd" && words[2] == "handoff", run.ToString());
        Assert.True(int.Parse(words[1], System.Globalization.CultureInfo.InvariantCulture) >= Core.Interop.HighDescriptors.PreferredFloor,
            $"the hand-off descriptor should sit at 1000 or above: {run.Stdout}");
        return Convert.FromHexString(words[3]);
    }

    [Fact]
    public void The_descriptor_the_program_receives_holds_a_grant_and_no_secret_of_the_identity()
    {
        byte[] contents = DescriptorContents("run.id");

        Assert.True(contents.AsSpan().StartsWith("TBGR"u8), "with the custodian, the program's descriptor holds a grant");
        Assert.True(contents.AsSpan().IndexOf(_identity.Public.SigningKey) >= 0, "the grant names the identity by its public keys");
        Assert.True(contents.AsSpan().IndexOf(_agreementSecret) < 0, "the X25519 secret stays with the custodian");
        Assert.True(contents.AsSpan().IndexOf(_signingSeed) < 0, "the Ed25519 seed must not reach the program");
    }

    [Fact]
    public void Without_a_custodian_the_descriptor_holds_the_agreement_secret_and_no_signing_seed()
    {
        byte[] contents = DescriptorContents("plain.id", new Dictionary<string, string?> { ["TIBET_CUSTODIAN"] = "0" });

        Assert.True(contents.AsSpan().IndexOf(_agreementSecret) >= 0, "the dump must show the hand-off (it holds the X25519 secret)");
        Assert.True(contents.AsSpan().IndexOf(_signingSeed) < 0, "the Ed25519 seed must not reach the program");
    }

    [Fact]
    public void The_program_s_memory_holds_neither_secret_of_the_identity()
    {
        string path = _directory.File("memory.id");
        IdentityFile.WriteSecret(path, _identity);

        using var held = HeldProgram.Start([TibetRun.Launcher, "--identity", path, "--", HeldProgram.Path]);
        int seeds = MemoryScanner.CountInPresentPages(held.Pid, _signingSeed);
        int agreementSecrets = MemoryScanner.CountInPresentPages(held.Pid, _agreementSecret);
        // The scan does see the identity: its Ed25519 public key is in the program's memory
        // (the grant names it).
        int publicKeys = MemoryScanner.CountInPresentPages(held.Pid, _identity.Public.SigningKey.ToArray());
        Assert.Equal(0, held.Finish().ExitCode);

        Assert.True(publicKeys > 0, "the scan should find the identity's public key in the program");
        Assert.Equal(0, seeds);
        Assert.Equal(0, agreementSecrets);
    }
}
