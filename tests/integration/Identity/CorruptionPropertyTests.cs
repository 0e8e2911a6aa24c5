using Tibet.Core.Identity;
using Xunit;
using Xunit.Abstractions;
using static Tibet.IntegrationTests.Identities.IdentityTestSupport;
using SecretIdentity = Tibet.Core.Identity.Identity;

namespace Tibet.IntegrationTests.Identities;

/// <summary>
/// Thousands of seeded random corruptions of claims, identity files and wrapped keys,
/// at the text level and (re-armored) at the binary level: no crash, only the documented
/// outcomes (verdicts, IdentityException, KeyUnwrapResult), and nothing damaged is ever
/// accepted as something it is not.
/// </summary>
public sealed class CorruptionPropertyTests(ITestOutputHelper output) : IDisposable
{
    private readonly SecretIdentity _issuer = SecretIdentity.Generate();
    private readonly SecretIdentity _subject = SecretIdentity.Generate();

    public void Dispose()
    {
        _issuer.Dispose();
        _subject.Dispose();
    }

    [Fact]
    public void Damaged_claims_are_never_valid_and_never_crash()
    {
        var now = DateTimeOffset.UtcNow;
        Claim claim = Claim.Issue(_issuer, _subject.Public, ClearanceLevel.Secret, now.AddDays(-1), now.AddDays(1), ["models/llama", "redis"]);
        byte[] binary = claim.Encode();
        byte[] text = claim.ToArmoredText();
        var requirements = new ClaimRequirements { TrustedIssuers = [_issuer.Public], Subject = _subject.Public, Scope = "redis", At = now };
        Assert.True(ClaimVerifier.Verify(text, requirements).IsValid);

        var reasons = new Dictionary<ClaimVerdictReason, int>();
        var random = new Random(20250101);
        for (int i = 0; i < 6000; i++)
        {
            byte[] damagedBinary = Corruptor.Corrupt(binary, random);
            byte[] damaged = i % 2 == 0 ? Corruptor.Corrupt(text, random) : Armor.Encode("TIBET CLAIM", damagedBinary);
            ClaimVerdict verdict = Run(i, () => ClaimVerifier.Verify(damaged, requirements));
            reasons[verdict.Reason] = reasons.GetValueOrDefault(verdict.Reason) + 1;
            if (verdict.IsValid)
                Assert.Equal(binary, verdict.Claim!.Encode()); // only damage that changed nothing (a dropped final newline)
            Assert.True(verdict.Message.Length > 0);

            // Canonical: whatever still decodes is the one spelling of what it decodes to.
            if (Claim.TryDecode(damaged, out var decoded, out _, out _))
            {
                byte[] canonical = decoded.ToArmoredText();
                Assert.True(damaged.AsSpan().SequenceEqual(canonical) || damaged.AsSpan().SequenceEqual(canonical.AsSpan(0, canonical.Length - 1)),
                    $"case {i} decoded from a non-canonical spelling");
                if (i % 2 == 1)
                    Assert.Equal(damagedBinary, decoded.Encode());
            }
        }
        output.WriteLine(string.Join(", ", reasons.OrderBy(r => r.Key).Select(r => $"{r.Key} {r.Value}")));
        Assert.True(reasons.GetValueOrDefault(ClaimVerdictReason.BadEncoding) > 1000);
        Assert.True(reasons.GetValueOrDefault(ClaimVerdictReason.BadSignature) > 500);
        Assert.True(reasons.GetValueOrDefault(ClaimVerdictReason.UnsupportedVersion) > 0);
    }

    [Fact]
    public void Damaged_raw_claims_are_never_valid_and_never_crash()
    {
        var now = DateTimeOffset.UtcNow;
        byte[] binary = Claim.Issue(_issuer, _subject.Public, ClearanceLevel.TopSecret, now.AddDays(-1), now.AddDays(1), ["a"]).Encode();
        var requirements = new ClaimRequirements { TrustedIssuers = [_issuer.Public], At = now };
        var random = new Random(77);
        for (int i = 0; i < 4000; i++)
        {
            byte[] damaged = Corruptor.Corrupt(binary, random);
            ClaimVerdict verdict = Run(i, () => ClaimVerifier.Verify(damaged, requirements));
            Assert.Equal(damaged.AsSpan().SequenceEqual(binary), verdict.IsValid);
        }
    }

    [Fact]
    public void Damaged_public_identity_files_give_an_identity_exception_or_a_public_identity()
    {
        byte[] text = IdentityFile.EncodePublic(_subject.Public);
        byte[] binary = _subject.Public.Encode();
        var kinds = new Dictionary<string, int>();
        var random = new Random(4242);
        for (int i = 0; i < 5000; i++)
        {
            byte[] damaged = i % 2 == 0 ? Corruptor.Corrupt(text, random) : Armor.Encode("TIBET PUBLIC IDENTITY", Corruptor.Corrupt(binary, random));
            try
            {
                PublicIdentity identity = Run(i, () => IdentityFile.DecodePublic(damaged, "damaged.pub"));
                // A .pub carries no integrity check of its own (the fingerprint is how
                // people check it), so damage inside the keys yields another identity.
                Assert.Equal(identity.Fingerprint.Equals(_subject.Fingerprint), identity.Encode().AsSpan().SequenceEqual(binary));
                kinds["decoded"] = kinds.GetValueOrDefault("decoded") + 1;
            }
            catch (IdentityException e)
            {
                Assert.Contains("damaged.pub", e.Message);
                kinds[e.Kind.ToString()] = kinds.GetValueOrDefault(e.Kind.ToString()) + 1;
            }
        }
        output.WriteLine(string.Join(", ", kinds.Select(k => $"{k.Key} {k.Value}")));
        Assert.True(kinds.GetValueOrDefault(nameof(IdentityErrorKind.Malformed)) > 1000);
        Assert.True(kinds.GetValueOrDefault(nameof(IdentityErrorKind.UnsupportedVersion)) > 0);
    }

