using System.Buffers.Binary;
using System.Diagnostics;
using System.Security.Cryptography;
using NSec.Cryptography;

namespace Tibet.Core.Crypto;

/// <summary>
/// Seals and opens single pages of one arena with the engine's
/// <see cref="PageCipherSuite"/> (AES-256-GCM by default, or AEGIS-256).
/// </summary>
/// <remarks>
/// <para><b>Scheme.</b> Every arena has its own 256-bit key drawn from getrandom(2) and
/// held by NSec in libsodium secure memory (guard pages, mlock, MADV_DONTDUMP, wiped on
/// free). A page is sealed as <c>AEAD(key, nonce, aad, plaintext)</c> with</para>
/// <list type="bullet">
/// <item><c>nonce = 0x00000000 ‖ counter64_le ‖ zeros</c> (12 bytes for AES-256-GCM, 32
/// for AEGIS-256), where the counter belongs to this key
/// alone, starts at 1 and only ever increases. One key, one counter, one thread that
/// advances it under the engine lock: a nonce can never repeat under a key.</item>
/// <item><c>aad = "TIBETPG1" ‖ arenaId64 ‖ pageIndex64 ‖ flags32 ‖ plaintextLength32</c>.
/// A sealed page therefore opens only in the slot and arena it was sealed for, and a
/// compressed page cannot be passed off as raw or the other way round.</item>
/// </list>
/// <para>The counter used for a page is kept in the page table, not beside the
/// ciphertext, so an old ciphertext of the same page replayed into the store fails to
/// authenticate: it was sealed under an older nonce.</para>
/// <para>Seal and Open allocate nothing and do not call malloc (libsodium's AEAD works
/// on caller buffers), so they are safe on the fault path.</para>
/// <para>AES-256-GCM runs from a key schedule expanded once per key
/// (<see cref="AesGcmKeySchedule"/>); the key itself is not kept. AEGIS-256 goes through
/// NSec: its key setup is part of every call anyway.</para>
/// </remarks>
internal sealed class PageCipher : IDisposable
{
    public const int KeySize = 32;
    private const int MaxNonceSize = 32;
    private const int AssociatedDataSize = 32;
    private const ulong AadMagic = 0x3147504554454954; // "TIBETPG1" little-endian

    private readonly AeadAlgorithm _algorithm;
    private readonly Key? _key; // AEGIS-256
    private AesGcmKeySchedule? _aes; // AES-256-GCM; null for AEGIS-256, and once released
    private readonly ulong _arenaId;
    private ulong _lastNonce;
    private int _references = 1;

