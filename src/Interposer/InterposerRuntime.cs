using Tibet.Core.Audit;
using Tibet.Core.Identity;
using Tibet.Core.Interop;
using Tibet.Core.Paging;
using Tibet.Core.Paging.Huge;
using Tibet.Interposer.Native;
using Tibet.Interposer.Sealed;

namespace Tibet.Interposer;

/// <summary>
/// Start-up, shutdown and error reporting of the interposer inside a host program.
/// </summary>
internal static unsafe class InterposerRuntime
{
    private static InterposerConfig _config = new();
    private static int _failuresReported;

    /// <summary>Why the engine did not start, when the whole process runs unencrypted.</summary>
    private static PlaintextReason? _wholeProcessUnencrypted;

    /// <summary>Null until the engine runs; the shim forwards everything meanwhile.</summary>
    public static Redirector? Redirector { get; private set; }

    /// <summary>Sealed models this process opens or maps; null until the engine runs.</summary>
    public static SealedFiles? SealedFiles { get; private set; }

    public static bool Start()
    {
        // Whatever opens a descriptor during start (the runtime's /dev/urandom, libsodium's
        // loading, the engine's userfaultfds and eventfd) lands at 1000 or above, out of
        // the program's way (see HighDescriptors).
        using var lowNumbers = Tibet.Core.Interop.HighDescriptors.ReserveBelowFloor();
        _ = HashCode.Combine(0); // the runtime opens its random source now, not later at a low number
        try
        {
            _config = InterposerConfig.FromEnvironment();
            Shim.SetPolicy(_config.RequireEncryption ? 1 : 0);
        }
        catch (InterposerConfigException e)
        {
            Shim.WriteError($"tibet: {e.Message}. Set it through tibet-run, or unset it.");
            Libc._exit(2);
            return false;
        }
        // Before any key exists in this process: no process of the same user may read its
        // memory through ptrace or /proc/PID/mem (tibet-run --dumpable keeps it readable).
        if (!_config.Dumpable && Tibet.Core.Interop.Dumpability.MakeNonDumpable() is int dumpableError and not 0)
            Shim.WriteError($"tibet: cannot make pid {Environment.ProcessId} non-dumpable (prctl: errno {dumpableError}); " +
                                    "processes of the same user may read its memory.");
        ProcessIdentity identity;
        try
        {
            // Before anything else can fail: the descriptor is closed whatever happens next.
            if (_config.IdentityDescriptor != null)
                SodiumLoader.Install(); // the identity's keys are libsodium keys
            identity = ProcessIdentity.Load(_config);
        }
        catch (Exception e) when (e is InterposerConfigException or InvalidOperationException)
        {
            Shim.WriteError($"tibet: {e.Message}. Refusing to run.");
            Libc._exit(2);
            return false;
        }
        if (_config.NoInherit)
            StripOwnEnvironment();

        try
        {
            SodiumLoader.Install();
            KernelFeatures features = PageEngine.ProbeKernel();
            long budget = _config.BudgetBytes;
            if (budget != EngineOptions.Unlimited && !features.CanEvict)
            {
                Refuse(string.Join("; ", features.Shortcomings()), "the resident budget is not enforced");
                budget = EngineOptions.Unlimited;
            }
            var engine = PageEngine.Create(new EngineOptions
            {
                ResidentBudgetBytes = budget,
                Compression = _config.Compression,
                Eviction = _config.Eviction,
                Cipher = _config.Cipher,
                CollapseResidentRanges = _config.CollapseResidentRanges,
                PlacesRangesUnderPressure = _config.PlacesRangesUnderPressure,
                PinServiceThreads = _config.PinServiceThreads,
                HandlerPerCpu = _config.HandlerPerCpu,
                TrackWrites = _config.TrackWrites,
                EvictInChildren = _config.EvictInChildren,
                DecryptAheadRanges = _config.DecryptAheadRanges,
                FillThreads = _config.FillThreads ?? (Environment.ProcessorCount > 1 ? 1 : 0),
                ServeForkedChildren = features.EventFork,
                // tibet-run --serve custodian: the custodian serves the large anonymous
                // allocations, this engine the model maps, under one budget.
                BudgetShare = Environment.GetEnvironmentVariable("TIBET_SERVE") == "custodian" ? new ServedBudgetShare() : null,
                OnAuthenticationFailure = f => Shim.WriteError(
                    $"tibet: page at 0x{f.Address:x} was refused ({f.Detail}); its reader receives SIGBUS"),
                // Through the shim's report descriptor, like every other line of tibet's.
                OnHandlerFailure = Shim.WriteError,
            });
            // Forked children start an agent (native/agent.c) that connects to the engine,
            // which then evicts what they read of their inherited arenas.
            if (engine.ServesChildAgents)
                Shim.EnableChildAgents();
            SealedFiles = new SealedFiles(identity, _config, _config.CustodianInstallsPages ? engine.UserfaultfdDescriptor : -1);
            Redirector = new Redirector(engine, _config, SealedFiles, StartHugePages());
            if (_config.Verbosity > 0)
                Shim.WriteError($"tibet: encrypted RAM on for pid {Environment.ProcessId}: threshold {_config.ThresholdBytes} B, " +
                                        $"budget {(budget == EngineOptions.Unlimited ? "unlimited" : budget + " B")}, compression {_config.Compression}, eviction {_config.Eviction.Name}, cipher {_config.Cipher.Name}");
            LiveStatistics.Start(Snapshot);
            return true;
        }
        catch (Exception e)
        {
            if (identity.Identity != null)
            {
                // Without the engine, sealed models would reach the program as raw ciphertext.
                Shim.WriteError($"tibet: {e.Message}. Refusing to run: an identity was given, and sealed models need encrypted RAM.");
                Libc._exit(2);
            }
            _wholeProcessUnencrypted = e is UserfaultfdUnavailableException
                ? PlaintextReason.UserfaultfdMissing : PlaintextReason.ArenaCreationFailed;
            Refuse(e.Message, "the whole process runs unencrypted");
            LiveStatistics.Start(Snapshot); // they say why
            return false;
        }
    }

