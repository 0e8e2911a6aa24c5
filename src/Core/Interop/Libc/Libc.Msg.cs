using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>Messages that carry descriptors over unix sockets (sys/socket.h, SCM_RIGHTS):
/// how a served process hands the custodian its userfaultfd, and the custodian hands
/// back the take-out window. None calls malloc.</summary>
internal static unsafe partial class Libc
{
    public const int SCM_RIGHTS = 1;
    public const int MSG_CMSG_CLOEXEC = 0x40000000;
    public const int MSG_CTRUNC = 0x8;

    /// <summary>struct iovec.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct IoVec
    {
        public void* Base;
        public nuint Length;
    }

    /// <summary>struct msghdr (x86_64 layout).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct MsgHdr
    {
        public void* Name;
        public uint NameLength;
        public IoVec* Iov;
        public nuint IovLength;
        public void* Control;
        public nuint ControlLength;
        public int Flags;
    }

    /// <summary>struct cmsghdr; the data (here: descriptors) follows it, 8-byte aligned.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct CmsgHdr
    {
        public nuint Length;
        public int Level;
        public int Type;
    }

    /// <summary>The most descriptors one message of ours carries.</summary>
    public const int MaxMessageDescriptors = 4;

    /// <summary>Control space for <see cref="MaxMessageDescriptors"/> descriptors (CMSG_SPACE).</summary>
    public const int DescriptorControlBytes = 16 + 8 * ((MaxMessageDescriptors * sizeof(int) + 7) / 8);

    // https://man7.org/linux/man-pages/man2/sendmsg.2.html
    [LibraryImport(Library, EntryPoint = "sendmsg", SetLastError = true)]
    public static partial nint sendmsg(int sockfd, MsgHdr* msg, int flags);

    // https://man7.org/linux/man-pages/man2/recvmsg.2.html
    [LibraryImport(Library, EntryPoint = "recvmsg", SetLastError = true)]
    public static partial nint recvmsg(int sockfd, MsgHdr* msg, int flags);

    // https://man7.org/linux/man-pages/man2/socketpair.2.html
    [LibraryImport(Library, EntryPoint = "socketpair", SetLastError = true)]
    public static partial int socketpair(int domain, int type, int protocol, int* sv);

    /// <summary>Sends <paramref name="length"/> bytes with <paramref name="descriptors"/>
    /// attached (SCM_RIGHTS). Returns the bytes sent, or -1 with errno set.</summary>
    public static nint SendWithDescriptors(int socket, void* data, nuint length, ReadOnlySpan<int> descriptors)
    {
        byte* control = stackalloc byte[DescriptorControlBytes];
        new Span<byte>(control, DescriptorControlBytes).Clear();
        IoVec part = new() { Base = data, Length = length };
        MsgHdr message = new() { Iov = &part, IovLength = 1 };
        if (descriptors.Length > 0)
        {
            var header = (CmsgHdr*)control;
            header->Level = SOL_SOCKET;
            header->Type = SCM_RIGHTS;
            header->Length = (nuint)(sizeof(CmsgHdr) + descriptors.Length * sizeof(int));
            descriptors.CopyTo(new Span<int>(control + sizeof(CmsgHdr), descriptors.Length));
            message.Control = control;
            message.ControlLength = (nuint)(sizeof(CmsgHdr) + 8 * ((descriptors.Length * sizeof(int) + 7) / 8));
        }
        return sendmsg(socket, &message, MSG_NOSIGNAL);
    }

    /// <summary>Receives one message of up to <paramref name="length"/> bytes and the
    /// descriptors attached to it (close-on-exec), into <paramref name="descriptors"/>;
    /// <paramref name="count"/>: how many came. Descriptors beyond the span's length are
    /// closed. Returns the bytes received, or -1 with errno set.</summary>
    public static nint ReceiveWithDescriptors(int socket, void* data, nuint length, Span<int> descriptors, out int count, int flags = 0)
    {
        count = 0;
        byte* control = stackalloc byte[DescriptorControlBytes];
        IoVec part = new() { Base = data, Length = length };
        MsgHdr message = new() { Iov = &part, IovLength = 1, Control = control, ControlLength = DescriptorControlBytes };
        nint n = recvmsg(socket, &message, flags | MSG_CMSG_CLOEXEC);
        if (n < 0)
            return n;
        var header = (CmsgHdr*)control;
        if (message.ControlLength >= (nuint)sizeof(CmsgHdr) && header->Level == SOL_SOCKET && header->Type == SCM_RIGHTS)
        {
            int received = (int)((header->Length - (nuint)sizeof(CmsgHdr)) / sizeof(int));
            int* fds = (int*)(control + sizeof(CmsgHdr));
            for (int i = 0; i < received; i++)
            {
                if (count < descriptors.Length) descriptors[count++] = fds[i];
                else close(fds[i]);
            }
        }
        return n;
    }
}
