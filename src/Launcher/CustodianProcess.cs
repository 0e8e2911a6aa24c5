using System.Diagnostics;
using System.Globalization;
using Tibet.Core.Compression;
using Tibet.Core.Crypto;
using Tibet.Core.Custodian;
using Tibet.Core.Interop;
using Tibet.Core.Paging;
using Tibet.Core.Paging.Eviction;

namespace Tibet.Launcher;

/// <summary>
/// Starts the custodian beside the program (see Tibet.Core.Custodian.CustodianService),
/// and is the custodian's entry point: tibet-run runs itself again as
/// <c>tibet-run --custodian FD LAUNCHER-PID UIDS BUDGET CIPHER EVICTION COMPRESSION VERBOSITY</c>, an internal
/// interface no user types.
/// </summary>
internal static unsafe class CustodianProcess
{
    public const string Argument = "--custodian";

    /// <summary>The variable that names the custodian's socket in the program (read by
    /// the interposer's C side, native/served.c, and by CustodianClient).</summary>
    public const string SocketVariable = Tibet.Core.Custodian.ServedProtocol.SocketVariable;

    /// <summary>The variable that turns the custodian off (0) for a run: forked children's
    /// large allocations then run in plaintext, each child saying so.</summary>
    public const string SwitchVariable = "TIBET_CUSTODIAN";

    /// <summary>Reads <see cref="SwitchVariable"/>: unset, empty or 1 (on), or 0 (off);
    /// anything else is a mistake that stops tibet-run before anything runs.</summary>
    public static bool TryReadSwitch(out bool wanted, out string? problem)
    {
        string? text = Environment.GetEnvironmentVariable(SwitchVariable);
        wanted = text is null or "" or "1";
        problem = wanted || text == "0" ? null
            : $"{SwitchVariable}='{(text!.Length > 40 ? text[..40] + "…" : text)}' must be 0 (no custodian: forked children run their large allocations unencrypted) or 1 (the default)";
        return problem == null;
    }

