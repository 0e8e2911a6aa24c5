using Tibet.Core.Interop;
using static Tibet.Core.Interop.UserfaultfdAbi;

namespace Tibet.Core.Paging;

/// <summary>
/// One userfaultfd descriptor and the ioctls the engine issues on it.
/// </summary>
/// <remarks>
/// The range operations return 0 or a positive errno and never throw: the fault path
/// decides what an error means. Partial progress is reported through <c>done</c>,
/// as the kernel reports it (uffdio_copy.copy, uffdio_move.move).
/// </remarks>
internal sealed unsafe class Userfaultfd : IDisposable
{
    public const int PageSize = 4096;
    private int _fd;

    private Userfaultfd(int fd) => _fd = fd;

    public int Descriptor => _fd;

    /// <summary>Asks the kernel which features it offers, on a throw-away descriptor
    /// (UFFDIO_API may be issued only once per descriptor).</summary>
    public static KernelFeatures Probe()
    {
        int fd = OpenDescriptor();
        try
        {
            uffdio_api api = new() { api = UFFD_API, features = 0 };
            if (Libc.ioctl(fd, UFFDIO_API, &api) != 0)
                throw new UserfaultfdUnavailableException($"UFFDIO_API failed: {Libc.Describe(Libc.LastErrno)}");
            return new KernelFeatures(api.features);
        }
        finally
        {
            Libc.close(fd);
        }
    }

    /// <summary>Takes ownership of a descriptor the kernel handed us (a forked child's).</summary>
    public static Userfaultfd Adopt(int descriptor) => new(HighDescriptors.MoveAbove(descriptor));

    public static Userfaultfd Open(ulong features)
    {
        int fd = OpenDescriptor();
        uffdio_api api = new() { api = UFFD_API, features = features };
        if (Libc.ioctl(fd, UFFDIO_API, &api) != 0)
        {
            int errno = Libc.LastErrno;
            // Fork events need CAP_SYS_PTRACE of whoever issues UFFDIO_API, which a program
            // run as another user lacks (tibet-run --user); the custodian has it.
            if (errno == Libc.EPERM && Custodian.CustodianClient.EnableFeatures(fd, features) == 0)
                return new Userfaultfd(fd);
            Libc.close(fd);
            throw new UserfaultfdUnavailableException(
                $"UFFDIO_API refused features 0x{features:x}: {Libc.Describe(errno)}");
        }
        return new Userfaultfd(fd);
    }

    private static int OpenDescriptor()
    {
        long fd = Libc.syscall(Libc.SYS_userfaultfd, Libc.O_CLOEXEC | Libc.O_NONBLOCK, 0, 0);
        if (fd >= 0)
            return HighDescriptors.MoveAbove((int)fd);
        int errno = Libc.LastErrno;
        if (errno == Libc.ENOSYS)
            throw new UserfaultfdUnavailableException(
                "userfaultfd is not available: this kernel was built without CONFIG_USERFAULTFD. " +
                "Run on a kernel that has it (any mainstream distribution kernel since Linux 4.3).");

        // Without CAP_SYS_PTRACE and with vm.unprivileged_userfaultfd=0 the syscall
        // refuses; /dev/userfaultfd grants the same descriptor to whoever may open it, or
        // holds a descriptor of it opened by who may (tibet-run --user hands one over).
        if (InheritedDevice() is int inherited)
        {
            int viaInherited = Libc.ioctl(inherited, USERFAULTFD_IOC_NEW, (void*)(Libc.O_CLOEXEC | Libc.O_NONBLOCK));
            if (viaInherited >= 0)
                return HighDescriptors.MoveAbove(viaInherited);
        }
        int dev = Libc.open("/dev/userfaultfd", Libc.O_RDWR | Libc.O_CLOEXEC);
        if (dev >= 0)
        {
            int viaDevice = Libc.ioctl(dev, USERFAULTFD_IOC_NEW, (void*)(Libc.O_CLOEXEC | Libc.O_NONBLOCK));
            Libc.close(dev);
            if (viaDevice >= 0)
                return HighDescriptors.MoveAbove(viaDevice);
        }
        throw new UserfaultfdUnavailableException(
            $"userfaultfd is not permitted for this process ({Libc.Describe(errno)}). " +
            "Run as root, or allow it for unprivileged users with `sysctl -w vm.unprivileged_userfaultfd=1`, " +
            "or give this user read-write access to /dev/userfaultfd.");
    }

    /// <summary>The variable naming an inherited descriptor of /dev/userfaultfd (tibet-run
    /// --user opens it as root for a program that runs as another user).</summary>
    public const string DeviceVariable = "TIBET_USERFAULTFD_FD";

    /// <summary>The descriptor <see cref="DeviceVariable"/> names, if it is an open
    /// /dev/userfaultfd (the same device number); never in secure-execution mode, whose
    /// environment belongs to a less privileged caller.</summary>
    private static int? InheritedDevice()
    {
        if (Interop.SecureExecution.IsActive
            || !int.TryParse(Environment.GetEnvironmentVariable(DeviceVariable), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int fd))
            return null;
        Libc.Stat inherited, device;
        int probe = Libc.open("/dev/userfaultfd", Libc.O_PATH | Libc.O_CLOEXEC);
        if (probe < 0)
            return null;
        bool same = Libc.fstat(probe, &device) == 0 && Libc.fstat(fd, &inherited) == 0 && inherited.st_rdev == device.st_rdev
                    && (inherited.st_mode & Libc.S_IFMT) == Libc.S_IFCHR;
        Libc.close(probe);
        return same ? fd : null;
    }

