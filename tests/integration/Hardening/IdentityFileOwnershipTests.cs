using Tibet.Core.Identity;
using Tibet.IntegrationTests.Identities;
using Tibet.IntegrationTests.Support;
using Xunit;
using SecretIdentity = Tibet.Core.Identity.Identity;

namespace Tibet.IntegrationTests.Hardening;

/// <summary>
/// Identity, claim and passphrase files are read only from the file itself (a symbolic
/// link is refused: O_NOFOLLOW) and only when the running user owns it (or root): another
/// user who plants a link or a file must not choose what tibet reads. The tests run as root
/// and give the file to nobody (uid 65534) with chown.
/// </summary>
public sealed class IdentityFileOwnershipTests : IDisposable
{
    private const int Nobody = 65534;
    private readonly TempDirectory _directory = new();
    private readonly SecretIdentity _identity = SecretIdentity.Generate();

    public void Dispose()
    {
        _identity.Dispose();
        _directory.Dispose();
    }

    [Fact]
    public void A_secret_identity_reached_through_a_symbolic_link_is_refused()
    {
        string real = _directory.File("real.id");
        IdentityFile.WriteSecret(real, _identity);
        string link = _directory.File("link.id");
        File.CreateSymbolicLink(link, real);

        using (IdentityFile.ReadSecret(real)) { } // the file itself is fine
        var e = Assert.Throws<IdentityException>(() => IdentityFile.ReadSecret(link));
        Assert.Equal(IdentityErrorKind.InsecureFile, e.Kind);
        Assert.Contains("is a symbolic link", e.Message);
        Assert.Contains(real, e.Message); // names where it points, and says to use that
    }

    [Fact]
    public void A_secret_identity_owned_by_another_user_is_refused()
    {
        string path = _directory.File("theirs.id");
        IdentityFile.WriteSecret(path, _identity);
        Chown(path, Nobody);

        var e = Assert.Throws<IdentityException>(() => IdentityFile.ReadSecret(path));
        Assert.Equal(IdentityErrorKind.InsecureFile, e.Kind);
        Assert.Contains($"belongs to user {Nobody}", e.Message);
    }

    [Fact]
    public void Claim_and_passphrase_files_are_held_to_the_same_rules()
    {
        var now = DateTimeOffset.UtcNow;
        string claim = _directory.File("mine.claim");
        ClaimFile.Write(claim, Claim.Issue(_identity, _identity.Public, ClearanceLevel.Secret, now, now.AddDays(1)));
        Assert.NotEmpty(ClaimFile.ReadAllBytes(claim));
        string claimLink = _directory.File("link.claim");
        File.CreateSymbolicLink(claimLink, claim);
        Assert.Equal(IdentityErrorKind.InsecureFile, Assert.Throws<IdentityException>(() => ClaimFile.ReadAllBytes(claimLink)).Kind);
        Chown(claim, Nobody);
        Assert.Contains($"belongs to user {Nobody}", Assert.Throws<IdentityException>(() => ClaimFile.ReadAllBytes(claim)).Message);

        string passphrase = _directory.File("pass");
        File.WriteAllText(passphrase, "correct horse\n");
        IdentityTestSupport.SetMode(passphrase, 0b110_000_000);
        using (Passphrase.FromFile(passphrase)) { }
        string passphraseLink = _directory.File("pass-link");
        File.CreateSymbolicLink(passphraseLink, passphrase);
        Assert.Equal(IdentityErrorKind.InsecureFile, Assert.Throws<IdentityException>(() => Passphrase.FromFile(passphraseLink)).Kind);
        Chown(passphrase, Nobody);
        Assert.Equal(IdentityErrorKind.InsecureFile, Assert.Throws<IdentityException>(() => Passphrase.FromFile(passphrase)).Kind);
    }

    [Fact]
    public void Tibet_run_refuses_a_linked_or_foreign_identity_before_starting_the_program()
    {
        string real = _directory.File("run.id");
        IdentityFile.WriteSecret(real, _identity);
        string link = _directory.File("run-link.id");
        File.CreateSymbolicLink(link, real);
        string foreign = _directory.File("foreign.id");
        File.Copy(real, foreign);
        Chown(foreign, Nobody);
        string marker = _directory.File("started");

        foreach (var (file, expected) in new[] { (link, "is a symbolic link"), (foreign, $"belongs to user {Nobody}") })
        {
            var run = TibetRun.Run(TibetRun.Launcher, ["--identity", file, "--", "/bin/sh", "-c", $"touch {marker}"]);
            Assert.True(run.ExitCode == 2, run.ToString());
            Assert.Contains(expected, run.Stderr);
        }
        Assert.False(File.Exists(marker), "the program must not have been started");
    }

    private static void Chown(string path, int uid)
    {
        var result = TibetRun.Run("chown", [$"{uid}:{uid}", path]);
        Assert.True(result.ExitCode == 0, result.ToString());
    }
}
