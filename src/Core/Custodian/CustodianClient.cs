using Tibet.Core.Interop;
using static Tibet.Core.Interop.UserfaultfdAbi;

namespace Tibet.Core.Custodian;

/// <summary>
/// What a process of the tree asks the custodian for itself: UFFDIO_API on its engine's
/// userfaultfd, with the fork events its own user may not enable (they need
/// CAP_SYS_PTRACE of whoever issues UFFDIO_API; tibet-run --user runs the program as a
/// user without it, and the custodian keeps root's); and the decision on a sealed model,
/// made with the identity only the custodian holds.
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

    /// <summary>
    /// Asks the custodian, which keeps the identity, to decide access to the sealed model
    /// open as <paramref name="model"/>, showing <paramref name="token"/> (this process's
    /// grant). On an answer, returns true with its status, reason and message, and, when
    /// the reason is Live, the model's pages: an opener that has the custodian decrypt
    /// them (the data key stays there). False, with <paramref name="problem"/>, when no
    /// custodian answered.
    /// </summary>
    public static bool RequestSealedAccess(int model, ReadOnlySpan<byte> token,
        out int status, out Sealing.SealAccessReason reason, out string message, out CustodianPageOpener? pages, out string problem)
    {
        if (SecureExecution.IsActive || Environment.GetEnvironmentVariable(ServedProtocol.SocketVariable) is not { Length: > 0 and <= 100 } name)
        {
            status = SealedAccessAnswer.Refused;
            reason = Sealing.SealAccessReason.NoIdentity;
            message = "";
            pages = null;
            problem = $"{ServedProtocol.SocketVariable} does not name one in this process";
            return false;
        }
        return RequestSealedAccess(name, model, token, out status, out reason, out message, out pages, out problem);
    }

    /// <summary>As above, of the custodian at the abstract socket <paramref name="name"/>.</summary>
    internal static bool RequestSealedAccess(string name, int model, ReadOnlySpan<byte> token,
        out int status, out Sealing.SealAccessReason reason, out string message, out CustodianPageOpener? pages, out string problem)
    {
        status = SealedAccessAnswer.Refused;
        reason = Sealing.SealAccessReason.NoIdentity;
        message = "";
        pages = null;
        problem = "";
        if (token.Length != Identity.CustodianGrant.TokenSize)
            throw new ArgumentException("A grant token is 32 bytes.", nameof(token));
        int* pair = stackalloc int[2];
        if (Libc.socketpair(Libc.AF_UNIX, Libc.SOCK_SEQPACKET | Libc.SOCK_CLOEXEC, 0, pair) != 0)
        {
            problem = $"socketpair: {Libc.Describe(Libc.LastErrno)}";
            return false;
        }
        int size = sizeof(SealedAccessAnswer) + SealedAccessAnswer.MaxMessageBytes;
        byte* buffer = stackalloc byte[size];
        Span<int> received = stackalloc int[2];
        int count = 0;
        int registry = ServedProtocol.Connect(name);
        try
        {
            if (registry < 0 || !IsTheCustodian(registry))
            {
                problem = "nothing of tibet-run's answers at its socket (it has ended?)";
                return false;
            }
            // The token waits on the private connection, so the custodian reads it at once.
            SealedAccessRequest request;
            token.CopyTo(new Span<byte>(request.Token, Identity.CustodianGrant.TokenSize));
            nint sent = Libc.send(pair[0], &request, (nuint)sizeof(SealedAccessRequest), Libc.MSG_NOSIGNAL);
            System.Security.Cryptography.CryptographicOperations.ZeroMemory(new Span<byte>(request.Token, Identity.CustodianGrant.TokenSize));
            ServedHello hello = new()
            {
                Magic = ServedProtocol.Magic,
                Version = ServedProtocol.Version,
                Pid = Libc.getpid(),
                Kind = ServedProtocol.KindSealed,
            };
            if (sent != sizeof(SealedAccessRequest)
                || Libc.SendWithDescriptors(registry, &hello, (nuint)sizeof(ServedHello), [pair[1], model]) != sizeof(ServedHello))
            {
                problem = "it did not take the request";
                return false;
            }
            Libc.close(pair[1]);
            pair[1] = -1;
            // Reading the tag table of a large model and writing the audit log take a while;
            // the custodian's first answer may also wait for its start-up.
            Libc.SetSocketTimeouts(pair[0], 30);
            nint n = Libc.ReceiveWithDescriptors(pair[0], buffer, (nuint)size, received, out count, Libc.MSG_CMSG_CLOEXEC);
            var answer = (SealedAccessAnswer*)buffer;
            if (n < sizeof(SealedAccessAnswer) || answer->MessageBytes < 0 || answer->MessageBytes > n - sizeof(SealedAccessAnswer))
            {
                problem = n < 0 ? $"no answer ({Libc.Describe(Libc.LastErrno)})" : "no answer (it ended while deciding?)";
                return false;
            }
            status = answer->Status;
            reason = Enum.IsDefined((Sealing.SealAccessReason)answer->Reason) ? (Sealing.SealAccessReason)answer->Reason : Sealing.SealAccessReason.NoIdentity;
            message = System.Text.Encoding.UTF8.GetString(buffer + sizeof(SealedAccessAnswer), answer->MessageBytes);
            if (status == SealedAccessAnswer.Decided && reason == Sealing.SealAccessReason.Live)
            {
                if (count != 2 || answer->WindowPages <= 0 || answer->WindowPages > 4096)
                {
                    problem = "a live answer came without its page session";
                    return false;
                }
                count = 0; // the opener owns them, and closes them if it cannot map the window
                pages = new CustodianPageOpener(received[0], received[1], answer->WindowPages);
            }
            return true;
        }
        catch (InvalidOperationException e)
        {
            problem = e.Message;
            return false;
        }
        finally
        {
            for (int i = 0; i < count; i++)
                Libc.close(received[i]);
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
