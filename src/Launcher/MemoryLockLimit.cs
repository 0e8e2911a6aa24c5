using Tibet.Core.Interop;

namespace Tibet.Launcher;

/// <summary>
/// Raises RLIMIT_MEMLOCK for the program before it starts (the limit is inherited): the
/// interposer locks the buffers plaintext passes through, and the usual soft limit (8 MiB,
/// or 64 KiB on older systems) may be too small for them. The soft limit goes up to the
/// hard one; where tibet-run may raise the hard limit too (CAP_SYS_RESOURCE), both become
/// unlimited. Where locking still fails, the interposer says so on stderr.
/// </summary>
internal static unsafe class MemoryLockLimit
{
    public static void RaiseForChild(int verbosity)
    {
        Libc.RLimit limit;
        if (Libc.getrlimit(Libc.RLIMIT_MEMLOCK, &limit) != 0)
            return;
        Libc.RLimit unlimited = new() { Current = Libc.RLIM_INFINITY, Maximum = Libc.RLIM_INFINITY };
        if (Libc.setrlimit(Libc.RLIMIT_MEMLOCK, &unlimited) == 0)
            return;
        if (limit.Current == limit.Maximum)
        {
            if (verbosity > 0)
                Console.Error.WriteLine($"tibet-run: RLIMIT_MEMLOCK is {Describe(limit.Maximum)} (soft and hard); buffers beyond it stay unlocked.");
            return;
        }
        Libc.RLimit raised = new() { Current = limit.Maximum, Maximum = limit.Maximum };
        Libc.setrlimit(Libc.RLIMIT_MEMLOCK, &raised);
    }

    private static string Describe(ulong bytes) => bytes == Libc.RLIM_INFINITY ? "unlimited" : $"{bytes >> 10} KiB";
}