    /// <summary>The 2 MiB-page service for read-only model maps, when tibet-run asked for it
    /// (--huge-pages) and the pool holds its budget; otherwise null, after one line.</summary>
    private static HugePageService? StartHugePages()
    {
        if (_config.HugePagesBytes == 0)
            return null;
        long needed = _config.HugePagesBytes / HugePageService.HugePageSize;
        long free = HugePageService.FreePoolPages();
        if (free < needed)
        {
            Shim.WriteError($"tibet: pid {Environment.ProcessId}: the hugetlb pool has {free} free 2 MiB pages, {needed} are needed for --huge-pages; " +
                            "model maps are served in 4 KiB pages");
            return null;
        }
        try
        {
            return HugePageService.Start(_config.HugePagesBytes, _config.Eviction, Shim.WriteError, cipher: _config.Cipher);
        }
        catch (Exception e) when (e is UserfaultfdUnavailableException or InvalidOperationException)
        {
            Shim.WriteError($"tibet: 2 MiB pages are unavailable ({e.Message}); model maps are served in 4 KiB pages");
            return null;
        }
    }

    /// <summary>The statistics now: what tibet stats and tibet-run --metrics read while the
    /// program runs, and the same JSON it writes at exit.</summary>
    private static string Snapshot() =>
        ExitStatistics.ToJson(ProcessStats(), _wholeProcessUnencrypted, Redirector?.HugePages?.GetStats());

    /// <summary>What served this process: its own engine, and with TIBET_SERVE=custodian also
    /// the custodian's engine, which serves its large anonymous allocations (the two as one,
    /// see <see cref="Tibet.Core.Diagnostics.EngineStats.Plus"/>; an own engine that served
    /// nothing adds no budget).</summary>
    private static Tibet.Core.Diagnostics.EngineStats? ProcessStats()
    {
        Tibet.Core.Diagnostics.EngineStats? own = Redirector?.Engine.GetStats();
        if (own is not { } mine || Shim.ServesSelf() == 0 || Tibet.Core.Custodian.CustodianClient.ServedStats() is not { } theirs)
            return own;
        if (_config.Verbosity > 1)
            Shim.WriteError($"tibet: pid {Environment.ProcessId}: its own engine {mine.Faults} faults, peak {mine.PeakResidentBytes >> 10} KiB; " +
                            $"the custodian's for it {theirs.Faults} faults, peak {theirs.PeakResidentBytes >> 10} KiB (each counting both, under one budget)");
        return mine.Faults == 0 && mine.PeakResidentBytes == 0 ? theirs : mine.Plus(theirs);
    }

