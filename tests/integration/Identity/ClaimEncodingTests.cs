using System.Buffers.Binary;
using System.Text;
using Tibet.Core.Identity;
using Xunit;
using SecretIdentity = Tibet.Core.Identity.Identity;

namespace Tibet.IntegrationTests.Identities;

/// <summary>
/// The claim encoding is canonical: the documented layout, exactly one encoding per claim
/// (decode then encode gives the same bytes), and every other spelling refused even when
/// it carries a valid signature.
/// </summary>
public sealed class ClaimEncodingTests : IDisposable
{
    private const long Start = 1893456000; // 2030-01-01T00:00:00Z
    private const long End = Start + 30 * 86400;

    private readonly SecretIdentity _issuer = SecretIdentity.Generate();
    private readonly SecretIdentity _subject = SecretIdentity.Generate();

    public void Dispose()
    {
        _issuer.Dispose();
        _subject.Dispose();
    }

    /// <summary>Builds a claim by the layout in the documentation, independently of the
    /// library's encoder, and signs it as documented.</summary>
    private byte[] Build(byte version = 1, byte clearance = 3, long issued = Start, long from = Start, long until = End,
        string[]? scopes = null, byte[]? id = null, byte? scopeCount = null, byte[]? afterSignature = null)
    {
        var body = new List<byte>();
        body.AddRange("TBCL"u8.ToArray());
        body.Add(version);
        body.AddRange(id ?? Enumerable.Range(1, 16).Select(i => (byte)i).ToArray());
        body.AddRange(_issuer.Public.AgreementKey.ToArray());
        body.AddRange(_issuer.Public.SigningKey.ToArray());
        body.AddRange(_subject.Public.AgreementKey.ToArray());
        body.AddRange(_subject.Public.SigningKey.ToArray());
        body.Add(clearance);
        foreach (long time in new[] { issued, from, until })
        {
            var le = new byte[8];
            BinaryPrimitives.WriteInt64LittleEndian(le, time);
            body.AddRange(le);
        }
        scopes ??= [];
        body.Add(scopeCount ?? (byte)scopes.Length);
        foreach (string scope in scopes)
        {
            body.Add((byte)Encoding.ASCII.GetByteCount(scope));
            body.AddRange(Encoding.ASCII.GetBytes(scope));
        }
        byte[] message = [.. "TIBET claim v1\0"u8.ToArray(), .. body];
        var signature = new byte[64];
        _issuer.Sign(message, signature);
        return [.. body, .. signature, .. afterSignature ?? []];
    }

    private ClaimVerdict Verify(byte[] data) =>
        ClaimVerifier.Verify(data, new ClaimRequirements { TrustedIssuers = [_issuer.Public], At = DateTimeOffset.FromUnixTimeSeconds(Start) });

    [Fact]
    public void The_library_writes_exactly_the_documented_layout()
    {
        Claim claim = Claim.Issue(_issuer, _subject.Public, ClearanceLevel.Secret, DateTimeOffset.FromUnixTimeSeconds(Start),
            DateTimeOffset.FromUnixTimeSeconds(End), ["b-scope", "a.scope"], DateTimeOffset.FromUnixTimeSeconds(Start));
        byte[] byHand = Build(scopes: ["a.scope", "b-scope"], id: claim.Id.ToArray());
        Assert.Equal(Convert.ToHexString(byHand), Convert.ToHexString(claim.Encode()));
        Assert.Equal(ClaimVerdictReason.Valid, Verify(byHand).Reason);
    }

    [Fact]
    public void Decoding_then_encoding_gives_back_the_same_bytes()
    {
        var random = new Random(1234);
        for (int i = 0; i < 300; i++)
        {
            string[] scopes = Enumerable.Range(0, random.Next(0, 6)).Select(n => $"scope{n}-{random.Next(1000)}").Distinct().ToArray();
            DateTimeOffset from = DateTimeOffset.FromUnixTimeSeconds(random.NextInt64(0, 4_000_000_000));
            Claim claim = Claim.Issue(_issuer, _subject.Public, (ClearanceLevel)random.Next(0, 5), from,
                from.AddSeconds(random.Next(1, 100_000_000)), scopes, from);
            byte[] encoded = claim.Encode();

            Assert.True(Claim.TryDecode(encoded, out var decoded, out _, out string problem), problem);
            Assert.Equal(encoded, decoded.Encode());
            Assert.True(Claim.TryDecode(claim.ToArmoredText(), out var fromText, out _, out problem), problem);
            Assert.Equal(encoded, fromText.Encode());
            Assert.Equal(claim.ToArmoredText(), fromText.ToArmoredText());
        }
    }

    public static TheoryData<string> NonCanonicalVariants() =>
    [
        "unsorted scopes", "repeated scope", "empty scope", "scope with a space", "scope of 65 bytes", "33 scopes",
        "clearance 5", "clearance 255", "negative not-before", "expires after 9999", "expires at not-before",
        "expires before not-before", "a byte after the signature", "scope count beyond the data", "truncated signature",
    ];

