namespace Tibet.Core.Interop;

/// <summary>
/// The process's "dumpable" attribute. A non-dumpable process writes no core dump, and
/// only a process with CAP_SYS_PTRACE may attach to it or open its /proc/PID/mem,
/// pagemap and environ: a process of the same user may not. Its /proc/PID files are
/// owned by root. execve of an ordinary program sets the attribute back to dumpable.
/// </summary>
public static class Dumpability
{
    /// <summary>Makes this process non-dumpable; 0, or the errno of the failure.</summary>
    public static int MakeNonDumpable() =>
        Libc.prctl(Libc.PR_SET_DUMPABLE, 0, 0, 0, 0) == 0 ? 0 : Libc.LastErrno;

    /// <summary>Whether this process is dumpable now.</summary>
    public static bool IsDumpable => Libc.prctl(Libc.PR_GET_DUMPABLE, 0, 0, 0, 0) == 1;
}
