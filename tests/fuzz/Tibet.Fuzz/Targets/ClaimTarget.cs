using Tibet.Core.Identity;

namespace Tibet.Fuzz.Targets;

/// <summary>
/// Claims, binary or armored: Claim.TryDecode and the whole of ClaimVerifier.Verify
/// (signature, trust, subject, time window, clearance, scope) against fixed requirements.
/// Both document that they never throw for bad input, so here every exception is a crash
/// and a refusal is a verdict other than Valid.
/// </summary>
internal sealed class ClaimTarget : FuzzTarget
{
    public override string Name => "claim";

    public override string RefusalContract => "a ClaimVerdict other than Valid (no exception at all)";

    public override FuzzOutcome Run(byte[] input)
    {
        var verdict = ClaimVerifier.Verify(input, FuzzKeys.Requirements);
        if (verdict.Claim is { } claim && !input.AsSpan().StartsWith("-----BEGIN "u8) && !claim.Encode().AsSpan().SequenceEqual(input))
            throw new FuzzInvariantException("a binary claim decoded, but encoding it again gives other bytes: a claim must have exactly one encoding");
        return verdict.Reason == ClaimVerdictReason.Valid
            ? FuzzOutcome.Accept(verdict.Message)
            : FuzzOutcome.Refuse($"{verdict.Reason}: {verdict.Message}");
    }
}
