using System.Security.Cryptography;
using NSec.Cryptography;
using Tibet.Core.Gguf;
using Tibet.Core.Identity;

namespace Tibet.Core.Sealing;

// Inside Tibet.Core, the bare name Identity means the namespace; this names the class.
using Identity = Tibet.Core.Identity.Identity;

/// <summary>
/// A sealed GGUF model, parsed but not yet authenticated: its header (an ordinary GGUF
/// header, readable by any GGUF reader), what the seal requires, and where its encrypted
/// pages and trailer lie. <see cref="Decide"/> authenticates it and decides whether a
/// given identity and claim may decrypt it. The format is specified in
/// src/Core/Sealing/README.md.
/// </summary>
/// <remarks>
/// The model reads from its source while it is used (<see cref="Decide"/> reads the tag
/// table, <see cref="ModelUnsealer"/> the pages), so the source must stay open until the
/// model is disposed. Not safe for concurrent use; the <see cref="SealedModelKey"/> it
/// hands out is independent of it.
/// </remarks>
public sealed class SealedModel : IDisposable
{
    /// <summary>Bytes in a data page.</summary>
    public const int PageSize = SealFormat.PageSize;

    private readonly Stream _source;
    private readonly bool _ownsSource;
    private readonly string _sourceName;
    private readonly SealHeader _seal;
    private readonly SealTrailer _trailer;
    private readonly byte[] _headerHash;
    private bool _disposed;

    private SealedModel(Stream source, bool ownsSource, string sourceName, GgufFile header, SealHeader seal, SealTrailer trailer, byte[] headerHash)
    {
        _source = source;
        _ownsSource = ownsSource;
        _sourceName = sourceName;
        Header = header;
        _seal = seal;
        _trailer = trailer;
        _headerHash = headerHash;
    }

    /// <summary>The GGUF header: the model's metadata (tibet.seal.* included) and tensor table.</summary>
    public GgufFile Header { get; }

    /// <summary>What the seal requires, as the (not yet authenticated) header says.</summary>
    public SealRequirements Requirements => _seal.Requirements;

    /// <summary>File offset of the first data page; a multiple of <see cref="PageSize"/>.</summary>
    public long DataOffset => Header.DataOffset;

    /// <summary>Encrypted pages in the data section.</summary>
    public long DataPages => _seal.DataPages;

    /// <summary>File offset of the trailer, right after the last data page.</summary>
    public long TrailerOffset => _seal.TrailerOffset;

    /// <summary>The length of the sealed file.</summary>
    public long FileLength => Header.FileLength;

    /// <summary>Wrapped data keys in the trailer (one per recipient).</summary>
    public int WrappedKeyCount => _trailer.WrappedKeyCount;

    /// <summary>True when <paramref name="file"/> carries tibet.seal.* metadata: it is
    /// (or claims to be) sealed, and must not be sealed again.</summary>
    public static bool IsSealed(GgufFile file)
    {
        ArgumentNullException.ThrowIfNull(file);
        return SealHeader.IsSealed(file);
    }

