namespace Tibet.Core.Sealing;

/// <summary>
/// Installs a live sealed model's data pages into this process's map of the file without
/// their plaintext passing through this process's own code: the custodian, which keeps the
/// key, reads, decrypts and installs them with UFFDIO_COPY on the engine's userfaultfd
/// (Tibet.Core.Custodian.CustodianPageOpener). A <see cref="SealedFileView"/> whose opener
/// is one serves its maps this way (see Paging.PageSource.InstallsRuns).
/// </summary>
/// <remarks>An abstract class, not an interface: it is called on the fault path, where the
/// runtime's lazy resolution of an interface call site called malloc (see PageSource).
/// Allocation-free, malloc-free, never throws; safe to call from several threads.</remarks>
public abstract unsafe class SealedPageInstaller
{
    /// <summary>Whether <see cref="InstallPages"/> works: the custodian took the engine's userfaultfd.</summary>
    public abstract bool Installs { get; }

    /// <summary>Whether the custodian has ended (or stopped answering): nothing of the model
    /// is decrypted any more, and a page refused since was refused for that, not because it
    /// failed authentication.</summary>
    public abstract bool KeyHolderGone { get; }

    /// <summary>
    /// Installs data pages [<paramref name="firstPage"/>, + <paramref name="count"/>) at
    /// <paramref name="address"/> (absent pages of a map of the file, registered with the
    /// engine's userfaultfd), write-protected when asked, waking the threads that wait on
    /// them. Returns how many, from the first on, are installed; <paramref name="errno"/>
    /// says why not the next: EAGAIN (an event of the userfaultfd waits to be read), EEXIST
    /// (mapped already), ENOENT (the range went away), EBADMSG (it failed authentication),
    /// or another (the custodian is gone, the file cannot be read): the caller serves that
    /// page the usual way, which poisons a page that cannot be opened.
    /// </summary>
    public abstract int InstallPages(long firstPage, int count, nint address, bool writeProtect, out int errno);
}
