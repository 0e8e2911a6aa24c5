using Tibet.Core.Identity;
using Tibet.Core.Interop;
using Tibet.Interposer.Native;

namespace Tibet.Interposer.Sealed;

// Inside this assembly, the bare name Identity would mean the namespace.
using Identity = Tibet.Core.Identity.Identity;

/// <summary>
/// The identity and claim this process presents when it opens a sealed model, as
/// tibet-run handed them over through an inherited descriptor: a grant, with which the
/// custodian decides (it keeps the identity; the usual case), or the hand-off itself (no
/// custodian: TIBET_CUSTODIAN=0). Without --identity there is none, and every sealed
/// model is dead material.
/// </summary>
internal sealed unsafe class ProcessIdentity
{
    /// <summary>Set for executed programs by a process that kept the identity from them.</summary>
    public const string WithheldVariable = "TIBET_IDENTITY_WITHHELD";

    private ProcessIdentity(Identity? identity, Claim? claim, int? withheldBy = null, PublicIdentity? granted = null, byte[]? grantToken = null)
    {
        Identity = identity;
        Claim = claim;
        WithheldBy = withheldBy;
        Granted = granted;
        GrantToken = grantToken;
    }

    /// <summary>The identity the custodian keeps for this process (tibet-run gave a grant,
    /// <see cref="CustodianGrant"/>): decisions are the custodian's. Null otherwise.</summary>
    public PublicIdentity? Granted { get; }

    /// <summary>The grant's token, shown to the custodian with each request (pinned).</summary>
    public byte[]? GrantToken { get; }

    /// <summary>The identity this process presents, whoever holds its secret.</summary>
    public Tibet.Core.Identity.Fingerprint? Fingerprint => Identity?.Fingerprint ?? Granted?.Fingerprint;

    public static ProcessIdentity None { get; } = new(null, null);

    /// <summary>When this process has no identity because an ancestor under tibet-run
    /// received it and did not pass it on: that ancestor's pid.</summary>
    public int? WithheldBy { get; }

    /// <summary>What to add to a NoIdentity message: why there is none, and the fix.</summary>
    public string WithheldHint => WithheldBy is int pid
        ? $" tibet-run did give an identity, to process {pid}, which executed this program without passing it on; run tibet-run with --inherit-identity so that executed programs get it too."
        : "";

    /// <summary>Null when none was given.</summary>
    public Identity? Identity { get; }

    /// <summary>Null when none was given.</summary>
    public Claim? Claim { get; }

    /// <summary>
    /// Reads the hand-off from the descriptor named by the configuration. Unless the
    /// identity is to be inherited, the descriptor is closed and its variable removed, so
    /// that programs this one executes never hold the identity.
    /// </summary>
    /// <exception cref="InterposerConfigException">The descriptor does not hold a hand-off.</exception>
    public static ProcessIdentity Load(InterposerConfig config)
    {
        if (config.IdentityDescriptor is not int fd)
            return config.IdentityWithheldBy is int ancestor ? new ProcessIdentity(null, null, ancestor) : None;
        string source = $"{IdentityHandOff.DescriptorVariable}={fd}";
        try
        {
            Libc.Stat status;
            if (Libc.fstat(fd, &status) != 0)
                throw new InterposerConfigException($"{source} is not an open descriptor ({Libc.Describe(Libc.LastErrno)})");
            if (status.st_size <= 0 || status.st_size > IdentityHandOff.MaxSize)
                throw new InterposerConfigException($"{source} holds {status.st_size} bytes, not an identity hand-off from tibet-run");
            // Mapped, not read: tibet-run's memfd_secret memory can only be mapped.
            nint map = Libc.mmap(0, (nuint)status.st_size, Libc.PROT_READ, Libc.MAP_SHARED, fd, 0);
            if (map == Libc.MAP_FAILED)
                throw new InterposerConfigException($"{source} cannot be mapped ({Libc.Describe(Libc.LastErrno)}); it is not an identity hand-off from tibet-run");
            try
            {
                var contents = new ReadOnlySpan<byte>((void*)map, (int)status.st_size);
                if (CustodianGrant.LooksLikeGrant(contents))
                {
                    var (granted, token) = CustodianGrant.Decode(contents, source);
                    return new ProcessIdentity(null, null, granted: granted, grantToken: token);
                }
                var (identity, claim) = IdentityHandOff.Open(contents, source);
                return new ProcessIdentity(identity, claim);
            }
            catch (IdentityException e)
            {
                throw new InterposerConfigException(e.Message.TrimEnd('.'));
            }
            finally
            {
                Libc.munmap(map, (nuint)status.st_size);
            }
        }
        finally
        {
            if (!config.InheritIdentity)
            {
                Libc.close(fd);
                Libc.unsetenv(IdentityHandOff.DescriptorVariable);
                Libc.setenv(WithheldVariable, Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture), 1);
            }
        }
    }
}
