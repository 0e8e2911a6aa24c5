namespace Tibet.Core.Identity;

/// <summary>The outcome of <see cref="KeyWrap.TryUnwrap"/>.</summary>
public enum KeyUnwrapResult
{
    /// <summary>The data key was recovered.</summary>
    Success,

    /// <summary>The bytes are not a wrapped key (magic, length or ephemeral key wrong).</summary>
    Malformed,

    /// <summary>A wrapped key of a format version this build does not read.</summary>
    UnsupportedVersion,

    /// <summary>The key was wrapped to another identity (its recipient fingerprint differs).</summary>
    WrongRecipient,

    /// <summary>Addressed to this identity, but it does not open: the wrapped key was
    /// altered, or the context differs from the one it was wrapped with.</summary>
    AuthenticationFailed,
}
