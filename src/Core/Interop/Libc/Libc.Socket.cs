using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>Unix sockets (sys/socket.h, sys/un.h): the connection each forked child's
/// agent opens to the engine. None calls malloc.</summary>
internal static unsafe partial class Libc
{
    public const int AF_UNIX = 1;
    public const int SOCK_STREAM = 1;
    public const int SOCK_SEQPACKET = 5;
    public const int SOCK_NONBLOCK = 0x800;
    public const int SOCK_CLOEXEC = 0x80000;
    public const int SOL_SOCKET = 1;
    public const int SO_PEERCRED = 17;
    public const int SO_TYPE = 3;
    public const int SO_RCVTIMEO = 20;
    public const int SO_SNDTIMEO = 21;
    public const int MSG_DONTWAIT = 0x40;
    public const int MSG_NOSIGNAL = 0x4000;

    /// <summary>struct sockaddr_un: the family, then up to 108 bytes of path (an abstract
    /// name starts with a zero byte and is as long as the address length says).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct SockAddrUnix
    {
        public ushort Family;
        public fixed byte Path[108];

        /// <summary>The abstract address <paramref name="name"/> (ASCII, without the leading
        /// zero byte, which this adds), and in <paramref name="length"/> the address length
        /// to pass with it.</summary>
        public static SockAddrUnix Abstract(string name, out uint length)
        {
            if (name.Length + 1 > 108)
                throw new ArgumentException("An abstract unix socket name holds at most 107 bytes.", nameof(name));
            SockAddrUnix address = new() { Family = AF_UNIX };
            for (int i = 0; i < name.Length; i++)
                address.Path[i + 1] = (byte)name[i];
            length = (uint)(sizeof(ushort) + 1 + name.Length);
            return address;
        }
    }

    /// <summary>struct ucred: who is at the other end of a unix socket (SO_PEERCRED).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct UCred
    {
        public int Pid;
        public uint Uid;
        public uint Gid;
    }

    /// <summary>struct timeval, for SO_RCVTIMEO and SO_SNDTIMEO.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct TimeVal
    {
        public long Seconds;
        public long Microseconds;
    }

    /// <summary>Makes blocking sends and receives on <paramref name="fd"/> give up after
    /// <paramref name="seconds"/> (EAGAIN), so that a peer that never reads or never
    /// answers cannot hold the caller.</summary>
    public static void SetSocketTimeouts(int fd, int seconds)
    {
        TimeVal limit = new() { Seconds = seconds };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, (uint)sizeof(TimeVal));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, (uint)sizeof(TimeVal));
    }

    // https://man7.org/linux/man-pages/man2/socket.2.html
    [LibraryImport(Library, EntryPoint = "socket", SetLastError = true)]
    public static partial int socket(int domain, int type, int protocol);

    // https://man7.org/linux/man-pages/man2/bind.2.html
    [LibraryImport(Library, EntryPoint = "bind", SetLastError = true)]
    public static partial int bind(int sockfd, SockAddrUnix* addr, uint addrlen);

    // https://man7.org/linux/man-pages/man2/listen.2.html
    [LibraryImport(Library, EntryPoint = "listen", SetLastError = true)]
    public static partial int listen(int sockfd, int backlog);

    // https://man7.org/linux/man-pages/man2/accept.2.html
    [LibraryImport(Library, EntryPoint = "accept4", SetLastError = true)]
    public static partial int accept4(int sockfd, void* addr, uint* addrlen, int flags);

    // https://man7.org/linux/man-pages/man2/getsockopt.2.html
    [LibraryImport(Library, EntryPoint = "getsockopt", SetLastError = true)]
    public static partial int getsockopt(int sockfd, int level, int optname, void* optval, uint* optlen);

    // https://man7.org/linux/man-pages/man2/connect.2.html
    [LibraryImport(Library, EntryPoint = "connect", SetLastError = true)]
    public static partial int connect(int sockfd, SockAddrUnix* addr, uint addrlen);

    // https://man7.org/linux/man-pages/man2/setsockopt.2.html
    [LibraryImport(Library, EntryPoint = "setsockopt", SetLastError = true)]
    public static partial int setsockopt(int sockfd, int level, int optname, void* optval, uint optlen);

    // https://man7.org/linux/man-pages/man2/send.2.html
    [LibraryImport(Library, EntryPoint = "send", SetLastError = true)]
    public static partial nint send(int sockfd, void* buf, nuint len, int flags);

    // https://man7.org/linux/man-pages/man2/recv.2.html
    [LibraryImport(Library, EntryPoint = "recv", SetLastError = true)]
    public static partial nint recv(int sockfd, void* buf, nuint len, int flags);
}