    /// <summary>
    /// Starts the custodian, and returns the name of its socket, for the program's
    /// <see cref="Tibet.Core.Custodian.ServedProtocol.SocketVariable"/>; null (after one line
    /// saying so) if it could not be started: forked children's large allocations then run
    /// in plaintext, each child saying so.
    /// </summary>
    /// <param name="programUid">The uid the program runs as (--user), besides tibet-run's.</param>
    /// <param name="pid">The custodian's pid (0 if it did not start).</param>
    public static string? Start(LaunchOptions options, uint? programUid, out int pid)
    {
        pid = 0;
        // Bound here, before the program starts, so that a child connecting before the
        // custodian runs waits in the backlog instead of being refused.
        string name = $"tibet-custodian-{Environment.ProcessId}-{Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(8))}";
        int listener = Libc.socket(Libc.AF_UNIX, Libc.SOCK_SEQPACKET | Libc.SOCK_CLOEXEC, 0);
        var address = Libc.SockAddrUnix.Abstract(name, out uint length);
        if (listener < 0 || Libc.bind(listener, &address, length) != 0 || Libc.listen(listener, 128) != 0)
        {
            int errno = Libc.LastErrno;
            if (listener >= 0) Libc.close(listener);
            Console.Error.WriteLine($"tibet-run: cannot start the custodian (its socket: {Libc.Describe(errno)}); forked children's large allocations will not be encrypted.");
            return null;
        }
        try
        {
            Libc.fcntl(listener, Libc.F_SETFD, 0);
            var start = new ProcessStartInfo(Environment.ProcessPath!) { UseShellExecute = false };
            // Run as "dotnet tibet-run.dll": the assembly first when the host is dotnet.
            string assembly = typeof(CustodianProcess).Assembly.Location;
            if (!string.IsNullOrEmpty(assembly) && !Path.GetFileNameWithoutExtension(Environment.ProcessPath!).Equals("tibet-run", StringComparison.Ordinal))
                start.ArgumentList.Add(assembly);
            string uids = programUid is uint uid && uid != Libc.geteuid()
                ? $"{Libc.geteuid().ToString(CultureInfo.InvariantCulture)},{uid.ToString(CultureInfo.InvariantCulture)}"
                : Libc.geteuid().ToString(CultureInfo.InvariantCulture);
            foreach (string argument in new[]
                     {
                         Argument, listener.ToString(CultureInfo.InvariantCulture), Environment.ProcessId.ToString(CultureInfo.InvariantCulture), uids,
                         options.BudgetBytes.ToString(CultureInfo.InvariantCulture), options.Cipher, options.Eviction,
                         options.Compression == CompressionMode.Auto ? "auto" : "off",
                         options.Verbosity.ToString(CultureInfo.InvariantCulture),
                     })
                start.ArgumentList.Add(argument);
            using Process custodian = Process.Start(start)!;
            pid = custodian.Id;
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"tibet-run: cannot start the custodian ({e.Message}); forked children's large allocations will not be encrypted.");
            return null;
        }
        finally
        {
            Libc.close(listener); // the custodian holds its own copy
        }
        return name;
    }

    private static bool TryParseUids(string text, out uint[] uids)
    {
        var parsed = new List<uint>();
        foreach (string part in text.Split(','))
        {
            if (!uint.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out uint uid))
            {
                uids = [];
                return false;
            }
            parsed.Add(uid);
        }
        uids = [.. parsed];
        return true;
    }

    /// <summary>The custodian's process: serves until no process of the tree is left.</summary>
    public static int Run(string[] args)
    {
        uint[] uids = [];
        if (args.Length != 9
            || !int.TryParse(args[1], NumberStyles.None, CultureInfo.InvariantCulture, out int registry)
            || !int.TryParse(args[2], NumberStyles.None, CultureInfo.InvariantCulture, out int launcher)
            || !TryParseUids(args[3], out uids)
            || !long.TryParse(args[4], NumberStyles.None, CultureInfo.InvariantCulture, out long budget)
            || PageCipherSuite.FromName(args[5]) is not { } cipher
            || EvictionPolicy.FromName(args[6]) is not { } eviction
            || args[7] is not ("auto" or "off")
            || !int.TryParse(args[8], NumberStyles.None, CultureInfo.InvariantCulture, out int verbosity))
        {
            Console.Error.WriteLine("tibet-run: --custodian is tibet-run's own: it is started by tibet-run, with arguments it chooses.");
            return 2;
        }
        // Its own session: a Ctrl-C for the program's process group must not end it while
        // a daemon still needs it. Nothing to read, nothing for the program's stdout.
        Libc.setsid();
        int devNull = Libc.open("/dev/null", Libc.O_RDWR);
        if (devNull >= 0)
        {
            Libc.dup2(devNull, 0);
            Libc.dup2(devNull, 1);
            if (devNull > 2) Libc.close(devNull);
        }
        Libc.fcntl(registry, Libc.F_SETFD, Libc.FD_CLOEXEC);
        registry = HighDescriptors.MoveAbove(registry);
        Dumpability.MakeNonDumpable();
        var options = new EngineOptions
        {
            ResidentBudgetBytes = budget,
            Cipher = cipher,
            Eviction = eviction,
            Compression = args[7] == "auto" ? CompressionMode.Auto : CompressionMode.Off,
            TrackWrites = Environment.GetEnvironmentVariable("TIBET_TRACK_WRITES") != "0",
            OnAuthenticationFailure = f => Console.Error.WriteLine(
                $"tibet custodian: page at 0x{f.Address:x} failed authentication ({f.Detail}); its reader receives SIGBUS"),
        };
        try
        {
            var service = new CustodianService(registry, uids, launcher, options, verbosity, line => Console.Error.WriteLine(line));
            service.Run();
            return 0;
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"tibet custodian: {e.Message}; forked children's faults are answered with SIGBUS, and their new large allocations run unencrypted.");
            return 1;
        }
    }
}
