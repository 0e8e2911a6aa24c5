namespace Tibet.Core.Paging;

/// <summary>Where a page of an arena lives.</summary>
public enum PageState : byte
{
    /// <summary>Never touched: the first touch maps zeros, with no cryptography.</summary>
    Untouched = 0,

    /// <summary>Plaintext, mapped in the arena, counted against the resident budget.</summary>
    Resident = 1,

    /// <summary>Ciphertext in the store; not mapped. A touch authenticates and decrypts it.</summary>
    Sealed = 2,

    /// <summary>Known to be zero: evicted as zeros, or discarded with madvise. Nothing is stored.</summary>
    Zero = 3,

    /// <summary>Failed authentication; every touch raises SIGBUS.</summary>
    Poisoned = 4,

    /// <summary>Unmapped by the program (munmap); the page no longer belongs to the arena.</summary>
    Unmapped = 5,
}
