using System.Diagnostics.CodeAnalysis;

namespace Tibet.Core.Identity;

/// <summary>
/// The name of an identity: SHA-256 of its encoded public identity (the binary inside
/// a .pub file: magic, version and both public keys). Shown as lowercase hex; two
/// identities are the same identity exactly when their fingerprints are equal.
/// </summary>
/// <remarks>Because it hashes the exact bytes of the .pub body, anyone can recompute it:
/// <c>sed '1d;$d' alice.pub | base64 -d | sha256sum</c>.</remarks>
public sealed class Fingerprint : IEquatable<Fingerprint>
{
    /// <summary>Bytes in a fingerprint.</summary>
    public const int Size = IdentityAlgorithms.HashSize;

    /// <summary>Hex digits shown by <see cref="ToShortString"/>: 64 bits, enough to tell
    /// identities apart by eye, not to authenticate one.</summary>
    public const int ShortLength = 16;

    private readonly byte[] _bytes;

    private Fingerprint(byte[] bytes) => _bytes = bytes;

    /// <summary>The 32 hash bytes.</summary>
    public ReadOnlySpan<byte> Bytes => _bytes;

    internal static Fingerprint Of(ReadOnlySpan<byte> encodedPublicIdentity)
    {
        var bytes = new byte[Size];
        IdentityAlgorithms.Sha256(encodedPublicIdentity, bytes);
        return new Fingerprint(bytes);
    }

    /// <summary>Parses the 64-digit hex form (either case).</summary>
    public static bool TryParse(string? text, [NotNullWhen(true)] out Fingerprint? fingerprint)
    {
        fingerprint = null;
        if (text is not { Length: Size * 2 })
            return false;
        var bytes = new byte[Size];
        if (Convert.FromHexString(text, bytes, out _, out int written) != System.Buffers.OperationStatus.Done || written != Size)
            return false;
        fingerprint = new Fingerprint(bytes);
        return true;
    }

    /// <summary>All 64 lowercase hex digits: the form written to audit records.</summary>
    public override string ToString() => Convert.ToHexStringLower(_bytes);

    /// <summary>The first <see cref="ShortLength"/> hex digits, for display.</summary>
    public string ToShortString() => Convert.ToHexStringLower(_bytes, 0, ShortLength / 2);

    /// <inheritdoc/>
    public bool Equals(Fingerprint? other) => other is not null && _bytes.AsSpan().SequenceEqual(other._bytes);

    /// <inheritdoc/>
    public override bool Equals(object? obj) => Equals(obj as Fingerprint);

    /// <inheritdoc/>
    public override int GetHashCode() => BitConverter.ToInt32(_bytes, 0);
}
