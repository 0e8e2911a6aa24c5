using System.Security.Cryptography;
using NSec.Cryptography;
using Tibet.Core.Crypto;

namespace Tibet.Core.Identity;

/// <summary>
/// A secret identity: an X25519 key that unwraps data keys wrapped to this identity,
/// and an Ed25519 key that signs claims. Both live in NSec <see cref="Key"/> objects,
/// that is in libsodium secure memory (mlocked, excluded from core dumps, wiped when
/// disposed). Dispose it as soon as it is no longer needed.
/// </summary>
/// <remarks>
/// The identity a program receives from tibet-run (<see cref="IdentityHandOff"/>) holds
/// the X25519 key only, with the Ed25519 public key beside it: a program unwraps data keys
/// and presents a claim, and never signs, so the signing seed never enters it.
/// </remarks>
public sealed class Identity : IDisposable
{
    /// <summary>Bytes of secret material: the X25519 private key, then the Ed25519 seed.</summary>
    internal const int SecretsSize = 2 * PublicIdentity.KeySize;

    private Identity(Key agreementKey, Key signingKey)
    {
        AgreementKey = agreementKey;
        SigningKey = signingKey;
        Span<byte> agreementPublic = stackalloc byte[PublicIdentity.KeySize];
        Span<byte> signingPublic = stackalloc byte[PublicIdentity.KeySize];
        agreementKey.PublicKey.TryExport(KeyBlobFormat.RawPublicKey, agreementPublic, out _);
        signingKey.PublicKey.TryExport(KeyBlobFormat.RawPublicKey, signingPublic, out _);
        Public = new PublicIdentity(agreementPublic, signingPublic);
    }

    private Identity(Key agreementKey, ReadOnlySpan<byte> signingPublic)
    {
        AgreementKey = agreementKey;
        Span<byte> agreementPublic = stackalloc byte[PublicIdentity.KeySize];
        agreementKey.PublicKey.TryExport(KeyBlobFormat.RawPublicKey, agreementPublic, out _);
        Public = new PublicIdentity(agreementPublic, signingPublic);
    }

    /// <summary>The shareable half.</summary>
    public PublicIdentity Public { get; }

    /// <summary>The identity's name: <see cref="PublicIdentity.Fingerprint"/>.</summary>
    public Fingerprint Fingerprint => Public.Fingerprint;

    internal Key AgreementKey { get; }

    /// <summary>Null in an identity that can only unwrap (<see cref="FromAgreementSecret"/>).</summary>
    internal Key? SigningKey { get; }

    /// <summary>Whether the secret keys may be written to a file; true only for identities
    /// made by <see cref="Generate"/>, so that a loaded identity can never be re-exported.</summary>
    internal bool IsExportable => SigningKey?.ExportPolicy.HasFlag(KeyExportPolicies.AllowPlaintextExport) ?? false;

    /// <summary>Makes a new identity from kernel randomness (getrandom).</summary>
    public static Identity Generate()
    {
        Span<byte> secrets = stackalloc byte[SecretsSize];
        try
        {
            // Key.Create would draw through .NET's RandomNumberGenerator, which loads
            // OpenSSL into an interposed host; getrandom plus Key.Import does not.
            SecureRandom.Fill(secrets);
            return FromSecrets(secrets, exportable: true);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(secrets);
        }
    }

    /// <summary>Imports the 64 secret bytes; the caller wipes them afterwards.</summary>
    internal static Identity FromSecrets(ReadOnlySpan<byte> secrets, bool exportable)
    {
        var parameters = new KeyCreationParameters
        {
            ExportPolicy = exportable ? KeyExportPolicies.AllowPlaintextExport : KeyExportPolicies.None,
        };
        Key agreement = Key.Import(IdentityAlgorithms.Agreement, secrets[..PublicIdentity.KeySize], KeyBlobFormat.RawPrivateKey, in parameters);
        try
        {
            Key signing = Key.Import(IdentityAlgorithms.Signing, secrets[PublicIdentity.KeySize..], KeyBlobFormat.RawPrivateKey, in parameters);
            return new Identity(agreement, signing);
        }
        catch
        {
            agreement.Dispose();
            throw;
        }
    }

    /// <summary>
    /// An identity that unwraps data keys but cannot sign: the X25519 secret
    /// <paramref name="agreementSecret"/> (the caller wipes it) and the Ed25519 public key
    /// <paramref name="signingPublic"/>, which the caller has authenticated.
    /// </summary>
    internal static Identity FromAgreementSecret(ReadOnlySpan<byte> agreementSecret, ReadOnlySpan<byte> signingPublic)
    {
        var parameters = new KeyCreationParameters { ExportPolicy = KeyExportPolicies.None };
        Key agreement = Key.Import(IdentityAlgorithms.Agreement, agreementSecret, KeyBlobFormat.RawPrivateKey, in parameters);
        return new Identity(agreement, signingPublic);
    }

    /// <summary>Writes the 64 secret bytes into a buffer the caller wipes.</summary>
    internal void ExportSecrets(Span<byte> destination)
    {
        if (!IsExportable)
            throw new InvalidOperationException(
                "This identity was loaded from a file, and loaded identities cannot be exported again; copy the file instead.");
        if (!AgreementKey.TryExport(KeyBlobFormat.RawPrivateKey, destination[..PublicIdentity.KeySize], out int agreementSize)
            || !SigningKey!.TryExport(KeyBlobFormat.RawPrivateKey, destination[PublicIdentity.KeySize..], out int signingSize)
            || agreementSize + signingSize != SecretsSize)
            throw new InvalidOperationException("NSec did not export 32-byte raw private keys.");
    }

    /// <summary>An Ed25519 signature of <paramref name="message"/>.</summary>
    internal void Sign(ReadOnlySpan<byte> message, Span<byte> signature) =>
        IdentityAlgorithms.Signing.Sign(SigningKey ?? throw new InvalidOperationException(
            "This identity was handed to a program without its signing key, so it cannot sign; sign with tibet, which reads the identity file."),
            message, signature);

    /// <summary>Destroys both keys (libsodium wipes their memory).</summary>
    public void Dispose()
    {
        AgreementKey.Dispose();
        SigningKey?.Dispose();
    }
}
