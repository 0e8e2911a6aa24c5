using Tibet.Core.Compression;
using Tibet.Core.Crypto;
using Tibet.Core.Interop;
using Tibet.Core.Storage;

namespace Tibet.Core.Paging.Sealing;

/// <summary>
/// The engine's sealing part: turns a plaintext page into a sealed one in the store
/// (zstd where it pays, then the arena's AEAD) and back, and owns what that needs: the
/// store, the compressor, a locked staging buffer and the counts.
/// </summary>
/// <remarks>
/// Called under the engine lock, on the fault path: allocation-free and malloc-free.
/// A page's nonce counter, flags and sealed length live in its <see cref="PageEntry"/>,
/// never beside the ciphertext, so a store that replays an older sealing is caught by
/// authentication (see <see cref="PageCipher"/>).
/// </remarks>
internal sealed unsafe class PageSealer : IDisposable
{
    private const int PageSize = Userfaultfd.PageSize;
    private const int IncompressibleStreakLimit = 8;
    private const int CompressionBackoffPages = 64;
    // [0, 1 page): compressed plaintext; [1 page, 3 pages): a store's read staging.
    private const int StagingLength = PageSize * 3;

    private readonly SealedPageStore _store;
    private readonly PageCompressor? _compressor;
    private readonly int _compressedKeepBytes;
    // Compressed bytes on their way in or out of the cipher, and a store's read staging.
    private readonly nint _staging;

    private long _sealedPages, _retainedPages, _seals, _compressedSeals, _opens, _decompressions, _cleanReseals;

    /// <summary>What a page's compressed payload may take, tag included (see <see cref="TryCompress"/>).</summary>
    public int CompressedKeepBytes => _compressedKeepBytes;

    /// <summary>Whether pages are compressed where it pays.</summary>
    public bool Compresses => _compressor != null;

    public PageSealer(SealedPageStore store, CompressionMode compression, int compressedKeepBytes)
    {
        _store = store;
        _compressedKeepBytes = compressedKeepBytes;
        if (compression == CompressionMode.Auto)
            _compressor = new PageCompressor();
        _staging = KernelMemory.Map(StagingLength);
        // Compressed plaintext passes through here: out of swap and core dumps.
        Libc.mlock(_staging, StagingLength);
        Libc.madvise(_staging, StagingLength, Libc.MADV_DONTDUMP);
    }

    public SealedPageStore Store => _store;

    /// <summary>Pages held sealed in the store now.</summary>
    public long SealedPages => _sealedPages;

    /// <summary>Resident pages whose sealed copy is kept in the store because they have not
    /// been written since it was opened (see <see cref="Retain"/>).</summary>
    public long RetainedPages => _retainedPages;

    /// <summary>Evictions that gave a clean page its kept copy back instead of encrypting.</summary>
    public long CleanReseals => _cleanReseals;

    /// <summary>Pages sealed into the store (all-zero pages are not: they become Zero).</summary>
    public long Seals => _seals;

    public long CompressedSeals => _compressedSeals;

    /// <summary>Pages authenticated and decrypted.</summary>
    public long Opens => _opens;

    public long Decompressions => _decompressions;

    /// <summary>
    /// Makes <paramref name="entry"/> a sealed page holding <paramref name="page"/>, or a
    /// zero page (nothing stored, returns false) when the page is all zeros.
    /// </summary>
    public bool Seal(Arena arena, long index, ref PageEntry entry, ReadOnlySpan<byte> page)
    {
        // A page with a kept copy is evicted by ResealClean; one sealed anew drops the copy.
        if (!page.ContainsAnyExcept((byte)0))
        {
            MakeZero(ref entry);
            return false;
        }
        Forget(ref entry);

        ReadOnlySpan<byte> payload = page;
        byte flags = 0;
        var compressed = new Span<byte>((void*)_staging, _compressedKeepBytes - arena.Cipher.TagSize);
        if (TryCompress(_compressor, arena, page, compressed, out int compressedLength))
        {
            payload = compressed[..compressedLength];
            flags = PageEntry.FlagCompressed;
        }

        int sealedLength = payload.Length + arena.Cipher.TagSize;
        Span<byte> slot = _store.Reserve(sealedLength, out ulong handle);
        ulong nonce = arena.Cipher.Seal((ulong)index, flags, payload, slot);
        _store.Commit(handle);
        Stored(ref entry, handle, sealedLength, nonce, flags);
        if (flags != 0)
            Libc.memset((void*)_staging, 0, (nuint)compressedLength);
        return true;
    }

    /// <summary>Makes <paramref name="entry"/> a zero page: nothing stored, and whatever
    /// slot it held (a sealed copy, a kept copy) freed.</summary>
    public void MakeZero(ref PageEntry entry)
    {
        Forget(ref entry);
        entry.State = PageState.Zero;
    }

