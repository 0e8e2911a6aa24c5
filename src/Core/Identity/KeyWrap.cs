using System.Security.Cryptography;
using NSec.Cryptography;
using Tibet.Core.Crypto;

namespace Tibet.Core.Identity;

/// <summary>
/// Wraps a 32-byte data key to an identity's X25519 public key so that only the holder of
/// the matching secret identity can recover it (ECIES-style, one-pass).
/// </summary>
/// <remarks>
/// <para>Construction, for recipient public key R (X25519) and a caller's context string:</para>
/// <list type="number">
/// <item>a fresh ephemeral X25519 key pair (e, E) from getrandom;</item>
/// <item>shared = X25519(e, R); an all-zero result (R of low order) is refused;</item>
/// <item>k = HKDF-SHA256(ikm = shared, salt = E ‖ R, info = "TIBET key wrap v1" ‖ 0x00 ‖ context),
/// 32 bytes, used as an AES-256-GCM key;</item>
/// <item>ciphertext ‖ tag = AES-256-GCM(k, nonce = 0^12, aad = header, data key).</item>
/// </list>
/// <para>k is used exactly once (e is new for every wrap), so the fixed nonce never repeats
/// under a key. Binding E and R in the salt ties the key to this exchange; the context
/// (for example a sealed file's id) keeps a wrapped key from being replayed into another
/// place. Wire format, 117 bytes:
/// <c>"TBWK" ‖ version 1 ‖ recipient fingerprint (32) ‖ E (32) ‖ ciphertext (32) ‖ tag (16)</c>;
/// the header (the first 69 bytes) is authenticated as associated data.</para>
/// </remarks>
public static class KeyWrap
{
    /// <summary>Bytes in a data key.</summary>
    public const int DataKeySize = 32;

    /// <summary>Bytes in a wrapped key.</summary>
    public const int WrappedSize = HeaderSize + DataKeySize + TagSize;

    /// <summary>Longest context accepted.</summary>
    public const int MaxContextLength = 4096;

    private const byte CurrentVersion = 1;
    private const int FingerprintOffset = 5;
    private const int EphemeralOffset = FingerprintOffset + Fingerprint.Size;
    private const int HeaderSize = EphemeralOffset + PublicIdentity.KeySize;
    private const int TagSize = 16;
    private static ReadOnlySpan<byte> Magic => "TBWK"u8;
    private static ReadOnlySpan<byte> InfoLabel => "TIBET key wrap v1\0"u8;

    /// <summary>Wraps <paramref name="dataKey"/> (32 bytes) to <paramref name="recipient"/>.</summary>
    /// <exception cref="ArgumentException">Wrong key or context size, or a recipient key of low order (not a real identity).</exception>
    public static byte[] Wrap(PublicIdentity recipient, ReadOnlySpan<byte> dataKey, ReadOnlySpan<byte> context)
    {
        if (dataKey.Length != DataKeySize)
            throw new ArgumentException($"A data key is {DataKeySize} bytes, not {dataKey.Length}.", nameof(dataKey));
        if (context.Length > MaxContextLength)
            throw new ArgumentException($"The context is longer than {MaxContextLength} bytes.", nameof(context));

        var wrapped = new byte[WrappedSize];
        Magic.CopyTo(wrapped);
        wrapped[4] = CurrentVersion;
        recipient.Fingerprint.Bytes.CopyTo(wrapped.AsSpan(FingerprintOffset));

        using Key ephemeral = CreateEphemeralKey();
        ephemeral.PublicKey.TryExport(KeyBlobFormat.RawPublicKey, wrapped.AsSpan(EphemeralOffset, PublicIdentity.KeySize), out _);
        var recipientKey = PublicKey.Import(IdentityAlgorithms.Agreement, recipient.AgreementKey, KeyBlobFormat.RawPublicKey);
        using SharedSecret shared = IdentityAlgorithms.Agreement.Agree(ephemeral, recipientKey)
            ?? throw new ArgumentException("The recipient's X25519 key is a low-order point, so it is not a real identity; nothing can be wrapped to it.", nameof(recipient));
        using Key key = DeriveKey(shared, wrapped.AsSpan(EphemeralOffset, PublicIdentity.KeySize), recipient.AgreementKey, context);
        IdentityAlgorithms.Aead.Encrypt(key, stackalloc byte[IdentityAlgorithms.Aead.NonceSize], wrapped.AsSpan(0, HeaderSize),
            dataKey, wrapped.AsSpan(HeaderSize));
        return wrapped;
    }