    /// <summary>Writes the statistics at exit, also when the engine never started (they
    /// then say why the process ran unencrypted). The engine is left running: other exit
    /// handlers of the program may still read its memory.</summary>
    public static void Stop()
    {
        HandOver();
        Tibet.Core.Diagnostics.EngineStats? engineStats = ProcessStats();
        // tibet-run names the program's pid (its own, which the program keeps: it executes
        // the program), so that processes the program starts do not write the same file.
        bool ours = _config.StatsPid is not int statsPid || statsPid == Environment.ProcessId;
        string? json = ours && (_config.StatsJsonPattern != null || _config.StatsSummary)
            ? ExitStatistics.ToJson(engineStats, _wholeProcessUnencrypted, Redirector?.HugePages?.GetStats())
            : null;
        if (json != null && _config.StatsJsonPattern is { } pattern)
        {
            string path = pattern.Replace("%p", Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture));
            try
            {
                File.WriteAllText(path, json);
            }
            catch (Exception e)
            {
                Shim.WriteError($"tibet: cannot write statistics to {path}: {e.Message}");
            }
        }
        if (json != null && _config.StatsSummary)
            Tibet.Core.Diagnostics.StatsSummary.Print(json, ProgramName(), Shim.WriteError);
        if (engineStats is { } stats && _config.Verbosity > 0)
            Shim.WriteError($"tibet: pid {Environment.ProcessId}: {stats.Faults} faults (p50 {stats.FaultP50Nanoseconds / 1000.0:F1} µs, " +
                                    $"p99 {stats.FaultP99Nanoseconds / 1000.0:F1} µs), {stats.Evictions} evictions, " +
                                    $"resident {stats.ResidentBytes >> 10} KiB (peak {stats.PeakResidentBytes >> 10} KiB), sealed {stats.SealedBytes >> 10} KiB");
    }

    /// <summary>This process ends (exit, or _exit after a fork) while forked children may
    /// still use memory it serves: see <see cref="PageEngine.HandOverChildren"/>.</summary>
    public static void HandOver()
    {
        if (Redirector is not { } redirector)
            return;
        var (children, pages) = redirector.Engine.HandOverChildren();
        if (children > 0)
            Shim.WriteError($"tibet: pid {Environment.ProcessId} exits while {children} forked child(ren) still use memory it served: " +
                                    $"{pages} sealed page(s) were decrypted into them, since nothing can serve them after this process ends. " +
                                    "That memory is plaintext in the children now.");
    }

    /// <param name="agentFd">The engine's end of the child's agent connection (native/agent.c), or -1.</param>
    public static void Forked(int pid, int agentFd)
    {
        if (Redirector is { } redirector)
            redirector.Engine.ChildForked(pid, agentFd);
        else if (agentFd >= 0)
            Libc.close(agentFd);
    }

    /// <summary>Reports an unexpected failure (the first few in full).</summary>
    public static void Failed(string call, Exception e)
    {
        if (Interlocked.Increment(ref _failuresReported) <= 8)
            Shim.WriteError($"tibet: {call} failed inside tibet ({e.GetType().Name}: {e.Message})");
    }

    /// <summary>Reports an unexpected failure of an allocation or mapping call and answers
    /// it as <see cref="PlaintextFallbacks"/> decides: 0, so that the shim forwards it to
    /// libc (unencrypted, counted and announced), or refused under --require-encryption.</summary>
    public static nint Failed(ReadOnlySpan<byte> call, Exception e, ulong size)
    {
        Failed(System.Text.Encoding.UTF8.GetString(call), e);
        return PlaintextFallbacks.Forward(PlaintextReason.InternalError, call, size);
    }

    private static void Refuse(string reason, string consequence)
    {
        reason = reason.TrimEnd('.');
        if (_config.RequireEncryption)
        {
            Shim.WriteError($"tibet: {reason}. Refusing to run because encryption was required (--require-encryption).");
            Libc._exit(2);
        }
        Shim.WriteError($"tibet: {reason}; {consequence}.");
    }

    /// <summary>The program's first argument, as it was started (for the summary).</summary>
    private static string ProgramName()
    {
        try
        {
            string commandLine = File.ReadAllText("/proc/self/cmdline");
            int end = commandLine.IndexOf('\0');
            return end > 0 ? commandLine[..end] : commandLine;
        }
        catch (IOException)
        {
            return $"pid {Environment.ProcessId}";
        }
    }

    /// <summary>--no-inherit: programs this one executes run without tibet.</summary>
    private static void StripOwnEnvironment()
    {
        Libc.unsetenv("LD_PRELOAD");
        foreach (string name in new[] { "TIBET_BUDGET", "TIBET_THRESHOLD", "TIBET_COMPRESSION", "TIBET_VERBOSE",
                                        "TIBET_STATS_JSON", "TIBET_STATS_PID", "TIBET_STATS_SUMMARY", "TIBET_NO_INHERIT", "TIBET_REQUIRE_ENCRYPTION",
                                        "TIBET_CUSTODIAN_SOCKET", "TIBET_CUSTODIAN_UID", "TIBET_USERFAULTFD_FD", "TIBET_SERVE",
                                        IdentityHandOff.DescriptorVariable, "TIBET_INHERIT_IDENTITY", ProcessIdentity.WithheldVariable,
                                        AuditLogLocation.EnvironmentVariable })
            Libc.unsetenv(name);
    }
}