    /// <summary>Registers a range; returns the bitmask of range ioctls the kernel allows.</summary>
    public ulong Register(nint start, nuint length, ulong mode)
    {
        uffdio_register reg = new() { range = new() { start = (ulong)start, len = length }, mode = mode };
        if (Libc.ioctl(_fd, UFFDIO_REGISTER, &reg) != 0)
            throw new InvalidOperationException(
                $"UFFDIO_REGISTER of {length} bytes at 0x{start:x} (mode {mode}) failed: {Libc.Describe(Libc.LastErrno)}");
        return reg.ioctls;
    }

    public int Unregister(nint start, nuint length)
    {
        uffdio_range range = new() { start = (ulong)start, len = length };
        return Libc.ioctl(_fd, UFFDIO_UNREGISTER, &range) == 0 ? 0 : Libc.LastErrno;
    }

    /// <summary>Copies <paramref name="length"/> bytes into missing pages and wakes the
    /// threads waiting on them.</summary>
    public int Copy(nint destination, nint source, nuint length, out long done) => Copy(destination, source, length, 0, out done);

    /// <summary>UFFDIO_COPY with <paramref name="mode"/> (UFFDIO_COPY_MODE_WP installs the
    /// pages write-protected: a write to them is reported as a write-protect fault).</summary>
    public int Copy(nint destination, nint source, nuint length, ulong mode, out long done)
    {
        uffdio_copy copy = new() { dst = (ulong)destination, src = (ulong)source, len = length, mode = mode };
        int rc = Libc.ioctl(_fd, UFFDIO_COPY, &copy);
        done = copy.copy > 0 ? copy.copy : 0;
        return rc == 0 ? 0 : ErrnoOf(copy.copy);
    }

    public int ZeroPage(nint destination, nuint length)
    {
        uffdio_zeropage zero = new() { range = new() { start = (ulong)destination, len = length }, mode = 0 };
        int rc = Libc.ioctl(_fd, UFFDIO_ZEROPAGE, &zero);
        return rc == 0 ? 0 : ErrnoOf(zero.zeropage);
    }

    /// <summary>Moves present pages from <paramref name="source"/> (any anonymous
    /// writable mapping) to <paramref name="destination"/> (a range registered on this
    /// descriptor) without waking anyone.</summary>
    public int Move(nint destination, nint source, nuint length, out long done)
    {
        uffdio_move move = new()
        {
            dst = (ulong)destination, src = (ulong)source, len = length, mode = UFFDIO_MOVE_MODE_DONTWAKE,
        };
        int rc = Libc.ioctl(_fd, UFFDIO_MOVE, &move);
        done = move.move > 0 ? move.move : 0;
        return rc == 0 ? 0 : ErrnoOf(move.move);
    }

    /// <summary>Marks pages poisoned and wakes their waiters, who then get SIGBUS.</summary>
    public int Poison(nint destination, nuint length)
    {
        uffdio_poison poison = new() { range = new() { start = (ulong)destination, len = length }, mode = 0 };
        int rc = Libc.ioctl(_fd, UFFDIO_POISON, &poison);
        return rc == 0 ? 0 : ErrnoOf(poison.updated);
    }

    /// <summary>Sets (<paramref name="protect"/>) or clears write protection on a range
    /// registered in write-protect mode; clearing wakes the writers waiting on it.</summary>
    public int WriteProtect(nint start, nuint length, bool protect)
    {
        uffdio_writeprotect wp = new() { range = new() { start = (ulong)start, len = length }, mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0 };
        return Libc.ioctl(_fd, UFFDIO_WRITEPROTECT, &wp) == 0 ? 0 : Libc.LastErrno;
    }

    public int Wake(nint start, nuint length)
    {
        uffdio_range range = new() { start = (ulong)start, len = length };
        return Libc.ioctl(_fd, UFFDIO_WAKE, &range) == 0 ? 0 : Libc.LastErrno;
    }

    /// <summary>Reads pending messages without blocking; returns how many were read.</summary>
    public int ReadMessages(uffd_msg* buffer, int capacity)
    {
        while (true)
        {
            nint n = Libc.read(_fd, buffer, (nuint)(capacity * sizeof(uffd_msg)));
            if (n >= 0)
                return (int)(n / sizeof(uffd_msg));
            int errno = Libc.LastErrno;
            if (errno == Libc.EINTR) continue;
            if (errno == Libc.EAGAIN) return 0;
            throw new InvalidOperationException($"read from userfaultfd failed: {Libc.Describe(errno)}");
        }
    }

    public void Dispose()
    {
        int fd = Interlocked.Exchange(ref _fd, -1);
        if (fd >= 0) Libc.close(fd);
    }

    // The kernel stores -errno in the result field when nothing was done, and reports
    // partial progress as EAGAIN with a positive count; errno itself is the fallback.
    private static int ErrnoOf(long result) => result < 0 ? (int)-result : Libc.LastErrno;
}
