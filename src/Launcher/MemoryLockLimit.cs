using System.Runtime.InteropServices;

namespace Tibet.Launcher;

/// <summary>
/// Raises RLIMIT_MEMLOCK for the program before it starts (the limit is inherited): the
/// interposer locks the buffers plaintext passes through, and the usual soft limit (8 MiB,
/// or 64 KiB on older systems) may be too small for them. The soft limit goes up to the
/// hard one; where tibet-run may raise the hard limit too (CAP_SYS_RESOURCE), both become
/// unlimited. Where locking still fails, the interposer says so on stderr.
/// </summary>
internal static unsafe partial class MemoryLockLimit
{
    private const int RLIMIT_MEMLOCK = 8;
    private const ulong Infinity = ulong.MaxValue;

    [StructLayout(LayoutKind.Sequential)]
    private struct RLimit
    {
        public ulong Current;
        public ulong Maximum;
    }

    public static void RaiseForChild(int verbosity)
    {
        RLimit limit;
        if (getrlimit(RLIMIT_MEMLOCK, &limit) != 0)
            return;
        RLimit unlimited = new() { Current = Infinity, Maximum = Infinity };
        if (setrlimit(RLIMIT_MEMLOCK, &unlimited) == 0)
            return;
        if (limit.Current == limit.Maximum)
        {
            if (verbosity > 0)
                Console.Error.WriteLine($"tibet-run: RLIMIT_MEMLOCK is {Describe(limit.Maximum)} (soft and hard); buffers beyond it stay unlocked.");
            return;
        }
        RLimit raised = new() { Current = limit.Maximum, Maximum = limit.Maximum };
        setrlimit(RLIMIT_MEMLOCK, &raised);
    }

    private static string Describe(ulong bytes) => bytes == Infinity ? "unlimited" : $"{bytes >> 10} KiB";

    /// <summary>https://man7.org/linux/man-pages/man2/getrlimit.2.html</summary>
    [LibraryImport("libc", EntryPoint = "getrlimit", SetLastError = true)]
    private static partial int getrlimit(int resource, RLimit* limit);

    /// <summary>https://man7.org/linux/man-pages/man2/setrlimit.2.html</summary>
    [LibraryImport("libc", EntryPoint = "setrlimit", SetLastError = true)]
    private static partial int setrlimit(int resource, RLimit* limit);
}
