using Tibet.Core.Audit;

namespace Tibet.Fuzz.Targets;

/// <summary>
/// Audit logs: the verifier's line splitting and chain checks (AuditVerifier.Verify) and,
/// through it, every line's record parser (AuditRecordFormat.TryParse). Both answer bad
/// input with a result (a first bad line, a false return) and document no exception for
/// it; <see cref="AuditLogException"/> is only for a log file that cannot be opened or
/// read, which an in-memory log never is. So here every exception is a crash.
/// </summary>
internal sealed class AuditTarget : FuzzTarget
{
    public override string Name => "audit";

    public override string RefusalContract => "an AuditVerification with a first bad line (no exception at all)";

    public override FuzzOutcome Run(byte[] input)
    {
        var verification = AuditVerifier.Verify(input);
        if (!verification.IsIntact)
            return FuzzOutcome.Refuse($"line {verification.FirstBadLine}: {verification.Message}");

        // The head of an intact log is an anchor that the same log must satisfy.
        var head = verification.Head ?? throw new FuzzInvariantException("an intact log has no head");
        var anchored = AuditVerifier.Verify(input, head);
        if (!anchored.IsIntact)
            throw new FuzzInvariantException($"an intact log fails its own head {head} as anchor: {anchored.Message}");
        if (head.Line > 0 && !AuditRecordFormat.TryParse(LastLine(input), out _, out string problem))
            throw new FuzzInvariantException($"an intact log's last line does not parse: {problem}");
        return FuzzOutcome.Accept(verification.Message);
    }

    private static ReadOnlySpan<byte> LastLine(ReadOnlySpan<byte> log)
    {
        var body = log[..^1]; // an intact, non-empty log ends with a newline
        return body[(body.LastIndexOf((byte)'\n') + 1)..];
    }
}
