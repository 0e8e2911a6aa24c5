using System.Diagnostics.CodeAnalysis;
using Tibet.Core.Gguf;
using Tibet.Core.Identity;

namespace Tibet.Core.Sealing;

/// <summary>
/// The tibet.seal.* metadata of a sealed header, read strictly: each of the seven keys
/// exactly once with its exact type, the optional scope at most once, no other tibet.seal.* key, every value in its one
/// canonical spelling, and a layout (data pages, trailer offset) that agrees with the
/// tensor table and the file's length.
/// </summary>
internal sealed class SealHeader
{
    private SealHeader(SealRequirements requirements, byte[] fileId, long dataPages, long trailerOffset)
    {
        Requirements = requirements;
        FileId = fileId;
        DataPages = dataPages;
        TrailerOffset = trailerOffset;
    }

    public SealRequirements Requirements { get; }

    public byte[] FileId { get; }

    public long DataPages { get; }

    public long TrailerOffset { get; }

    public static bool IsSealed(GgufFile file) =>
        file.Metadata.Any(entry => entry.Key.StartsWith(SealFormat.KeyPrefix, StringComparison.Ordinal));

    /// <exception cref="SealedModelException">NotSealed, UnsupportedSealVersion or MalformedSeal.</exception>
    public static SealHeader Parse(GgufFile file, string sourceName)
    {
        var metadata = file.Metadata;
        if (!IsSealed(file))
            throw new SealedModelException(SealAccessReason.NotSealed,
                $"'{sourceName}' is a plain GGUF model, not a sealed one (it has no {SealFormat.KeyPrefix}* metadata); seal it with 'tibet seal' first.");

        if (!metadata.TryGetValue(SealFormat.VersionKey, out var versionValue))
            throw Malformed(sourceName, $"it has {SealFormat.KeyPrefix}* metadata but no {SealFormat.VersionKey}");
        if (!versionValue.TryGetUInt32(out uint version))
            throw Malformed(sourceName, $"{SealFormat.VersionKey} is a {versionValue.DescribeType()}, not a uint32");
        if (version != SealFormat.Version)
            throw new SealedModelException(SealAccessReason.UnsupportedSealVersion,
                $"'{sourceName}' is sealed with format version {version}, and this tibet reads version {SealFormat.Version} only; upgrade tibet.");

        foreach (var entry in metadata)
        {
            if (entry.Key.StartsWith(SealFormat.KeyPrefix, StringComparison.Ordinal) && Array.IndexOf(SealFormat.Keys, entry.Key) < 0
                && Array.IndexOf(SealFormat.OptionalKeys, entry.Key) < 0)
                throw Malformed(sourceName, $"it has the metadata key '{entry.Key}', which seal format version {SealFormat.Version} does not define");
        }

        string fileIdText = GetString(metadata, SealFormat.FileIdKey, sourceName);
        if (!TryDecodeLowerHex(fileIdText, SealFormat.FileIdSize, out byte[]? fileId))
            throw Malformed(sourceName, $"{SealFormat.FileIdKey} is not {2 * SealFormat.FileIdSize} lowercase hex digits");

        string clearanceText = GetString(metadata, SealFormat.ClearanceKey, sourceName);
        if (!ClearanceLevelNames.TryParse(clearanceText, out var clearance) || ClearanceLevelNames.ToName(clearance) != clearanceText)
            throw Malformed(sourceName, $"{SealFormat.ClearanceKey} is not one of {ClearanceLevelNames.Syntax} in upper case");

        string? scope = null;
        if (metadata.TryGetValue(SealFormat.ScopeKey, out _))
        {
            scope = GetString(metadata, SealFormat.ScopeKey, sourceName);
            if (!Claim.IsValidScope(scope))
                throw Malformed(sourceName, $"{SealFormat.ScopeKey} is not a scope (1..{Claim.MaxScopeLength} characters of A-Z a-z 0-9 . _ : / @ + -)");
        }

        var issuers = ReadIssuers(metadata, sourceName);
        var recipients = ReadRecipients(metadata, sourceName);
        ulong dataPages = GetUInt64(metadata, SealFormat.DataPagesKey, sourceName);
        ulong trailerOffset = GetUInt64(metadata, SealFormat.TrailerOffsetKey, sourceName);

        if (file.DataOffset % SealFormat.PageSize != 0)
            throw Malformed(sourceName, $"its data section starts at byte {file.DataOffset}, which is not on a {SealFormat.PageSize}-byte page boundary");
        long expectedPages = SealFormat.PagesFor(SealFormat.DataExtentOf(file));
        if (dataPages != (ulong)expectedPages)
            throw Malformed(sourceName, $"{SealFormat.DataPagesKey} is {dataPages}, but its tensors fill {expectedPages} pages");
        // The reader put every tensor inside the file, so these pages end within it: no overflow.
        long expectedTrailerOffset = file.DataOffset + expectedPages * SealFormat.PageSize;
        if (trailerOffset != (ulong)expectedTrailerOffset)
            throw Malformed(sourceName, $"{SealFormat.TrailerOffsetKey} is {trailerOffset}, but the {dataPages} data pages end at byte {expectedTrailerOffset}");

        var requirements = new SealRequirements(version, fileId, clearance, issuers, recipients, scope);
        return new SealHeader(requirements, fileId, expectedPages, expectedTrailerOffset);
    }

