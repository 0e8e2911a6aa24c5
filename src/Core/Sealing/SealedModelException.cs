namespace Tibet.Core.Sealing;

/// <summary>
/// A file cannot be opened, sealed or unsealed as a sealed model. The one exception type
/// of this namespace for bad files: hostile or corrupt input never surfaces as anything
/// else (I/O failures of the operating system stay <see cref="IOException"/>). The message
/// is one line that says what is wrong and what to do.
/// </summary>
public sealed class SealedModelException : Exception
{
    /// <summary>Creates the exception.</summary>
    public SealedModelException(SealAccessReason reason, string message, Exception? innerException = null)
        : base(message, innerException)
    {
        Reason = reason;
    }

    /// <summary>Which check failed.</summary>
    public SealAccessReason Reason { get; }
}
