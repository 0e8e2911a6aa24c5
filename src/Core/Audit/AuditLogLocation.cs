using Tibet.Core.Interop;

namespace Tibet.Core.Audit;

/// <summary>
/// Where the audit log is, in this order: an explicit path; the environment variable
/// <see cref="EnvironmentVariable"/>; for root, <see cref="SystemPath"/>; otherwise
/// $XDG_STATE_HOME/tibet/audit.jsonl (when XDG_STATE_HOME is an absolute path), else
/// ~/.local/state/tibet/audit.jsonl, following the XDG base directory specification.
/// In secure-execution mode (a set-user-ID or set-group-ID program, AT_SECURE) the
/// environment is not consulted: the log is <see cref="SystemPath"/> when the effective
/// user is root, and there is none otherwise.
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
        if (SecureExecution.IsActive)
        {
            // The caller chose the environment; it must not choose where a privileged program writes.
            if (Libc.geteuid() == 0)
                return SystemPath;
            throw new AuditLogException("This program runs set-user-ID or set-group-ID (AT_SECURE), so the environment cannot name its audit log, " +
                $"and only root has a default one ({SystemPath}); it has no audit log, so sealed models stay dead.");
        }
        string? fromEnvironment = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (!string.IsNullOrEmpty(fromEnvironment))
            return fromEnvironment;
        if (Libc.geteuid() == 0)
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
