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
        if (CustodianName() is not { } name)
            return Libc.ENOENT;
        int reply = Ask(name, ServedProtocol.KindApi, features, [uffd], [], out _);
        if (reply < 0)
            return Libc.ENOENT;
        try
        {
            ServedStatus status;
            nint n = Libc.recv(reply, &status, (nuint)sizeof(ServedStatus), 0);
            return n == sizeof(ServedStatus) ? status.Status : Libc.ENOENT;
        }
        finally
        {
            Libc.close(reply);
        }
    }

    /// <summary>
    /// Asks the custodian, which keeps the identity, to decide access to the sealed model
    /// open as <paramref name="model"/>, showing <paramref name="token"/> (this process's
    /// grant). On an answer, returns true with its status, reason and message, and, when
    /// the reason is Live, the model's pages: an opener that has the custodian decrypt
    /// them (the data key stays there). False, with <paramref name="problem"/>, when no
    /// custodian answered. <paramref name="uffd"/>: the userfaultfd of this process's engine,
    /// into which the custodian then installs the model's pages (-1: none; they are then
    /// decrypted through the session's window only).
    /// </summary>
    public static bool RequestSealedAccess(int model, ReadOnlySpan<byte> token, int uffd,
        out int status, out Sealing.SealAccessReason reason, out string message, out CustodianPageOpener? pages, out string problem)
    {
        if (CustodianName() is not { } name)
        {
            status = SealedAccessAnswer.Refused;
            reason = Sealing.SealAccessReason.NoIdentity;
            message = "";
            pages = null;
            problem = $"{ServedProtocol.SocketVariable} does not name one in this process";
            return false;
        }
        return RequestSealedAccess(name, model, token, uffd, out status, out reason, out message, out pages, out problem);
    }

    /// <summary>As above, of the custodian at the abstract socket <paramref name="name"/>.</summary>
    internal static bool RequestSealedAccess(string name, int model, ReadOnlySpan<byte> token, int uffd,
        out int status, out Sealing.SealAccessReason reason, out string message, out CustodianPageOpener? pages, out string problem)
    {
        status = SealedAccessAnswer.Refused;
        reason = Sealing.SealAccessReason.NoIdentity;
        message = "";
        pages = null;
        if (token.Length != Identity.CustodianGrant.TokenSize)
            throw new ArgumentException("A grant token is 32 bytes.", nameof(token));
        // The token waits on the private connection, so the custodian reads it at once.
        SealedAccessRequest request;
        var requestBytes = new Span<byte>(&request, sizeof(SealedAccessRequest));
        token.CopyTo(requestBytes);
        int reply = Ask(name, ServedProtocol.KindSealed, 0, uffd >= 0 ? [model, uffd] : [model], requestBytes, out problem);
        System.Security.Cryptography.CryptographicOperations.ZeroMemory(requestBytes);
        if (reply < 0)
            return false;
        int size = sizeof(SealedAccessAnswer) + SealedAccessAnswer.MaxMessageBytes;
        byte* buffer = stackalloc byte[size];
        Span<int> received = stackalloc int[SealedPageService.Lanes + 1];
        int count = 0;
        try
        {
            // Reading the tag table of a large model and writing the audit log take a while.
            nint n = Libc.ReceiveWithDescriptors(reply, buffer, (nuint)size, received, out count);
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
                if (count != SealedPageService.Lanes + 1 || answer->WindowPages <= 0 || answer->WindowPages > 4096)
                {
                    problem = "a live answer came without its page session";
                    return false;
                }
                count = 0; // the opener owns them, and closes them if it cannot map the window
                pages = new CustodianPageOpener(received[..SealedPageService.Lanes], received[SealedPageService.Lanes], answer->WindowPages,
                    installs: uffd >= 0 && answer->Installs == 1);
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
            Libc.close(reply);
        }
    }

    /// <summary>
    /// What the custodian's engine did for this process (TIBET_SERVE=custodian: its large
    /// anonymous allocations), or null: no custodian, or it serves nothing of this process.
    /// Asked at exit and by the live statistics, so it waits at most 2 s.
    /// </summary>
    public static Diagnostics.EngineStats? ServedStats()
    {
        if (CustodianName() is not { } name)
            return null;
        int reply = Ask(name, ServedProtocol.KindStats, 0, [], [], out _);
        if (reply < 0)
            return null;
        try
        {
            Libc.SetSocketTimeouts(reply, 2);
            byte[] buffer = new byte[64 * 1024];
            nint n;
            fixed (byte* p = buffer)
                do
                    n = Libc.recv(reply, p, (nuint)buffer.Length, 0);
                while (n < 0 && Libc.LastErrno == Libc.EINTR);
            if (n <= 0)
                return null;
            using var json = System.Text.Json.JsonDocument.Parse(buffer.AsMemory(0, (int)n));
            return Diagnostics.EngineStats.FromJson(json.RootElement);
        }
        catch (System.Text.Json.JsonException)
        {
            return null; // a custodian that answers nonsense is not one to report
        }
        finally
        {
            Libc.close(reply);
        }
    }

    /// <summary>The custodian's name in this process's environment, or null (none, or a
    /// set-user-ID program, whose environment belongs to its caller).</summary>
    private static string? CustodianName() =>
        !SecureExecution.IsActive && Environment.GetEnvironmentVariable(ServedProtocol.SocketVariable) is { Length: > 0 and <= 100 } name ? name : null;

    /// <summary>
    /// Sends the custodian a hello of <paramref name="kind"/> with a private reply connection
    /// and <paramref name="attachment"/> (none if negative), after putting <paramref name="first"/> (if any) on
    /// that connection. Returns this process's end of it, ready for the answer (30 s
    /// timeouts: the custodian is a .NET program, and its first answer may wait for its
    /// start-up), or -1 with <paramref name="problem"/>.
    /// </summary>
    private static int Ask(string name, uint kind, ulong features, ReadOnlySpan<int> attachments, ReadOnlySpan<byte> first, out string problem)
    {
        int* pair = stackalloc int[2];
        if (Libc.socketpair(Libc.AF_UNIX, Libc.SOCK_SEQPACKET | Libc.SOCK_CLOEXEC, 0, pair) != 0)
        {
            problem = $"socketpair: {Libc.Describe(Libc.LastErrno)}";
            return -1;
        }
        // (see served.c, is_the_custodian: the name is public, the uid tells)
        int registry = ServedProtocol.Connect(name);
        bool sent = false;
        try
        {
            if (registry < 0 || !IsTheCustodian(registry))
            {
                problem = "nothing of tibet-run's answers at its socket (it has ended?)";
                return -1;
            }
            ServedHello hello = new()
            {
                Magic = ServedProtocol.Magic,
                Version = ServedProtocol.Version,
                Pid = Libc.getpid(),
                Kind = kind,
                Features = features,
            };
            fixed (byte* data = first)
                sent = (first.IsEmpty || Libc.send(pair[0], data, (nuint)first.Length, Libc.MSG_NOSIGNAL) == first.Length)
                       && Libc.SendWithDescriptors(registry, &hello, (nuint)sizeof(ServedHello), [pair[1], .. attachments]) == sizeof(ServedHello);
            problem = sent ? "" : "it did not take the request";
            if (sent)
                Libc.SetSocketTimeouts(pair[0], 30);
            return sent ? pair[0] : -1;
        }
        finally
        {
            if (registry >= 0) Libc.close(registry);
            Libc.close(pair[1]);
            if (!sent) Libc.close(pair[0]);
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
