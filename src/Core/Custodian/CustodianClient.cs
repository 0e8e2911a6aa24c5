using Tibet.Core.Interop;
using static Tibet.Core.Interop.UserfaultfdAbi;

namespace Tibet.Core.Custodian;

/// <summary>
/// What a process of the tree asks the custodian for itself: UFFDIO_API on its engine's
/// userfaultfd, with the fork events its own user may not enable (they need
/// CAP_SYS_PTRACE of whoever issues UFFDIO_API; tibet-run --user runs the program as a
/// user without it, and the custodian keeps root's).
/// </summary>
internal static unsafe class CustodianClient
{
    /// <summary>Has the custodian issue UFFDIO_API with <paramref name="features"/> on
    /// <paramref name="uffd"/> (which has not had it yet). Returns 0, or an errno: ENOENT
    /// when this process has no custodian, or what the custodian's UFFDIO_API answered.</summary>
    public static int EnableFeatures(int uffd, ulong features)
    {
        // (see served.c, is_the_custodian: the name is public, the uid tells)
        if (SecureExecution.IsActive || Environment.GetEnvironmentVariable(ServedProtocol.SocketVariable) is not { Length: > 0 and <= 100 } name)
            return Libc.ENOENT;
        int* pair = stackalloc int[2];
        if (Libc.socketpair(Libc.AF_UNIX, Libc.SOCK_SEQPACKET | Libc.SOCK_CLOEXEC, 0, pair) != 0)
            return Libc.LastErrno;
        int registry = ServedProtocol.Connect(name);
        try
        {
            if (registry < 0 || !IsTheCustodian(registry))
                return Libc.ENOENT;
            ServedHello hello = new()
            {
                Magic = ServedProtocol.Magic,
                Version = ServedProtocol.Version,
                Pid = Libc.getpid(),
                Kind = ServedProtocol.KindApi,
                Features = features,
            };
            if (Libc.SendWithDescriptors(registry, &hello, (nuint)sizeof(ServedHello), [pair[1], uffd]) != sizeof(ServedHello))
                return Libc.ENOENT; // not a registry (any more)
            Libc.close(pair[1]);
            pair[1] = -1;
            // The custodian is a .NET program: its first answer may take its start-up.
            Libc.SetSocketTimeouts(pair[0], 30);
            ServedStatus status;
            nint n = Libc.recv(pair[0], &status, (nuint)sizeof(ServedStatus), 0);
            return n == sizeof(ServedStatus) ? status.Status : Libc.ENOENT;
        }
        finally
        {
            if (registry >= 0) Libc.close(registry);
            Libc.close(pair[0]);
            if (pair[1] >= 0) Libc.close(pair[1]);
        }
    }

    /// <summary>Whether the process at the other end runs as the uid tibet-run named
    /// (TIBET_CUSTODIAN_UID) or as root: once the custodian has ended, anyone could bind its
    /// name, which is listed in /proc/net/unix.</summary>
    private static bool IsTheCustodian(int connection)
    {
        Libc.UCred peer;
        uint length = (uint)sizeof(Libc.UCred);
        if (Libc.getsockopt(connection, Libc.SOL_SOCKET, Libc.SO_PEERCRED, &peer, &length) != 0)
            return false;
        return peer.Uid == 0 || (uint.TryParse(Environment.GetEnvironmentVariable("TIBET_CUSTODIAN_UID"), System.Globalization.NumberStyles.None,
            System.Globalization.CultureInfo.InvariantCulture, out uint expected) && peer.Uid == expected);
    }
}
