namespace Tibet.Core.Audit;

/// <summary>
/// Where the audit log is, in this order: an explicit path; the environment variable
/// <see cref="EnvironmentVariable"/>; for root, <see cref="SystemPath"/>; otherwise
/// $XDG_STATE_HOME/tibet/audit.jsonl (when XDG_STATE_HOME is an absolute path), else
/// ~/.local/state/tibet/audit.jsonl, following the XDG base directory specification.
/// </summary>
public static class AuditLogLocation
{
    /// <summary>Names the audit log for tibet and for programs run under tibet-run.</summary>
    public const string EnvironmentVariable = "TIBET_AUDIT_LOG";

    /// <summary>Root's default log.</summary>
    public const string SystemPath = "/var/log/tibet/audit.jsonl";

    /// <summary>One sentence for help texts.</summary>
    public const string Description =
        "Default: $TIBET_AUDIT_LOG; else /var/log/tibet/audit.jsonl for root; else $XDG_STATE_HOME/tibet/audit.jsonl; else ~/.local/state/tibet/audit.jsonl.";

    /// <summary>The log to use.</summary>
    /// <exception cref="AuditLogException">No path was given and neither XDG_STATE_HOME nor HOME is set.</exception>
    public static string Resolve(string? explicitPath = null)
    {
        if (!string.IsNullOrEmpty(explicitPath))
            return explicitPath;
        string? fromEnvironment = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (!string.IsNullOrEmpty(fromEnvironment))
            return fromEnvironment;
        if (AuditNative.geteuid() == 0)
            return SystemPath;
        string? stateHome = Environment.GetEnvironmentVariable("XDG_STATE_HOME");
        if (!string.IsNullOrEmpty(stateHome) && Path.IsPathRooted(stateHome))
            return Path.Combine(stateHome, "tibet", "audit.jsonl");
        string? home = Environment.GetEnvironmentVariable("HOME");
        if (!string.IsNullOrEmpty(home))
            return Path.Combine(home, ".local", "state", "tibet", "audit.jsonl");
        throw new AuditLogException($"No audit log location: HOME and XDG_STATE_HOME are unset. Set {EnvironmentVariable} to the log's path.");
    }
}
