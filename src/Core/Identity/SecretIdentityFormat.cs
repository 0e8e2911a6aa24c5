using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.Security.Cryptography;
using NSec.Cryptography;
using Tibet.Core.Crypto;

namespace Tibet.Core.Identity;

/// <summary>
/// The binary body of a secret identity (.id) file, version 1. All integers little-endian.
/// <code>
/// offset size
///  0      4   magic "TBSK"
///  4      1   version = 1
///  5      1   protection: 0 = none, 1 = passphrase
///  6     32   X25519 public key   } in the clear in both forms, so the fingerprint
/// 38     32   Ed25519 public key  } can be shown without the passphrase
/// protection 0 (134 bytes in all):
/// 70     64   X25519 private key ‖ Ed25519 seed
/// protection 1 (174 bytes in all):
/// 70      4   Argon2id memory in KiB
/// 74      4   Argon2id passes
/// 78     16   salt (fresh from getrandom for every write)
/// 94     64   AES-256-GCM ciphertext of the 64 secret bytes
/// 158    16   GCM tag
/// </code>
/// The protected form encrypts under key = Argon2id(passphrase, salt, memory, passes), a
/// one-time key because the salt is new on every write, with an all-zero nonce and bytes
/// 0..94 as associated data: the public keys and the Argon2id parameters are
/// authenticated too. Either form, once opened, must derive exactly the public keys it
/// stores, or it is rejected as corrupt.
/// </summary>
internal static class SecretIdentityFormat
{
    public const string ArmorLabel = "TIBET SECRET IDENTITY";

    private const byte CurrentVersion = 1;
    private const byte Unprotected = 0;
    private const byte PassphraseProtected = 1;
    private const int PublicKeysOffset = 6;
    private const int HeaderSize = PublicKeysOffset + 2 * PublicIdentity.KeySize;
    private const int SaltSize = 16;
    private const int KdfParametersSize = 8;
    private const int AssociatedDataSize = HeaderSize + KdfParametersSize + SaltSize;
    private const int TagSize = 16;
    private const int UnprotectedSize = HeaderSize + Identity.SecretsSize;
    private const int ProtectedSize = AssociatedDataSize + Identity.SecretsSize + TagSize;
    private static ReadOnlySpan<byte> Magic => "TBSK"u8;

    /// <summary>The largest binary body.</summary>
    public const int MaxSize = ProtectedSize;

    /// <summary>
    /// Encodes <paramref name="identity"/> into a new pinned array the caller wipes,
    /// encrypted under <paramref name="passphrase"/> when one is given.
    /// </summary>
    public static byte[] Encode(Identity identity, Passphrase? passphrase, Argon2Cost cost)
    {
        byte[] body = GC.AllocateArray<byte>(passphrase == null ? UnprotectedSize : ProtectedSize, pinned: true);
        Magic.CopyTo(body);
        body[4] = CurrentVersion;
        body[5] = passphrase == null ? Unprotected : PassphraseProtected;
        identity.Public.AgreementKey.CopyTo(body.AsSpan(PublicKeysOffset));
        identity.Public.SigningKey.CopyTo(body.AsSpan(PublicKeysOffset + PublicIdentity.KeySize));

        if (passphrase == null)
        {
            identity.ExportSecrets(body.AsSpan(HeaderSize, Identity.SecretsSize));
            return body;
        }

        BinaryPrimitives.WriteUInt32LittleEndian(body.AsSpan(HeaderSize), (uint)cost.MemoryKiB);
        BinaryPrimitives.WriteUInt32LittleEndian(body.AsSpan(HeaderSize + 4), (uint)cost.Passes);
        Span<byte> salt = body.AsSpan(HeaderSize + KdfParametersSize, SaltSize);
        SecureRandom.Fill(salt);
        Span<byte> secrets = stackalloc byte[Identity.SecretsSize];
        try
        {
            identity.ExportSecrets(secrets);
            using Key key = DeriveKey(passphrase, salt, (uint)cost.MemoryKiB, (uint)cost.Passes);
            IdentityAlgorithms.Aead.Encrypt(key, stackalloc byte[IdentityAlgorithms.Aead.NonceSize], body.AsSpan(0, AssociatedDataSize),
                secrets, body.AsSpan(AssociatedDataSize));
            return body;
        }
        finally
        {
            CryptographicOperations.ZeroMemory(secrets);
        }
    }

