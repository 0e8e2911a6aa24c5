using System.Globalization;
using Tibet.Core.Audit;
using Tibet.Core.Identity;
using Tibet.Core.Paging;
using Tibet.Core.Policy;

namespace Tibet.Launcher;

/// <summary>
/// The environment the program starts with: LD_PRELOAD and the TIBET_* settings the
/// interposer reads. The launcher's own environment is never changed.
/// </summary>
internal static class ChildEnvironment
{
    /// <summary>The variables the interposer reads; any inherited ones are replaced.</summary>
    public static readonly string[] OwnVariables =
    [
        "TIBET_BUDGET", "TIBET_THRESHOLD", "TIBET_COMPRESSION", "TIBET_VERBOSE", "TIBET_STATS_JSON", "TIBET_STATS_PID", "TIBET_STATS_SUMMARY",
        "TIBET_NO_INHERIT", "TIBET_REQUIRE_ENCRYPTION", IdentityHandOff.DescriptorVariable, "TIBET_INHERIT_IDENTITY",
        "TIBET_IDENTITY_WITHHELD", "TIBET_DUMPABLE", ServeVariable, CustodianProcess.SocketVariable, CustodianProcess.UidVariable, Tibet.Core.Paging.Userfaultfd.DeviceVariable,
    ];

    /// <summary>"custodian": the program's own large anonymous allocations are served by the
    /// custodian (native/served.c, read by the shim).</summary>
    public const string ServeVariable = "TIBET_SERVE";

    /// <param name="programPid">The program's pid (tibet-run's own: it executes the program):
    /// only the program writes --stats-json and prints --stats, not what it starts.</param>
    public static void Apply(IDictionary<string, string?> environment, LaunchOptions options, string library, int programPid)
    {
        foreach (string name in OwnVariables)
            environment.Remove(name);
        // DOTNET_* and COMPlus_* configure a .NET runtime; the one inside libtibet.so must
        // not be steered by settings meant for some other .NET program.
        foreach (string name in environment.Keys.Where(k => k.StartsWith("DOTNET_", StringComparison.Ordinal) || k.StartsWith("COMPlus_", StringComparison.Ordinal)).ToList())
            environment.Remove(name);

        string? existing = environment.TryGetValue("LD_PRELOAD", out string? value) ? value : null;
        environment["LD_PRELOAD"] = string.IsNullOrWhiteSpace(existing) ? library : library + " " + existing;
        environment["TIBET_BUDGET"] = options.BudgetBytes == ResidentBudget.Unlimited ? ResidentBudget.UnlimitedWord : Invariant(options.BudgetBytes);
        environment["TIBET_THRESHOLD"] = Invariant(options.ThresholdBytes);
        environment["TIBET_COMPRESSION"] = options.Compression == CompressionMode.Auto ? "auto" : "off";
        environment["TIBET_EVICTION"] = options.Eviction;
        environment["TIBET_CIPHER"] = options.Cipher;
        if (options.HugePagesBytes > 0)
            environment["TIBET_HUGE_PAGES"] = Invariant(options.HugePagesBytes);
        else
            environment.Remove("TIBET_HUGE_PAGES");
        environment["TIBET_VERBOSE"] = Invariant(options.Verbosity);
        if (options.StatsJsonPath != null)
            environment["TIBET_STATS_JSON"] = Path.GetFullPath(options.StatsJsonPath);
        if (options.Stats)
            environment["TIBET_STATS_SUMMARY"] = "1";
        if (options.Stats || options.StatsJsonPath != null)
            environment["TIBET_STATS_PID"] = Invariant(programPid);
        environment["TIBET_NO_INHERIT"] = options.NoInherit ? "1" : "0";
        environment["TIBET_REQUIRE_ENCRYPTION"] = options.RequireEncryption ? "1" : "0";
        environment["TIBET_DUMPABLE"] = options.Dumpable ? "1" : "0";
        environment[ServeVariable] = options.ServeByCustodian ? "custodian" : "program";
        if (options.AuditLogPath != null)
            environment[AuditLogLocation.EnvironmentVariable] = options.AuditLogPath;
    }

    /// <summary>Names the inherited descriptor that holds the program's identity: the
    /// custodian's grant, or the hand-off itself (see Tibet.Core.Identity.CustodianGrant).</summary>
    public static void ApplyIdentity(IDictionary<string, string?> environment, LaunchOptions options, int identityDescriptor)
    {
        environment[IdentityHandOff.DescriptorVariable] = Invariant(identityDescriptor);
        environment["TIBET_INHERIT_IDENTITY"] = options.InheritIdentity ? "1" : "0";
    }

    private static string Invariant(long value) => value.ToString(CultureInfo.InvariantCulture);
}
