using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>
/// Whether this process runs in secure-execution mode: the kernel set AT_SECURE because
/// the program it executed changed credentials (set-user-ID, set-group-ID, or file
/// capabilities). The environment then belongs to a less privileged caller, who must not
/// steer what the privileged program writes, or where.
/// </summary>
public static partial class SecureExecution
{
    private const ulong AT_SECURE = 23;

    /// <summary>True when getauxval(AT_SECURE) is not 0.</summary>
    public static bool IsActive => getauxval(AT_SECURE) != 0;

    /// <summary>https://man7.org/linux/man-pages/man3/getauxval.3.html</summary>
    [LibraryImport("libc", EntryPoint = "getauxval")]
    private static partial ulong getauxval(ulong type);
}
