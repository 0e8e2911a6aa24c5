using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>The calling process: who it is, and leaving (unistd.h). None calls malloc.</summary>
internal static partial class Libc
{
    // https://man7.org/linux/man-pages/man2/getpid.2.html
    [LibraryImport(Library, EntryPoint = "getpid")]
    public static partial int getpid();

    // https://man7.org/linux/man-pages/man2/gettid.2.html
    [LibraryImport(Library, EntryPoint = "gettid")]
    public static partial int gettid();

    // https://man7.org/linux/man-pages/man2/geteuid.2.html
    [LibraryImport(Library, EntryPoint = "geteuid")]
    public static partial uint geteuid();

    /// <summary>Ends the process at once: no atexit handlers, no stdio flush.</summary>
    // https://man7.org/linux/man-pages/man2/_exit.2.html
    [LibraryImport(Library, EntryPoint = "_exit")]
    public static partial void _exit(int status);

    /// <summary>Starts a new session with the caller as its leader: it leaves the
    /// terminal's process group, so a Ctrl-C meant for the program does not reach it.</summary>
    // https://man7.org/linux/man-pages/man2/setsid.2.html
    [LibraryImport(Library, EntryPoint = "setsid", SetLastError = true)]
    public static partial int setsid();
}
