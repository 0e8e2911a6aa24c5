using Tibet.Core.Identity;
using Xunit;
using SecretIdentity = Tibet.Core.Identity.Identity;

namespace Tibet.IntegrationTests.Identities;

/// <summary>Claims: issue and verify, and one test for every verdict.</summary>
public sealed class ClaimTests : IDisposable
{
    private static readonly DateTimeOffset Start = new(2030, 1, 1, 0, 0, 0, TimeSpan.Zero);
    private static readonly DateTimeOffset End = Start.AddDays(30);

    private readonly SecretIdentity _issuer = SecretIdentity.Generate();
    private readonly SecretIdentity _subject = SecretIdentity.Generate();
    private readonly SecretIdentity _stranger = SecretIdentity.Generate();

    public void Dispose()
    {
        _issuer.Dispose();
        _subject.Dispose();
        _stranger.Dispose();
    }

    private Claim IssueSecret(params string[] scopes) =>
        Claim.Issue(_issuer, _subject.Public, ClearanceLevel.Secret, Start, End, scopes, issuedAt: Start.AddHours(-1));

    private ClaimRequirements Requirements(DateTimeOffset? at = null) => new()
    {
        TrustedIssuers = [_issuer.Public],
        Subject = _subject.Public,
        MinimumClearance = ClearanceLevel.Confidential,
        At = at ?? Start.AddDays(1),
    };

    [Fact]
    public void A_claim_meeting_every_requirement_is_valid_and_its_fields_survive_decoding()
    {
        Claim claim = IssueSecret("redis", "models/llama");
        ClaimVerdict verdict = ClaimVerifier.Verify(claim.Encode(), Requirements() );

        Assert.Equal(ClaimVerdictReason.Valid, verdict.Reason);
        Assert.True(verdict.IsValid);
        Claim decoded = verdict.Claim!;
        Assert.Equal(_issuer.Fingerprint, decoded.Issuer.Fingerprint);
        Assert.Equal(_subject.Fingerprint, decoded.Subject.Fingerprint);
        Assert.Equal(ClearanceLevel.Secret, decoded.Clearance);
        Assert.Equal(Start, decoded.NotBefore);
        Assert.Equal(End, decoded.Expires);
        Assert.Equal(Start.AddHours(-1), decoded.IssuedAt);
        Assert.Equal(["models/llama", "redis"], decoded.Scopes);
        Assert.Equal(claim.IdHex, decoded.IdHex);
        Assert.Equal(32, decoded.IdHex.Length);
    }

    [Fact]
    public void The_armored_text_verifies_like_the_binary()
    {
        Claim claim = IssueSecret();
        byte[] text = claim.ToArmoredText();
        Assert.StartsWith("-----BEGIN TIBET CLAIM-----\n", System.Text.Encoding.ASCII.GetString(text));
        Assert.Equal(ClaimVerdictReason.Valid, ClaimVerifier.Verify(text, Requirements()).Reason);
    }

    [Fact]
    public void Untrusted_issuer()
    {
        Claim byStranger = Claim.Issue(_stranger, _subject.Public, ClearanceLevel.TopSecret, Start, End);
        var verdict = ClaimVerifier.Verify(byStranger.Encode(), Requirements());
        Assert.Equal(ClaimVerdictReason.UntrustedIssuer, verdict.Reason);
        Assert.Contains(_stranger.Fingerprint.ToShortString(), verdict.Message);

        var noneTrusted = ClaimVerifier.Verify(IssueSecret().Encode(), new ClaimRequirements { TrustedIssuers = [], At = Start });
        Assert.Equal(ClaimVerdictReason.UntrustedIssuer, noneTrusted.Reason);
    }

    [Theory]
    [InlineData(0)]   // first signature byte
    [InlineData(31)]  // last byte of R
    [InlineData(63)]  // last byte of S
    public void Forged_signature_byte(int signatureByte)
    {
        byte[] encoded = IssueSecret().Encode();
        encoded[encoded.Length - 64 + signatureByte] ^= 0x01;
        var verdict = ClaimVerifier.Verify(encoded, Requirements());
        Assert.Equal(ClaimVerdictReason.BadSignature, verdict.Reason);
        Assert.Contains("altered or forged", verdict.Message);
    }

    [Fact]
    public void Raising_the_clearance_of_a_signed_claim_breaks_its_signature()
    {
        byte[] encoded = Claim.Issue(_issuer, _subject.Public, ClearanceLevel.Restricted, Start, End).Encode();
        encoded[149] = (byte)ClearanceLevel.TopSecret;
        Assert.Equal(ClaimVerdictReason.BadSignature, ClaimVerifier.Verify(encoded, Requirements()).Reason);
    }

