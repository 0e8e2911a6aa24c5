using System.Diagnostics;
using Tibet.Core.Interop;

namespace Tibet.Core.Crypto;

/// <summary>
/// An AES-256-GCM key expanded once (libsodium's <c>crypto_aead_aes256gcm_beforenm</c>)
/// and used for every page sealed or opened under it: an arena's key
/// (<see cref="PageCipher"/>), a sealed model's data key (Sealing.SealedModelKey).
/// </summary>
/// <remarks>
/// <para>Why: NSec's Encrypt and Decrypt expand the key and derive the GHASH key again on
/// every call, and take and release the key's SafeHandle around it: for 4 KiB pages, 8 %
/// of the time the handler and the fill worker spent decrypting (perf, llama.cpp at half
/// budget). Interleaved runs at half budget: medians 63 tokens/s against 58.</para>
/// <para>The schedule gives the key back to whoever reads it, so it is held as a key is:
/// in libsodium's guarded heap (<c>sodium_malloc</c>: guard pages, locked, MADV_DONTDUMP),
/// wiped and freed by <see cref="Dispose"/>. The caller wipes the raw key bytes.</para>
/// <para>Seal and open allocate nothing, call no malloc and never throw, so they run on
/// the fault path; the schedule is only read after it is made, so several threads use it
/// at once. Being a SafeHandle, it is freed even if its owner is never disposed, and a
/// thread that may race with Dispose holds a reference (DangerousAddRef) while it uses
/// it, as SealedModelKey does; an arena's cipher is released under the engine lock, when
/// no thread uses it.</para>
/// </remarks>
internal sealed unsafe class AesGcmKeySchedule : System.Runtime.InteropServices.SafeHandle
{
    public const int KeySize = 32;
    public const int NonceSize = 12;
    public const int TagSize = 16;

    private readonly nuint _stateSize;

    /// <exception cref="InsufficientMemoryException">libsodium cannot map guarded memory for it.</exception>
    public AesGcmKeySchedule(ReadOnlySpan<byte> key) : base(IntPtr.Zero, ownsHandle: true)
    {
        if (key.Length != KeySize)
            throw new ArgumentException($"an AES-256-GCM key is {KeySize} bytes, not {key.Length}", nameof(key));
        // NSec initialises libsodium on its first use, which may not have come yet.
        if (Sodium.sodium_init() < 0)
            throw new InvalidOperationException("libsodium cannot be initialised (sodium_init failed)");
        _stateSize = Sodium.crypto_aead_aes256gcm_statebytes();
        void* state = Sodium.sodium_malloc(_stateSize);
        if (state == null)
            throw new InsufficientMemoryException("libsodium cannot allocate guarded memory for an AES-256-GCM key schedule (sodium_malloc failed: the process is out of memory or address space).");
        Debug.Assert(((nuint)state & 15) == 0, "libsodium's AES-256-GCM state must be 16-byte aligned");
        SetHandle((IntPtr)state); // freed by Dispose from here on, whatever follows
        int expanded;
        fixed (byte* k = key)
            expanded = Sodium.crypto_aead_aes256gcm_beforenm(state, k);
        if (expanded != 0)
        {
            Dispose();
            throw new PlatformNotSupportedException("libsodium cannot run AES-256-GCM on this CPU (it needs AES-NI and CLMUL); tibet does not fall back to a software cipher.");
        }
    }

    public override bool IsInvalid => handle == IntPtr.Zero;

    private void* State => (void*)handle;

    /// <summary>Writes the ciphertext of <paramref name="plaintext"/> followed by its tag
    /// (<see cref="TagSize"/> bytes) to <paramref name="sealedOutput"/>.</summary>
    public void Seal(ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> associatedData, ReadOnlySpan<byte> plaintext, Span<byte> sealedOutput)
    {
        Debug.Assert(nonce.Length == NonceSize && sealedOutput.Length == plaintext.Length + TagSize && !IsClosed);
        ulong written;
        fixed (byte* m = plaintext, c = sealedOutput, n = nonce, ad = associatedData)
            Sodium.crypto_aead_aes256gcm_encrypt_afternm(c, &written, m, (ulong)plaintext.Length, ad, (ulong)associatedData.Length, null, n, State);
    }

    /// <summary>True, with the plaintext written, when the tag at the end of
    /// <paramref name="sealedInput"/> authenticates it; false, with
    /// <paramref name="plaintext"/> cleared, when it does not. The two must not overlap.</summary>
    public bool TryOpen(ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> associatedData, ReadOnlySpan<byte> sealedInput, Span<byte> plaintext)
    {
        Debug.Assert(nonce.Length == NonceSize && sealedInput.Length == plaintext.Length + TagSize && !IsClosed);
        ulong opened;
        bool authentic;
        fixed (byte* m = plaintext, c = sealedInput, n = nonce, ad = associatedData)
            authentic = Sodium.crypto_aead_aes256gcm_decrypt_afternm(m, &opened, null, c, (ulong)sealedInput.Length, ad, (ulong)associatedData.Length, n, State) == 0
                        && opened == (ulong)plaintext.Length;
        if (!authentic)
            plaintext.Clear();
        return authentic;
    }

    /// <summary>Wipes the schedule and gives its memory back (Dispose, once no reference is held).</summary>
    protected override bool ReleaseHandle()
    {
        Sodium.sodium_memzero(State, _stateSize); // sodium_free wipes too: said here, not assumed
        Sodium.sodium_free(State);
        return true;
    }
}
