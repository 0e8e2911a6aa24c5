using System.Diagnostics.CodeAnalysis;
using Tibet.Core.Identity;

namespace Tibet.Core.Sealing;

/// <summary>
/// The verdict of <see cref="SealedModel.Decide"/>: live, with the key that decrypts the
/// model, or dead, with the reason and a one-line message that says which check failed
/// and what to do. Disposing the decision disposes its key.
/// </summary>
public sealed class AccessDecision : IDisposable
{
    private AccessDecision(SealAccessReason reason, string message, SealedModelKey? key, Claim? claim)
    {
        Reason = reason;
        Message = message;
        Key = key;
        Claim = claim;
    }

    /// <summary>True when every check passed; <see cref="Key"/> is then set.</summary>
    [MemberNotNullWhen(true, nameof(Key))]
    public bool IsLive => Reason == SealAccessReason.Live;

    /// <summary>Why the model is live or dead: the first check that failed.</summary>
    public SealAccessReason Reason { get; }

    /// <summary>One line: what was found and, when dead, what to do about it.</summary>
    public string Message { get; }

    /// <summary>The key that decrypts the model's pages; null when dead. Owned by this
    /// decision: it is disposed with it.</summary>
    public SealedModelKey? Key { get; }

    /// <summary>The claim that was checked, when the decision got that far (for audit records).</summary>
    public Claim? Claim { get; }

    /// <summary>Disposes <see cref="Key"/>, wiping the data key.</summary>
    public void Dispose() => Key?.Dispose();

    /// <summary>"HeaderTampered: ...".</summary>
    public override string ToString() => $"{Reason}: {Message}";

    internal static AccessDecision Live(SealedModelKey key, Claim claim, string message) =>
        new(SealAccessReason.Live, message, key, claim);

    internal static AccessDecision Dead(SealAccessReason reason, string message, Claim? claim = null)
    {
        if (reason == SealAccessReason.Live)
            throw new ArgumentException("A dead decision needs a failure reason.", nameof(reason));
        return new AccessDecision(reason, message, null, claim);
    }
}
