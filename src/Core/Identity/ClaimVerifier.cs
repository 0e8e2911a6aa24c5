using System.Globalization;

namespace Tibet.Core.Identity;

/// <summary>Decides whether a claim is valid under given requirements.</summary>
public static class ClaimVerifier
{
    /// <summary>
    /// Checks, in this order: encoding, signature (with the issuer key in the claim),
    /// trust in the issuer, subject, time window, clearance, scope. Returns the first
    /// failure, or <see cref="ClaimVerdictReason.Valid"/>. Never throws for bad input.
    /// </summary>
    /// <param name="data">The claim's binary encoding or armored text.</param>
    /// <param name="requirements">What the claim must satisfy.</param>
    public static ClaimVerdict Verify(ReadOnlySpan<byte> data, ClaimRequirements requirements)
    {
        if (!Claim.TryDecode(data, out var claim, out var failure, out string problem))
            return new ClaimVerdict(failure, $"this is not a claim tibet can read: {problem}.", null);
        return Verify(claim, requirements);
    }

    /// <summary>Checks an already decoded claim; see <see cref="Verify(ReadOnlySpan{byte}, ClaimRequirements)"/>.</summary>
    public static ClaimVerdict Verify(Claim claim, ClaimRequirements requirements)
    {
        if (!claim.HasValidSignature())
            return Fail(ClaimVerdictReason.BadSignature,
                "the signature does not match the claim's contents and issuer key: the claim was altered or forged. Ask the issuer for a new one.");

        if (!requirements.TrustedIssuers.Any(trusted => trusted.Equals(claim.Issuer)))
        {
            string trusted = requirements.TrustedIssuers.Count == 0
                ? "no issuer is trusted"
                : "the trusted issuers are " + string.Join(", ", requirements.TrustedIssuers.Select(issuer => issuer.Fingerprint.ToShortString()));
            return Fail(ClaimVerdictReason.UntrustedIssuer,
                $"the claim is signed by issuer {claim.Issuer.Fingerprint.ToShortString()}, which is not trusted ({trusted}). " +
                "Name that issuer's .pub if you trust it, or get a claim from a trusted issuer.");
        }

        if (requirements.Subject is { } subject && !subject.Equals(claim.Subject))
            return Fail(ClaimVerdictReason.SubjectMismatch,
                $"the claim is for subject {claim.Subject.Fingerprint.ToShortString()}, not for {subject.Fingerprint.ToShortString()}. " +
                "Use the claim issued to this identity.");

        if (requirements.At < claim.NotBefore)
            return Fail(ClaimVerdictReason.NotYetValid,
                $"the claim comes into force at {FormatTime(claim.NotBefore)}, and it was checked for {FormatTime(requirements.At)}. Wait until then.");

        if (requirements.At >= claim.Expires)
            return Fail(ClaimVerdictReason.Expired,
                $"the claim expired at {FormatTime(claim.Expires)}, and it was checked for {FormatTime(requirements.At)}. Ask the issuer for a new one.");

        if (claim.Clearance < requirements.MinimumClearance)
            return Fail(ClaimVerdictReason.InsufficientClearance,
                $"the claim grants {ClearanceLevelNames.ToName(claim.Clearance)}, and {ClearanceLevelNames.ToName(requirements.MinimumClearance)} is required.");

        if (requirements.Scope is { } scope && !claim.Covers(scope))
            return Fail(ClaimVerdictReason.ScopeMismatch,
                $"the claim is limited to the scopes {string.Join(", ", claim.Scopes)}, which do not include '{scope}'.");

        return new ClaimVerdict(ClaimVerdictReason.Valid,
            $"signed by trusted issuer {claim.Issuer.Fingerprint.ToShortString()}, {ClearanceLevelNames.ToName(claim.Clearance)} " +
            $"for subject {claim.Subject.Fingerprint.ToShortString()}, in force at {FormatTime(requirements.At)}.", claim);

        ClaimVerdict Fail(ClaimVerdictReason reason, string message) => new(reason, message, claim);
    }

    /// <summary>ISO-8601 UTC with whole seconds, the form used in all claim messages and output.</summary>
    public static string FormatTime(DateTimeOffset time) =>
        time.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture);
}
