using static Tibet.Core.Interop.UserfaultfdAbi;

namespace Tibet.Core.Paging;

/// <summary>
/// What the running kernel's userfaultfd offers, and what the engine makes of it.
/// </summary>
public readonly record struct KernelFeatures(ulong Bits)
{
    public bool EventRemove => (Bits & UFFD_FEATURE_EVENT_REMOVE) != 0;
    public bool EventUnmap => (Bits & UFFD_FEATURE_EVENT_UNMAP) != 0;
    public bool EventRemap => (Bits & UFFD_FEATURE_EVENT_REMAP) != 0;
    public bool EventFork => (Bits & UFFD_FEATURE_EVENT_FORK) != 0;
    public bool WriteProtect => (Bits & UFFD_FEATURE_PAGEFAULT_FLAG_WP) != 0;
    public bool ThreadId => (Bits & UFFD_FEATURE_THREAD_ID) != 0;
    public bool Poison => (Bits & UFFD_FEATURE_POISON) != 0;
    public bool Move => (Bits & UFFD_FEATURE_MOVE) != 0;

    /// <summary>Eviction moves pages out with UFFDIO_MOVE into a scratch area that is
    /// registered (write-protect mode) on a second userfaultfd.</summary>
    public bool CanEvict => Move && WriteProtect;

    /// <summary>One line per missing feature, each naming its consequence.</summary>
    public IEnumerable<string> Shortcomings()
    {
        if (!Move)
            yield return "UFFD_FEATURE_MOVE is missing (needs Linux 6.8+): pages cannot be evicted, so the resident budget is not enforced";
        else if (!WriteProtect)
            yield return "UFFD_FEATURE_PAGEFAULT_FLAG_WP is missing (needs Linux 5.7+): pages cannot be evicted, so the resident budget is not enforced";
        if (!EventRemove)
            yield return "UFFD_FEATURE_EVENT_REMOVE is missing: madvise(MADV_DONTNEED) cannot free sealed pages, which then read back their old contents";
        if (!EventUnmap)
            yield return "UFFD_FEATURE_EVENT_UNMAP is missing: ciphertext of unmapped pages is freed only when the arena is disposed";
        if (!Poison && !ThreadId)
            yield return "neither UFFD_FEATURE_POISON (Linux 6.6+) nor UFFD_FEATURE_THREAD_ID is present: a tampered page cannot raise SIGBUS, so its reader is left blocked";
    }

    public override string ToString() => $"0x{Bits:x}";
}
