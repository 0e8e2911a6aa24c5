using Tibet.Core.Interop;

namespace Tibet.Launcher;

/// <summary>
/// A memfd_secret(2) descriptor holding the identity hand-off for the program. Its pages
/// are locked, never swapped, and removed from the kernel's direct map, so not even the
/// kernel reads them by accident; they can only be mapped, by a process holding the
/// descriptor. It is inherited by the program (no close-on-exec) at a number of 1000 or
/// above (see HighDescriptors), and the program's interposer reads and closes it.
/// </summary>
internal sealed class SecretDescriptor : IDisposable
{
    private SecretDescriptor(int fd) => Descriptor = fd;

    public int Descriptor { get; private set; }

    /// <summary>Copies <paramref name="contents"/> into a new secret descriptor.</summary>
    /// <exception cref="InvalidOperationException">The kernel has no memfd_secret (the message says what to do).</exception>
    public static unsafe SecretDescriptor Create(ReadOnlySpan<byte> contents)
    {
        int fd = Libc.memfd_secret(0);
        if (fd < 0)
            throw new InvalidOperationException(
                $"memfd_secret(2) is not available ({Libc.ErrorMessage(Libc.LastErrno)}), and tibet-run hands identities " +
                "over only through it. It needs Linux 5.14 or later with CONFIG_SECRETMEM (before Linux 6.5 also the boot parameter secretmem.enable=1).");
        // Inherited at the same number: put it above the numbers the program expects free.
        fd = HighDescriptors.MoveAboveInheritable(fd);
        var descriptor = new SecretDescriptor(fd);
        try
        {
            if (Libc.ftruncate(fd, contents.Length) != 0)
                throw new InvalidOperationException($"cannot size the secret descriptor: {Libc.ErrorMessage(Libc.LastErrno)}");
            nint map = Libc.mmap(0, (nuint)contents.Length, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, fd, 0);
            if (map == Libc.MAP_FAILED)
                throw new InvalidOperationException(
                    $"cannot map the secret descriptor: {Libc.ErrorMessage(Libc.LastErrno)} (memfd_secret memory is locked: raise RLIMIT_MEMLOCK with ulimit -l)");
            contents.CopyTo(new Span<byte>((void*)map, contents.Length));
            Libc.munmap(map, (nuint)contents.Length);
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
            Libc.close(Descriptor);
        Descriptor = -1;
    }
}
