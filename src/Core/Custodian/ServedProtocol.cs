using System.Runtime.InteropServices;

namespace Tibet.Core.Custodian;

/// <summary>
/// The messages between the custodian and a served process's C side
/// (src/Interposer/native/served.c, whose comment describes the conversation). Each
/// mirrors a struct of src/Interposer/native/served_protocol.h; ServedProtocolAbiTests
/// compares the layouts with gcc's.
/// </summary>
internal static class ServedProtocol
{
    public const uint Magic = 0x54494254; // "TIBT"
    public const uint Version = 3; // 2: the welcome carries the budget share; a control message names a forked child; 3: sealed-page installs

    /// <summary><see cref="ServedHello.Kind"/>: serve this process (control, agent and
    /// userfaultfd attached).</summary>
    public const uint KindServe = 0;

    /// <summary><see cref="ServedHello.Kind"/>: only issue UFFDIO_API on the attached
    /// userfaultfd (reply end and userfaultfd attached; answered with a <see cref="ServedStatus"/>).</summary>
    public const uint KindApi = 1;

    /// <summary><see cref="ServedHello.Kind"/>: decide access to a sealed model with the
    /// identity the custodian keeps (a reply end and the model's descriptor attached, and
    /// the userfaultfd of the process's engine, into which the page session then installs
    /// the model's pages, if it has one; the reply end carries a <see cref="SealedAccessRequest"/> first, and the answer, a
    /// <see cref="SealedAccessAnswer"/>, back). Managed on both sides: served.c never asks.</summary>
    public const uint KindSealed = 2;

    /// <summary><see cref="ServedHello.Kind"/>: nothing attached; the connection is kept,
    /// and the custodian stays while it is open (served.c, tibet_served_hold_custodian).</summary>
    public const uint KindKeep = 3;

    /// <summary><see cref="ServedHello.Kind"/>: the statistics of the custodian's engine for
    /// the asking process itself (a reply end attached; answered with the engine's JSON,
    /// empty when it serves nothing of that process). Managed on both sides: a program
    /// served with TIBET_SERVE=custodian reports them with its own at exit.</summary>
    public const uint KindStats = 4;

    /// <summary>The variable that names the custodian's abstract socket in every process of
    /// the tree (lowercase letters, digits and dashes).</summary>
    public const string SocketVariable = "TIBET_CUSTODIAN_SOCKET";

