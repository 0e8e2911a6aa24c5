using Tibet.Core.Identity;

namespace Tibet.Core.Sealing;

/// <summary>
/// What a sealed model's header says it requires, as read from its tibet.seal.* metadata.
/// Not authenticated by itself: <see cref="SealedModel.Decide"/> verifies the header's MAC
/// before it relies on any of this.
/// </summary>
public sealed class SealRequirements
{
    private readonly byte[] _fileId;

    internal SealRequirements(uint version, byte[] fileId, ClearanceLevel clearance,
        IReadOnlyList<PublicIdentity> trustedIssuers, IReadOnlyList<Fingerprint> recipients, string? scope)
    {
        Scope = scope;
        Version = version;
        _fileId = fileId;
        Clearance = clearance;
        TrustedIssuers = trustedIssuers;
        Recipients = recipients;
    }

    /// <summary>tibet.seal.version.</summary>
    public uint Version { get; }

    /// <summary>The 16 random bytes that name this sealing of the model.</summary>
    public ReadOnlySpan<byte> FileId => _fileId;

    /// <summary><see cref="FileId"/> in lowercase hex, as stored in the header.</summary>
    public string FileIdHex => Convert.ToHexStringLower(_fileId);

    /// <summary>The lowest clearance a claim must grant.</summary>
    public ClearanceLevel Clearance { get; }

    /// <summary>tibet.seal.scope: the scope a claim must cover (a claim without scopes covers
    /// every scope); null when the model was sealed without one.</summary>
    public string? Scope { get; }

    /// <summary>The issuers whose claims are accepted.</summary>
    public IReadOnlyList<PublicIdentity> TrustedIssuers { get; }

    /// <summary>The identities the data key is wrapped to, as listed in the header
    /// (informational: the trailer's wrapped keys decide).</summary>
    public IReadOnlyList<Fingerprint> Recipients { get; }
}
