using NSec.Cryptography;

namespace Tibet.Core.Crypto;

/// <summary>
/// The AEAD that seals pages held in RAM (arenas and 2 MiB model pages). Handed to the
/// engine in <see cref="Paging.EngineOptions.Cipher"/>; <c>tibet-run --cipher</c> picks it.
/// </summary>
/// <remarks>
/// <para>AES-256-GCM is the default, as the user asked. AEGIS-256 (libsodium) is about
/// twice as fast on CPUs with AES instructions (bench/results, "cipher"), and is as
/// strong a choice for this use: a 256-bit key, a 256-bit nonce and a 128-bit security
/// level against forgery with its 32-byte tag.</para>
/// <para>Sealed model files (<c>tibet seal</c>) keep their own format with AES-256-GCM:
/// the suite only concerns pages sealed in memory, whose keys never leave the process.</para>
/// </remarks>
public sealed class PageCipherSuite
{
    /// <summary>The largest tag of any suite: buffers sized for it fit every suite.</summary>
    public const int MaxTagSize = 32;

    // The algorithm is resolved on first use, not here: naming a suite (parsing
    // TIBET_CIPHER) happens before the interposer has loaded libsodium.
    private PageCipherSuite(string name, int tagSize, int nonceSize, Func<AeadAlgorithm> resolve, Func<bool> isSupported, string unsupportedReason)
    {
        Name = name;
        TagSize = tagSize;
        NonceSize = nonceSize;
        _resolve = resolve;
        _isSupported = isSupported;
        _unsupportedReason = unsupportedReason;
    }

    private readonly Func<AeadAlgorithm> _resolve;
    private readonly Func<bool> _isSupported;
    private readonly string _unsupportedReason;
    private AeadAlgorithm? _algorithm;

    /// <summary>AES-256-GCM: 12-byte nonce, 16-byte tag. Needs AES-NI and CLMUL.</summary>
    public static PageCipherSuite Aes256Gcm { get; } = new(
        "aes-256-gcm", 16, 12, () => AeadAlgorithm.Aes256Gcm, () => NSec.Cryptography.Aes256Gcm.IsSupported,
        "AES-256-GCM needs a CPU with AES-NI and CLMUL; libsodium reports that this CPU has neither. " +
        "tibet refuses to fall back to a software cipher for page encryption.");

    /// <summary>AEGIS-256: 32-byte nonce, 32-byte tag.</summary>
    public static PageCipherSuite Aegis256 { get; } = new(
        "aegis-256", 32, 32, () => AeadAlgorithm.Aegis256, () => true, "");

    /// <summary>The name used by <c>--cipher</c> and in statistics.</summary>
    public string Name { get; }

    public int TagSize { get; }

    public int NonceSize { get; }

    internal AeadAlgorithm Algorithm
    {
        get
        {
            if (_algorithm == null)
            {
                AeadAlgorithm algorithm = _resolve();
                if (algorithm.TagSize != TagSize || algorithm.NonceSize != NonceSize)
                    throw new InvalidOperationException($"libsodium's {Name} has a {algorithm.TagSize}-byte tag and a {algorithm.NonceSize}-byte nonce; tibet expects {TagSize} and {NonceSize}.");
                _algorithm = algorithm;
            }
            return _algorithm;
        }
    }

    /// <summary>The suite named <paramref name="name"/> ("aes-256-gcm", "aegis-256"), or null.</summary>
    public static PageCipherSuite? FromName(string? name) => name switch
    {
        "aes-256-gcm" => Aes256Gcm,
        "aegis-256" => Aegis256,
        _ => null,
    };

    /// <summary>The names <see cref="FromName"/> accepts, for error messages.</summary>
    public const string Names = "'aes-256-gcm' or 'aegis-256'";

    /// <summary>Throws <see cref="PlatformNotSupportedException"/>, naming why, when this
    /// CPU cannot run the suite in hardware.</summary>
    public void RequireSupported()
    {
        if (!_isSupported())
            throw new PlatformNotSupportedException(_unsupportedReason);
    }

    public override string ToString() => Name;
}
