using System.Diagnostics;
using System.Globalization;
using Tibet.Core.Compression;
using Tibet.Core.Crypto;
using Tibet.Core.Custodian;
using Tibet.Core.Interop;
using Tibet.Core.Paging;
using Tibet.Core.Paging.Eviction;
using Tibet.Core.Paging.Huge;

namespace Tibet.Launcher;

/// <summary>
/// Starts the custodian beside the program (see Tibet.Core.Custodian.CustodianService),
/// and is the custodian's entry point: tibet-run runs itself again as
/// <c>tibet-run --custodian REGISTRY-FD PROGRAM-PIDFD UIDS BUDGET CIPHER EVICTION COMPRESSION
/// VERBOSITY METRICS-FD HUGE-PAGES-ADDED IDENTITY-FD</c>, an internal interface no user types.
/// </summary>
internal static unsafe class CustodianProcess
{
    public const string Argument = "--custodian";

    /// <summary>The variable that names the custodian's socket in the program (read by
    /// the interposer's C side, native/served.c, and by CustodianClient).</summary>
    public const string SocketVariable = Tibet.Core.Custodian.ServedProtocol.SocketVariable;

    /// <summary>The variable that names the custodian's uid in the program: a served child
    /// speaks only to a process of that uid (or root) at the socket's name.</summary>
    public const string UidVariable = "TIBET_CUSTODIAN_UID";

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
    /// Starts the custodian, detached (it is not the program's child: the program, which
    /// this process becomes, must not see it exit or reap it), and returns the name of its
    /// socket, for the program's <see cref="SocketVariable"/>; null (after one line saying
    /// so) if it could not be started: forked children's large allocations then run in
    /// plaintext, each child saying so.
    /// </summary>
    /// <param name="programUid">The uid the program runs as (--user), besides tibet-run's.</param>
    /// <param name="serveChildren">Serve forked children (false: TIBET_CUSTODIAN=0, the
    /// custodian only hosts --metrics or gives the hugetlb pool back).</param>
    /// <param name="metrics">--metrics' listening socket, served by the custodian from now on.</param>
    /// <param name="hugePagesAdded">Pages added to the hugetlb pool for this run, or -1 when
    /// it reserved none. With a reservation (even of pages that were free), the custodian
    /// settles the pool's ledger when it ends: pages other runs left owed go back once no
    /// run lives (HugePagePool.GiveBack).</param>
    /// <param name="identity">The custodian's identity descriptor (grant token, then the
    /// hand-off; see IdentityCustody), or -1: inherited by the custodian only.</param>
    /// <param name="statsWitnessFile">With --stats and no --stats-json: the file the program
    /// is to write its statistics to, for the custodian to tell whether it did (see
    /// StatisticsWitness); null otherwise.</param>
    [System.Diagnostics.CodeAnalysis.UnconditionalSuppressMessage("SingleFile", "IL3000", Justification = "Compiled ahead of time there is no assembly file: Location is empty, and ProcessPath is tibet-run itself.")]
    public static string? Start(LaunchOptions options, uint? programUid, bool serveChildren, MetricsServer? metrics, long hugePagesAdded, int identity = -1,
        string? statsWitnessFile = null)
    {
        // Bound here, before the program starts, so that a child connecting before the
        // custodian runs waits in the backlog instead of being refused.
        string name = $"tibet-custodian-{Environment.ProcessId}-{Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(8))}";
        int listener = -1;
        if (serveChildren)
        {
            listener = Libc.socket(Libc.AF_UNIX, Libc.SOCK_SEQPACKET | Libc.SOCK_CLOEXEC, 0);
            var address = Libc.SockAddrUnix.Abstract(name, out uint length);
            if (listener < 0 || Libc.bind(listener, &address, length) != 0 || Libc.listen(listener, 128) != 0)
            {
                int errno = Libc.LastErrno;
                if (listener >= 0) Libc.close(listener);
                Console.Error.WriteLine($"tibet-run: cannot start the custodian (its socket: {Libc.Describe(errno)}); forked children's large allocations will not be encrypted.");
                return null;
            }
        }
        // The program, which this process becomes: the custodian serves while it lives.
        int program = (int)Libc.syscall(Libc.SYS_pidfd_open, Environment.ProcessId, 0, 0);
        int metricsSocket = metrics?.ListeningDescriptor ?? -1;
        List<int> programOnly = [];
        try
        {
            if (program < 0)
                throw new InvalidOperationException($"pidfd_open: {Libc.Describe(Libc.LastErrno)}");
            // Inherited by the custodian only: close-on-exec again before the program starts.
            foreach (int fd in (int[])[listener, program, metricsSocket, identity])
                if (fd >= 0)
                    Libc.fcntl(fd, Libc.F_SETFD, 0);
            string uids = programUid is uint uid && uid != Libc.geteuid()
                ? $"{Libc.geteuid().ToString(CultureInfo.InvariantCulture)},{uid.ToString(CultureInfo.InvariantCulture)}"
                : Libc.geteuid().ToString(CultureInfo.InvariantCulture);
            // sh starts it in the background and ends: the custodian is init's child (or a
            // subreaper's), not the program's.
            var start = new ProcessStartInfo("/bin/sh") { UseShellExecute = false };
            foreach (string argument in (string[])["-c", "\"$@\" </dev/null >/dev/null &", "sh", Environment.ProcessPath!])
                start.ArgumentList.Add(argument);
            // Run as "dotnet tibet-run.dll": the assembly first when the host is dotnet.
            string assembly = typeof(CustodianProcess).Assembly.Location;
            if (!string.IsNullOrEmpty(assembly) && !Path.GetFileNameWithoutExtension(Environment.ProcessPath!).Equals("tibet-run", StringComparison.Ordinal))
                start.ArgumentList.Add(assembly);
            foreach (string argument in new[]
                     {
                         Argument, Invariant(listener), Invariant(program), uids,
                         Invariant(options.BudgetBytes), options.Cipher, options.Eviction,
                         options.Compression == CompressionMode.Auto ? "auto" : "off",
                         Invariant(options.Verbosity), Invariant(metricsSocket), Invariant(hugePagesAdded), Invariant(identity),
                     })
                start.ArgumentList.Add(argument);
            // The custodian writes the statistics of a program that ended without (StatisticsWitness),
            // and removes the run's own file: only what this tibet-run names, never a
            // variable inherited from whoever started it.
            foreach (string variable in (string[])[StatisticsWitness.JsonVariable, StatisticsWitness.PrivateJsonVariable, StatisticsWitness.SummaryVariable])
                start.Environment.Remove(variable);
            if (options.StatsJsonPath != null)
                start.Environment[StatisticsWitness.JsonVariable] = Path.GetFullPath(options.StatsJsonPath);
            else if (statsWitnessFile != null)
                start.Environment[StatisticsWitness.PrivateJsonVariable] = statsWitnessFile;
            if (options.Stats)
                start.Environment[StatisticsWitness.SummaryVariable] = "1";
            // The custodian writes the audit records of sealed-model decisions.
            if (options.AuditLogPath != null)
                start.Environment[Tibet.Core.Audit.AuditLogLocation.EnvironmentVariable] = options.AuditLogPath;
            // Only its own descriptors reach it: what tibet-run inherited for the program
            // (a supervisor's pipe, LISTEN_FDS, the identity grant) would otherwise be held
            // open by the custodian for as long as a daemon it serves lives.
            programOnly = ProgramOnlyDescriptors([listener, program, metricsSocket, identity]);
            foreach (int fd in programOnly)
                Libc.fcntl(fd, Libc.F_SETFD, Libc.FD_CLOEXEC);
            using Process shell = Process.Start(start)!;
            shell.WaitForExit();
            if (shell.ExitCode != 0)
                throw new InvalidOperationException($"/bin/sh exited {shell.ExitCode}");
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"tibet-run: cannot start the custodian ({e.Message}); forked children's large allocations will not be encrypted.");
            return null;
        }
        finally
        {
            // The custodian holds its own copies; the program must inherit none.
            if (listener >= 0) Libc.close(listener);
            if (program >= 0) Libc.close(program);
            if (metricsSocket >= 0) Libc.fcntl(metricsSocket, Libc.F_SETFD, Libc.FD_CLOEXEC);
            if (identity >= 0) Libc.fcntl(identity, Libc.F_SETFD, Libc.FD_CLOEXEC);
            foreach (int fd in programOnly)
                Libc.fcntl(fd, Libc.F_SETFD, 0);
        }
        return serveChildren ? name : "";
    }

    /// <summary>This process's descriptors above 2 that an exec would pass on (no
    /// close-on-exec), except <paramref name="custodians"/>: the program's, not the custodian's.</summary>
    private static List<int> ProgramOnlyDescriptors(int[] custodians)
    {
        var found = new List<int>();
        foreach (string entry in Directory.GetFiles("/proc/self/fd"))
        {
            if (!int.TryParse(Path.GetFileName(entry), NumberStyles.None, CultureInfo.InvariantCulture, out int fd)
                || fd <= 2 || Array.IndexOf(custodians, fd) >= 0)
                continue;
            int flags = Libc.fcntl(fd, Libc.F_GETFD, 0);
            if (flags >= 0 && (flags & Libc.FD_CLOEXEC) == 0)
                found.Add(fd);
        }
        return found;
    }

    private static string Invariant(long value) => value.ToString(CultureInfo.InvariantCulture);

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

    /// <summary>The custodian's process: serves until the program and every process it
    /// serves have ended.</summary>
    public static int Run(string[] args)
    {
        uint[] uids = [];
        if (args.Length != 12
            || !int.TryParse(args[1], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int registry)
            || !int.TryParse(args[2], NumberStyles.None, CultureInfo.InvariantCulture, out int program)
            || !TryParseUids(args[3], out uids)
            || !long.TryParse(args[4], NumberStyles.None, CultureInfo.InvariantCulture, out long budget)
            || PageCipherSuite.FromName(args[5]) is not { } cipher
            || EvictionPolicy.FromName(args[6]) is not { } eviction
            || args[7] is not ("auto" or "off")
            || !int.TryParse(args[8], NumberStyles.None, CultureInfo.InvariantCulture, out int verbosity)
            || !int.TryParse(args[9], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int metricsSocket)
            || !long.TryParse(args[10], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long hugePagesAdded)
            || !int.TryParse(args[11], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int identity))
        {
            Console.Error.WriteLine("tibet-run: --custodian is tibet-run's own: it is started by tibet-run, with arguments it chooses.");
            return 2;
        }
        // Its own session: a Ctrl-C for the program's process group must not end it while
        // a daemon still needs it.
        Libc.setsid();
        foreach (int fd in (int[])[registry, program, metricsSocket, identity])
            if (fd >= 0)
                Libc.fcntl(fd, Libc.F_SETFD, Libc.FD_CLOEXEC);
        Dumpability.MakeNonDumpable();
        StatisticsWitness? witness = StatisticsWitness.Start(program, ProgramPid(program));
        using MetricsServer? metrics = metricsSocket >= 0 ? MetricsServer.Adopt(metricsSocket) : null;
        IdentityCustody? custody = null;
        try
        {
            if (identity >= 0)
                custody = IdentityCustody.Load(identity, line => Console.Error.WriteLine(line));
            if (registry < 0)
            {
                // Nothing to serve: --metrics and the hugetlb pool, while the program lives.
                metrics?.Serve(ProgramPid(program), 0);
                WaitForExit(program);
                return 0;
            }
            var options = new EngineOptions
            {
                ResidentBudgetBytes = budget,
                Cipher = cipher,
                Eviction = eviction,
                Compression = args[7] == "auto" ? CompressionMode.Auto : CompressionMode.Off,
                TrackWrites = Environment.GetEnvironmentVariable("TIBET_TRACK_WRITES") != "0",
                HandlerPerCpu = Environment.GetEnvironmentVariable("TIBET_HANDLER_PER_CPU") == "1",
                OnAuthenticationFailure = f => Console.Error.WriteLine(
                    $"tibet custodian: page at 0x{f.Address:x} failed authentication ({f.Detail}); its reader receives SIGBUS"),
            };
            var service = new CustodianService(HighDescriptors.MoveAbove(registry), uids, program, options, verbosity, line => Console.Error.WriteLine(line), custody);
            metrics?.Serve(ProgramPid(program), Environment.ProcessId);
            service.Run();
            return 0;
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"tibet custodian: {e.Message}; forked children's faults are answered with SIGBUS, and their new large allocations run unencrypted.");
            return 1;
        }
        finally
        {
            witness?.WaitDone(TimeSpan.FromSeconds(2));
            custody?.Dispose(); // wipes the identity's key
            if (hugePagesAdded >= 0)
                HugePagePool.GiveBack(hugePagesAdded);
        }
    }

    /// <summary>The pid of the process a pidfd refers to (its fdinfo says).</summary>
    private static int ProgramPid(int pidfd)
    {
        foreach (string line in File.ReadLines($"/proc/self/fdinfo/{pidfd}"))
            if (line.StartsWith("Pid:", StringComparison.Ordinal) && int.TryParse(line.AsSpan(4).Trim(), out int pid))
                return pid;
        return 0;
    }

    private static void WaitForExit(int pidfd)
    {
        Libc.PollFd wait = new() { Fd = pidfd, Events = Libc.POLLIN };
        while (Libc.poll(&wait, 1, -1) < 0 && Libc.LastErrno == Libc.EINTR)
        {
        }
    }
}
