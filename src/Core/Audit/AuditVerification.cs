namespace Tibet.Core.Audit;

/// <summary>The result of verifying an audit log.</summary>
public sealed class AuditVerification
{
    internal AuditVerification(long linesChecked, long? firstBadLine, string message, AuditAnchor? head)
    {
        LinesChecked = linesChecked;
        FirstBadLine = firstBadLine;
        Message = message;
        Head = head;
    }

    /// <summary>True when every line chains to the one before it (and the anchor, if one
    /// was given, matches).</summary>
    public bool IsIntact => FirstBadLine == null;

    /// <summary>Lines read; for an intact log, all of them.</summary>
    public long LinesChecked { get; }

    /// <summary>The 1-based number of the first line that is wrong (edited, inserted, out
    /// of place, or missing: then the number where it should be); null when intact.</summary>
    public long? FirstBadLine { get; }

    /// <summary>What was found; for a broken log, what is wrong with that line.</summary>
    public string Message { get; }

    /// <summary>For an intact log: its last line and that line's hash ("0:000…" when
    /// empty), to be recorded elsewhere and given as the anchor of a later verification.</summary>
    public AuditAnchor? Head { get; }
}