    [Theory]
    [MemberData(nameof(NonCanonicalVariants))]
    public void A_correctly_signed_but_non_canonical_encoding_is_refused(string variant)
    {
        byte[] data = variant switch
        {
            "unsorted scopes" => Build(scopes: ["b", "a"]),
            "repeated scope" => Build(scopes: ["a", "a"]),
            "empty scope" => Build(scopes: [""]),
            "scope with a space" => Build(scopes: ["a b"]),
            "scope of 65 bytes" => Build(scopes: [new string('x', 65)]),
            "33 scopes" => Build(scopes: Enumerable.Range(0, 33).Select(i => $"s{i:D2}").ToArray()),
            "clearance 5" => Build(clearance: 5),
            "clearance 255" => Build(clearance: 255),
            "negative not-before" => Build(from: -1),
            "expires after 9999" => Build(until: 253402300800),
            "expires at not-before" => Build(until: Start),
            "expires before not-before" => Build(until: Start - 1),
            "a byte after the signature" => Build(afterSignature: [0]),
            "scope count beyond the data" => Build(scopes: ["a"], scopeCount: 2),
            "truncated signature" => Build()[..^1],
            _ => throw new ArgumentException(variant),
        };
        var verdict = Verify(data);
        Assert.Equal(ClaimVerdictReason.BadEncoding, verdict.Reason);
        Assert.Null(verdict.Claim);
        Assert.StartsWith("this is not a claim tibet can read: ", verdict.Message);
    }

    [Fact]
    public void Version_and_magic_are_checked_first()
    {
        Assert.Equal(ClaimVerdictReason.UnsupportedVersion, Verify(Build(version: 2)).Reason);
        Assert.Contains("upgrade tibet", Verify(Build(version: 2)).Message);
        byte[] wrongMagic = Build();
        wrongMagic[0] = (byte)'X';
        Assert.Equal(ClaimVerdictReason.BadEncoding, Verify(wrongMagic).Reason);
        Assert.Equal(ClaimVerdictReason.BadEncoding, Verify([]).Reason);
    }

    [Fact]
    public void Boundary_values_that_are_canonical_are_accepted()
    {
        Assert.Equal(ClaimVerdictReason.Valid, Verify(Build(scopes: Enumerable.Range(0, 32).Select(i => $"s{i:D2}").ToArray())).Reason);
        Assert.Equal(ClaimVerdictReason.Valid, Verify(Build(scopes: [new string('x', 64)])).Reason);
        Assert.Equal(ClaimVerdictReason.Valid, Verify(Build(clearance: 4, issued: 0, until: 253402300799)).Reason);
        Assert.Equal(ClaimVerdictReason.Valid, Verify(Build(scopes: ["A", "a"])).Reason); // byte order: 'A' < 'a'
    }

    [Fact]
    public void Only_the_one_armored_spelling_is_accepted()
    {
        byte[] binary = Build(scopes: ["xy"]); // 242 bytes: the base64 ends in one "="
        string text = Encoding.ASCII.GetString(Armor.Encode("TIBET CLAIM", binary));
        Assert.Equal(ClaimVerdictReason.Valid, Verify(Encoding.ASCII.GetBytes(text)).Reason);
        Assert.Equal(ClaimVerdictReason.Valid, Verify(Encoding.ASCII.GetBytes(text.TrimEnd('\n'))).Reason); // final newline optional

        string[] lines = text.TrimEnd('\n').Split('\n');
        string base64 = string.Concat(lines[1..^1]);
        string Wrap(int width) => lines[0] + "\n" + string.Join("\n", base64.Chunk(width).Select(c => new string(c))) + "\n" + lines[^1] + "\n";
        Assert.Equal(text, Wrap(64));

        var variants = new Dictionary<string, string>
        {
            ["76-character lines"] = Wrap(76),
            ["32-character lines"] = Wrap(32),
            ["CRLF line ends"] = text.Replace("\n", "\r\n", StringComparison.Ordinal),
            ["a missing END line"] = string.Join("\n", lines[..^1]) + "\n",
            ["text after the END line"] = text + "extra\n",
            ["a blank line"] = text.Replace(lines[1] + "\n", lines[1] + "\n\n", StringComparison.Ordinal),
            ["a space in the data"] = text.Replace(lines[2], " " + lines[2][1..], StringComparison.Ordinal),
            ["another label"] = text.Replace("TIBET CLAIM", "TIBET CLAIMS", StringComparison.Ordinal),
            ["lowercase label"] = text.Replace("BEGIN TIBET CLAIM", "BEGIN tibet claim", StringComparison.Ordinal),
        };
        // Base64's spare bits: a last character that differs only in them decodes to the same bytes.
        Assert.EndsWith("=", lines[^2]);
        char last = lines[^2][^2];
        string sloppy = lines[^2][..^2] + (char)(last + 1) + "=";
        variants["non-zero base64 padding bits"] = text.Replace(lines[^2] + "\n", sloppy + "\n", StringComparison.Ordinal);

        foreach (var (name, variant) in variants)
        {
            Assert.NotEqual(text, variant);
            var verdict = Verify(Encoding.ASCII.GetBytes(variant));
            Assert.True(verdict.Reason == ClaimVerdictReason.BadEncoding, $"{name}: {verdict}");
        }
    }
}
