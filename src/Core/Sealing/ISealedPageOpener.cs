namespace Tibet.Core.Sealing;

/// <summary>
/// What turns a sealed model's data pages into plaintext for a <see cref="SealedFileView"/>:
/// the model's key in this process (<see cref="SealedModelKey"/>), or the custodian, which
/// keeps the key and decrypts for the process (Tibet.Core.Custodian.CustodianPageOpener).
/// </summary>
/// <remarks>Called on the fault path (a map's pages) and on program threads (reads):
/// allocation-free, malloc-free, never throws; safe to call from several threads.</remarks>
public unsafe interface ISealedPageOpener
{
    /// <summary>
    /// Decrypts and authenticates data pages [<paramref name="firstPage"/>,
    /// + <paramref name="count"/>) in place: <paramref name="pages"/> holds their ciphertext,
    /// <see cref="SealFormat.PageSize"/> bytes each. Returns how many of them, from the first
    /// on, are now plaintext; the page after those failed (altered, out of range, or the
    /// opener is gone) and is cleared.
    /// </summary>
    int OpenPages(long firstPage, int count, byte* pages);
}