    /// <summary>The public keys stored in the clear, and whether a passphrase is needed.</summary>
    public static bool TryReadPublic(ReadOnlySpan<byte> body, [NotNullWhen(true)] out PublicIdentity? identity, out bool isProtected,
        out IdentityErrorKind failure, out string problem)
    {
        identity = null;
        isProtected = false;
        failure = IdentityErrorKind.Malformed;
        if (body.Length < 5 || !body.StartsWith(Magic))
        {
            problem = "it does not start with the secret identity magic \"TBSK\"";
            return false;
        }
        if (body[4] != CurrentVersion)
        {
            failure = IdentityErrorKind.UnsupportedVersion;
            problem = $"it has format version {body[4]}, and this tibet reads version {CurrentVersion} only (upgrade tibet)";
            return false;
        }
        if (body.Length < HeaderSize)
        {
            problem = $"it is {body.Length} bytes long, shorter than any secret identity";
            return false;
        }
        int expectedSize;
        switch (body[5])
        {
            case Unprotected: expectedSize = UnprotectedSize; break;
            case PassphraseProtected: expectedSize = ProtectedSize; isProtected = true; break;
            default:
                problem = $"it names protection scheme {body[5]}, which does not exist (0 = none, 1 = passphrase)";
                return false;
        }
        if (body.Length != expectedSize)
        {
            problem = $"it is {body.Length} bytes long instead of {expectedSize}";
            return false;
        }
        if (isProtected)
        {
            uint memory = BinaryPrimitives.ReadUInt32LittleEndian(body[HeaderSize..]);
            uint passes = BinaryPrimitives.ReadUInt32LittleEndian(body[(HeaderSize + 4)..]);
            if (!Argon2Cost.IsWithinBounds(memory, passes))
            {
                problem = $"it asks for an Argon2id cost of {memory} KiB and {passes} passes, outside the accepted " +
                          $"{Argon2Cost.MinMemoryKiB}..{Argon2Cost.MaxMemoryKiB} KiB and {Argon2Cost.MinPasses}..{Argon2Cost.MaxPasses} passes";
                return false;
            }
        }
        identity = new PublicIdentity(body.Slice(PublicKeysOffset, PublicIdentity.KeySize),
            body.Slice(PublicKeysOffset + PublicIdentity.KeySize, PublicIdentity.KeySize));
        problem = "";
        return true;
    }

    /// <summary>Opens the secret keys. <paramref name="passphraseProvider"/> is asked only
    /// for a protected body; the passphrase it returns is disposed here.</summary>
    /// <exception cref="IdentityException">Malformed, unsupported, passphrase missing or wrong.</exception>
    public static Identity Decode(ReadOnlySpan<byte> body, Func<Passphrase>? passphraseProvider, string path)
    {
        byte[] secrets = GC.AllocateArray<byte>(Identity.SecretsSize, pinned: true);
        try
        {
            return OpenSecrets(body, passphraseProvider, path, secrets);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(secrets);
        }
    }

