using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>sched_getaffinity(2) and sched_setaffinity(2), on the calling thread (pid 0)
/// or another thread of the process (its tid; the mask is a bit per CPU, in 64-bit
/// words), and sched_getcpu(3). Do not call malloc.</summary>
internal static unsafe partial class Libc
{
    // https://man7.org/linux/man-pages/man2/sched_setaffinity.2.html
    [LibraryImport(Library, EntryPoint = "sched_getaffinity", SetLastError = true)]
    public static partial int sched_getaffinity(int pid, nuint cpusetsize, ulong* mask);

    // https://man7.org/linux/man-pages/man2/sched_setaffinity.2.html
    [LibraryImport(Library, EntryPoint = "sched_setaffinity", SetLastError = true)]
    public static partial int sched_setaffinity(int pid, nuint cpusetsize, ulong* mask);

    // https://man7.org/linux/man-pages/man3/sched_getcpu.3.html
    [LibraryImport(Library, EntryPoint = "sched_getcpu", SetLastError = true)]
    public static partial int sched_getcpu();
}