    /// <summary>
    /// Makes <paramref name="entry"/> a sealed page whose sealing was made elsewhere
    /// (UnlockedSealer, with the engine lock let go): <paramref name="sealedBytes"/> is
    /// the payload's ciphertext and tag under <paramref name="nonce"/>, which the arena's
    /// cipher reserved for it. Under the engine lock: the store is this sealer's.
    /// </summary>
    public void Install(ref PageEntry entry, ReadOnlySpan<byte> sealedBytes, ulong nonce, byte flags)
    {
        Forget(ref entry);
        Span<byte> slot = _store.Reserve(sealedBytes.Length, out ulong handle);
        sealedBytes.CopyTo(slot);
        _store.Commit(handle);
        Stored(ref entry, handle, sealedBytes.Length, nonce, flags);
    }

    private void Stored(ref PageEntry entry, ulong handle, int sealedLength, ulong nonce, byte flags)
    {
        entry.Nonce = nonce;
        entry.Slot = handle;
        entry.SealedLength = (ushort)sealedLength;
        entry.Flags = flags;
        entry.State = PageState.Sealed;
        _sealedPages++;
        _seals++;
        if ((flags & PageEntry.FlagCompressed) != 0)
            _compressedSeals++;
    }

    /// <summary>Authenticates and decrypts a sealed page into <paramref name="destination"/>.
    /// False (and <paramref name="destination"/> cleared) when it fails authentication.
    /// The page stays sealed: the caller decides when its slot is freed.</summary>
    public bool TryOpen(PageCipher cipher, long index, in PageEntry entry, byte* destination)
    {
        _opens++;
        bool ok = OpenInto(cipher, index, in entry, destination, (byte*)_staging, _compressor);
        if (ok && entry.IsCompressed)
            _decompressions++;
        return ok;
    }

    /// <summary>Bytes of staging <see cref="OpenInto"/> needs: a compressed page's
    /// plaintext, then a store's read staging.</summary>
    public const int OpenStagingLength = StagingLength;

    /// <summary>
    /// Authenticates and decrypts a sealed page into <paramref name="destination"/> with
    /// the caller's <paramref name="staging"/> (<see cref="OpenStagingLength"/> bytes,
    /// locked: a compressed page's plaintext passes through it) and
    /// <paramref name="decompressor"/>, touching no counter or buffer of this sealer's, so
    /// that a caller without the engine lock may use it on an entry it copied under the
    /// lock (Faults.UnlockedOpener). False (and <paramref name="destination"/> cleared)
    /// when it fails authentication or decompression; the staging is left clear.
    /// </summary>
    public bool OpenInto(PageCipher cipher, long index, in PageEntry entry, byte* destination, byte* staging, PageCompressor? decompressor)
    {
        var page = new Span<byte>(destination, PageSize);
        // A store that copies (not this process's) fills the read staging.
        var readStaging = new Span<byte>(staging + PageSize, entry.SealedLength);
        ReadOnlySpan<byte> sealedBytes = _store.Read(entry.Slot, entry.SealedLength, readStaging);
        if (!entry.IsCompressed)
            return cipher.Open((ulong)index, entry.Flags, entry.Nonce, sealedBytes, page);

        int compressedLength = entry.SealedLength - cipher.TagSize;
        var compressed = new Span<byte>(staging, compressedLength);
        bool ok = cipher.Open((ulong)index, entry.Flags, entry.Nonce, sealedBytes, compressed)
                  && decompressor != null && decompressor.TryDecompress(compressed, page);
        compressed.Clear();
        if (!ok)
            page.Clear();
        return ok;
    }

    /// <summary>Counts decompressions made on the handler's behalf by <see cref="OpenInto"/>
    /// (the counters change under the engine lock only).</summary>
    public void CountDecompressed(int pages) => _decompressions += pages;

    /// <summary>
    /// Authenticates and decrypts a sealed, uncompressed page into
    /// <paramref name="destination"/>, touching nothing of this sealer's: no counter, no
    /// staging buffer (a store that copies fills <paramref name="staging"/>), no
    /// decompressor. So a second thread may call it while the handler, holding the engine
    /// lock, keeps the entry and its slot unchanged (see Faults.FillWorker).
    /// </summary>
    public bool TryOpenUncompressed(PageCipher cipher, long index, in PageEntry entry, byte* destination, Span<byte> staging)
    {
        if (entry.State != PageState.Sealed || entry.IsCompressed)
            return false;
        ReadOnlySpan<byte> sealedBytes = _store.Read(entry.Slot, entry.SealedLength, staging[..entry.SealedLength]);
        return cipher.Open((ulong)index, entry.Flags, entry.Nonce, sealedBytes, new Span<byte>(destination, PageSize));
    }

