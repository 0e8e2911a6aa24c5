namespace Tibet.Core.Audit;

/// <summary>One parsed line of an audit log.</summary>
internal sealed record AuditRecord(
    long Sequence,
    string Time,
    int ProcessId,
    string Program,
    string? Identity,
    string Object,
    AuditDecision Decision,
    string Reason,
    string Previous);
