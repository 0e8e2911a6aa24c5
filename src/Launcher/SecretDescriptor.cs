using System.Runtime.InteropServices;

namespace Tibet.Launcher;

/// <summary>
/// A memfd_secret(2) descriptor holding the identity hand-off for the program. Its pages
/// are locked, never swapped, and removed from the kernel's direct map, so not even the
/// kernel reads them by accident; they can only be mapped, by a process holding the
/// descriptor. It is inherited by the program (no close-on-exec) at a number of 1000 or
/// above (see HighDescriptors), and the program's interposer reads and closes it.
/// </summary>
internal sealed partial class SecretDescriptor : IDisposable
{
    private const long SYS_memfd_secret = 447;
    private const int PROT_READ = 1, PROT_WRITE = 2, MAP_SHARED = 1;
    private static readonly nint MapFailed = -1;

    private SecretDescriptor(int fd) => Descriptor = fd;

    public int Descriptor { get; private set; }

    /// <summary>Copies <paramref name="contents"/> into a new secret descriptor.</summary>
    /// <exception cref="InvalidOperationException">The kernel has no memfd_secret (the message says what to do).</exception>
    public static unsafe SecretDescriptor Create(ReadOnlySpan<byte> contents)
    {
        int fd = (int)syscall(SYS_memfd_secret, 0);
        if (fd < 0)
            throw new InvalidOperationException(
                $"memfd_secret(2) is not available ({Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}), and tibet-run hands identities " +
                "over only through it. It needs Linux 5.14 or later with CONFIG_SECRETMEM (before Linux 6.5 also the boot parameter secretmem.enable=1).");
        // Inherited at the same number: put it above the numbers the program expects free.
        fd = Tibet.Core.Interop.HighDescriptors.MoveAboveInheritable(fd);
        var descriptor = new SecretDescriptor(fd);
        try
        {
            if (ftruncate(fd, contents.Length) != 0)
                throw new InvalidOperationException($"cannot size the secret descriptor: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
            nint map = mmap(0, (nuint)contents.Length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (map == MapFailed)
                throw new InvalidOperationException(
                    $"cannot map the secret descriptor: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())} (memfd_secret memory is locked: raise RLIMIT_MEMLOCK with ulimit -l)");
            contents.CopyTo(new Span<byte>((void*)map, contents.Length));
            munmap(map, (nuint)contents.Length);
            return descriptor;
        }
        catch
        {
            descriptor.Dispose();
            throw;
        }
    }

    /// <summary>Closes tibet-run's copy; the program's copy stays open.</summary>
    public void Dispose()
    {
        if (Descriptor >= 0)
            close(Descriptor);
        Descriptor = -1;
    }

    /// <summary>https://man7.org/linux/man-pages/man2/memfd_secret.2.html (through syscall(2))</summary>
    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial long syscall(long number, long flags);

    /// <summary>https://man7.org/linux/man-pages/man2/ftruncate.2.html</summary>
    [LibraryImport("libc", EntryPoint = "ftruncate", SetLastError = true)]
    private static partial int ftruncate(int fd, long length);

    /// <summary>https://man7.org/linux/man-pages/man2/mmap.2.html</summary>
    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    private static partial nint mmap(nint address, nuint length, int prot, int flags, int fd, long offset);

    /// <summary>https://man7.org/linux/man-pages/man2/munmap.2.html</summary>
    [LibraryImport("libc", EntryPoint = "munmap")]
    private static partial int munmap(nint address, nuint length);

    /// <summary>https://man7.org/linux/man-pages/man2/close.2.html</summary>
    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int close(int fd);
}
