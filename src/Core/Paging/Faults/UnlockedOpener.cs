using Tibet.Core.Compression;
using Tibet.Core.Crypto;
using Tibet.Core.Interop;
using Tibet.Core.Storage;
using Tibet.Core.Paging.Sealing;
using Tibet.Core.Threading;

namespace Tibet.Core.Paging.Faults;

/// <summary>
/// Decryption of sealed pages on the handler thread with the engine lock let go
/// (FaultService.OpenWithoutLock for read-ahead slices, FaultService.ServeFaultingPage for
/// the page a thread faulted on, RangePlacer.OpenSealed for whole ranges), so that the
/// program's threads that map or unmap meanwhile do not wait for the
/// cipher (nor for zstd: compressed pages are decompressed here with a context of this
/// class's own).
/// </summary>
/// <remarks>
/// What keeps it safe while the lock is free:
/// <list type="bullet">
/// <item>only the handler reads userfaultfd events, so no event changes the pages (API
/// calls that evict, and may read one, wait until the handler is between steps:
/// PageEngine.EnterBetweenSteps);</item>
/// <item>the arena's key is held (PageCipher.Retain), so a release of the arena does not
/// destroy it under the decryption;</item>
/// <item>the store is pinned, so no slot read meanwhile is freed and given out again
/// (CiphertextStore.Pin);</item>
/// <item>the pages are opened as the caller copied their entries under the lock, and once
/// the lock is back every page is checked against its copy (<see cref="Unchanged"/>):
/// one that changed (released, discarded, evicted and sealed anew) is not installed.</item>
/// </list>
/// </remarks>
internal sealed unsafe class UnlockedOpener : IDisposable
{
    private readonly EngineLockWindow _engineLock;
    private readonly PageSealer _sealer;
    private readonly Action<Arena>? _whileOpening, _whileOpeningFaultingPage;
    // A compressed page's plaintext, and where a store that copies puts a sealed page
    // (PageSealer.OpenInto): locked, out of core dumps. The sealer's own staging and
    // decompressor are for its callers under the lock; these are the handler's outside it.
    private readonly byte* _staging;
    private readonly PageCompressor? _decompressor;
    // Decompressions made outside the lock, counted into the sealer's once it is back.
    private int _decompressions;

    public UnlockedOpener(EngineLockWindow engineLock, PageSealer sealer, Action<Arena>? whileOpening,
        Action<Arena>? whileOpeningFaultingPage)
    {
        _engineLock = engineLock;
        _sealer = sealer;
        _whileOpening = whileOpening;
        _whileOpeningFaultingPage = whileOpeningFaultingPage;
        _staging = (byte*)KernelMemory.Map(PageSealer.OpenStagingLength);
        Libc.mlock((nint)_staging, PageSealer.OpenStagingLength);
        Libc.madvise((nint)_staging, PageSealer.OpenStagingLength, Libc.MADV_DONTDUMP);
        if (sealer.Compresses)
        {
            _decompressor = new PageCompressor();
            // zstd sets its context up at the first use: here, not on the handler.
            var page = new Span<byte>(_staging, Userfaultfd.PageSize);
            page.Clear();
            var compressed = new Span<byte>(_staging + Userfaultfd.PageSize, Userfaultfd.PageSize);
            if (_decompressor.TryCompress(page, compressed, out int written))
                _decompressor.TryDecompress(compressed[..written], page);
            Libc.memset(_staging, 0, PageSealer.OpenStagingLength);
        }
    }

    /// <summary>Lets the engine lock go, holding <paramref name="arena"/>'s key and pinning
    /// the store; disposing the scope takes the lock back, then lets both go.
    /// <paramref name="faultingPage"/>: the page a thread waits on (its test hook differs:
    /// a test must not release an arena a thread of its own is faulting on).</summary>
    public Scope LetGo(Arena arena, bool faultingPage = false)
    {
        PageCipher cipher = arena.Cipher;
        cipher.Retain();
        _sealer.Store.Pin();
        // Kept while a thread waits to come in between the handler's steps (EngineLockWindow.MayLetGo).
        bool letGo = _engineLock.MayLetGo;
        if (letGo)
            _engineLock.LetGo();
        var scope = new Scope(this, cipher, letGo);
        try
        {
            // EngineOptions.WhileOpeningWithoutLock, WhileOpeningFaultingPageWithoutLock: tests only
            if (letGo)
                (faultingPage ? _whileOpeningFaultingPage : _whileOpening)?.Invoke(arena);
        }
        catch
        {
            scope.Dispose();
            throw;
        }
        return scope;
    }

    /// <summary>Opens a sealed page (compressed or not) from its entry as copied under the lock.</summary>
    public bool TryOpen(PageCipher cipher, long index, in PageEntry copied, byte* destination)
    {
        bool ok = _sealer.OpenInto(cipher, index, in copied, destination, _staging, _decompressor);
        if (ok && copied.IsCompressed)
            _decompressions++;
        return ok;
    }

    public void Dispose()
    {
        Libc.memset(_staging, 0, PageSealer.OpenStagingLength);
        KernelMemory.Unmap((nint)_staging, PageSealer.OpenStagingLength);
        _decompressor?.Dispose();
    }

    /// <summary>Whether a page's entry, back under the lock, is still the one its copy was
    /// made of: same state, and for a sealed page the same slot and nonce.</summary>
    public static bool Unchanged(in PageEntry now, in PageEntry copied) =>
        now.State == copied.State && now.Slot == copied.Slot && now.Nonce == copied.Nonce;

    public readonly ref struct Scope(UnlockedOpener opener, PageCipher cipher, bool letGo)
    {
        public void Dispose()
        {
            if (letGo)
                opener._engineLock.TakeBack();
            opener._sealer.Store.Unpin();
            cipher.Release();
            opener._sealer.CountDecompressed(opener._decompressions);
            opener._decompressions = 0;
        }
    }
}
