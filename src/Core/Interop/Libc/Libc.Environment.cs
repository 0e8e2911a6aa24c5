using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>The C environment (stdlib.h), which the program's own getenv reads; .NET's
/// Environment keeps a copy of its own. Both functions call malloc: never on the fault path.</summary>
internal static partial class Libc
{
    // https://man7.org/linux/man-pages/man3/setenv.3.html
    [LibraryImport(Library, EntryPoint = "setenv", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int setenv(string name, string value, int overwrite);

    // https://man7.org/linux/man-pages/man3/unsetenv.3.html
    [LibraryImport(Library, EntryPoint = "unsetenv", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int unsetenv(string name);
}
