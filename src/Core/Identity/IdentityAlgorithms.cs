using System.Runtime.Versioning;
using NSec.Cryptography;

namespace Tibet.Core.Identity;

/// <summary>
/// The primitives of the identity layer, all from libsodium through NSec. Hashing goes
/// through libsodium too (not System.Security.Cryptography), because this code also runs
/// inside interposed programs, where .NET's crypto would load OpenSSL into the host.
/// </summary>
internal static class IdentityAlgorithms
{
    public const int HashSize = 32;

    public static SignatureAlgorithm Signing => SignatureAlgorithm.Ed25519;

    public static KeyAgreementAlgorithm Agreement => KeyAgreementAlgorithm.X25519;

    public static KeyDerivationAlgorithm Hkdf => KeyDerivationAlgorithm.HkdfSha256;

    /// <summary>AES-256-GCM. libsodium only offers it on CPUs with AES-NI and CLMUL; the page
    /// engine refuses to run without them as well, so this is no new requirement.</summary>
    public static AeadAlgorithm Aead
    {
        get
        {
            if (!Aes256Gcm.IsSupported)
                throw new PlatformNotSupportedException(
                    "AES-256-GCM needs a CPU with AES-NI and CLMUL, and libsodium reports that this CPU has neither; " +
                    "tibet does not fall back to a software cipher.");
            return AeadAlgorithm.Aes256Gcm;
        }
    }

    public static void Sha256(ReadOnlySpan<byte> data, Span<byte> hash) => HashAlgorithm.Sha256.Hash(data, hash);

    /// <summary>Guards the Unix-only file APIs (permissions on create and check) for the
    /// platform analyzer; tibet runs on Linux only.</summary>
    [SupportedOSPlatformGuard("linux")]
    public static bool IsLinux => OperatingSystem.IsLinux();

    public const string LinuxOnlyMessage = "tibet identities need Linux (file permissions are part of their protection).";
}
