namespace Tibet.Core.Identity;

/// <summary>The result of <see cref="ClaimVerifier.Verify"/>: a reason, a sentence that
/// explains it, and the decoded claim whenever the bytes were a well-formed claim.</summary>
public sealed class ClaimVerdict
{
    internal ClaimVerdict(ClaimVerdictReason reason, string message, Claim? claim)
    {
        Reason = reason;
        Message = message;
        Claim = claim;
    }

    /// <summary>Why the claim is or is not valid.</summary>
    public ClaimVerdictReason Reason { get; }

    /// <summary>True only for <see cref="ClaimVerdictReason.Valid"/>.</summary>
    public bool IsValid => Reason == ClaimVerdictReason.Valid;

    /// <summary>What was found and, for failures, what to do about it.</summary>
    public string Message { get; }

    /// <summary>The decoded claim; null for <see cref="ClaimVerdictReason.BadEncoding"/> and
    /// <see cref="ClaimVerdictReason.UnsupportedVersion"/>.</summary>
    public Claim? Claim { get; }

    /// <summary>"Expired: the claim expired at ...".</summary>
    public override string ToString() => $"{NameOf(Reason)}: {Message}";

    /// <summary>The reason's name as written in output and audit records ("Expired").
    /// Spelled out rather than Enum.ToString, which NativeAOT without reflection
    /// metadata (the interposer) would turn into a number.</summary>
    public static string NameOf(ClaimVerdictReason reason) => reason switch
    {
        ClaimVerdictReason.Valid => nameof(ClaimVerdictReason.Valid),
        ClaimVerdictReason.BadEncoding => nameof(ClaimVerdictReason.BadEncoding),
        ClaimVerdictReason.UnsupportedVersion => nameof(ClaimVerdictReason.UnsupportedVersion),
        ClaimVerdictReason.BadSignature => nameof(ClaimVerdictReason.BadSignature),
        ClaimVerdictReason.UntrustedIssuer => nameof(ClaimVerdictReason.UntrustedIssuer),
        ClaimVerdictReason.SubjectMismatch => nameof(ClaimVerdictReason.SubjectMismatch),
        ClaimVerdictReason.NotYetValid => nameof(ClaimVerdictReason.NotYetValid),
        ClaimVerdictReason.Expired => nameof(ClaimVerdictReason.Expired),
        ClaimVerdictReason.InsufficientClearance => nameof(ClaimVerdictReason.InsufficientClearance),
        ClaimVerdictReason.ScopeMismatch => nameof(ClaimVerdictReason.ScopeMismatch),
        _ => $"Reason{(int)reason}",
    };
}