    [Fact]
    public void Substituting_a_trusted_issuer_key_breaks_the_signature()
    {
        // A stranger signs a claim and names the trusted issuer as its issuer.
        byte[] encoded = Claim.Issue(_stranger, _subject.Public, ClearanceLevel.TopSecret, Start, End).Encode();
        _issuer.Public.AgreementKey.CopyTo(encoded.AsSpan(21));
        _issuer.Public.SigningKey.CopyTo(encoded.AsSpan(53));
        Assert.Equal(ClaimVerdictReason.BadSignature, ClaimVerifier.Verify(encoded, Requirements()).Reason);
    }

    [Fact]
    public void Subject_mismatch()
    {
        Claim forStranger = Claim.Issue(_issuer, _stranger.Public, ClearanceLevel.Secret, Start, End);
        var verdict = ClaimVerifier.Verify(forStranger.Encode(), Requirements());
        Assert.Equal(ClaimVerdictReason.SubjectMismatch, verdict.Reason);
        Assert.Contains(_stranger.Fingerprint.ToShortString(), verdict.Message);
    }

    [Fact]
    public void Expired_exactly_at_and_after_the_expiry_time()
    {
        Assert.Equal(ClaimVerdictReason.Valid, ClaimVerifier.Verify(IssueSecret().Encode(), Requirements(End.AddSeconds(-1))).Reason);
        Assert.Equal(ClaimVerdictReason.Expired, ClaimVerifier.Verify(IssueSecret().Encode(), Requirements(End)).Reason);
        var verdict = ClaimVerifier.Verify(IssueSecret().Encode(), Requirements(End.AddYears(1)));
        Assert.Equal(ClaimVerdictReason.Expired, verdict.Reason);
        Assert.Contains("2030-01-31T00:00:00Z", verdict.Message);
    }

    [Fact]
    public void Not_yet_valid_before_the_not_before_time()
    {
        Assert.Equal(ClaimVerdictReason.Valid, ClaimVerifier.Verify(IssueSecret().Encode(), Requirements(Start)).Reason);
        var verdict = ClaimVerifier.Verify(IssueSecret().Encode(), Requirements(Start.AddSeconds(-1)));
        Assert.Equal(ClaimVerdictReason.NotYetValid, verdict.Reason);
        Assert.Contains("2030-01-01T00:00:00Z", verdict.Message);
    }

    [Theory]
    [InlineData(ClearanceLevel.Unclassified, ClearanceLevel.Restricted)]
    [InlineData(ClearanceLevel.Confidential, ClearanceLevel.Secret)]
    [InlineData(ClearanceLevel.Secret, ClearanceLevel.TopSecret)]
    public void Clearance_too_low(ClearanceLevel granted, ClearanceLevel required)
    {
        Claim claim = Claim.Issue(_issuer, _subject.Public, granted, Start, End);
        var requirements = new ClaimRequirements { TrustedIssuers = [_issuer.Public], MinimumClearance = required, At = Start };
        var verdict = ClaimVerifier.Verify(claim.Encode(), requirements);
        Assert.Equal(ClaimVerdictReason.InsufficientClearance, verdict.Reason);
        Assert.Contains($"grants {ClearanceLevelNames.ToName(granted)}, and {ClearanceLevelNames.ToName(required)} is required", verdict.Message);

        var enough = new ClaimRequirements { TrustedIssuers = [_issuer.Public], MinimumClearance = granted, At = Start };
        Assert.True(ClaimVerifier.Verify(claim.Encode(), enough).IsValid);
    }

    [Fact]
    public void Scopes_limit_a_claim_and_no_scopes_cover_everything()
    {
        var limited = IssueSecret("models/llama");
        var unlimited = IssueSecret();
        ClaimRequirements For(string scope) => new() { TrustedIssuers = [_issuer.Public], Scope = scope, At = Start };

        Assert.True(ClaimVerifier.Verify(limited.Encode(), For("models/llama")).IsValid);
        Assert.Equal(ClaimVerdictReason.ScopeMismatch, ClaimVerifier.Verify(limited.Encode(), For("redis")).Reason);
        Assert.Equal(ClaimVerdictReason.ScopeMismatch, ClaimVerifier.Verify(limited.Encode(), For("models/Llama")).Reason);
        Assert.True(ClaimVerifier.Verify(unlimited.Encode(), For("anything")).IsValid);
    }

