using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.Text;
using NSec.Cryptography;
using Tibet.Core.Crypto;

namespace Tibet.Core.Identity;

/// <summary>
/// A clearance claim: "issuer says that subject holds clearance C for scopes S from
/// not-before until expires", signed by the issuer with Ed25519.
/// </summary>
/// <remarks>
/// <para>Binary encoding, version 1 (integers little-endian, times in Unix seconds):</para>
/// <code>
/// offset size
///   0     4   magic "TBCL"
///   4     1   version = 1
///   5    16   claim id (random; names the claim in audit records)
///  21    32   issuer X25519 public key
///  53    32   issuer Ed25519 public key (verifies the signature)
///  85    32   subject X25519 public key
/// 117    32   subject Ed25519 public key
/// 149     1   clearance (0 = UNCLASSIFIED .. 4 = TOPSECRET)
/// 150     8   issued-at   (int64, 0 .. 253402300799, i.e. up to 9999-12-31T23:59:59Z)
/// 158     8   not-before  (same range)
/// 166     8   expires     (same range, and later than not-before)
/// 174     1   scope count n (0 .. 32)
/// 175     …   n scopes, each: length (1 byte, 1 .. 64) ‖ that many ASCII bytes of
///             [A-Za-z0-9._:/@+-], in strictly ascending byte order (so no duplicates)
///   …    64   Ed25519 signature of  "TIBET claim v1" ‖ 0x00 ‖ every byte before it
/// </code>
/// <para>Every field is fixed in size and position except the scopes, which are count-
/// and length-prefixed; every value has one encoding (ranges are checked, scopes must be
/// sorted, nothing may follow the signature), so a claim has exactly one encoding and
/// decoding then re-encoding gives back the same bytes. The context string in front of
/// the signed bytes keeps a claim signature from being valid for any other message the
/// same key signs.</para>
/// </remarks>
public sealed class Claim
{
    /// <summary>Bytes in a claim id.</summary>
    public const int IdSize = 16;

    /// <summary>Most scopes in one claim.</summary>
    public const int MaxScopes = 32;

    /// <summary>Longest scope label, in bytes.</summary>
    public const int MaxScopeLength = 64;

    /// <summary>Latest time a claim can name: 9999-12-31T23:59:59Z.</summary>
    public static readonly DateTimeOffset MaxTime = DateTimeOffset.FromUnixTimeSeconds(MaxUnixSeconds);

    internal const string ArmorLabel = "TIBET CLAIM";
    /// <summary>The encoding version this build writes and reads.</summary>
    public const byte EncodingVersion = 1;
    private const long MaxUnixSeconds = 253402300799;
    private const int SignatureSize = 64;
    private const int ClearanceOffset = 149;
    private const int ScopesOffset = 175;
    private const int MinSize = ScopesOffset + SignatureSize;
    internal const int MaxSize = ScopesOffset + MaxScopes * (1 + MaxScopeLength) + SignatureSize;
    private static ReadOnlySpan<byte> Magic => "TBCL"u8;
    private static ReadOnlySpan<byte> SignatureContext => "TIBET claim v1\0"u8;

    private readonly byte[] _encoded;

    private Claim(byte[] encoded, PublicIdentity issuer, PublicIdentity subject, string[] scopes)
    {
        _encoded = encoded;
        Issuer = issuer;
        Subject = subject;
        Scopes = scopes;
        Clearance = (ClearanceLevel)encoded[ClearanceOffset];
        IssuedAt = DateTimeOffset.FromUnixTimeSeconds(BinaryPrimitives.ReadInt64LittleEndian(encoded.AsSpan(150)));
        NotBefore = DateTimeOffset.FromUnixTimeSeconds(BinaryPrimitives.ReadInt64LittleEndian(encoded.AsSpan(158)));
        Expires = DateTimeOffset.FromUnixTimeSeconds(BinaryPrimitives.ReadInt64LittleEndian(encoded.AsSpan(166)));
    }

    /// <summary>The random id of this claim.</summary>
    public ReadOnlySpan<byte> Id => _encoded.AsSpan(5, IdSize);

