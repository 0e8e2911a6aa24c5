namespace Tibet.Core.Identity;

/// <summary>
/// The one exception type of the identity layer for files and passphrases: every
/// problem with an identity, claim or passphrase file (missing, too open, corrupt,
/// wrong passphrase) surfaces as this, with a message that names the file, says what
/// is wrong and what to do about it. Parsing hostile input never throws anything else.
/// </summary>
public sealed class IdentityException : Exception
{
    /// <summary>Creates the exception.</summary>
    public IdentityException(IdentityErrorKind kind, string message, Exception? innerException = null)
        : base(message, innerException)
    {
        Kind = kind;
    }

    /// <summary>What went wrong, for callers that react differently per case.</summary>
    public IdentityErrorKind Kind { get; }
}