    /// <summary>Connects to the custodian named <paramref name="name"/>: a descriptor, or -1.</summary>
    public static unsafe int Connect(string name)
    {
        int fd = Interop.Libc.socket(Interop.Libc.AF_UNIX, Interop.Libc.SOCK_SEQPACKET | Interop.Libc.SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -1;
        var address = Interop.Libc.SockAddrUnix.Abstract(name, out uint length);
        if (Interop.Libc.connect(fd, &address, length) == 0)
            return fd;
        Interop.Libc.close(fd);
        return -1;
    }

    /// <summary>Pages one take-out request names at most (one mask word).</summary>
    public const int MaxTakePages = 64;
}

/// <summary>struct served_hello: a message on the registry. Kind serve: three descriptors
/// attached, the custodian's ends of the control and agent connections and the process's
/// userfaultfd. Kind API: a reply end and a userfaultfd. Either way the userfaultfd has not
/// had UFFDIO_API yet: the custodian issues it with <see cref="Features"/> (fork events
/// need CAP_SYS_PTRACE of whoever issues it).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct ServedHello
{
    public uint Magic;
    public uint Version;
    public int Pid;
    public uint Kind;
    public ulong Features;
}

/// <summary>struct served_welcome: the custodian's answer on the control connection, with
/// the take-out window (a memfd) attached when <see cref="Status"/> is 0.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct ServedWelcome
{
    public uint Magic;
    public uint Status;
    public uint WindowPages;
    public uint RegisterWriteProtect;
}

/// <summary>struct served_arena: the process registered this range and asks that it be
/// served; or, with <see cref="Start"/> 0, it forked the child whose pid is
/// <see cref="Length"/>, and the child's agent end is attached.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct ServedArena
{
    public ulong Start;
    public ulong Length;
}

/// <summary>struct served_status: 0, or the errno the process's allocation then fails over.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct ServedStatus
{
    public int Status;
    public uint Reserved;
}

/// <summary>struct served_take_header: a take-out request, followed by <see cref="Count"/>
/// <see cref="ServedTake"/> entries (at most <see cref="ServedProtocol.MaxTakePages"/>).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct ServedTakeHeader
{
    public uint Count;
    public uint Reserved;
}

/// <summary>struct served_take: move <see cref="Pages"/> pages from <see cref="Start"/> out
/// of the process, into the window from page <see cref="Slot"/> on.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct ServedTake
{
    public ulong Start;
    public uint Pages;
    public uint Slot;
}

/// <summary>struct served_taken: the answer to a whole request. Bit i of each mask describes
/// window slot i; a page asked in none of them was refused (EBUSY: shared copy-on-write
/// with a child).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct ServedTaken
{
    public ulong Moved;
    public ulong Gone;
    public ulong Again;
    public ulong Reserved;
}

/// <summary>What a process sends on its reply end before a <see cref="ServedProtocol.KindSealed"/>
/// hello: the grant token it received from tibet-run (Tibet.Core.Identity.CustodianGrant).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct SealedAccessRequest
{
    public fixed byte Token[Identity.CustodianGrant.TokenSize];
}

/// <summary>The custodian's answer to a sealed-model request, followed in the same message
/// by <see cref="MessageBytes"/> bytes of UTF-8: its one-line message. When the model is
/// live, two descriptors come with it: the process's end of a page session and the session's
/// window (see <see cref="SealedPagesRequest"/>); the data key never does.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct SealedAccessAnswer
{
    /// <summary>The custodian decided: <see cref="Reason"/> says live or why dead.</summary>
    public const int Decided = 0;

    /// <summary>The decision could not be recorded in the audit log (the message says
    /// why): the model stays dead, since there is no access without a trace.</summary>
    public const int NotRecorded = 1;

    /// <summary>The custodian did not decide: the token is not its grant, or it holds no
    /// identity, or the file cannot be read (the message says which).</summary>
    public const int Refused = 2;

    /// <summary>Message bytes at most.</summary>
    public const int MaxMessageBytes = 3072;

    public int Status;
    /// <summary>A Tibet.Core.Sealing.SealAccessReason.</summary>
    public int Reason;
    public int MessageBytes;
    /// <summary>The page session's window, in pages, when live.</summary>
    public int WindowPages;
    /// <summary>1 when the session also installs pages (<see cref="SealedPagesRequest.Install"/>):
    /// the process sent its engine's userfaultfd with the request.</summary>
    public int Installs;
    public int Reserved;
}

/// <summary>A request on a sealed model's page session, for data pages
/// [<see cref="FirstPage"/>, + <see cref="Count"/>), answered with a <see cref="SealedPagesAnswer"/>.
/// Without flags, the process put their ciphertext into its lane's part of the window, and
/// the custodian decrypts them there. With <see cref="Install"/>, the custodian reads them
/// from the model file itself, decrypts them in memory of its own, and installs them at
/// <see cref="Address"/> in the process with UFFDIO_COPY on the userfaultfd the process
/// sent (so the plaintext never passes through the window).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct SealedPagesRequest
{
    /// <summary><see cref="Flags"/>: install the pages instead of decrypting them in the window.</summary>
    public const int Install = 1;

    /// <summary><see cref="Flags"/>, with <see cref="Install"/>: install them write-protected (UFFDIO_COPY_MODE_WP).</summary>
    public const int WriteProtect = 2;

    public long FirstPage;
    public int Count;
    public int Flags;
    /// <summary>With <see cref="Install"/>: where the first page goes in the process.</summary>
    public long Address;
}

/// <summary>How many of the requested pages, from the first on, are plaintext now (in the
/// window, or installed), and why not the next: 0 when all are; for an install, the errno
/// UFFDIO_COPY gave (EAGAIN: an event waits to be read; EEXIST: the page is mapped; ENOENT:
/// the range went away), EBADMSG when the next page failed authentication (it is cleared
/// and never installed), EIO when the file could not be read, EINVAL for a request out of
/// range, ENOSYS when the session installs nothing.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct SealedPagesAnswer
{
    public int Opened;
    public int Errno;
}