    /// <summary>The id in lowercase hex (32 digits).</summary>
    public string IdHex => Convert.ToHexStringLower(_encoded, 5, IdSize);

    /// <summary>Who signed the claim (as named inside it; whether to trust them is the verifier's question).</summary>
    public PublicIdentity Issuer { get; }

    /// <summary>Whom the claim is for.</summary>
    public PublicIdentity Subject { get; }

    /// <summary>The clearance granted.</summary>
    public ClearanceLevel Clearance { get; }

    /// <summary>When it was issued (whole seconds, UTC).</summary>
    public DateTimeOffset IssuedAt { get; }

    /// <summary>First moment it is in force.</summary>
    public DateTimeOffset NotBefore { get; }

    /// <summary>First moment it is no longer in force.</summary>
    public DateTimeOffset Expires { get; }

    /// <summary>The scopes it is limited to, sorted; empty means it is not limited.</summary>
    public IReadOnlyList<string> Scopes { get; }

    /// <summary>The 64-byte Ed25519 signature.</summary>
    public ReadOnlySpan<byte> Signature => _encoded.AsSpan(_encoded.Length - SignatureSize);

    /// <summary>Whether the claim covers <paramref name="scope"/>: it has no scopes, or lists this one.</summary>
    public bool Covers(string scope) => Scopes.Count == 0 || Scopes.Contains(scope, StringComparer.Ordinal);

    /// <summary>The canonical binary encoding, signature included.</summary>
    public byte[] Encode() => (byte[])_encoded.Clone();

    /// <summary>The armored text of the claim (the contents of a claim file).</summary>
    public byte[] ToArmoredText() => Armor.Encode(ArmorLabel, _encoded);

    /// <summary>
    /// Issues a claim signed by <paramref name="issuer"/>. Times are truncated to whole
    /// seconds. Throws <see cref="ArgumentException"/> for an undefined level, times out of
    /// range or in the wrong order, and malformed or repeated scopes.
    /// </summary>
    public static Claim Issue(Identity issuer, PublicIdentity subject, ClearanceLevel clearance,
        DateTimeOffset notBefore, DateTimeOffset expires, IEnumerable<string>? scopes = null, DateTimeOffset? issuedAt = null)
    {
        if (!ClearanceLevelNames.IsDefined(clearance))
            throw new ArgumentException($"{(byte)clearance} is not a clearance level; use one of {ClearanceLevelNames.Syntax}.", nameof(clearance));
        long issued = ToUnixSeconds(issuedAt ?? DateTimeOffset.UtcNow, nameof(issuedAt));
        long from = ToUnixSeconds(notBefore, nameof(notBefore));
        long until = ToUnixSeconds(expires, nameof(expires));
        if (until <= from)
            throw new ArgumentException($"The claim would expire ({expires:O}) before it comes into force ({notBefore:O}); give a later expiry.", nameof(expires));
        string[] sorted = SortScopes(scopes ?? []);

        int size = ScopesOffset + sorted.Sum(scope => 1 + scope.Length) + SignatureSize;
        var encoded = new byte[size];
        Magic.CopyTo(encoded);
        encoded[4] = EncodingVersion;
        SecureRandom.Fill(encoded.AsSpan(5, IdSize));
        issuer.Public.AgreementKey.CopyTo(encoded.AsSpan(21));
        issuer.Public.SigningKey.CopyTo(encoded.AsSpan(53));
        subject.AgreementKey.CopyTo(encoded.AsSpan(85));
        subject.SigningKey.CopyTo(encoded.AsSpan(117));
        encoded[ClearanceOffset] = (byte)clearance;
        BinaryPrimitives.WriteInt64LittleEndian(encoded.AsSpan(150), issued);
        BinaryPrimitives.WriteInt64LittleEndian(encoded.AsSpan(158), from);
        BinaryPrimitives.WriteInt64LittleEndian(encoded.AsSpan(166), until);
        encoded[174] = (byte)sorted.Length;
        int at = ScopesOffset;
        foreach (string scope in sorted)
        {
            encoded[at++] = (byte)scope.Length;
            at += Encoding.ASCII.GetBytes(scope, encoded.AsSpan(at));
        }
        issuer.Sign(SignedMessage(encoded.AsSpan(0, at)), encoded.AsSpan(at, SignatureSize));
        return new Claim(encoded, issuer.Public, subject, sorted);
    }

