namespace Tibet.Core.Interop;

/// <summary>
/// Whether this process runs in secure-execution mode: the kernel set AT_SECURE because
/// the program it executed changed credentials (set-user-ID, set-group-ID, or file
/// capabilities). The environment then belongs to a less privileged caller, who must not
/// steer what the privileged program writes, or where.
/// </summary>
public static class SecureExecution
{
    /// <summary>True when getauxval(AT_SECURE) is not 0.</summary>
    public static bool IsActive => Libc.getauxval(Libc.AT_SECURE) != 0;
}
