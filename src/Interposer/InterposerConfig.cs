using Tibet.Core.Audit;
using Tibet.Core.Identity;
using Tibet.Core.Paging;
using Tibet.Core.Policy;
using Tibet.Interposer.Sealed;

namespace Tibet.Interposer;

/// <summary>
/// The configuration tibet-run passes through TIBET_* variables. Values are parsed
/// strictly: a malformed one stops the program before main with a line naming it,
/// rather than running with a setting nobody asked for.
/// </summary>
/// <remarks>
/// In secure-execution mode (AT_SECURE: a set-user-ID, set-group-ID or file-capability
/// program) no TIBET_* variable is read at all: the environment belongs to a less
/// privileged caller, who must not choose where the privileged program writes statistics
/// or audit records, nor hand it an identity descriptor or make it dumpable. The
/// interposer then runs with the defaults (see <see cref="Tibet.Core.Interop.SecureExecution"/>).
/// </remarks>
internal sealed record InterposerConfig
{
    public const long DefaultThreshold = 1 << 20;

    /// <summary>The resident budget: TIBET_BUDGET in bytes, or 'unlimited'; the default
    /// when unset (a program preloaded without tibet-run is sealed too).</summary>
    public long BudgetBytes { get; init; } = ResidentBudget.DefaultBytes;
    public long ThresholdBytes { get; init; } = DefaultThreshold;
    public CompressionMode Compression { get; init; } = CompressionMode.Off;
    /// <summary>TIBET_HUGE_PAGES: the budget of read-only model maps served in 2 MiB pages
    /// (tibet-run --huge-pages, which also reserves the pool); 0: off.</summary>
    public long HugePagesBytes { get; init; }
    /// <summary>TIBET_EVICTION: which resident page is sealed first.</summary>
    public Tibet.Core.Paging.Eviction.EvictionPolicy Eviction { get; init; } = Tibet.Core.Paging.Eviction.EvictionPolicy.ScanResistant;
    /// <summary>TIBET_COLLAPSE: 1 (default) collapses fully resident 2 MiB ranges into
    /// transparent huge pages; 0 keeps arenas in 4 KiB pages.</summary>
    public bool CollapseResidentRanges { get; init; } = true;
    /// <summary>TIBET_WHOLE_RANGES: 1 (default) places and evicts model ranges whole under a
    /// full budget too; 0 moves them 4 KiB at a time there (EngineOptions.PlacesRangesUnderPressure).</summary>
    public bool PlacesRangesUnderPressure { get; init; } = true;
    /// <summary>TIBET_PIN_THREADS: 1 (default) pins the handler and the fill worker to two
    /// different CPUs; 0 leaves them to the scheduler (EngineOptions.PinServiceThreads).</summary>
    public bool PinServiceThreads { get; init; } = true;
    /// <summary>TIBET_HANDLER_PER_CPU: 1 runs a handler thread on each CPU, so a fault is
    /// served where it was taken; 0 (default) runs one (EngineOptions.HandlerPerCpu).</summary>
    public bool HandlerPerCpu { get; init; }
    /// <summary>TIBET_TRACK_WRITES: 1 (default) evicts pages not written since their sealed
    /// copy was opened by keeping that copy; 0 seals every evicted page anew.</summary>
    public bool TrackWrites { get; init; } = true;
    /// <summary>TIBET_REFETCH_SOURCE: 1 drops every model map's clean pages when evicted
    /// and reads them from the model file again; 0 seals them in the program's store as any
    /// page; unset (null, the default): only a live sealed model's whose key the custodian
    /// keeps, so that the program holds no key and no copy of it (see Arena.AttachSource).</summary>
    public bool? RefetchSourcePages { get; init; }
    /// <summary>TIBET_CUSTODIAN_INSTALL: 1 (default) has the custodian install a live sealed
    /// model's pages into the program's maps itself (it is handed the engine's userfaultfd);
    /// 0 has it decrypt them in the session's shared window, from which the program copies
    /// them (the way before; kept for comparison, bench/scripts/sealed-custodian.sh).</summary>
    public bool CustodianInstallsPages { get; init; } = true;
    /// <summary>TIBET_CHILD_EVICTION: 1 (default) has forked children's agents take their
    /// clean pages out above the budget; 0 leaves what a child reads resident in it.</summary>
    public bool EvictInChildren { get; init; } = true;
    /// <summary>TIBET_DECRYPT_AHEAD: 2 MiB ranges of a model map brought in ahead of the
    /// program (0-8, default 1; see EngineOptions.DecryptAheadRanges).</summary>
    public int DecryptAheadRanges { get; init; } = 1;
    /// <summary>TIBET_FILL_THREADS: 0 or 1 threads sharing long runs with the handler
    /// (default: 1 with more than one CPU; see EngineOptions.FillThreads).</summary>
    public int? FillThreads { get; init; }
    /// <summary>TIBET_CIPHER: the AEAD that seals pages in RAM.</summary>
    public Tibet.Core.Crypto.PageCipherSuite Cipher { get; init; } = Tibet.Core.Crypto.PageCipherSuite.Aes256Gcm;
    public int Verbosity { get; init; }
    /// <summary>TIBET_STATS_JSON: where the exit statistics go (%p: the pid).</summary>
    public string? StatsJsonPattern { get; init; }
    /// <summary>TIBET_STATS_PID: only this process writes the exit statistics (tibet-run
    /// names the program); null: every process does.</summary>
    public int? StatsPid { get; init; }
    /// <summary>TIBET_STATS_SUMMARY=1: print the summary at exit (tibet-run --stats).</summary>
    public bool StatsSummary { get; init; }
    public bool NoInherit { get; init; }
    public bool RequireEncryption { get; init; }

