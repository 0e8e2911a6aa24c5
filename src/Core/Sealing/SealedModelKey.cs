namespace Tibet.Core.Sealing;

/// <summary>
/// The live key of one sealed model: what a <see cref="SealAccessReason.Live"/> decision
/// hands out. It decrypts the model's data pages one by one, and is built to do so
/// inside a userfaultfd fault handler.
/// </summary>
/// <remarks>
/// <para>The data key lives as its expanded AES-256-GCM schedule in libsodium secure memory
/// (<see cref="Crypto.AesGcmKeySchedule"/>: mlocked, excluded from core dumps, wiped when
/// freed), so no page expands it again. The tag table, the per-file part of the
/// associated data and a scratch buffer live in one block of native memory allocated
/// here, never on the managed heap.</para>
/// <para>After construction, <see cref="TryDecryptPage"/> allocates no managed memory,
/// calls no malloc (libsodium's AEAD works on the caller's buffers) and never throws.</para>
/// <para>One thread at a time uses the preallocated scratch buffer; a thread that finds it
/// busy decrypts with a scratch buffer on its own stack instead, so concurrent calls are
/// safe, merely not the design point.</para>
/// </remarks>
public sealed unsafe class SealedModelKey : IDisposable, ISealedPageOpener
{
    /// <summary>Bytes in a data page.</summary>
    public const int PageSize = SealFormat.PageSize;

    // Layout of the native block: the associated-data template (file id and header hash
    // filled in, page index zero), the scratch area, then the tag table.
    private const int AadTemplateOffset = 0;
    private const int ScratchOffset = AadTemplateOffset + SealFormat.AadSize;
    private const int SealedPageSize = PageSize + SealFormat.TagSize;
    private const int ScratchNonceOffset = SealedPageSize;
    private const int ScratchAadOffset = ScratchNonceOffset + SealFormat.NonceSize;
    private const int ScratchSize = ScratchAadOffset + SealFormat.AadSize;
    private const int TagTableOffset = ScratchOffset + ScratchSize;

    private readonly Crypto.AesGcmKeySchedule _key;
    private readonly NativeBuffer _block;
    private readonly byte[] _fileId;
    private int _scratchInUse;
    private int _disposed;

    /// <summary>Takes ownership of <paramref name="dataKey"/> and <paramref name="block"/>
    /// (from <see cref="AllocateBlock"/>, its tag table already filled and authenticated).</summary>
    internal SealedModelKey(Crypto.AesGcmKeySchedule dataKey, NativeBuffer block, byte[] fileId, ReadOnlySpan<byte> headerHash, long dataPages)
    {
        _key = dataKey;
        _block = block;
        _fileId = fileId;
        DataPages = dataPages;
        SealFormat.WriteAadTemplate(block.Slice(AadTemplateOffset, SealFormat.AadSize), fileId, headerHash);
    }

    /// <summary>Pages in the model's data section; valid page indexes are 0 to DataPages - 1.</summary>
    public long DataPages { get; }

    /// <summary>The sealed file this key belongs to (tibet.seal.file_id).</summary>
    public ReadOnlySpan<byte> FileId => _fileId;

    /// <summary>
    /// Decrypts and authenticates data page <paramref name="pageIndex"/>: the
    /// <see cref="PageSize"/> bytes at file offset DataOffset + pageIndex × PageSize.
    /// <paramref name="plaintextPage"/> may be the same memory as <paramref name="ciphertextPage"/>.
    /// </summary>
    /// <returns>True with the plaintext written; false, with <paramref name="plaintextPage"/>
    /// cleared, when the page does not authenticate (its ciphertext or its place was
    /// altered), the index is out of range, a buffer is not exactly <see cref="PageSize"/>
    /// bytes, or the key is disposed. Never throws, allocates or calls malloc.</returns>
    public bool TryDecryptPage(long pageIndex, ReadOnlySpan<byte> ciphertextPage, Span<byte> plaintextPage)
    {
        if ((ulong)pageIndex >= (ulong)DataPages || ciphertextPage.Length != PageSize
            || plaintextPage.Length != PageSize || Volatile.Read(ref _disposed) != 0)
        {
            plaintextPage.Clear();
            return false;
        }

        bool referenced = false, keyReferenced = false;
        try
        {
            // Keeps the native block and the key alive should Dispose race with this call.
            _block.DangerousAddRef(ref referenced);
            _key.DangerousAddRef(ref keyReferenced);
            if (Interlocked.CompareExchange(ref _scratchInUse, 1, 0) == 0)
            {
                try
                {
                    return Decrypt(pageIndex, ciphertextPage, plaintextPage, new Span<byte>(_block.Pointer + ScratchOffset, ScratchSize));
                }
                finally
                {
                    Volatile.Write(ref _scratchInUse, 0);
                }
            }
            return Decrypt(pageIndex, ciphertextPage, plaintextPage, stackalloc byte[ScratchSize]);
        }
        catch (ObjectDisposedException)
        {
            // Only reachable when Dispose races with this call; the page is simply dead.
            plaintextPage.Clear();
            return false;
        }
        finally
        {
            if (keyReferenced)
                _key.DangerousRelease();
            if (referenced)
                _block.DangerousRelease();
        }
    }

    /// <inheritdoc/>
    public int OpenPages(long firstPage, int count, byte* pages)
    {
        for (int i = 0; i < count; i++)
        {
            var page = new Span<byte>(pages + (long)i * PageSize, PageSize);
            if (!TryDecryptPage(firstPage + i, page, page))
                return i;
        }
        return count;
    }

    /// <summary>Destroys the data key (libsodium wipes it) and wipes and frees the native
    /// block. Pages can no longer be decrypted.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        _key.Dispose();
        _block.Dispose();
    }

    /// <summary>A zeroed native block for a model of <paramref name="dataPages"/> pages.</summary>
    internal static NativeBuffer AllocateBlock(long dataPages) => new(TagTableOffset + dataPages * SealFormat.TagSize);

    /// <summary>The block's tag-table bytes [offset, offset + length), for filling it.</summary>
    internal static Span<byte> TagTableSlice(NativeBuffer block, long offset, int length) => block.Slice(TagTableOffset + offset, length);

    private bool Decrypt(long pageIndex, ReadOnlySpan<byte> ciphertextPage, Span<byte> plaintextPage, Span<byte> scratch)
    {
        // libsodium's combined form takes the tag appended to the ciphertext, so the two
        // meet in the scratch buffer; copying the ciphertext first is also what makes in-place decryption safe.
        Span<byte> sealedPage = scratch[..SealedPageSize];
        Span<byte> nonce = scratch.Slice(ScratchNonceOffset, SealFormat.NonceSize);
        Span<byte> aad = scratch.Slice(ScratchAadOffset, SealFormat.AadSize);
        ciphertextPage.CopyTo(sealedPage);
        new ReadOnlySpan<byte>(_block.Pointer + TagTableOffset + pageIndex * SealFormat.TagSize, SealFormat.TagSize)
            .CopyTo(sealedPage[PageSize..]);
        SealFormat.WriteNonce(nonce, pageIndex);
        new ReadOnlySpan<byte>(_block.Pointer + AadTemplateOffset, SealFormat.AadSize).CopyTo(aad);
        SealFormat.SetAadPageIndex(aad, pageIndex);
        return _key.TryOpen(nonce, aad, sealedPage, plaintextPage); // clears the page when it does not authenticate
    }
}
