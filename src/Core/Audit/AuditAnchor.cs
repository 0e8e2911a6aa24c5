using System.Diagnostics.CodeAnalysis;
using System.Globalization;

namespace Tibet.Core.Audit;

/// <summary>
/// A line number and the SHA-256 of that line, written "N:HEX". Recorded somewhere the
/// log's writer cannot change (a ticket, another machine), it lets a later verification
/// prove that the first N lines are still exactly those lines, which a hash chain alone
/// cannot: lines cut from the end of a log leave a shorter, still valid chain.
/// </summary>
public sealed class AuditAnchor : IEquatable<AuditAnchor>
{
    /// <summary>Creates an anchor; <paramref name="hash"/> is 64 hex digits.</summary>
    public AuditAnchor(long line, string hash)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(line);
        if (!AuditChain.IsHash(hash.ToLowerInvariant()))
            throw new ArgumentException("An anchor hash is 64 hex digits.", nameof(hash));
        if (line == 0 && hash != AuditChain.Genesis)
            throw new ArgumentException("The anchor of an empty log (line 0) has the genesis hash, 64 zeros.", nameof(hash));
        Line = line;
        Hash = hash.ToLowerInvariant();
    }

    /// <summary>The 1-based line number (0 for an empty log, with the genesis hash).</summary>
    public long Line { get; }

    /// <summary>SHA-256 of the line's bytes (without its newline), lowercase hex.</summary>
    public string Hash { get; }

    /// <summary>Parses "N:HEX".</summary>
    public static bool TryParse(string? text, [NotNullWhen(true)] out AuditAnchor? anchor)
    {
        anchor = null;
        int colon = text?.IndexOf(':') ?? -1;
        if (text == null || colon <= 0
            || !long.TryParse(text.AsSpan(0, colon), NumberStyles.None, CultureInfo.InvariantCulture, out long line)
            || !AuditChain.IsHash(text[(colon + 1)..].ToLowerInvariant())
            || line == 0 && text[(colon + 1)..] != AuditChain.Genesis)
            return false;
        anchor = new AuditAnchor(line, text[(colon + 1)..]);
        return true;
    }

    /// <summary>"N:HEX".</summary>
    public override string ToString() => $"{Line}:{Hash}";

    /// <inheritdoc/>
    public bool Equals(AuditAnchor? other) => other is not null && other.Line == Line && other.Hash == Hash;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => Equals(obj as AuditAnchor);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(Line, Hash);
}
