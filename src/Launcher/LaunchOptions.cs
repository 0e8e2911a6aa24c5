using Tibet.Core.Paging;
using Tibet.Core.Policy;

namespace Tibet.Launcher;

/// <summary>What the user asked tibet-run for, validated.</summary>
internal sealed record LaunchOptions
{
    public long BudgetBytes { get; init; } = ResidentBudget.DefaultBytes;

    /// <summary>True when the user gave no --budget, so the default applies (and is announced).</summary>
    public bool BudgetIsDefault { get; init; } = true;

    /// <summary>-q: no start-up line about the budget.</summary>
    public bool Quiet { get; init; }
    public long ThresholdBytes { get; init; } = 1 << 20;
    public CompressionMode Compression { get; init; } = CompressionMode.Off;
    /// <summary>--huge-pages: the 2 MiB-page budget of read-only model maps (0: off).</summary>
    public long HugePagesBytes { get; init; }
    /// <summary>--eviction: the eviction policy's name (see EvictionPolicy.FromName).</summary>
    public string Eviction { get; init; } = "scan-resistant";
    /// <summary>--cipher: the page cipher's name (see PageCipherSuite.FromName).</summary>
    public string Cipher { get; init; } = "aes-256-gcm";
    /// <summary>--serve: who serves the program's own large anonymous allocations, the
    /// custodian (the default: keys outside the program) or the program's engine (keys
    /// inside). Without a custodian (TIBET_CUSTODIAN=0, or it failed to start, said), the
    /// program's engine does.</summary>
    public bool ServeByCustodian { get; init; } = true;

    /// <summary>Whether --serve was given: "--serve custodian" without a custodian is refused.</summary>
    public bool ServeChosen { get; init; }
    public bool Stats { get; init; }
    public string? StatsJsonPath { get; init; }
    public int Verbosity { get; init; }
    public bool RequireEncryption { get; init; }
    public bool NoInherit { get; init; }
    public string? LibraryOverride { get; init; }
    public string? IdentityPath { get; init; }
    public string? ClaimPath { get; init; }
    public bool InheritIdentity { get; init; }
    public string? PassphraseFile { get; init; }
    public string? AuditLogPath { get; init; }
    public bool Dumpable { get; init; }
    /// <summary>--user NAME: the user COMMAND runs as (tibet-run runs as root).</summary>
    public string? User { get; init; }
    /// <summary>--metrics HOST:PORT: where the Prometheus text of the live statistics is served.</summary>
    public System.Net.IPEndPoint? Metrics { get; init; }
    public required string[] Command { get; init; }
}
