using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>Waiting on descriptors (poll.h). Does not call malloc.</summary>
internal static unsafe partial class Libc
{
    public const short POLLIN = 0x1;

    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    // https://man7.org/linux/man-pages/man2/poll.2.html
    [LibraryImport(Library, EntryPoint = "poll", SetLastError = true)]
    public static partial int poll(PollFd* fds, nuint nfds, int timeout);
}
