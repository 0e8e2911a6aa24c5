using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>Process attributes (sys/prctl.h); see <see cref="Dumpability"/>.</summary>
internal static partial class Libc
{
    public const int PR_GET_DUMPABLE = 3;
    public const int PR_SET_DUMPABLE = 4;

    // https://man7.org/linux/man-pages/man2/prctl.2.html
    [LibraryImport(Library, EntryPoint = "prctl", SetLastError = true)]
    public static partial int prctl(int option, ulong arg2, ulong arg3, ulong arg4, ulong arg5);
}