    [Fact]
    public void The_first_failing_check_is_reported()
    {
        // Untrusted, wrong subject, expired and too low all at once: trust is checked first.
        Claim claim = Claim.Issue(_stranger, _stranger.Public, ClearanceLevel.Unclassified, Start, End);
        var all = new ClaimRequirements
        {
            TrustedIssuers = [_issuer.Public],
            Subject = _subject.Public,
            MinimumClearance = ClearanceLevel.TopSecret,
            At = End.AddDays(1),
        };
        Assert.Equal(ClaimVerdictReason.UntrustedIssuer, ClaimVerifier.Verify(claim.Encode(), all).Reason);
        Assert.Equal(ClaimVerdictReason.SubjectMismatch,
            ClaimVerifier.Verify(claim.Encode(), new ClaimRequirements { TrustedIssuers = [_stranger.Public], Subject = _subject.Public, At = End.AddDays(1) }).Reason);
        Assert.Equal(ClaimVerdictReason.Expired,
            ClaimVerifier.Verify(claim.Encode(), new ClaimRequirements { TrustedIssuers = [_stranger.Public], MinimumClearance = ClearanceLevel.TopSecret, At = End.AddDays(1) }).Reason);
    }

    [Fact]
    public void Issue_refuses_bad_arguments_with_clear_messages()
    {
        Assert.Contains("before it comes into force", Assert.Throws<ArgumentException>(
            () => Claim.Issue(_issuer, _subject.Public, ClearanceLevel.Secret, End, Start)).Message);
        Assert.Contains("given twice", Assert.Throws<ArgumentException>(
            () => Claim.Issue(_issuer, _subject.Public, ClearanceLevel.Secret, Start, End, ["a", "a"])).Message);
        Assert.Contains("not a valid scope", Assert.Throws<ArgumentException>(
            () => Claim.Issue(_issuer, _subject.Public, ClearanceLevel.Secret, Start, End, ["has space"])).Message);
        Assert.Contains("not a clearance level", Assert.Throws<ArgumentException>(
            () => Claim.Issue(_issuer, _subject.Public, (ClearanceLevel)5, Start, End)).Message);
        Assert.Throws<ArgumentException>(() => Claim.Issue(_issuer, _subject.Public, ClearanceLevel.Secret,
            DateTimeOffset.UnixEpoch.AddSeconds(-1), End));
        Assert.Throws<ArgumentException>(() => Claim.Issue(_issuer, _subject.Public, ClearanceLevel.Secret, Start, End,
            Enumerable.Range(0, Claim.MaxScopes + 1).Select(i => $"s{i}")));
    }

    [Fact]
    public void Claim_files_are_armored_and_read_back()
    {
        using var dir = new TempDirectory();
        Claim claim = IssueSecret("a");
        ClaimFile.Write(dir.File("c.claim"), claim);
        Assert.Equal(ClaimVerdictReason.Valid, ClaimVerifier.Verify(ClaimFile.ReadAllBytes(dir.File("c.claim")), Requirements()).Reason);
        Assert.Equal(IdentityErrorKind.AlreadyExists, Assert.Throws<IdentityException>(() => ClaimFile.Write(dir.File("c.claim"), claim)).Kind);
        Assert.Equal(IdentityErrorKind.NotFound, Assert.Throws<IdentityException>(() => ClaimFile.ReadAllBytes(dir.File("none"))).Kind);
    }

    [Theory]
    [InlineData("UNCLASSIFIED", ClearanceLevel.Unclassified)]
    [InlineData("restricted", ClearanceLevel.Restricted)]
    [InlineData("Confidential", ClearanceLevel.Confidential)]
    [InlineData("SECRET", ClearanceLevel.Secret)]
    [InlineData("TOPSECRET", ClearanceLevel.TopSecret)]
    [InlineData("top-secret", ClearanceLevel.TopSecret)]
    public void Clearance_names_parse(string name, ClearanceLevel level)
    {
        Assert.True(ClearanceLevelNames.TryParse(name, out var parsed));
        Assert.Equal(level, parsed);
        Assert.True(ClearanceLevelNames.TryParse(ClearanceLevelNames.ToName(level), out var again));
        Assert.Equal(level, again);
    }

    [Fact]
    public void Levels_are_ordered_and_unknown_names_refused()
    {
        Assert.True(ClearanceLevel.Unclassified < ClearanceLevel.Restricted);
        Assert.True(ClearanceLevel.Restricted < ClearanceLevel.Confidential);
        Assert.True(ClearanceLevel.Confidential < ClearanceLevel.Secret);
        Assert.True(ClearanceLevel.Secret < ClearanceLevel.TopSecret);
        Assert.False(ClearanceLevelNames.TryParse("COSMIC", out _));
        Assert.False(ClearanceLevelNames.TryParse("", out _));
    }
}