    /// <summary>
    /// Like <see cref="Decode"/>, and also writes the unprotected body of the same identity
    /// (<see cref="UnprotectedSize"/> bytes) into <paramref name="unprotectedBody"/>, which the
    /// caller wipes: the form tibet-run hands to the interposer, which cannot ask for a passphrase.
    /// </summary>
    public static Identity DecodeToUnprotected(ReadOnlySpan<byte> body, Func<Passphrase>? passphraseProvider, string path, Span<byte> unprotectedBody)
    {
        if (unprotectedBody.Length != UnprotectedSize)
            throw new ArgumentException($"The unprotected body is {UnprotectedSize} bytes.", nameof(unprotectedBody));
        Identity identity = OpenSecrets(body, passphraseProvider, path, unprotectedBody.Slice(HeaderSize, Identity.SecretsSize));
        Magic.CopyTo(unprotectedBody);
        unprotectedBody[4] = CurrentVersion;
        unprotectedBody[5] = Unprotected;
        identity.Public.AgreementKey.CopyTo(unprotectedBody[PublicKeysOffset..]);
        identity.Public.SigningKey.CopyTo(unprotectedBody[(PublicKeysOffset + PublicIdentity.KeySize)..]);
        return identity;
    }

    /// <summary>The size of an unprotected body.</summary>
    public const int UnprotectedBodySize = UnprotectedSize;

    /// <summary>Where an unprotected body holds the X25519 private key (the Ed25519 seed follows it).</summary>
    public const int UnprotectedAgreementSecretOffset = HeaderSize;

    /// <summary>Opens the 64 secret bytes into <paramref name="secrets"/> (which the caller
    /// wipes) and makes the identity, checking it against the stored public keys.</summary>
    private static Identity OpenSecrets(ReadOnlySpan<byte> body, Func<Passphrase>? passphraseProvider, string path, Span<byte> secrets)
    {
        if (!TryReadPublic(body, out var stored, out bool isProtected, out var failure, out string problem))
            throw new IdentityException(failure, $"'{path}' is not a usable secret identity: {problem}. {IdentityFile.WrongFileHint}");

        if (!isProtected)
        {
            body.Slice(HeaderSize, Identity.SecretsSize).CopyTo(secrets);
        }
        else
        {
            if (passphraseProvider == null)
                throw new IdentityException(IdentityErrorKind.PassphraseRequired,
                    $"'{path}' is protected by a passphrase and none was given; supply it (tibet: --passphrase-file FILE, or set TIBET_PASSPHRASE_FILE).");
            uint memory = BinaryPrimitives.ReadUInt32LittleEndian(body[HeaderSize..]);
            uint passes = BinaryPrimitives.ReadUInt32LittleEndian(body[(HeaderSize + 4)..]);
            using Passphrase passphrase = passphraseProvider();
            using Key key = DeriveKey(passphrase, body.Slice(HeaderSize + KdfParametersSize, SaltSize), memory, passes);
            if (!IdentityAlgorithms.Aead.Decrypt(key, stackalloc byte[IdentityAlgorithms.Aead.NonceSize], body[..AssociatedDataSize],
                    body[AssociatedDataSize..], secrets))
                throw new IdentityException(IdentityErrorKind.WrongPassphrase,
                    $"The passphrase does not open '{path}' (or the file was altered). Check the passphrase and try again.");
        }

        Identity identity = Identity.FromSecrets(secrets, exportable: false);
        if (!identity.Public.Equals(stored))
        {
            identity.Dispose();
            throw new IdentityException(IdentityErrorKind.Malformed,
                $"'{path}' is corrupt: its secret keys do not belong to the public keys stored beside them. Restore it from a backup.");
        }
        return identity;
    }

    private static Key DeriveKey(Passphrase passphrase, ReadOnlySpan<byte> salt, uint memoryKiB, uint passes)
    {
        var kdf = PasswordBasedKeyDerivationAlgorithm.Argon2id(new Argon2Parameters
        {
            DegreeOfParallelism = 1,
            MemorySize = memoryKiB,
            NumberOfPasses = passes,
        });
        var parameters = new KeyCreationParameters { ExportPolicy = KeyExportPolicies.None };
        return kdf.DeriveKey(passphrase.Utf8, salt, IdentityAlgorithms.Aead, in parameters);
    }
}
