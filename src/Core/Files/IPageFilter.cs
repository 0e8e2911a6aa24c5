namespace Tibet.Core.Files;

/// <summary>What becomes of one page of a file as it is imported or read.</summary>
public enum PageVerdict
{
    /// <summary>The page (possibly rewritten in place, e.g. decrypted) is the contents.</summary>
    Keep,

    /// <summary>The page reads as zeros (dead material); it was cleared in place.</summary>
    Zero,

    /// <summary>The page failed authentication (or could not be read): it must never be
    /// served as data, and its readers get SIGBUS.</summary>
    Tampered,
}

/// <summary>
/// Turns the bytes of a file, page by page, into what the program may see: a sealed
/// model's pages are decrypted, or turned into zeros when the program may not have them.
/// </summary>
public interface IPageFilter
{
    /// <summary>Rewrites <paramref name="page"/> (4096 bytes read from the page-aligned file
    /// offset <paramref name="fileOffset"/>, zeros past the end of the file) in place and
    /// says what it now is. Must not throw.</summary>
    PageVerdict Filter(long fileOffset, Span<byte> page);
}
