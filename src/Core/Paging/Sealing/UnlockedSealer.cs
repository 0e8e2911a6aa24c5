using System.Diagnostics;
using Tibet.Core.Compression;
using Tibet.Core.Crypto;
using Tibet.Core.Interop;
using Tibet.Core.Storage;
using Tibet.Core.Threading;

namespace Tibet.Core.Paging.Sealing;

/// <summary>
/// Eviction's encryption with the engine lock let go: the handler's evictions after a
/// fault and when idle (Eviction.Evictor) take their pages out under the lock, hand the
/// ones to seal here, and these are compressed and encrypted while the program's threads
/// that map or unmap take the lock; the ciphertexts go into the store
/// once the lock is back (<see cref="Install"/>).
/// </summary>
/// <remarks>
/// What keeps it safe while the lock is free:
/// <list type="bullet">
/// <item>each page's nonce is reserved under the lock (PageCipher.ReserveNonce) and used
/// for that one sealing, so no nonce repeats under a key whoever seals meanwhile; one not
/// installed is skipped;</item>
/// <item>each page's arena key is held (PageCipher.Retain), so a release of the arena does
/// not destroy it under the encryption;</item>
/// <item>the plaintext stays in the take-out area, which nobody else uses meanwhile: only
/// the handler evicts with the lock let go, API calls that evict wait until it is back
/// (PageEngine.EnterBetweenSteps), and only the handler reads userfaultfd events (never
/// in the middle of a take-out: see Eviction.Evictor.TakeOutOneRun);</item>
/// <item>the ciphertexts are made in this class's own buffer and the store is touched
/// under the lock only; the sealer's compressor and staging are not used here (this
/// class has its own); an arena's compression back-off counters are changed here, and
/// only ever by sealing, which nobody else does meanwhile;</item>
/// <item>the evictor checks each page's entry once the lock is back: a page whose arena was
/// released or whose entry changed (unmapped, say) is not installed, only wiped.</item>
/// </list>
/// Allocation-free and malloc-free, like the rest of the fault path.
/// </remarks>
internal sealed unsafe class UnlockedSealer : IDisposable
{
    private const int PageSize = Userfaultfd.PageSize;
    private const int SealedSlotBytes = PageSize + PageCipherSuite.MaxTagSize;

    private readonly EngineLockWindow _engineLock;
    private readonly PageCompressor? _compressor;
    private readonly int _compressedKeepBytes;
    private readonly Action<Arena>? _whileSealing;
    // [0, 1 page): compressed plaintext, locked; then one ciphertext slot per page (not
    // locked: ciphertext only).
    private readonly nint _buffer;
    private readonly nuint _bufferLength;
    private readonly Pending[] _pending;
    private int _count;

    private struct Pending
    {
        public Arena? Arena;
        public long Index;
        public nint Plaintext;
        public ulong Nonce;
        public int SealedLength; // 0: the page is all zeros, nothing sealed
        public byte Flags;
    }

    /// <param name="capacity">The most pages one eviction batch hands over (EngineOptions.EvictBatchPages).</param>
    /// <param name="whileSealing">EngineOptions.WhileSealingWithoutLock: tests only.</param>
    public UnlockedSealer(EngineLockWindow engineLock, PageSealer sealer, int capacity, Action<Arena>? whileSealing)
    {
        _engineLock = engineLock;
        _compressedKeepBytes = sealer.CompressedKeepBytes;
        _whileSealing = whileSealing;
        _pending = new Pending[capacity];
        _bufferLength = (nuint)(PageSize + (long)capacity * SealedSlotBytes);
        _buffer = KernelMemory.Map(_bufferLength);
        // Compressed plaintext passes through the first page: out of swap and core dumps.
        Libc.mlock(_buffer, PageSize);
        Libc.madvise(_buffer, PageSize, Libc.MADV_DONTDUMP);
        if (sealer.Compresses)
        {
            _compressor = new PageCompressor();
            // The first compression sets zstd's context up: here, not on the handler.
            Span<byte> zeros = stackalloc byte[PageSize];
            zeros.Clear();
            _compressor.TryCompress(zeros, new Span<byte>((void*)_buffer, PageSize), out _);
            Wipe();
        }
    }

    public int Capacity => _pending.Length;

    public int Count => _count;

