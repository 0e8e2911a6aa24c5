namespace Tibet.Core.Paging;

/// <summary>What a page read from a file is, once it has been made into what the program
/// may see (see <see cref="PageSource"/>).</summary>
public enum PageVerdict
{
    /// <summary>The page (possibly rewritten in place, e.g. decrypted) is the contents.</summary>
    Keep,

    /// <summary>The page reads as zeros (dead material, or past the end of the file); it was cleared.</summary>
    Zero,

    /// <summary>The page failed authentication (or could not be read): it must never be
    /// served as data, and its readers get SIGBUS.</summary>
    Tampered,
}
