using Microsoft.Win32.SafeHandles;
using Tibet.Core.Sealing;

namespace Tibet.Interposer.Sealed;

/// <summary>The identity of a file as it was when the decision was made: a file replaced
/// or rewritten since is a different file and is decided afresh.</summary>
internal readonly record struct FileKey(ulong Device, ulong Inode, long Size, long ModifiedSeconds, long ModifiedNanoseconds);

/// <summary>
/// One sealed model as this process may see it: the decision made when it was first
/// opened or mapped, and the view that serves its pages and reads. Lives as long as the
/// process: the program may map or read the file again at any time.
/// </summary>
internal sealed class SealedFileAccess
{
    public SealedFileAccess(string path, FileKey key, SafeFileHandle source, SealedFileView view)
    {
        Path = path;
        Key = key;
        Source = source;
        View = view;
    }

    /// <summary>Where the program opened it (for messages and audit records).</summary>
    public string Path { get; }

    public FileKey Key { get; }

    /// <summary>tibet's own read-only descriptor of the file: reads never disturb the program's file position.</summary>
    public SafeFileHandle Source { get; }

    public SealedFileView View { get; }

    /// <summary>Live, with the data key in the custodian, which decrypts the pages for this
    /// process: no key of this process may open them (see Redirector.MapFile).</summary>
    public bool KeyInCustodian { get; init; }

    /// <summary>Set once a tampered page has been reported, so it is reported once.</summary>
    public int TamperingReported;
}
