using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>memfd_create(2): anonymous memory with a descriptor, shared by mapping it in
/// two processes (the custodian's take-out window with a served process).</summary>
internal static partial class Libc
{
    public const uint MFD_CLOEXEC = 0x1;
    public const uint MFD_ALLOW_SEALING = 0x2;

    // fcntl(2) file seals (linux/fcntl.h): https://man7.org/linux/man-pages/man2/fcntl.2.html
    public const int F_ADD_SEALS = 1033;
    public const int F_SEAL_SEAL = 0x1;
    public const int F_SEAL_SHRINK = 0x2;
    public const int F_SEAL_GROW = 0x4;

    // https://man7.org/linux/man-pages/man2/memfd_create.2.html
    [LibraryImport(Library, EntryPoint = "memfd_create", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int memfd_create(string name, uint flags);
}