    /// <summary>
    /// Recovers a data key wrapped to <paramref name="recipient"/> into
    /// <paramref name="dataKey"/> (32 bytes; cleared on any failure). Never throws for bad
    /// input and reveals nothing beyond the result.
    /// </summary>
    public static KeyUnwrapResult TryUnwrap(Identity recipient, ReadOnlySpan<byte> wrapped, ReadOnlySpan<byte> context, Span<byte> dataKey)
    {
        if (dataKey.Length != DataKeySize)
            throw new ArgumentException($"The destination for the data key must be {DataKeySize} bytes.", nameof(dataKey));
        dataKey.Clear();
        if (wrapped.Length < 5 || !wrapped.StartsWith(Magic))
            return KeyUnwrapResult.Malformed;
        if (wrapped[4] != CurrentVersion)
            return KeyUnwrapResult.UnsupportedVersion;
        if (wrapped.Length != WrappedSize || context.Length > MaxContextLength)
            return KeyUnwrapResult.Malformed;
        if (!wrapped.Slice(FingerprintOffset, Fingerprint.Size).SequenceEqual(recipient.Fingerprint.Bytes))
            return KeyUnwrapResult.WrongRecipient;

        ReadOnlySpan<byte> ephemeralBytes = wrapped.Slice(EphemeralOffset, PublicIdentity.KeySize);
        if (!PublicKey.TryImport(IdentityAlgorithms.Agreement, ephemeralBytes, KeyBlobFormat.RawPublicKey, out var ephemeral) || ephemeral is null)
            return KeyUnwrapResult.Malformed;
        using SharedSecret? shared = IdentityAlgorithms.Agreement.Agree(recipient.AgreementKey, ephemeral);
        if (shared == null)
            return KeyUnwrapResult.AuthenticationFailed;
        using Key key = DeriveKey(shared, ephemeralBytes, recipient.Public.AgreementKey, context);
        if (IdentityAlgorithms.Aead.Decrypt(key, stackalloc byte[IdentityAlgorithms.Aead.NonceSize], wrapped[..HeaderSize], wrapped[HeaderSize..], dataKey))
            return KeyUnwrapResult.Success;
        CryptographicOperations.ZeroMemory(dataKey);
        return KeyUnwrapResult.AuthenticationFailed;
    }

    /// <summary>A sentence for each result, saying what it means and what to do.</summary>
    public static string Describe(KeyUnwrapResult result) => result switch
    {
        KeyUnwrapResult.Success => "the data key was recovered.",
        KeyUnwrapResult.Malformed => "this is not a wrapped key (wrong magic, length or ephemeral key); check that the right data was given.",
        KeyUnwrapResult.UnsupportedVersion => "this wrapped key has a format version this tibet does not read; upgrade tibet.",
        KeyUnwrapResult.WrongRecipient => "the key was wrapped to another identity; use the identity it was wrapped to, or have it wrapped to yours.",
        KeyUnwrapResult.AuthenticationFailed => "the wrapped key does not open with this identity: it was altered, or it belongs to another context.",
        _ => "unknown result.",
    };

    private static Key CreateEphemeralKey()
    {
        Span<byte> secret = stackalloc byte[PublicIdentity.KeySize];
        try
        {
            SecureRandom.Fill(secret);
            var parameters = new KeyCreationParameters { ExportPolicy = KeyExportPolicies.None };
            return Key.Import(IdentityAlgorithms.Agreement, secret, KeyBlobFormat.RawPrivateKey, in parameters);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(secret);
        }
    }

    private static Key DeriveKey(SharedSecret shared, ReadOnlySpan<byte> ephemeralPublic, ReadOnlySpan<byte> recipientPublic, ReadOnlySpan<byte> context)
    {
        Span<byte> salt = stackalloc byte[2 * PublicIdentity.KeySize];
        ephemeralPublic.CopyTo(salt);
        recipientPublic.CopyTo(salt[PublicIdentity.KeySize..]);
        byte[] info = new byte[InfoLabel.Length + context.Length];
        InfoLabel.CopyTo(info);
        context.CopyTo(info.AsSpan(InfoLabel.Length));
        var parameters = new KeyCreationParameters { ExportPolicy = KeyExportPolicies.None };
        return IdentityAlgorithms.Hkdf.DeriveKey(shared, salt, info, IdentityAlgorithms.Aead, in parameters);
    }
}