    /// <summary>The inherited descriptor holding the identity hand-off (TIBET_IDENTITY_FD).</summary>
    public int? IdentityDescriptor { get; init; }

    /// <summary>Keep the identity for programs this one executes (--inherit-identity).</summary>
    public bool InheritIdentity { get; init; }

    /// <summary>The pid of an ancestor that received tibet-run's identity and kept it from
    /// the programs it executed (TIBET_IDENTITY_WITHHELD), for a helpful NoIdentity message.</summary>
    public int? IdentityWithheldBy { get; init; }

    /// <summary>The audit log named by TIBET_AUDIT_LOG; null means the default location.</summary>
    public string? AuditLogPath { get; init; }

    /// <summary>Leave the program dumpable (tibet-run --dumpable, TIBET_DUMPABLE=1), for
    /// debugging: otherwise it is made non-dumpable at start, so that no process of the
    /// same user can read its memory (keys included) through ptrace or /proc/PID/mem.</summary>
    public bool Dumpable { get; init; }

    /// <summary>True when the process runs with AT_SECURE, and the environment was ignored.</summary>
    public bool SecureExecution { get; init; }

    public static InterposerConfig FromEnvironment()
    {
        if (Tibet.Core.Interop.SecureExecution.IsActive)
            return new InterposerConfig { SecureExecution = true };
        return new InterposerConfig
        {
            BudgetBytes = Environment.GetEnvironmentVariable("TIBET_BUDGET") == ResidentBudget.UnlimitedWord
                ? ResidentBudget.Unlimited
                : Bytes("TIBET_BUDGET", ResidentBudget.DefaultBytes, min: 4096),
            ThresholdBytes = Bytes("TIBET_THRESHOLD", DefaultThreshold, min: 4096),
            HugePagesBytes = Bytes("TIBET_HUGE_PAGES", 0, min: 2 << 20),
            Compression = Environment.GetEnvironmentVariable("TIBET_COMPRESSION") switch
            {
                null or "" or "off" => CompressionMode.Off,
                "auto" => CompressionMode.Auto,
                var other => throw new InterposerConfigException($"TIBET_COMPRESSION='{other}' is not 'off' or 'auto'"),
            },
            Eviction = Environment.GetEnvironmentVariable("TIBET_EVICTION") is { Length: > 0 } eviction
                ? Tibet.Core.Paging.Eviction.EvictionPolicy.FromName(eviction)
                  ?? throw new InterposerConfigException($"TIBET_EVICTION='{eviction}' is not 'scan-resistant' or 'fifo'")
                : Tibet.Core.Paging.Eviction.EvictionPolicy.ScanResistant,
            Cipher = Environment.GetEnvironmentVariable("TIBET_CIPHER") is { Length: > 0 } cipher
                ? Tibet.Core.Crypto.PageCipherSuite.FromName(cipher)
                  ?? throw new InterposerConfigException($"TIBET_CIPHER='{cipher}' is not {Tibet.Core.Crypto.PageCipherSuite.Names}")
                : Tibet.Core.Crypto.PageCipherSuite.Aes256Gcm,
            CollapseResidentRanges = Integer("TIBET_COLLAPSE", 1, 0, 1) == 1,
            PlacesRangesUnderPressure = Integer("TIBET_WHOLE_RANGES", 1, 0, 1) == 1,
            PinServiceThreads = Integer("TIBET_PIN_THREADS", 1, 0, 1) == 1,
            HandlerPerCpu = Integer("TIBET_HANDLER_PER_CPU", 0, 0, 1) == 1,
            TrackWrites = Integer("TIBET_TRACK_WRITES", 1, 0, 1) == 1,
            RefetchSourcePages = Environment.GetEnvironmentVariable("TIBET_REFETCH_SOURCE") is { Length: > 0 } ? Integer("TIBET_REFETCH_SOURCE", 0, 0, 1) == 1 : null,
            CustodianInstallsPages = Integer("TIBET_CUSTODIAN_INSTALL", 1, 0, 1) == 1,
            EvictInChildren = Integer("TIBET_CHILD_EVICTION", 1, 0, 1) == 1,
            DecryptAheadRanges = (int)Integer("TIBET_DECRYPT_AHEAD", 1, 0, 8),
            FillThreads = Environment.GetEnvironmentVariable("TIBET_FILL_THREADS") is { Length: > 0 } ? (int)Integer("TIBET_FILL_THREADS", 0, 0, 1) : null,
            Verbosity = (int)Integer("TIBET_VERBOSE", 0, 0, 2),
            StatsJsonPattern = Environment.GetEnvironmentVariable("TIBET_STATS_JSON") is { Length: > 0 } path ? path : null,
            StatsPid = Environment.GetEnvironmentVariable("TIBET_STATS_PID") is { Length: > 0 } ? (int)Integer("TIBET_STATS_PID", 0, 1, int.MaxValue) : null,
            StatsSummary = Integer("TIBET_STATS_SUMMARY", 0, 0, 1) == 1,
            NoInherit = Integer("TIBET_NO_INHERIT", 0, 0, 1) == 1,
            RequireEncryption = Integer("TIBET_REQUIRE_ENCRYPTION", 0, 0, 1) == 1,
            IdentityDescriptor = Environment.GetEnvironmentVariable(IdentityHandOff.DescriptorVariable) is { Length: > 0 }
                ? (int)Integer(IdentityHandOff.DescriptorVariable, 0, 3, 1 << 20)
                : null,
            InheritIdentity = Integer("TIBET_INHERIT_IDENTITY", 0, 0, 1) == 1,
            IdentityWithheldBy = Environment.GetEnvironmentVariable(ProcessIdentity.WithheldVariable) is { Length: > 0 }
                ? (int)Integer(ProcessIdentity.WithheldVariable, 0, 1, int.MaxValue)
                : null,
            AuditLogPath = Environment.GetEnvironmentVariable(AuditLogLocation.EnvironmentVariable) is { Length: > 0 } log ? log : null,
            Dumpable = Integer("TIBET_DUMPABLE", 0, 0, 1) == 1,
        };
    }

    private static long Bytes(string name, long fallback, long min)
    {
        string? text = Environment.GetEnvironmentVariable(name);
        if (string.IsNullOrEmpty(text))
            return fallback;
        // The sizes tibet-run accepts (tibet-run itself passes bytes), for those who preload by hand.
        if (!Tibet.Core.Policy.SizeParser.TryParse(text, out long value) || value < min)
            throw new InterposerConfigException($"{name}='{Shorten(text)}' must be {Tibet.Core.Policy.SizeParser.Syntax}, at least {min} bytes");
        return value;
    }

    private static long Integer(string name, long fallback, long min, long max)
    {
        string? text = Environment.GetEnvironmentVariable(name);
        if (string.IsNullOrEmpty(text))
            return fallback;
        if (!long.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long value) || value < min || value > max)
            throw new InterposerConfigException($"{name}='{Shorten(text)}' must be a number from {min} to {max}");
        return value;
    }

    private static string Shorten(string text) => text.Length > 40 ? text[..40] + "…" : text;
}

internal sealed class InterposerConfigException(string message) : Exception(message);