    /// <summary>Opens the sealed model at <paramref name="path"/> read-only and parses its
    /// header and trailer. The file stays open until the model is disposed.</summary>
    /// <exception cref="SealedModelException">Not a GGUF file, not sealed, an unsupported
    /// seal version, or a malformed seal (<see cref="SealedModelException.Reason"/> says which).</exception>
    /// <exception cref="IOException">The file cannot be read.</exception>
    public static SealedModel Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0);
        try
        {
            return Open(stream, ownsStream: true, path);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    /// <summary>Parses the sealed model that makes up the whole of <paramref name="stream"/>
    /// (readable and seekable). The caller keeps ownership of the stream and must keep it
    /// open until the model is disposed.</summary>
    /// <param name="stream">The sealed file, from offset 0 to its length.</param>
    /// <param name="sourceName">How to name the file in messages.</param>
    /// <exception cref="SealedModelException">See <see cref="Open(string)"/>.</exception>
    public static SealedModel Open(Stream stream, string sourceName = "the sealed model")
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(sourceName);
        if (!stream.CanRead || !stream.CanSeek)
            throw new ArgumentException("Opening a sealed model needs a readable, seekable stream.", nameof(stream));
        return Open(stream, ownsStream: false, sourceName);
    }

    private static SealedModel Open(Stream stream, bool ownsStream, string sourceName)
    {
        try
        {
            var capture = new HeaderCaptureStream(stream);
            GgufFile header;
            try
            {
                header = GgufFile.Read(capture);
            }
            catch (GgufFormatException e)
            {
                throw new SealedModelException(SealAccessReason.MalformedModel,
                    $"'{sourceName}' is not a GGUF model tibet can read ({OneLine(e.Message)}); check that you named the sealed file, and if you did, it is damaged.", e);
            }

            var seal = SealHeader.Parse(header, sourceName);
            if (header.DataOffset > Array.MaxLength)
                throw SealHeader.Malformed(sourceName, $"its header is {header.DataOffset} bytes long, more than a sealed header may be");
            var headerHash = new byte[SealFormat.HeaderHashSize];
            capture.HashPrefix(header.DataOffset, headerHash);
            var trailer = SealTrailer.Read(stream, header.FileLength, seal, sourceName);
            return new SealedModel(stream, ownsStream, sourceName, header, seal, trailer, headerHash);
        }
        catch (EndOfStreamException e)
        {
            throw new SealedModelException(SealAccessReason.MalformedSeal,
                $"'{sourceName}' ended early while it was read: it was truncated or changed during opening. Open it again once nothing writes to it.", e);
        }
    }

    /// <summary>
    /// The access decision. In this order, each with its own reason: an identity is
    /// given; a wrapped key in the trailer is addressed to it and opens; the MAC over the
    /// header and trailer verifies (so every requirement below comes from authenticated
    /// bytes); a claim is given, signed by one of the seal's trusted issuers, issued to
    /// this identity, in force at <paramref name="now"/>, and granting at least the seal's
    /// clearance. Only then is the model live.
    /// </summary>
    /// <returns>A live decision holding the model's key, or a dead one with the first
    /// failed check. Dispose it when done. Never throws for a bad identity, claim or
    /// tampered file (a file that changes while it is read gives
    /// <see cref="SealAccessReason.MalformedSeal"/>).</returns>
    /// <exception cref="IOException">The file cannot be read.</exception>
    public AccessDecision Decide(Identity? identity, Claim? claim, DateTimeOffset now) => Decide(identity, claim, now, []);

    /// <summary>
    /// The access decision, as <see cref="Decide(Identity?, Claim?, DateTimeOffset)"/>; when
    /// live, the raw data key is also written into <paramref name="grantedDataKey"/> (of
    /// <see cref="SealFormat.DataKeySize"/> bytes, which the caller wipes). For tests that
    /// look for the key in memory: tibet itself never copies a data key out.
    /// </summary>
    public AccessDecision Decide(Identity? identity, Claim? claim, DateTimeOffset now, Span<byte> grantedDataKey)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!grantedDataKey.IsEmpty && grantedDataKey.Length != SealFormat.DataKeySize)
            throw new ArgumentException($"The data key is {SealFormat.DataKeySize} bytes.", nameof(grantedDataKey));
        if (identity is null)
            return AccessDecision.Dead(SealAccessReason.NoIdentity,
                $"No identity was given; '{_sourceName}' opens only for an identity it is sealed to ({DescribeRecipients()}): give one of those.");

        Span<byte> dataKeyBytes = stackalloc byte[SealFormat.DataKeySize];
        bool granted = false;
        Crypto.AesGcmKeySchedule? dataKey = null;
        NativeBuffer? block = null;
        try
        {
            var unwrapFailure = UnwrapDataKey(identity, dataKeyBytes);
            if (unwrapFailure is not null)
                return unwrapFailure;

            dataKey = SealFormat.ScheduleDataKey(dataKeyBytes);
            // Kept only if the decision is live (wiped below otherwise).
            if (!grantedDataKey.IsEmpty)
                dataKeyBytes.CopyTo(grantedDataKey);
            block = SealedModelKey.AllocateBlock(DataPages);
            bool authentic;
            using (Key macKey = SealFormat.DeriveMacKey(dataKeyBytes, _seal.FileId))
            {
                CryptographicOperations.ZeroMemory(dataKeyBytes);
                authentic = ReadTagTableAndVerifyMac(macKey, block);
            }
            if (!authentic)
                return AccessDecision.Dead(SealAccessReason.HeaderTampered,
                    $"The seal of '{_sourceName}' does not verify: its header (metadata, clearance, issuers, tensor table) or trailer was altered after sealing. Get an intact copy of the sealed model.");

            if (claim is null)
                return AccessDecision.Dead(SealAccessReason.NoClaim,
                    $"No claim was given; '{_sourceName}' requires a claim of at least {ClearanceLevelNames.ToName(Requirements.Clearance)} " +
                    $"for identity {identity.Fingerprint.ToShortString()}: get one from {DescribeIssuers()}.");
            var claimFailure = VerifyClaim(identity, claim, now);
            if (claimFailure is not null)
                return claimFailure;

            var key = new SealedModelKey(dataKey, block, _seal.FileId, _headerHash, DataPages);
            dataKey = null;
            block = null;
            granted = true;
            return AccessDecision.Live(key, claim,
                $"Identity {identity.Fingerprint.ToShortString()} holds {ClearanceLevelNames.ToName(claim.Clearance)} from trusted issuer " +
                $"{claim.Issuer.Fingerprint.ToShortString()} until {ClaimVerifier.FormatTime(claim.Expires)}; '{_sourceName}' requires {ClearanceLevelNames.ToName(Requirements.Clearance)}.");
        }
        catch (EndOfStreamException)
        {
            return AccessDecision.Dead(SealAccessReason.MalformedSeal,
                $"'{_sourceName}' ended early while its tag table was read: it was truncated or changed after opening. Open it again once nothing writes to it.");
        }
        finally
        {
            CryptographicOperations.ZeroMemory(dataKeyBytes);
            if (!granted)
                CryptographicOperations.ZeroMemory(grantedDataKey);
            dataKey?.Dispose();
            block?.Dispose();
        }
    }

    /// <summary>Closes the file if the model opened it.</summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        if (_ownsSource)
            _source.Dispose();
    }

    /// <summary>Reads data pages [<paramref name="firstPage"/>, + destination.Length / PageSize)
    /// of ciphertext into <paramref name="destination"/>.</summary>
    internal void ReadCiphertextPages(long firstPage, Span<byte> destination)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _source.Seek(DataOffset + firstPage * PageSize, SeekOrigin.Begin);
        _source.ReadExactly(destination);
    }

    internal string SourceName => _sourceName;

    /// <summary>Null when a key addressed to <paramref name="identity"/> opened into
    /// <paramref name="dataKey"/>; otherwise the dead decision saying why not.</summary>
    private AccessDecision? UnwrapDataKey(Identity identity, Span<byte> dataKey)
    {
        byte[] context = SealFormat.KeyWrapContext(_seal.FileId);
        bool addressedButUnopened = false;
        for (int i = 0; i < _trailer.WrappedKeyCount; i++)
        {
            switch (KeyWrap.TryUnwrap(identity, _trailer.WrappedKey(i), context, dataKey))
            {
                case KeyUnwrapResult.Success:
                    return null;
                case KeyUnwrapResult.AuthenticationFailed:
                    addressedButUnopened = true;
                    break;
            }
        }
        if (addressedButUnopened)
            return AccessDecision.Dead(SealAccessReason.KeyTampered,
                $"The data key of '{_sourceName}' sealed to identity {identity.Fingerprint.ToShortString()} does not open: the wrapped key or the file id was altered. Get an intact copy of the sealed model.");
        return AccessDecision.Dead(SealAccessReason.WrongIdentity,
            $"'{_sourceName}' is not sealed to identity {identity.Fingerprint.ToShortString()}; it is sealed to {DescribeRecipients()}. Use one of those identities, or ask the model's owner to seal it to yours.");
    }

    /// <summary>Reads the tag table into <paramref name="block"/> while computing
    /// HMAC-SHA256(macKey, headerHash ‖ trailer bytes before the MAC), and compares it
    /// with the stored MAC in constant time.</summary>
    private bool ReadTagTableAndVerifyMac(Key macKey, NativeBuffer block)
    {
        IncrementalMac.Initialize(macKey, out var mac);
        IncrementalMac.Update(ref mac, _headerHash);
        IncrementalMac.Update(ref mac, _trailer.Prefix);
        _source.Seek(_trailer.TagTableOffset, SeekOrigin.Begin);
        long tagTableBytes = DataPages * SealFormat.TagSize;
        for (long done = 0; done < tagTableBytes;)
        {
            int chunk = (int)Math.Min(tagTableBytes - done, 1 << 20);
            Span<byte> tags = SealedModelKey.TagTableSlice(block, done, chunk);
            _source.ReadExactly(tags);
            IncrementalMac.Update(ref mac, tags);
            done += chunk;
        }
        Span<byte> computed = stackalloc byte[SealFormat.MacSize];
        IncrementalMac.Finalize(ref mac, computed);
        // Explicitly constant-time: the comparison must not reveal how many leading bytes match.
        return CryptographicOperations.FixedTimeEquals(computed, _trailer.Mac);
    }

    /// <summary>Null when the claim meets the authenticated requirements; otherwise the
    /// dead decision saying which check failed.</summary>
    private AccessDecision? VerifyClaim(Identity identity, Claim claim, DateTimeOffset now)
    {
        string required = ClearanceLevelNames.ToName(Requirements.Clearance);
        var verdict = ClaimVerifier.Verify(claim, new ClaimRequirements
        {
            TrustedIssuers = Requirements.TrustedIssuers.ToArray(),
            Subject = identity.Public,
            MinimumClearance = Requirements.Clearance,
            Scope = Requirements.Scope,
            At = now,
        });
        return verdict.Reason switch
        {
            ClaimVerdictReason.Valid => null,
            ClaimVerdictReason.UntrustedIssuer => AccessDecision.Dead(SealAccessReason.UntrustedIssuer,
                $"The claim is signed by issuer {claim.Issuer.Fingerprint.ToShortString()}, which '{_sourceName}' does not trust; get a claim from {DescribeIssuers()}.", claim),
            ClaimVerdictReason.InsufficientClearance => AccessDecision.Dead(SealAccessReason.InsufficientClearance,
                $"The claim grants {ClearanceLevelNames.ToName(claim.Clearance)}, and '{_sourceName}' requires {required}; get a claim for {required} or higher.", claim),
            var reason => AccessDecision.Dead(ToAccessReason(reason), $"The claim was refused: {verdict.Message}", claim),
        };
    }

    private static SealAccessReason ToAccessReason(ClaimVerdictReason reason) => reason switch
    {
        ClaimVerdictReason.BadSignature => SealAccessReason.ClaimForged,
        ClaimVerdictReason.SubjectMismatch => SealAccessReason.SubjectMismatch,
        ClaimVerdictReason.NotYetValid => SealAccessReason.ClaimNotYetValid,
        ClaimVerdictReason.Expired => SealAccessReason.ClaimExpired,
        ClaimVerdictReason.ScopeMismatch => SealAccessReason.ScopeMismatch,
        _ => SealAccessReason.ClaimRejected,
    };

    private string DescribeRecipients() => DescribeList(Requirements.Recipients.Select(fingerprint => fingerprint.ToShortString()));

    private string DescribeIssuers() =>
        "trusted issuer" + (Requirements.TrustedIssuers.Count == 1 ? " " : "s ") +
        DescribeList(Requirements.TrustedIssuers.Select(issuer => issuer.Fingerprint.ToShortString()));

    private static string DescribeList(IEnumerable<string> items)
    {
        var list = items.ToList();
        const int Shown = 8;
        return list.Count <= Shown ? string.Join(", ", list) : $"{string.Join(", ", list.Take(Shown))} and {list.Count - Shown} more";
    }

    /// <summary>Messages are one line; a hostile file's strings must not break that.</summary>
    internal static string OneLine(string text) =>
        string.Create(text.Length, text, static (span, source) =>
        {
            for (int i = 0; i < source.Length; i++)
                span[i] = char.IsControl(source[i]) ? '?' : source[i];
        });
}
