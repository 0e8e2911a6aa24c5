using System.Runtime.InteropServices;

namespace Tibet.Core.Paging;

/// <summary>
/// One page's row in an arena's page table (native memory, 32 bytes).
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal struct PageEntry
{
    /// <summary>The nonce counter the page was last sealed under (valid when Sealed).</summary>
    public ulong Nonce;

    /// <summary>The store's handle of the slot holding ciphertext and tag (valid when
    /// Sealed; see <see cref="Storage.SealedPageStore"/>).</summary>
    public ulong Slot;

    /// <summary>The resident-queue ticket issued when the page became resident; a queue
    /// element whose ticket differs is stale.</summary>
    public ulong ResidentTicket;

    /// <summary>Length of ciphertext plus tag in <see cref="Slot"/>. Not 0 on a Resident
    /// page: its sealed copy is kept (see <see cref="HoldsCleanCopy"/>).</summary>
    public ushort SealedLength;

    public PageState State;

    /// <summary>Sealing flags, authenticated as associated data (<see cref="FlagCompressed"/>),
    /// and on a resident page <see cref="FlagSourceCopy"/>, which is never sealed (sealing
    /// sets the flags anew).</summary>
    public byte Flags;

    /// <summary>The low 32 bits of the engine's eviction clock when the page last left
    /// residency (0: never). When it comes back, the clock's advance since is its refault
    /// distance, which the eviction policy reads (see <see cref="Eviction.ResidentSet"/>).</summary>
    public uint EvictionStamp;

    public const byte FlagCompressed = 1;

    /// <summary>Set on a resident page installed write-protected from its arena's source
    /// and not written since: the source holds its contents (see
    /// <see cref="HoldsSourceCopy"/>).</summary>
    public const byte FlagSourceCopy = 2;

    /// <summary>Set on a resident page the program gave up (madvise) whose mapping could
    /// not be write-protected then (Events.ProgramEvents.DiscardPage): the bytes it holds
    /// may be the given-up ones, which eviction must never seal, since the program would
    /// read them back instead of zeros (Eviction.Evictor.SetAsideGivenUp). Cleared when the
    /// page is the program's data again (a write-protect fault: Sealing.PageSealer.Forget).</summary>
    public const byte FlagGivenUp = 4;

    public readonly bool IsGivenUp => State == PageState.Resident && (Flags & FlagGivenUp) != 0;

    public readonly bool IsCompressed => (Flags & FlagCompressed) != 0;

    /// <summary>A resident page installed write-protected from its sealed copy, and not
    /// written since: <see cref="Slot"/>, <see cref="Nonce"/>, <see cref="SealedLength"/>
    /// and <see cref="Flags"/> still describe its contents exactly, so eviction needs no
    /// encryption. A write reaches the engine as a write-protect fault first, which frees
    /// the copy (see Sealing.PageSealer.Retain).</summary>
    public readonly bool HoldsCleanCopy => State == PageState.Resident && SealedLength != 0;

    /// <summary>A resident page of a model map, as its source (the model file) gives it, not
    /// written since it was installed write-protected: eviction drops it and makes it
    /// <see cref="PageState.Untouched"/> again, so that it comes back from the source
    /// (Arena.RefetchesSource). A write reaches the engine as a write-protect
    /// fault first, which clears the flag (Sealing.PageSealer.Forget).</summary>
    public readonly bool HoldsSourceCopy => State == PageState.Resident && (Flags & FlagSourceCopy) != 0;
}
