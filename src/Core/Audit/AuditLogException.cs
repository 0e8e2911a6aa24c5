namespace Tibet.Core.Audit;

/// <summary>An audit log could not be read or appended to. The message names the file,
/// what is wrong and what to do.</summary>
public sealed class AuditLogException : Exception
{
    /// <summary>Creates the exception.</summary>
    public AuditLogException(string message, Exception? innerException = null)
        : base(message, innerException)
    {
    }
}
