using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>Reading a symbolic link (unistd.h). Marshals its path: not for the fault path.</summary>
internal static unsafe partial class Libc
{
    // https://man7.org/linux/man-pages/man2/readlink.2.html
    [LibraryImport(Library, EntryPoint = "readlink", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint readlink(string pathname, byte* buf, nuint bufsiz);
}
