using System.Buffers.Binary;
using NSec.Cryptography;
using Tibet.Core.Gguf;

namespace Tibet.Core.Sealing;

/// <summary>
/// The constants and derivations of the sealed-model format, version 1, in one place so
/// that the sealer and the opener can never disagree. src/Core/Sealing/README.md is the
/// specification; this file is its executable form.
/// </summary>
/// <remarks>
/// Every primitive comes from libsodium through NSec, never from System.Security.Cryptography:
/// opening runs inside interposed programs, where .NET's crypto would load OpenSSL into
/// the host.
/// </remarks>
internal static class SealFormat
{
    public const int PageSize = 4096;
    public const uint Version = 1;
    public const int FileIdSize = 16;
    public const int DataKeySize = 32;
    public const int TagSize = 16;
    public const int MacSize = 32;
    public const int HeaderHashSize = 32;
    public const int NonceSize = 12;

    /// <summary>"TIBETSG1" ‖ file id ‖ le64(page index) ‖ header hash.</summary>
    public const int AadSize = 8 + FileIdSize + 8 + HeaderHashSize;
    public const int AadPageIndexOffset = 8 + FileIdSize;

    /// <summary>"TIBETSL1" ‖ u32 recipient count.</summary>
    public const int TrailerFixedSize = 8 + 4;

    // Bounds on what a header or trailer may declare, so that a hostile file costs
    // little memory and time before it is refused. Far above any real use.
    public const int MaxIssuers = 256;
    public const int MaxRecipients = 1024;
    public const int MaxWrappedKeySize = 4096;

    public const string KeyPrefix = "tibet.seal.";
    public const string VersionKey = "tibet.seal.version";
    public const string FileIdKey = "tibet.seal.file_id";
    public const string ClearanceKey = "tibet.seal.clearance";
    public const string IssuersKey = "tibet.seal.issuers";
    public const string RecipientsKey = "tibet.seal.recipients";
    public const string DataPagesKey = "tibet.seal.data_pages";
    public const string TrailerOffsetKey = "tibet.seal.trailer_offset";
    public const string ScopeKey = "tibet.seal.scope";

    /// <summary>Every tibet.seal.* key of version 1; a sealed header has each exactly once
    /// and no other.</summary>
    public static readonly string[] Keys =
        [VersionKey, FileIdKey, ClearanceKey, IssuersKey, RecipientsKey, DataPagesKey, TrailerOffsetKey];

    /// <summary>The tibet.seal.* keys a sealed header may have, at most once each.</summary>
    public static readonly string[] OptionalKeys = [ScopeKey];

    public static ReadOnlySpan<byte> TrailerMagic => "TIBETSL1"u8;
    private static ReadOnlySpan<byte> AadMagic => "TIBETSG1"u8;
    private static ReadOnlySpan<byte> MacInfo => "tibet seal mac v1"u8;

    // A wrapped key is bound to the one file it was made for, so that it cannot be moved
    // into another sealed file; the label keeps this context apart from any other use of
    // the key-wrap API that might also pass 16 bytes.
    private static ReadOnlySpan<byte> KeyWrapContextLabel => "tibet seal key v1\0"u8;

    private static readonly Lazy<AeadAlgorithm> AeadInstance = new(ResolveAead);

    /// <summary>AES-256-GCM from libsodium; refuses CPUs without AES-NI and CLMUL rather
    /// than falling back to a software cipher.</summary>
    public static AeadAlgorithm Aead => AeadInstance.Value;

    public static MacAlgorithm Mac => MacAlgorithm.HmacSha256;

    /// <summary>nonce_i = le64(i) ‖ 00 00 00 00. Every seal draws a fresh data key, so a
    /// (key, nonce) pair is used for exactly one page ever.</summary>
    public static void WriteNonce(Span<byte> nonce, long pageIndex)
    {
        BinaryPrimitives.WriteInt64LittleEndian(nonce, pageIndex);
        BinaryPrimitives.WriteUInt32LittleEndian(nonce[8..], 0);
    }

    /// <summary>Writes aad_i with the page index left at zero; <see cref="SetAadPageIndex"/>
    /// fills it in per page.</summary>
    public static void WriteAadTemplate(Span<byte> aad, ReadOnlySpan<byte> fileId, ReadOnlySpan<byte> headerHash)
    {
        AadMagic.CopyTo(aad);
        fileId.CopyTo(aad[8..]);
        BinaryPrimitives.WriteInt64LittleEndian(aad[AadPageIndexOffset..], 0);
        headerHash.CopyTo(aad[(AadPageIndexOffset + 8)..]);
    }

    public static void SetAadPageIndex(Span<byte> aad, long pageIndex) =>
        BinaryPrimitives.WriteInt64LittleEndian(aad[AadPageIndexOffset..], pageIndex);

    /// <summary>Moves the raw data key into libsodium secure memory as an AES-256-GCM key.
    /// Key.Import, never Key.Create: the latter draws through .NET's RandomNumberGenerator
    /// and so loads OpenSSL into the host.</summary>
    public static Key ImportDataKey(ReadOnlySpan<byte> dataKey)
    {
        var parameters = new KeyCreationParameters { ExportPolicy = KeyExportPolicies.None };
        return Key.Import(Aead, dataKey, KeyBlobFormat.RawSymmetricKey, in parameters);
    }

    /// <summary>The raw data key expanded for opening pages (its schedule in libsodium
    /// secure memory), on a CPU that has AES-256-GCM in hardware.</summary>
    public static Crypto.AesGcmKeySchedule ScheduleDataKey(ReadOnlySpan<byte> dataKey)
    {
        _ = Aead; // refuses a CPU without AES-NI, as for sealing
        return new Crypto.AesGcmKeySchedule(dataKey);
    }

    /// <summary>macKey = HKDF-SHA256(ikm = dataKey, salt = file id, info = "tibet seal mac v1").</summary>
    public static Key DeriveMacKey(ReadOnlySpan<byte> dataKey, ReadOnlySpan<byte> fileId)
    {
        var parameters = new KeyCreationParameters { ExportPolicy = KeyExportPolicies.None };
        return KeyDerivationAlgorithm.HkdfSha256.DeriveKey(dataKey, fileId, MacInfo, Mac, in parameters);
    }

    /// <summary>The context a data key is wrapped under: "tibet seal key v1" ‖ 0x00 ‖ file id.</summary>
    public static byte[] KeyWrapContext(ReadOnlySpan<byte> fileId)
    {
        var context = new byte[KeyWrapContextLabel.Length + fileId.Length];
        KeyWrapContextLabel.CopyTo(context);
        fileId.CopyTo(context.AsSpan(KeyWrapContextLabel.Length));
        return context;
    }

    /// <summary>Where the original tensor bytes end, relative to the data section: the
    /// last tensor's end (the reader guarantees tensors are packed in file order).</summary>
    public static long DataExtentOf(GgufFile file)
    {
        if (file.Tensors.Count == 0)
            return 0;
        var last = file.Tensors[^1];
        return last.Offset + last.ByteSize;
    }

    public static long PagesFor(long bytes) => bytes / PageSize + (bytes % PageSize == 0 ? 0 : 1);

    private static AeadAlgorithm ResolveAead()
    {
        if (!Aes256Gcm.IsSupported)
            throw new PlatformNotSupportedException(
                "Sealed models use AES-256-GCM, which libsodium offers only on CPUs with AES-NI and CLMUL, and this CPU has neither; " +
                "tibet does not fall back to a software cipher. Open the model on a machine with AES-NI.");
        return AeadAlgorithm.Aes256Gcm;
    }
}
