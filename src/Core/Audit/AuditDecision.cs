namespace Tibet.Core.Audit;

/// <summary>What was decided about a request for protected data.</summary>
public enum AuditDecision
{
    /// <summary>Live data was served.</summary>
    Granted,

    /// <summary>Refused: the process got dead material (zero pages) or an error.</summary>
    Denied,
}
