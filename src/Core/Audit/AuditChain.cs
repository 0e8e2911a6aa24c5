using Tibet.Core.Identity;

namespace Tibet.Core.Audit;

/// <summary>The hash chain: every record carries the SHA-256 of the previous line's exact
/// bytes (without the newline); the first record carries <see cref="Genesis"/>.</summary>
internal static class AuditChain
{
    /// <summary>The "previous hash" of line 1: 64 zeros.</summary>
    public static readonly string Genesis = new('0', 64);

    public static string Hash(ReadOnlySpan<byte> line)
    {
        Span<byte> hash = stackalloc byte[Fingerprint.Size];
        NSec.Cryptography.HashAlgorithm.Sha256.Hash(line, hash);
        return Convert.ToHexStringLower(hash);
    }

    /// <summary>64 lowercase hex digits.</summary>
    public static bool IsHash(string? text) =>
        text is { Length: 64 } && text.All(c => char.IsAsciiDigit(c) || c is >= 'a' and <= 'f');
}
