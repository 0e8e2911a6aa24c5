using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>The auxiliary vector the kernel passed at exec (sys/auxv.h); see
/// <see cref="SecureExecution"/>.</summary>
internal static partial class Libc
{
    public const ulong AT_SECURE = 23;

    // https://man7.org/linux/man-pages/man3/getauxval.3.html
    [LibraryImport(Library, EntryPoint = "getauxval")]
    public static partial ulong getauxval(ulong type);
}
