namespace Tibet.Cli;

/// <summary>The exit status of every tibet command.</summary>
internal static class ExitCodes
{
    /// <summary>Done; for verify commands: valid, intact.</summary>
    public const int Success = 0;

    /// <summary>A verify command ran and the answer is no: the claim is not valid, or the
    /// audit log is broken.</summary>
    public const int Rejected = 1;

    /// <summary>The command could not do its work: bad usage, a missing or unreadable
    /// file, refused permissions, a wrong passphrase.</summary>
    public const int Failed = 2;
}