    /// <summary>Counts pages opened by <see cref="TryOpenUncompressed"/> on the handler's
    /// behalf (its counters change under the engine lock only).</summary>
    public void CountOpened(int pages) => _opens += pages;

    /// <summary>Frees the slot a page holds, if any: a sealed page's (it became resident
    /// again without its copy being kept, was discarded, unmapped or found tampered), or a
    /// resident page's kept copy (it was written, or discarded); and a resident page's claim
    /// that its source holds its contents (<see cref="PageEntry.HoldsSourceCopy"/>).</summary>
    public void Forget(ref PageEntry entry)
    {
        // Written or gone: the source no longer holds it, and it is not given up (any more).
        entry.Flags &= unchecked((byte)~(PageEntry.FlagSourceCopy | PageEntry.FlagGivenUp));
        if (entry.State == PageState.Sealed)
            _sealedPages--;
        else if (entry.HoldsCleanCopy)
            _retainedPages--;
        else
            return;
        _store.Free(entry.Slot);
        entry.Slot = 0;
        entry.SealedLength = 0;
    }

    /// <summary>
    /// A sealed page became resident write-protected: its slot, nonce and length stay in
    /// <paramref name="entry"/>, so that evicting it before any write costs no encryption
    /// (<see cref="ResealClean"/>). The first write frees the copy (<see cref="Forget"/>).
    /// </summary>
    /// <remarks>No nonce is reused: the kept ciphertext is the one sealed under the page's
    /// current nonce, and nothing is encrypted again under it.</remarks>
    public void Retain(ref PageEntry entry)
    {
        System.Diagnostics.Debug.Assert(entry.State == PageState.Sealed && entry.SealedLength != 0);
        _sealedPages--;
        _retainedPages++;
        entry.State = PageState.Resident;
    }

    /// <summary>A clean page was taken out: it is sealed again by its kept copy, which holds
    /// exactly its contents. The caller wipes the plaintext it took out.</summary>
    public void ResealClean(ref PageEntry entry)
    {
        System.Diagnostics.Debug.Assert(entry.HoldsCleanCopy);
        _retainedPages--;
        _sealedPages++;
        _cleanReseals++;
        entry.State = PageState.Sealed;
    }

    /// <summary>Seals and opens once on the calling thread, so that the handler's first
    /// fault meets no static constructor or first-call allocation (cipher, compressor).</summary>
    public void WarmUp(PageCipherSuite suite, byte* pageBuffer)
    {
        using var cipher = new PageCipher(0, suite);
        var page = new Span<byte>(pageBuffer, PageSize);
        Span<byte> sealedPage = stackalloc byte[PageSize + PageCipherSuite.MaxTagSize];
        sealedPage = sealedPage[..(PageSize + cipher.TagSize)];
        ulong nonce = cipher.Seal(0, 0, page, sealedPage);
        if (!cipher.Open(0, 0, nonce, sealedPage, page))
            throw new InvalidOperationException($"{suite.Name} self-test failed: a page sealed here did not open.");
        if (_compressor != null)
        {
            var compressed = new Span<byte>((void*)_staging, PageSize);
            if (_compressor.TryCompress(page, compressed, out int written))
                _compressor.TryDecompress(compressed[..written], page);
        }
        page.Clear();
        Wipe();
    }

    /// <summary>Clears the staging buffer (after a failure, or at the end).</summary>
    public void Wipe() => Libc.memset((void*)_staging, 0, StagingLength);

    public void Dispose()
    {
        Wipe();
        KernelMemory.Unmap(_staging, StagingLength);
        _compressor?.Dispose();
        _store.Dispose();
    }

    /// <summary>
    /// zstd where it pays: a page is kept compressed only when the result fits
    /// <paramref name="destination"/> (<see cref="EngineOptions.CompressedKeepBytes"/> less
    /// the tag), and an arena whose pages keep failing stops trying for a while. Null
    /// <paramref name="compressor"/>: compression is off.
    /// </summary>
    internal static bool TryCompress(PageCompressor? compressor, Arena arena, ReadOnlySpan<byte> page, Span<byte> destination, out int length)
    {
        length = 0;
        if (compressor == null)
            return false;
        if (arena.CompressionSkips > 0)
        {
            arena.CompressionSkips--;
            return false;
        }
        if (compressor.TryCompress(page, destination, out length))
        {
            arena.IncompressibleStreak = 0;
            return true;
        }
        destination.Clear();
        if (++arena.IncompressibleStreak >= IncompressibleStreakLimit)
        {
            arena.IncompressibleStreak = 0;
            arena.CompressionSkips = CompressionBackoffPages;
        }
        return false;
    }
}
