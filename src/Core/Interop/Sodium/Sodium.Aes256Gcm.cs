using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>
/// AES-256-GCM with a precomputed key schedule (sodium/crypto_aead_aes256gcm.h): the
/// "afternm" functions, which NSec does not expose. None allocates or calls malloc.
/// </summary>
/// <remarks>
/// Why tibet calls these itself: NSec's Decrypt runs crypto_aead_aes256gcm_decrypt, which
/// expands the key and derives the GHASH key (beforenm) again for every page, and takes and
/// releases the key's SafeHandle around it. For 4 KiB pages that was 8 % of the time the
/// handler and the fill worker spent decrypting (perf, llama.cpp at half budget).
/// </remarks>
// https://doc.libsodium.org/secret-key_cryptography/aead/aes-256-gcm#precalculation-interface
internal static unsafe partial class Sodium
{
    [LibraryImport(Library, EntryPoint = "crypto_aead_aes256gcm_statebytes")]
    public static partial nuint crypto_aead_aes256gcm_statebytes();

    /// <summary>Expands <paramref name="k"/> (32 bytes) into <paramref name="ctx"/>.</summary>
    [LibraryImport(Library, EntryPoint = "crypto_aead_aes256gcm_beforenm")]
    public static partial int crypto_aead_aes256gcm_beforenm(void* ctx, byte* k);

    /// <summary>Writes the ciphertext followed by the 16-byte tag to <paramref name="c"/>.</summary>
    [LibraryImport(Library, EntryPoint = "crypto_aead_aes256gcm_encrypt_afternm")]
    public static partial int crypto_aead_aes256gcm_encrypt_afternm(
        byte* c, ulong* clen, byte* m, ulong mlen, byte* ad, ulong adlen, byte* nsec, byte* npub, void* ctx);

    /// <summary>0 when the tag authenticates <paramref name="c"/> (ciphertext and tag);
    /// -1, and nothing meaningful in <paramref name="m"/>, when it does not.</summary>
    [LibraryImport(Library, EntryPoint = "crypto_aead_aes256gcm_decrypt_afternm")]
    public static partial int crypto_aead_aes256gcm_decrypt_afternm(
        byte* m, ulong* mlen, byte* nsec, byte* c, ulong clen, byte* ad, ulong adlen, byte* npub, void* ctx);
}
