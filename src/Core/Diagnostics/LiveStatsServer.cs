using System.Text;
using Tibet.Core.Interop;

namespace Tibet.Core.Diagnostics;

/// <summary>
/// Answers each connection to the abstract unix socket <c>tibet-stats-PID</c> (PID: this
/// process's) with a JSON snapshot, and closes it: what <c>tibet stats</c> and
/// <c>tibet-run --metrics</c> read (<see cref="LiveStatsClient"/>). Used by every process
/// under tibet (the interposer) and by the custodian.
/// </summary>
/// <remarks>
/// Only a process of the same effective user, or root, is answered (SO_PEERCRED). The
/// statistics hold counts and sizes, never contents or keys. The thread is not on the
/// fault path: it may allocate. A reader that never reads is given up after 2 s.
/// </remarks>
public static unsafe class LiveStatsServer
{
    /// <summary>Starts the thread; false (after <paramref name="say"/> said why) when the
    /// name is taken or the socket refused.</summary>
    public static bool Start(Func<string> snapshot, Action<string> say)
    {
        int fd = Libc.socket(Libc.AF_UNIX, Libc.SOCK_STREAM | Libc.SOCK_CLOEXEC, 0);
        if (fd < 0)
            return false;
        Libc.SockAddrUnix address = Libc.SockAddrUnix.Abstract(LiveStatsClient.NamePrefix + Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture), out uint length);
        if (Libc.bind(fd, &address, length) != 0 || Libc.listen(fd, 16) != 0)
        {
            say($"tibet: pid {Environment.ProcessId}: no live statistics ({Libc.Describe(Libc.LastErrno)})");
            Libc.close(fd);
            return false;
        }
        fd = HighDescriptors.MoveAbove(fd);
        var thread = new Thread(() => Serve(fd, snapshot)) { IsBackground = true, Name = "tibet-stats" };
        thread.Start();
        return true;
    }

    private static void Serve(int listener, Func<string> snapshot)
    {
        uint self = Libc.geteuid();
        while (true)
        {
            int client = Libc.accept4(listener, null, null, Libc.SOCK_CLOEXEC);
            if (client < 0)
            {
                if (Libc.LastErrno is Libc.EINTR or Libc.ECONNABORTED)
                    continue;
                return;
            }
            try
            {
                Libc.SetSocketTimeouts(client, 2);
                Libc.UCred peer;
                uint length = (uint)sizeof(Libc.UCred);
                if (Libc.getsockopt(client, Libc.SOL_SOCKET, Libc.SO_PEERCRED, &peer, &length) == 0 && (peer.Uid == self || peer.Uid == 0))
                {
                    byte[] json = Encoding.UTF8.GetBytes(snapshot());
                    fixed (byte* p = json)
                        for (int sent = 0; sent < json.Length;)
                        {
                            nint n = Libc.send(client, p + sent, (nuint)(json.Length - sent), Libc.MSG_NOSIGNAL);
                            if (n <= 0)
                                break;
                            sent += (int)n;
                        }
                }
            }
            catch (Exception)
            {
                // A snapshot that failed (the engine failed meanwhile): this client gets nothing.
            }
            finally
            {
                Libc.close(client);
            }
        }
    }
}
