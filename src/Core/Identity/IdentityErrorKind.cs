namespace Tibet.Core.Identity;

/// <summary>Why an identity, claim or passphrase file could not be read or written.</summary>
public enum IdentityErrorKind
{
    /// <summary>The file, or the directory it should be in, does not exist.</summary>
    NotFound,

    /// <summary>The file already exists and overwriting was not asked for.</summary>
    AlreadyExists,

    /// <summary>A secret file (or passphrase file) can be read by group or others.</summary>
    PermissionsTooOpen,

    /// <summary>The contents are not a well-formed file of the expected kind.</summary>
    Malformed,

    /// <summary>The file is of the expected kind but a format version this build does not know.</summary>
    UnsupportedVersion,

    /// <summary>The secret identity is passphrase-protected and no passphrase was supplied.</summary>
    PassphraseRequired,

    /// <summary>The passphrase does not open the secret identity (or the file was altered).</summary>
    WrongPassphrase,

    /// <summary>The passphrase itself is unusable: empty or too long.</summary>
    InvalidPassphrase,

    /// <summary>The operating system refused to read or write the file.</summary>
    Io,

    /// <summary>The file was reached through a symbolic link, or belongs to another user.</summary>
    InsecureFile,
}
