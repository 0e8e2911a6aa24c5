using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>Resource limits (sys/resource.h). Neither calls malloc.</summary>
internal static unsafe partial class Libc
{
    public const int RLIMIT_NOFILE = 7;
    public const int RLIMIT_MEMLOCK = 8;
    public const ulong RLIM_INFINITY = ulong.MaxValue;

    /// <summary>struct rlimit: rlim_cur and rlim_max.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct RLimit
    {
        public ulong Current;
        public ulong Maximum;
    }

    // https://man7.org/linux/man-pages/man2/getrlimit.2.html
    [LibraryImport(Library, EntryPoint = "getrlimit", SetLastError = true)]
    public static partial int getrlimit(int resource, RLimit* rlim);

    // https://man7.org/linux/man-pages/man2/setrlimit.2.html
    [LibraryImport(Library, EntryPoint = "setrlimit", SetLastError = true)]
    public static partial int setrlimit(int resource, RLimit* rlim);
}