    /// <summary>
    /// Under the lock: page <paramref name="index"/> of <paramref name="arena"/>, taken out
    /// to <paramref name="plaintext"/>, is to be sealed in the next <see cref="SealAll"/>.
    /// Its nonce is reserved and its key held now.
    /// </summary>
    public void Add(Arena arena, long index, nint plaintext)
    {
        Debug.Assert(_engineLock.IsHeldByCurrentThread);
        Debug.Assert(_count < _pending.Length);
        PageCipher cipher = arena.Cipher;
        ulong nonce = cipher.ReserveNonce(); // may throw (nonce space exhausted): nothing held yet
        cipher.Retain();
        _pending[_count++] = new Pending { Arena = arena, Index = index, Plaintext = plaintext, Nonce = nonce };
    }

    /// <summary>
    /// Lets the engine lock go, seals every page added (zstd where it pays, then its
    /// arena's AEAD under its reserved nonce) into this class's buffer, and takes the lock
    /// back, also when it throws. The plaintexts stay where they are: the caller wipes them.
    /// </summary>
    public void SealAll()
    {
        if (_count == 0)
            return;
        // Kept while a thread waits to come in between the handler's steps (EngineLockWindow.MayLetGo).
        bool letGo = _engineLock.MayLetGo;
        if (letGo)
            _engineLock.LetGo();
        try
        {
            if (letGo)
                _whileSealing?.Invoke(_pending[0].Arena!);
            for (int i = 0; i < _count; i++)
                SealOne(ref _pending[i], (byte*)_buffer + PageSize + (long)i * SealedSlotBytes);
        }
        finally
        {
            if (letGo)
                _engineLock.TakeBack();
        }
    }

    private void SealOne(ref Pending pending, byte* sealedOutput)
    {
        var page = new ReadOnlySpan<byte>((void*)pending.Plaintext, PageSize);
        if (!page.ContainsAnyExcept((byte)0))
            return; // SealedLength 0: a zero page
        Arena arena = pending.Arena!;
        PageCipher cipher = arena.Cipher;
        ReadOnlySpan<byte> payload = page;
        var compressed = new Span<byte>((void*)_buffer, _compressedKeepBytes - cipher.TagSize);
        if (PageSealer.TryCompress(_compressor, arena, page, compressed, out int compressedLength))
        {
            payload = compressed[..compressedLength];
            pending.Flags = PageEntry.FlagCompressed;
        }
        pending.SealedLength = payload.Length + cipher.TagSize;
        cipher.SealWith(pending.Nonce, (ulong)pending.Index, pending.Flags, payload, new Span<byte>(sealedOutput, pending.SealedLength));
        if (pending.Flags != 0)
            compressed[..compressedLength].Clear();
    }

    /// <summary>The arena of the <paramref name="i"/>th page added.</summary>
    public Arena ArenaOf(int i) => _pending[i].Arena!;

    /// <summary>
    /// Under the lock, once the caller has checked that the page's entry is still the one
    /// it took out: makes <paramref name="entry"/> the <paramref name="i"/>th page's
    /// sealing in <paramref name="sealer"/>'s store, or, for an all-zero page, a zero page
    /// (nothing stored; returns false), as PageSealer.Seal does.
    /// </summary>
    public bool Install(int i, PageSealer sealer, ref PageEntry entry)
    {
        ref Pending pending = ref _pending[i];
        if (pending.SealedLength == 0)
        {
            sealer.MakeZero(ref entry);
            return false;
        }
        byte* sealedBytes = (byte*)_buffer + PageSize + (long)i * SealedSlotBytes;
        sealer.Install(ref entry, new ReadOnlySpan<byte>(sealedBytes, pending.SealedLength), pending.Nonce, pending.Flags);
        return true;
    }

    /// <summary>Under the lock, after every page has been installed or skipped: lets the
    /// keys go and forgets the pages.</summary>
    public void Clear()
    {
        for (int i = 0; i < _count; i++)
        {
            _pending[i].Arena!.Cipher.Release();
            _pending[i] = default;
        }
        _count = 0;
    }

    /// <summary>Clears the compression staging (the ciphertexts need no wiping).</summary>
    public void Wipe() => Libc.memset((void*)_buffer, 0, PageSize);

    public void Dispose()
    {
        Clear(); // pages left by a failure: their keys go
        Wipe();
        KernelMemory.Unmap(_buffer, _bufferLength);
        _compressor?.Dispose();
    }
}