    [Fact]
    public void Damaged_secret_identity_files_give_an_identity_exception_or_the_same_identity()
    {
        using var original = SecretIdentity.Generate();
        byte[] text = IdentityFile.EncodeSecret(original, null, null);
        byte[] binary = IdentityFileTests.Dearmor("TIBET SECRET IDENTITY", text);
        var kinds = new Dictionary<IdentityErrorKind, int>();
        var random = new Random(31337);
        int loaded = 0;
        for (int i = 0; i < 5000; i++)
        {
            byte[] damaged = i % 2 == 0 ? Corruptor.Corrupt(text, random) : Armor.Encode("TIBET SECRET IDENTITY", Corruptor.Corrupt(binary, random));
            try
            {
                using SecretIdentity identity = Run(i, () => IdentityFile.DecodeSecret(damaged, PassphraseOf("unused"), "damaged.id"));
                Assert.Equal(original.Fingerprint, identity.Fingerprint); // never a different, silently damaged key
                loaded++;
            }
            catch (IdentityException e)
            {
                Assert.Contains("damaged.id", e.Message);
                kinds[e.Kind] = kinds.GetValueOrDefault(e.Kind) + 1;
            }
        }
        output.WriteLine($"loaded {loaded}; " + string.Join(", ", kinds.Select(k => $"{k.Key} {k.Value}")));
        Assert.True(kinds.GetValueOrDefault(IdentityErrorKind.Malformed) > 2000);
        Assert.Equal(kinds.Keys.Order(), kinds.Keys.Intersect([IdentityErrorKind.Malformed, IdentityErrorKind.UnsupportedVersion]).Order());
    }

    [Fact]
    public void Damaged_passphrase_protected_identity_files_never_open_as_anything_else()
    {
        using var original = SecretIdentity.Generate();
        using var passphrase = Passphrase.FromUtf8("pw"u8);
        byte[] text = IdentityFile.EncodeSecret(original, passphrase, CheapCost);
        byte[] binary = IdentityFileTests.Dearmor("TIBET SECRET IDENTITY", text);
        var kinds = new Dictionary<IdentityErrorKind, int>();
        var random = new Random(99);
        for (int i = 0; i < 600; i++)
        {
            byte[] damaged = i % 2 == 0 ? Corruptor.Corrupt(text, random) : Armor.Encode("TIBET SECRET IDENTITY", Corruptor.Corrupt(binary, random));
            try
            {
                using SecretIdentity identity = Run(i, () => IdentityFile.DecodeSecret(damaged, PassphraseOf("pw"), "damaged.id"));
                Assert.Equal(original.Fingerprint, identity.Fingerprint);
            }
            catch (IdentityException e)
            {
                kinds[e.Kind] = kinds.GetValueOrDefault(e.Kind) + 1;
            }
        }
        output.WriteLine(string.Join(", ", kinds.Select(k => $"{k.Key} {k.Value}")));
        Assert.True(kinds.GetValueOrDefault(IdentityErrorKind.WrongPassphrase) > 0);
        Assert.True(kinds.GetValueOrDefault(IdentityErrorKind.Malformed) > 0);
        Assert.Empty(kinds.Keys.Except([IdentityErrorKind.Malformed, IdentityErrorKind.UnsupportedVersion, IdentityErrorKind.WrongPassphrase]));
    }

    [Fact]
    public void Damaged_wrapped_keys_never_unwrap_and_never_crash()
    {
        byte[] dataKey = Enumerable.Range(100, 32).Select(i => (byte)i).ToArray();
        byte[] context = "ctx"u8.ToArray();
        byte[] wrapped = KeyWrap.Wrap(_subject.Public, dataKey, context);
        var results = new Dictionary<KeyUnwrapResult, int>();
        var random = new Random(5);
        var recovered = new byte[32];
        for (int i = 0; i < 6000; i++)
        {
            byte[] damaged = Corruptor.Corrupt(wrapped, random);
            KeyUnwrapResult result = Run(i, () => KeyWrap.TryUnwrap(_subject, damaged, context, recovered));
            results[result] = results.GetValueOrDefault(result) + 1;
            if (result == KeyUnwrapResult.Success)
            {
                Assert.Equal(wrapped, damaged);
                Assert.Equal(dataKey, recovered);
            }
            else
            {
                Assert.All(recovered, b => Assert.Equal(0, b));
            }
        }
        output.WriteLine(string.Join(", ", results.Select(r => $"{r.Key} {r.Value}")));
        Assert.True(results.GetValueOrDefault(KeyUnwrapResult.AuthenticationFailed) > 1000);
        Assert.True(results.GetValueOrDefault(KeyUnwrapResult.Malformed) > 1000);
        Assert.True(results.GetValueOrDefault(KeyUnwrapResult.WrongRecipient) > 0);
    }

    /// <summary>Runs one case; anything but the documented outcomes fails with the case number.</summary>
    private static T Run<T>(int iteration, Func<T> work)
    {
        try
        {
            return work();
        }
        catch (IdentityException)
        {
            throw;
        }
        catch (Exception e)
        {
            throw new Xunit.Sdk.XunitException($"case {iteration} crashed with {e.GetType().Name}: {e}");
        }
    }
}
