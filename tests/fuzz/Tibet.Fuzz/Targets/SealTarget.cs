using Tibet.Core.Identity;
using Tibet.Core.Sealing;

namespace Tibet.Fuzz.Targets;

/// <summary>
/// A sealed model: the GGUF header, its tibet.seal.* metadata (SealHeader) and the trailer
/// (SealTrailer), through SealedModel.Open, which documents
/// <see cref="SealedModelException"/> for every bad file. A file that opens then goes
/// through the access decision with the recipient identity and claim the seed corpus was
/// sealed for (<see cref="FuzzKeys"/>), so the tag table and the MAC check run too;
/// Decide documents that it never throws for a tampered file.
/// </summary>
internal sealed class SealTarget : FuzzTarget
{
    public override string Name => "seal";

    public override string RefusalContract => nameof(SealedModelException) + " from Open; a dead AccessDecision from Decide";

    public override FuzzOutcome Run(byte[] input)
    {
        SealedModel model;
        try
        {
            model = SealedModel.Open(new MemoryStream(input, writable: false), "fuzz input");
        }
        catch (SealedModelException e)
        {
            return FuzzOutcome.Refuse(e);
        }

        using (model)
        {
            using var decision = model.Decide(FuzzKeys.Recipient, FuzzKeys.Claim, FuzzKeys.Now);
            return FuzzOutcome.Accept($"opened ({model.DataPages} data pages, {model.WrappedKeyCount} wrapped keys); decision {decision.Reason}");
        }
    }
}
