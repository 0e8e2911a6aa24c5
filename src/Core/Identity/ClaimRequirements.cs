namespace Tibet.Core.Identity;

/// <summary>What a claim must satisfy to be <see cref="ClaimVerdictReason.Valid"/>.</summary>
public sealed class ClaimRequirements
{
    /// <summary>Issuers whose signatures are accepted (matched by fingerprint). Empty
    /// means no claim can be valid.</summary>
    public required IReadOnlyCollection<PublicIdentity> TrustedIssuers { get; init; }

    /// <summary>The identity the claim must be issued to; null accepts any subject (only
    /// sensible when the caller checks the subject itself).</summary>
    public PublicIdentity? Subject { get; init; }

    /// <summary>The lowest clearance accepted; the default accepts every level.</summary>
    public ClearanceLevel MinimumClearance { get; init; } = ClearanceLevel.Unclassified;

    /// <summary>A scope the claim must cover: a claim without scopes covers every scope, a
    /// claim with scopes only those it lists. Null requires nothing.</summary>
    public string? Scope { get; init; }

    /// <summary>The moment at which the claim must be in force; now by default.</summary>
    public DateTimeOffset At { get; init; } = DateTimeOffset.UtcNow;
}