    /// <summary>
    /// Decodes a claim from its binary encoding or its armored text (recognised by its
    /// "-----BEGIN" line). Never throws for bad input: on failure
    /// <paramref name="failure"/> is <see cref="ClaimVerdictReason.BadEncoding"/> or
    /// <see cref="ClaimVerdictReason.UnsupportedVersion"/> and <paramref name="problem"/>
    /// says what is wrong. The signature is not checked here (see <see cref="ClaimVerifier"/>).
    /// </summary>
    public static bool TryDecode(ReadOnlySpan<byte> data, [NotNullWhen(true)] out Claim? claim, out ClaimVerdictReason failure, out string problem)
    {
        claim = null;
        if (data.StartsWith("-----BEGIN "u8))
        {
            int longest = Armor.EncodedLength(ArmorLabel, MaxSize);
            if (data.Length > longest)
            {
                failure = ClaimVerdictReason.BadEncoding;
                problem = $"it is {data.Length} bytes long, longer than any claim";
                return false;
            }
            byte[] binary = new byte[Armor.MaxDecodedLength(data.Length)];
            if (!Armor.TryDecode(ArmorLabel, data, binary, out int length, out problem))
            {
                failure = ClaimVerdictReason.BadEncoding;
                return false;
            }
            return TryDecodeBinary(binary.AsSpan(0, length), out claim, out failure, out problem);
        }
        return TryDecodeBinary(data, out claim, out failure, out problem);
    }

    /// <summary>Whether the signature verifies with the issuer key named in the claim. This
    /// says the claim is intact, not that its issuer is trusted (<see cref="ClaimVerifier"/> decides that).</summary>
    public bool HasValidSignature()
    {
        if (!PublicKey.TryImport(IdentityAlgorithms.Signing, Issuer.SigningKey, KeyBlobFormat.RawPublicKey, out var issuerKey) || issuerKey is null)
            return false;
        byte[] message = SignedMessage(_encoded.AsSpan(0, _encoded.Length - SignatureSize));
        return IdentityAlgorithms.Signing.Verify(issuerKey, message, Signature);
    }

