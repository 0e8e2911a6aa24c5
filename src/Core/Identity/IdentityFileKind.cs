namespace Tibet.Core.Identity;

/// <summary>What kind of identity file a path holds.</summary>
public enum IdentityFileKind
{
    /// <summary>A .pub file: public keys only.</summary>
    Public,

    /// <summary>A .id file whose secret keys are stored unencrypted (protected by its mode 0600).</summary>
    Secret,

    /// <summary>A .id file whose secret keys are encrypted under a passphrase.</summary>
    ProtectedSecret,
}
