using Tibet.Core.Crypto;
using Tibet.Core.Paging.Sealing;
using Tibet.Core.Threading;

namespace Tibet.Core.Paging.Faults;

/// <summary>
/// Decryption of sealed pages on the handler thread with the engine lock let go
/// (FaultService.OpenWithoutLock for read-ahead slices, FaultService.ServeFaultingPage for
/// the page a thread faulted on, RangePlacer.OpenSealed for whole ranges), so that the program's threads that map, unmap, evict or ask for statistics
/// meanwhile do not wait for the cipher.
/// </summary>
/// <remarks>
/// What keeps it safe while the lock is free:
/// <list type="bullet">
/// <item>only the handler reads userfaultfd events, so no event changes the pages (an API
/// call that evicts may read one: the check below sees what it changed);</item>
/// <item>the arena's key is held (PageCipher.Retain), so a release of the arena does not
/// destroy it under the decryption;</item>
/// <item>the store is pinned, so no slot read meanwhile is freed and given out again
/// (CiphertextStore.Pin);</item>
/// <item>the pages are opened as the caller copied their entries under the lock, and once
/// the lock is back every page is checked against its copy (<see cref="Unchanged"/>):
/// one that changed (released, discarded, evicted and sealed anew) is not installed.</item>
/// </list>
/// </remarks>
internal sealed unsafe class UnlockedOpener(EngineLockWindow engineLock, PageSealer sealer, Action<Arena>? whileOpening,
    Action<Arena>? whileOpeningFaultingPage)
{
    // Where a store that copies puts a sealed page (SealedPageStore.Read): the sealer's own
    // staging is for its callers under the lock.
    private readonly byte[] _staging = new byte[Userfaultfd.PageSize + PageCipherSuite.MaxTagSize];

    /// <summary>Lets the engine lock go, holding <paramref name="arena"/>'s key and pinning
    /// the store; disposing the scope takes the lock back, then lets both go.
    /// <paramref name="faultingPage"/>: the page a thread waits on (its test hook differs:
    /// a test must not release an arena a thread of its own is faulting on).</summary>
    public Scope LetGo(Arena arena, bool faultingPage = false)
    {
        PageCipher cipher = arena.Cipher;
        cipher.Retain();
        sealer.Store.Pin();
        engineLock.LetGo();
        var scope = new Scope(engineLock, sealer, cipher);
        try
        {
            // EngineOptions.WhileOpeningWithoutLock, WhileOpeningFaultingPageWithoutLock: tests only
            (faultingPage ? whileOpeningFaultingPage : whileOpening)?.Invoke(arena);
        }
        catch
        {
            scope.Dispose();
            throw;
        }
        return scope;
    }

    /// <summary>Opens a sealed, uncompressed page from its entry as copied under the lock.</summary>
    public bool TryOpen(PageCipher cipher, long index, in PageEntry copied, byte* destination) =>
        sealer.TryOpenUncompressed(cipher, index, in copied, destination, _staging);

    /// <summary>Whether a page's entry, back under the lock, is still the one its copy was
    /// made of: same state, and for a sealed page the same slot and nonce.</summary>
    public static bool Unchanged(in PageEntry now, in PageEntry copied) =>
        now.State == copied.State && now.Slot == copied.Slot && now.Nonce == copied.Nonce;

    public readonly ref struct Scope(EngineLockWindow engineLock, PageSealer sealer, PageCipher cipher)
    {
        public void Dispose()
        {
            engineLock.TakeBack();
            sealer.Store.Unpin();
            cipher.Release();
        }
    }
}
