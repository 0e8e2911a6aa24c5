namespace Tibet.Core.Interop;

/// <summary>memfd_secret(2): memory removed from the kernel's direct map, for the
/// identity hand-off of tibet-run. glibc has no wrapper.</summary>
internal static partial class Libc
{
    public const long SYS_memfd_secret = 447; // x86_64, Linux 5.14+

    /// <summary>https://man7.org/linux/man-pages/man2/memfd_secret.2.html, through
    /// syscall(2): a descriptor, or -1 with errno set.</summary>
    public static int memfd_secret(uint flags) => (int)syscall(SYS_memfd_secret, flags, 0, 0);
}
