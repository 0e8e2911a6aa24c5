using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>Sending signals and their dispositions (signal.h); tgkill goes through
/// <see cref="syscall(long, long, long, long)"/>.</summary>
internal static partial class Libc
{
    public const int SIGBUS = 7;
    public const int SIGPIPE = 13;
    public const nint SIG_DFL = 0;

    // https://man7.org/linux/man-pages/man2/signal.2.html
    [LibraryImport(Library, EntryPoint = "signal", SetLastError = true)]
    public static partial nint signal(int sig, nint handler);

    // https://man7.org/linux/man-pages/man2/kill.2.html
    [LibraryImport(Library, EntryPoint = "kill", SetLastError = true)]
    public static partial int kill(int pid, int sig);
}
