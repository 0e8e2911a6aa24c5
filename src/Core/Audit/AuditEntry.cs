using Tibet.Core.Identity;

namespace Tibet.Core.Audit;

/// <summary>
/// One decision to record. The log adds the time, the process id, the sequence number
/// and the hash chain. Over-long texts are cut (program and object at
/// <see cref="MaxTextLength"/> characters, reason at <see cref="MaxReasonLength"/>) and
/// marked with "…", so that a record always fits in one bounded line.
/// </summary>
public sealed class AuditEntry
{
    /// <summary>Longest program or object text kept.</summary>
    public const int MaxTextLength = 4096;

    /// <summary>Longest reason kept.</summary>
    public const int MaxReasonLength = 1024;

    /// <summary>What was asked for: a sealed model's path, an arena, a claim id.</summary>
    public required string Object { get; init; }

    /// <summary>What was decided.</summary>
    public required AuditDecision Decision { get; init; }

    /// <summary>Why, e.g. a <see cref="ClaimVerdictReason"/> name and its message.</summary>
    public required string Reason { get; init; }

    /// <summary>The identity the process presented; null when it presented none.</summary>
    public Fingerprint? Identity { get; init; }

    /// <summary>The program that asked; null records this process's executable.</summary>
    public string? Program { get; init; }
}
