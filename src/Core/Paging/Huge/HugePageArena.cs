namespace Tibet.Core.Paging.Huge;

/// <summary>Where a 2 MiB page of a <see cref="HugePageArena"/> lives.</summary>
internal enum HugePageState : byte
{
    /// <summary>Not mapped: the next touch reads it from the source (first touch, or
    /// dropped after eviction: a read-only page's plaintext is never stored).</summary>
    Absent = 0,

    /// <summary>Mapped, write-protected, identical to its source: eviction drops it.</summary>
    Resident = 1,

    /// <summary>Mapped and written by the program (it made the map writable): it can no
    /// longer be re-read from the source, so it stays resident until unmapped.</summary>
    Written = 2,

    /// <summary>Its source failed authentication or could not be read: every touch
    /// raises SIGBUS.</summary>
    Poisoned = 3,

    /// <summary>Unmapped by the program.</summary>
    Unmapped = 4,
}

internal struct HugePageEntry
{
    public HugePageState State;
    /// <summary>The page's ciphertext and tag in RAM, sealed the first time it was read
    /// from its source (0: not yet), and the nonce counter it was sealed under. Its
    /// contents never change (the map is read-only), so it is sealed at most once.</summary>
    public nint Sealed;
    public ulong Nonce;
    /// <summary>The low 32 bits of the service's eviction clock when the page was last
    /// dropped (0: never), for the eviction policy's refault distance.</summary>
    public uint EvictionStamp;
    /// <summary>Identifies this residency in the resident set (see ResidentQueue).</summary>
    public ulong ResidentTicket;
}

/// <summary>
/// A read-only file map (a model) served in 2 MiB pages from the hugetlb pool by a
/// <see cref="HugePageService"/>. A page comes from an <see cref="PageSource"/> when
/// touched; evicting it only drops the plaintext (its contents never change). It comes
/// back from the source again, or, with sealed copies on, by decryption of the copy
/// sealed into RAM on its first touch.
/// </summary>
public sealed class HugePageArena : IDisposable, IAddressRange
{
    internal readonly HugePageService Service;
    internal readonly HugePageEntry[] Entries;
    internal readonly PageSource Source;
    /// <summary>This arena's own key (random, in libsodium secure memory).</summary>
    internal readonly Crypto.PageCipher Cipher;
    internal int Slot;
    internal bool Released;

    internal HugePageArena(HugePageService service, nint address, long length, PageSource source, string label)
    {
        Service = service;
        Address = address;
        Length = length;
        Source = source;
        Label = label;
        Entries = new HugePageEntry[length / HugePageService.HugePageSize];
        Cipher = new Crypto.PageCipher(Crypto.SecureRandom.NextUInt64(), service.Cipher);
    }

    /// <summary>Where the arena starts (2 MiB-aligned).</summary>
    public nint Address { get; }

    /// <summary>The length, a multiple of 2 MiB.</summary>
    public long Length { get; }

    public string Label { get; }

    internal nint PageAddress(long index) => Address + (nint)(index * HugePageService.HugePageSize);

    /// <summary>Unregisters the arena, turns its range back into an inaccessible
    /// reservation and releases the source.</summary>
    public void Dispose() => Service.Release(this);
}
