using System.Diagnostics.CodeAnalysis;

namespace Tibet.Core.Identity;

/// <summary>
/// The public half of an identity: an X25519 key that data keys are wrapped to, and an
/// Ed25519 key that verifies what the identity signs. Safe to share; its
/// <see cref="Fingerprint"/> is how people and audit records name the identity.
/// </summary>
/// <remarks>
/// Binary form (69 bytes, the body of a .pub file):
/// <c>"TBPK" ‖ version (1) ‖ X25519 public key (32) ‖ Ed25519 public key (32)</c>.
/// </remarks>
public sealed class PublicIdentity : IEquatable<PublicIdentity>
{
    /// <summary>Bytes in each public key.</summary>
    public const int KeySize = 32;

    /// <summary>Bytes in the binary form.</summary>
    public const int EncodedSize = 5 + 2 * KeySize;

    internal const byte CurrentVersion = 1;
    private static ReadOnlySpan<byte> Magic => "TBPK"u8;

    private readonly byte[] _agreementKey;
    private readonly byte[] _signingKey;

    /// <summary>Creates a public identity from its two raw 32-byte public keys.</summary>
    public PublicIdentity(ReadOnlySpan<byte> agreementKey, ReadOnlySpan<byte> signingKey)
    {
        if (agreementKey.Length != KeySize || signingKey.Length != KeySize)
            throw new ArgumentException($"Both public keys must be {KeySize} bytes.");
        _agreementKey = agreementKey.ToArray();
        _signingKey = signingKey.ToArray();
        Fingerprint = Fingerprint.Of(Encode());
    }

    /// <summary>The raw X25519 public key (data keys are wrapped to it).</summary>
    public ReadOnlySpan<byte> AgreementKey => _agreementKey;

    /// <summary>The raw Ed25519 public key (verifies this identity's signatures).</summary>
    public ReadOnlySpan<byte> SigningKey => _signingKey;

    /// <summary>SHA-256 of <see cref="Encode"/>.</summary>
    public Fingerprint Fingerprint { get; }

    /// <summary>The 69-byte binary form.</summary>
    public byte[] Encode()
    {
        var encoded = new byte[EncodedSize];
        EncodeTo(encoded);
        return encoded;
    }

    internal void EncodeTo(Span<byte> destination)
    {
        Magic.CopyTo(destination);
        destination[4] = CurrentVersion;
        _agreementKey.CopyTo(destination[5..]);
        _signingKey.CopyTo(destination[(5 + KeySize)..]);
    }

    /// <summary>Parses the binary form; throws <see cref="IdentityException"/> (Malformed or
    /// UnsupportedVersion) for anything else.</summary>
    public static PublicIdentity Decode(ReadOnlySpan<byte> encoded) =>
        TryDecode(encoded, out var identity, out var kind, out string problem)
            ? identity
            : throw new IdentityException(kind, $"This is not a public identity: {problem}.");

    internal static bool TryDecode(ReadOnlySpan<byte> encoded, [NotNullWhen(true)] out PublicIdentity? identity,
        out IdentityErrorKind failure, out string problem)
    {
        identity = null;
        failure = IdentityErrorKind.Malformed;
        if (encoded.Length < 5 || !encoded.StartsWith(Magic))
        {
            problem = "it does not start with the public identity magic \"TBPK\"";
            return false;
        }
        if (encoded[4] != CurrentVersion)
        {
            failure = IdentityErrorKind.UnsupportedVersion;
            problem = $"it has format version {encoded[4]}, and this tibet reads version {CurrentVersion} only (upgrade tibet)";
            return false;
        }
        if (encoded.Length != EncodedSize)
        {
            problem = $"it is {encoded.Length} bytes long instead of {EncodedSize}";
            return false;
        }
        identity = new PublicIdentity(encoded.Slice(5, KeySize), encoded.Slice(5 + KeySize, KeySize));
        problem = "";
        return true;
    }

    /// <inheritdoc/>
    public bool Equals(PublicIdentity? other) => other is not null && Fingerprint.Equals(other.Fingerprint);

    /// <inheritdoc/>
    public override bool Equals(object? obj) => Equals(obj as PublicIdentity);

    /// <inheritdoc/>
    public override int GetHashCode() => Fingerprint.GetHashCode();

    /// <summary>The fingerprint in hex.</summary>
    public override string ToString() => Fingerprint.ToString();
}
