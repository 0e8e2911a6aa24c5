using Tibet.Core.Identity;
using Xunit;
using static Tibet.IntegrationTests.Identities.IdentityTestSupport;
using SecretIdentity = Tibet.Core.Identity.Identity;

namespace Tibet.IntegrationTests.Identities;

/// <summary>
/// The hand-off tibet-run gives the interposer: it carries the identity (with its
/// passphrase already applied) and the claim exactly, and anything damaged is refused
/// with an IdentityException, never a crash and never a different identity.
/// </summary>
public sealed class IdentityHandOffTests : IDisposable
{
    private readonly TempDirectory _directory = new();
    private readonly SecretIdentity _subject = SecretIdentity.Generate();
    private readonly SecretIdentity _issuer = SecretIdentity.Generate();

    public void Dispose()
    {
        _subject.Dispose();
        _issuer.Dispose();
        _directory.Dispose();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_hand_off_carries_the_identity_and_the_claim_exactly(bool protectedByPassphrase)
    {
        string path = _directory.File("subject.id");
        using (var passphrase = protectedByPassphrase ? PassphraseOf("correct horse")() : null)
            IdentityFile.WriteSecret(path, _subject, passphrase: passphrase, cost: CheapCost);
        var now = DateTimeOffset.UtcNow;
        Claim claim = Claim.Issue(_issuer, _subject.Public, ClearanceLevel.Confidential, now.AddHours(-1), now.AddHours(1), ["models/llama"]);

        int asked = 0;
        byte[] message = IdentityHandOff.Prepare(path, () => { asked++; return PassphraseOf("correct horse")(); }, claim, out var announced);
        Assert.Equal(protectedByPassphrase ? 1 : 0, asked);
        Assert.Equal(_subject.Public, announced);

        var (identity, carried) = IdentityHandOff.Open(message, "the test hand-off");
        using (identity)
        {
            Assert.Equal(_subject.Public, identity.Public);
            Assert.Equal(claim.Encode(), carried!.Encode());
        }
        // The passphrase does not travel: what arrives opens without one.
        Assert.True(message.AsSpan().IndexOf("correct horse"u8) < 0, "the passphrase must not be in the hand-off");
    }

    [Fact]
    public void A_hand_off_without_a_claim_carries_none()
    {
        string path = _directory.File("alone.id");
        IdentityFile.WriteSecret(path, _subject);
        byte[] message = IdentityHandOff.Prepare(path, null, null, out _);
        var (identity, claim) = IdentityHandOff.Open(message, "the test hand-off");
        identity.Dispose();
        Assert.Null(claim);
    }

    [Fact]
    public void A_wrong_passphrase_is_refused_when_the_hand_off_is_prepared()
    {
        string path = _directory.File("locked.id");
        using (var passphrase = PassphraseOf("right")())
            IdentityFile.WriteSecret(path, _subject, passphrase: passphrase, cost: CheapCost);
        var e = Assert.Throws<IdentityException>(() => IdentityHandOff.Prepare(path, PassphraseOf("wrong"), null, out _));
        Assert.Equal(IdentityErrorKind.WrongPassphrase, e.Kind);
    }

    [Fact]
    public void Damaged_hand_offs_are_refused_and_never_crash()
    {
        string path = _directory.File("fuzz.id");
        IdentityFile.WriteSecret(path, _subject);
        var now = DateTimeOffset.UtcNow;
        byte[] message = IdentityHandOff.Prepare(path, null, Claim.Issue(_issuer, _subject.Public, ClearanceLevel.Secret, now, now.AddDays(1)), out _);

        var random = new Random(20261124);
        int refused = 0, sameIdentity = 0;
        for (int i = 0; i < 5000; i++)
        {
            byte[] damaged = Corruptor.Corrupt(message, random);
            try
            {
                var (identity, _) = IdentityHandOff.Open(damaged, "a damaged hand-off");
                using (identity)
                {
                    // Only damage that left the identity's bytes alone may pass (a claim byte
                    // changed into another decodable claim is the claim's own check's business).
                    Assert.Equal(_subject.Public, identity.Public);
                    sameIdentity++;
                }
            }
            catch (IdentityException e)
            {
                Assert.False(string.IsNullOrWhiteSpace(e.Message));
                refused++;
            }
        }
        Assert.True(refused > 4000, $"only {refused} of 5000 damaged hand-offs were refused");
        Assert.Equal(5000, refused + sameIdentity);
    }
}
