using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>
/// The process's "dumpable" attribute. A non-dumpable process writes no core dump, and
/// only a process with CAP_SYS_PTRACE may attach to it or open its /proc/PID/mem,
/// pagemap and environ: a process of the same user may not. Its /proc/PID files are
/// owned by root. execve of an ordinary program sets the attribute back to dumpable.
/// </summary>
public static partial class Dumpability
{
    private const int PR_SET_DUMPABLE = 4;
    private const int PR_GET_DUMPABLE = 3;

    /// <summary>Makes this process non-dumpable; 0, or the errno of the failure.</summary>
    public static int MakeNonDumpable() =>
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0 ? 0 : Marshal.GetLastPInvokeError();

    /// <summary>Whether this process is dumpable now.</summary>
    public static bool IsDumpable => prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 1;

    /// <summary>https://man7.org/linux/man-pages/man2/prctl.2.html</summary>
    [LibraryImport("libc", EntryPoint = "prctl", SetLastError = true)]
    private static partial int prctl(int option, ulong arg2, ulong arg3, ulong arg4, ulong arg5);
}