    private static bool TryDecodeBinary(ReadOnlySpan<byte> data, [NotNullWhen(true)] out Claim? claim, out ClaimVerdictReason failure, out string problem)
    {
        claim = null;
        failure = ClaimVerdictReason.BadEncoding;
        if (data.Length < 5 || !data.StartsWith(Magic))
        {
            problem = "it does not start with the claim magic \"TBCL\"";
            return false;
        }
        if (data[4] != EncodingVersion)
        {
            failure = ClaimVerdictReason.UnsupportedVersion;
            problem = $"it is a version {data[4]} claim, and this tibet reads version {EncodingVersion} only (upgrade tibet)";
            return false;
        }
        if (data.Length < MinSize)
        {
            problem = $"it is {data.Length} bytes long, shorter than any claim ({MinSize})";
            return false;
        }
        if (data.Length > MaxSize)
        {
            problem = $"it is {data.Length} bytes long, longer than any claim ({MaxSize})";
            return false;
        }
        if (!ClearanceLevelNames.IsDefined((ClearanceLevel)data[ClearanceOffset]))
        {
            problem = $"its clearance byte is {data[ClearanceOffset]}, which is not a level (0..{(byte)ClearanceLevelNames.Highest})";
            return false;
        }
        long issued = BinaryPrimitives.ReadInt64LittleEndian(data[150..]);
        long from = BinaryPrimitives.ReadInt64LittleEndian(data[158..]);
        long until = BinaryPrimitives.ReadInt64LittleEndian(data[166..]);
        foreach (var (name, value) in new[] { ("issued-at", issued), ("not-before", from), ("expires", until) })
        {
            if (value is < 0 or > MaxUnixSeconds)
            {
                problem = $"its {name} time ({value}) is outside 1970-01-01 .. 9999-12-31";
                return false;
            }
        }
        if (until <= from)
        {
            problem = "it expires before it comes into force";
            return false;
        }

        int count = data[174];
        if (count > MaxScopes)
        {
            problem = $"it claims {count} scopes, more than the {MaxScopes} allowed";
            return false;
        }
        var scopes = new string[count];
        int at = ScopesOffset;
        for (int i = 0; i < count; i++)
        {
            if (at >= data.Length - SignatureSize)
            {
                problem = $"it ends inside scope {i + 1}";
                return false;
            }
            int length = data[at++];
            if (length is 0 or > MaxScopeLength || at + length > data.Length - SignatureSize)
            {
                problem = $"scope {i + 1} has length {length}, not 1..{MaxScopeLength} within the claim";
                return false;
            }
            ReadOnlySpan<byte> label = data.Slice(at, length);
            foreach (byte b in label)
            {
                if (!IsScopeCharacter((char)b))
                {
                    problem = $"scope {i + 1} holds the byte 0x{b:x2}, which is not allowed in scopes";
                    return false;
                }
            }
            if (i > 0 && label.SequenceCompareTo(data.Slice(at - 1 - scopes[i - 1].Length, scopes[i - 1].Length)) <= 0)
            {
                problem = $"its scopes are not in strictly ascending order at scope {i + 1} (a repeated or unsorted scope)";
                return false;
            }
            scopes[i] = Encoding.ASCII.GetString(label);
            at += length;
        }
        if (data.Length - at != SignatureSize)
        {
            problem = $"{data.Length - at - SignatureSize} bytes follow the last field and signature";
            return false;
        }

        var issuer = new PublicIdentity(data.Slice(21, PublicIdentity.KeySize), data.Slice(53, PublicIdentity.KeySize));
        var subject = new PublicIdentity(data.Slice(85, PublicIdentity.KeySize), data.Slice(117, PublicIdentity.KeySize));
        claim = new Claim(data.ToArray(), issuer, subject, scopes);
        problem = "";
        return true;
    }

    private static byte[] SignedMessage(ReadOnlySpan<byte> body)
    {
        var message = new byte[SignatureContext.Length + body.Length];
        SignatureContext.CopyTo(message);
        body.CopyTo(message.AsSpan(SignatureContext.Length));
        return message;
    }

    private static long ToUnixSeconds(DateTimeOffset time, string parameter)
    {
        long seconds = time.ToUnixTimeSeconds();
        if (seconds is < 0 or > MaxUnixSeconds)
            throw new ArgumentException($"{time:O} is outside the times a claim can hold (1970-01-01 .. 9999-12-31).", parameter);
        return seconds;
    }

    private static string[] SortScopes(IEnumerable<string> scopes)
    {
        string[] sorted = scopes.ToArray();
        Array.Sort(sorted, StringComparer.Ordinal);
        if (sorted.Length > MaxScopes)
            throw new ArgumentException($"A claim holds at most {MaxScopes} scopes; {sorted.Length} were given.", nameof(scopes));
        for (int i = 0; i < sorted.Length; i++)
        {
            if (!IsValidScope(sorted[i]))
                throw new ArgumentException($"'{sorted[i]}' is not a valid scope: use 1..{MaxScopeLength} characters of A-Z a-z 0-9 . _ : / @ + -.", nameof(scopes));
            if (i > 0 && sorted[i] == sorted[i - 1])
                throw new ArgumentException($"The scope '{sorted[i]}' is given twice; give each scope once.", nameof(scopes));
        }
        return sorted;
    }

    /// <summary>Whether <paramref name="scope"/> may appear in a claim: 1..64 characters of
    /// A-Z a-z 0-9 . _ : / @ + -.</summary>
    public static bool IsValidScope(string? scope) =>
        scope is { Length: >= 1 and <= MaxScopeLength } && scope.All(IsScopeCharacter);

    private static bool IsScopeCharacter(char c) => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or ':' or '/' or '@' or '+' or '-';
}
