using System.Text;
using Tibet.Core.Diagnostics;
using Tibet.Core.Interop;

namespace Tibet.Interposer;

/// <summary>
/// This process's statistics while it runs, for <c>tibet stats</c> and
/// <c>tibet-run --metrics</c>: a thread answers each connection to the abstract unix
/// socket <c>tibet-stats-PID</c> with the JSON the process writes at exit
/// (<see cref="ExitStatistics"/>), forked children included, and closes it.
/// </summary>
/// <remarks>
/// <para>Only a process of the same effective user, or root, is answered (SO_PEERCRED).
/// The statistics hold counts and sizes, never contents or keys.</para>
/// <para>The thread is not on the fault path: it may allocate. It takes the engine's lock
/// only as long as a snapshot takes. Forked children do not have it (threads do not
/// survive fork): their figures are in their parent's answer.</para>
/// </remarks>
internal static unsafe class LiveStatistics
{
    /// <summary>The socket's abstract name, without its leading zero byte, is this plus the pid.</summary>
    public const string NamePrefix = LiveStatsClient.NamePrefix;

    public static void Start(Func<string> snapshot)
    {
        int fd = Libc.socket(Libc.AF_UNIX, Libc.SOCK_STREAM | Libc.SOCK_CLOEXEC, 0);
        if (fd < 0)
            return;
        Libc.SockAddrUnix address = Libc.SockAddrUnix.Abstract(NamePrefix + Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture), out uint length);
        if (Libc.bind(fd, &address, length) != 0 || Libc.listen(fd, 16) != 0)
        {
            // Taken (another process of this pid's namespace twin) or refused: no live
            // statistics, said once; the exit statistics are unaffected.
            Native.Shim.WriteError($"tibet: pid {Environment.ProcessId}: no live statistics ({Libc.Describe(Libc.LastErrno)})");
            Libc.close(fd);
            return;
        }
        fd = HighDescriptors.MoveAbove(fd);
        var thread = new Thread(() => Serve(fd, snapshot)) { IsBackground = true, Name = "tibet-stats" };
        thread.Start();
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
                Libc.SetSocketTimeouts(client, 2); // a reader that never reads cannot hold this thread
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