    public PageCipher(ulong arenaId, PageCipherSuite suite)
    {
        suite.RequireSupported();
        _algorithm = suite.Algorithm;
        TagSize = suite.TagSize;
        _arenaId = arenaId;
        Span<byte> keyBytes = stackalloc byte[KeySize];
        try
        {
            SecureRandom.Fill(keyBytes);
            if (suite == PageCipherSuite.Aes256Gcm)
            {
                _aes = new AesGcmKeySchedule(keyBytes);
            }
            else
            {
                var parameters = new KeyCreationParameters { ExportPolicy = KeyExportPolicies.None };
                _key = Key.Import(_algorithm, keyBytes, KeyBlobFormat.RawSymmetricKey, in parameters);
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(keyBytes);
        }
    }

    /// <summary>Bytes of tag each sealed page carries after its ciphertext.</summary>
    public int TagSize { get; }

    /// <summary>The number of nonces this key has consumed.</summary>
    public ulong SealCount => _lastNonce;

    /// <summary>
    /// Seals <paramref name="plaintext"/> into <paramref name="sealedOutput"/>
    /// (ciphertext followed by the tag) and returns the nonce counter used.
    /// </summary>
    public ulong Seal(ulong pageIndex, uint flags, ReadOnlySpan<byte> plaintext, Span<byte> sealedOutput)
    {
        ulong counter = ReserveNonce();
        SealWith(counter, pageIndex, flags, plaintext, sealedOutput);
        return counter;
    }

    /// <summary>
    /// Takes the next nonce counter for a later <see cref="SealWith"/>: eviction reserves
    /// it under the engine lock and encrypts with the lock let go (Paging.Sealing.UnlockedSealer).
    /// A counter reserved and never used is skipped, never given out again.
    /// </summary>
    /// <remarks>Not thread-safe: called under the engine lock, as <see cref="Seal"/> is.</remarks>
    public ulong ReserveNonce()
    {
        if (_lastNonce == ulong.MaxValue)
            ThrowNonceSpaceExhausted();
        return ++_lastNonce;
    }

    /// <summary>
    /// Seals <paramref name="plaintext"/> under nonce <paramref name="counter"/>, which
    /// <see cref="ReserveNonce"/> gave out for this one sealing. Touches no state of the
    /// cipher's, so it may run on any thread while the key is held (<see cref="Retain"/>).
    /// </summary>
    public void SealWith(ulong counter, ulong pageIndex, uint flags, ReadOnlySpan<byte> plaintext, Span<byte> sealedOutput)
    {
        Debug.Assert(sealedOutput.Length == plaintext.Length + TagSize);
        Debug.Assert(counter != 0 && counter <= _lastNonce, "a nonce not reserved");
        Span<byte> nonce = stackalloc byte[MaxNonceSize];
        nonce = nonce[.._algorithm.NonceSize];
        WriteNonce(nonce, counter);
        Span<byte> aad = stackalloc byte[AssociatedDataSize];
        WriteAssociatedData(aad, pageIndex, flags, plaintext.Length);
        if (_aes != null)
        {
            _aes.Seal(nonce, aad, plaintext, sealedOutput);
        }
        else
        {
            _algorithm.Encrypt(_key ?? ThrowReleased(), nonce, aad, plaintext, sealedOutput);
        }
    }

    /// <summary>
    /// Authenticates and decrypts a sealed page. Returns false, and leaves
    /// <paramref name="plaintext"/> cleared, when the ciphertext, tag, nonce, slot or
    /// flags do not match what was sealed.
    /// </summary>
    public bool Open(ulong pageIndex, uint flags, ulong nonceCounter, ReadOnlySpan<byte> sealedInput, Span<byte> plaintext)
    {
        Debug.Assert(sealedInput.Length == plaintext.Length + TagSize);
        Span<byte> nonce = stackalloc byte[MaxNonceSize];
        nonce = nonce[.._algorithm.NonceSize];
        WriteNonce(nonce, nonceCounter);
        Span<byte> aad = stackalloc byte[AssociatedDataSize];
        WriteAssociatedData(aad, pageIndex, flags, plaintext.Length);
        bool authentic;
        if (_aes != null)
        {
            authentic = _aes.TryOpen(nonce, aad, sealedInput, plaintext);
        }
        else
        {
            authentic = _algorithm.Decrypt(_key ?? ThrowReleased(), nonce, aad, sealedInput, plaintext);
        }
        if (authentic)
            return true;
        plaintext.Clear();
        return false;
    }

    /// <summary>A forked child's snapshot keeps the key alive after its arena is gone.</summary>
    public void Retain() => _references++;

    /// <summary>Drops one reference; the last one destroys the key (libsodium wipes it).</summary>
    public void Release()
    {
        if (--_references != 0)
            return;
        _key?.Dispose();
        _aes?.Dispose();
        _aes = null;
    }

    public void Dispose() => Release();

    /// <summary>Exposes the nonce for a counter so tests can check uniqueness on the
    /// bytes the cipher really uses.</summary>
    internal static void WriteNonce(Span<byte> nonce, ulong counter)
    {
        nonce.Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(nonce[4..], counter);
    }

    private void WriteAssociatedData(Span<byte> aad, ulong pageIndex, uint flags, int length)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(aad, AadMagic);
        BinaryPrimitives.WriteUInt64LittleEndian(aad[8..], _arenaId);
        BinaryPrimitives.WriteUInt64LittleEndian(aad[16..], pageIndex);
        BinaryPrimitives.WriteUInt32LittleEndian(aad[24..], flags);
        BinaryPrimitives.WriteUInt32LittleEndian(aad[28..], (uint)length);
    }

    // An AES-256-GCM cipher released has neither schedule nor key (NSec throws for AEGIS-256's).
    private static Key ThrowReleased() =>
        throw new ObjectDisposedException(nameof(PageCipher), "the arena's key has been destroyed");

    private static void ThrowNonceSpaceExhausted() =>
        throw new CryptographicException("The arena key has used all 2^64 nonces; refusing to seal under it again.");
}
