using System.Buffers.Binary;
using System.Security.Cryptography;
using NSec.Cryptography;

namespace Tibet.Core.Identity;

/// <summary>
/// What tibet-run hands to the interposer inside the program: the X25519 secret of the
/// identity (with its passphrase already applied, since the program cannot ask for one)
/// and the clearance claim. It travels through an inherited memfd_secret descriptor named
/// by <see cref="DescriptorVariable"/>, never as bytes in the environment, which any
/// process of the same user can read in /proc/PID/environ.
/// </summary>
/// <remarks>
/// <para>The Ed25519 signing seed is never handed over: the program only unwraps data keys
/// (X25519) and presents a claim, and a seed in its memory would let whoever reads that
/// memory sign as the identity. The Ed25519 public key travels instead, signed by tibet-run
/// with the seed, so that the program's identity (its fingerprint covers both public keys)
/// is exactly the one in the file.</para>
/// <para>Layout, version 2, little-endian: "TBHO" ‖ 2 ‖ X25519 public key (32) ‖ Ed25519
/// public key (32) ‖ X25519 private key (32) ‖ Ed25519 signature (64) of
/// "tibet identity hand-off v2" ‖ bytes 0..69 ‖ u16 m ‖ the claim's binary encoding (m bytes;
/// 0 when no claim was given). Nothing follows. The signature guards against damage, not
/// against an attacker: whoever can write the descriptor can already run code as the user.</para>
/// </remarks>
public static class IdentityHandOff
{
    /// <summary>The environment variable that names the descriptor.</summary>
    public const string DescriptorVariable = "TIBET_IDENTITY_FD";

    /// <summary>No hand-off is longer (a claim is at most a few KiB).</summary>
    public const int MaxSize = 16 * 1024;

    private const byte Version = 2;
    private const int KeySize = PublicIdentity.KeySize;
    private const int AgreementPublicOffset = 5;
    private const int SigningPublicOffset = AgreementPublicOffset + KeySize;
    private const int AgreementSecretOffset = SigningPublicOffset + KeySize;
    private const int SignatureOffset = AgreementSecretOffset + KeySize;
    private const int SignatureSize = 64;
    private const int ClaimLengthOffset = SignatureOffset + SignatureSize;
    private const int FixedSize = ClaimLengthOffset + 2;
    private static ReadOnlySpan<byte> Magic => "TBHO"u8;
    private static ReadOnlySpan<byte> SignatureDomain => "tibet identity hand-off v2"u8;

    /// <summary>
    /// Loads the secret identity at <paramref name="identityPath"/> (refused when others can
    /// read it; a passphrase is asked of <paramref name="passphraseProvider"/> only when it
    /// is protected) and encodes its X25519 secret with <paramref name="claim"/> into a new
    /// pinned array that the caller wipes.
    /// </summary>
    /// <exception cref="IdentityException">The identity file is missing, open to others,
    /// malformed, or its passphrase is missing or wrong.</exception>
    public static byte[] Prepare(string identityPath, Func<Passphrase>? passphraseProvider, Claim? claim, out PublicIdentity identity)
    {
        ArgumentNullException.ThrowIfNull(identityPath);
        byte[] claimBytes = claim?.Encode() ?? [];
        byte[] message = GC.AllocateArray<byte>(FixedSize + claimBytes.Length, pinned: true);
        byte[] body = GC.AllocateArray<byte>(SecretIdentityFormat.UnprotectedBodySize, pinned: true);
        try
        {
            Magic.CopyTo(message);
            message[4] = Version;
            using (Identity loaded = IdentityFile.ReadSecretForHandOff(identityPath, passphraseProvider, body))
            {
                identity = loaded.Public;
                identity.AgreementKey.CopyTo(message.AsSpan(AgreementPublicOffset));
                identity.SigningKey.CopyTo(message.AsSpan(SigningPublicOffset));
                body.AsSpan(SecretIdentityFormat.UnprotectedAgreementSecretOffset, KeySize).CopyTo(message.AsSpan(AgreementSecretOffset));
                loaded.Sign(SignedPart(message), message.AsSpan(SignatureOffset, SignatureSize));
            }
            BinaryPrimitives.WriteUInt16LittleEndian(message.AsSpan(ClaimLengthOffset), (ushort)claimBytes.Length);
            claimBytes.CopyTo(message.AsSpan(FixedSize));
            return message;
        }
        catch
        {
            CryptographicOperations.ZeroMemory(message);
            throw;
        }
        finally
        {
            CryptographicOperations.ZeroMemory(body); // it held the signing seed too
        }
    }

    /// <summary>Decodes a hand-off into an identity that unwraps but cannot sign. The caller
    /// wipes <paramref name="message"/> afterwards and disposes the identity.</summary>
    /// <exception cref="IdentityException">Anything but a well-formed hand-off; the message
    /// says what is wrong, naming <paramref name="sourceName"/>.</exception>
    public static (Identity Identity, Claim? Claim) Open(ReadOnlySpan<byte> message, string sourceName)
    {
        if (message.Length < 5 || !message.StartsWith(Magic) || message[4] != Version)
            throw Malformed(sourceName, $"it does not start with the hand-off magic \"TBHO\" and version {Version} (a tibet-run of another version?)");
        if (message.Length < FixedSize)
            throw Malformed(sourceName, $"it ends inside its identity ({message.Length} bytes)");
        int claimSize = BinaryPrimitives.ReadUInt16LittleEndian(message[ClaimLengthOffset..]);
        if (message.Length != FixedSize + claimSize)
            throw Malformed(sourceName, $"it is {message.Length} bytes long, and its lengths say {FixedSize + claimSize}");

        if (!PublicKey.TryImport(IdentityAlgorithms.Signing, message.Slice(SigningPublicOffset, KeySize), KeyBlobFormat.RawPublicKey, out var signingPublic)
            || signingPublic is null
            || !IdentityAlgorithms.Signing.Verify(signingPublic, SignedPart(message), message.Slice(SignatureOffset, SignatureSize)))
            throw Malformed(sourceName, "its signature does not verify: it was damaged");

        Claim? claim = null;
        if (claimSize > 0 && !Claim.TryDecode(message.Slice(FixedSize, claimSize), out claim, out _, out string problem))
            throw Malformed(sourceName, "its claim is not a claim: " + problem);
        Identity identity = Identity.FromAgreementSecret(message.Slice(AgreementSecretOffset, KeySize), message.Slice(SigningPublicOffset, KeySize));
        if (!identity.Public.AgreementKey.SequenceEqual(message.Slice(AgreementPublicOffset, KeySize)))
        {
            identity.Dispose();
            throw Malformed(sourceName, "its X25519 secret does not belong to its public key: it was damaged");
        }
        return (identity, claim);
    }

    /// <summary>What tibet-run signs: a domain string, then the magic, version and both public keys.</summary>
    private static byte[] SignedPart(ReadOnlySpan<byte> message)
    {
        byte[] signed = new byte[SignatureDomain.Length + AgreementSecretOffset];
        SignatureDomain.CopyTo(signed);
        message[..AgreementSecretOffset].CopyTo(signed.AsSpan(SignatureDomain.Length));
        return signed;
    }

    private static IdentityException Malformed(string sourceName, string problem) =>
        new(IdentityErrorKind.Malformed, $"{sourceName} is not an identity hand-off from tibet-run: {problem}. Start the program with tibet-run --identity.");
}
