using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>memfd_create(2): anonymous memory with a descriptor, shared by mapping it in
/// two processes (the custodian's take-out window with a served process).</summary>
internal static partial class Libc
{
    public const uint MFD_CLOEXEC = 0x1;

    // https://man7.org/linux/man-pages/man2/memfd_create.2.html
    [LibraryImport(Library, EntryPoint = "memfd_create", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int memfd_create(string name, uint flags);
}