    public static SealedModelException Malformed(string sourceName, string problem) =>
        new(SealAccessReason.MalformedSeal,
            $"'{sourceName}' has a malformed seal: {problem}. The file is damaged or was not written by 'tibet seal'; seal the original model again.");

    private static PublicIdentity[] ReadIssuers(GgufMetadata metadata, string sourceName)
    {
        var texts = GetStringArray(metadata, SealFormat.IssuersKey, SealFormat.MaxIssuers, sourceName);
        var issuers = new PublicIdentity[texts.Count];
        for (int i = 0; i < issuers.Length; i++)
        {
            if (!TryDecodeLowerHex(texts[i], PublicIdentity.EncodedSize, out byte[]? encoded))
                throw Malformed(sourceName, $"element {i} of {SealFormat.IssuersKey} is not {2 * PublicIdentity.EncodedSize} lowercase hex digits");
            try
            {
                issuers[i] = PublicIdentity.Decode(encoded);
            }
            catch (IdentityException e)
            {
                throw Malformed(sourceName, $"element {i} of {SealFormat.IssuersKey} is not a public identity ({e.Message.TrimEnd('.')})");
            }
            if (Array.IndexOf(issuers, issuers[i], 0, i) >= 0)
                throw Malformed(sourceName, $"element {i} of {SealFormat.IssuersKey} repeats an earlier issuer");
        }
        return issuers;
    }

    private static Fingerprint[] ReadRecipients(GgufMetadata metadata, string sourceName)
    {
        var texts = GetStringArray(metadata, SealFormat.RecipientsKey, SealFormat.MaxRecipients, sourceName);
        var recipients = new Fingerprint[texts.Count];
        for (int i = 0; i < recipients.Length; i++)
        {
            if (!TryDecodeLowerHex(texts[i], Fingerprint.Size, out _) || !Fingerprint.TryParse(texts[i], out var fingerprint))
                throw Malformed(sourceName, $"element {i} of {SealFormat.RecipientsKey} is not a fingerprint ({2 * Fingerprint.Size} lowercase hex digits)");
            if (Array.IndexOf(recipients, fingerprint, 0, i) >= 0)
                throw Malformed(sourceName, $"element {i} of {SealFormat.RecipientsKey} repeats an earlier recipient");
            recipients[i] = fingerprint;
        }
        return recipients;
    }

    private static string GetString(GgufMetadata metadata, string key, string sourceName)
    {
        if (!metadata.TryGetValue(key, out var value))
            throw Malformed(sourceName, $"the key {key} is missing");
        if (!value.TryGetString(out string text))
            throw Malformed(sourceName, $"{key} is a {value.DescribeType()}, not a string");
        return text;
    }

    private static ulong GetUInt64(GgufMetadata metadata, string key, string sourceName)
    {
        if (!metadata.TryGetValue(key, out var value))
            throw Malformed(sourceName, $"the key {key} is missing");
        if (!value.TryGetUInt64(out ulong number))
            throw Malformed(sourceName, $"{key} is a {value.DescribeType()}, not a uint64");
        return number;
    }

    private static IReadOnlyList<string> GetStringArray(GgufMetadata metadata, string key, int maxCount, string sourceName)
    {
        if (!metadata.TryGetValue(key, out var value))
            throw Malformed(sourceName, $"the key {key} is missing");
        if (!value.TryGetStringArray(out var texts))
            throw Malformed(sourceName, $"{key} is a {value.DescribeType()}, not an array of string");
        if (texts.Count is 0 || texts.Count > maxCount)
            throw Malformed(sourceName, $"{key} has {texts.Count} elements, not 1 to {maxCount}");
        return texts;
    }

    /// <summary>Decodes exactly <paramref name="byteCount"/> bytes from lowercase hex, the
    /// one spelling the sealer writes; uppercase is refused so each value has one form.</summary>
    private static bool TryDecodeLowerHex(string text, int byteCount, [NotNullWhen(true)] out byte[]? bytes)
    {
        bytes = null;
        if (text.Length != 2 * byteCount)
            return false;
        foreach (char c in text)
        {
            if (!char.IsAsciiDigit(c) && c is not (>= 'a' and <= 'f'))
                return false;
        }
        bytes = Convert.FromHexString(text);
        return true;
    }
}
