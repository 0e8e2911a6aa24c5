using Tibet.Core.Interop;

namespace Tibet.Core.Audit;

/// <summary>
/// The audit log's helpers over the libc calls it makes (declared in <see cref="Libc"/>).
/// .NET's FileStream cannot be used: it has no O_APPEND, and it takes its own non-blocking
/// flock for FileShare emulation, which fails (instead of waiting) while another process
/// holds the log's lock.
/// </summary>
internal static unsafe class AuditNative
{
    /// <summary>flock, retried when a signal interrupts the wait.</summary>
    public static int Lock(int fd, int operation)
    {
        int result;
        while ((result = Libc.flock(fd, operation)) < 0 && Libc.LastErrno == Libc.EINTR)
        {
        }
        return result;
    }

    /// <summary>fsync, retried when a signal interrupts it.</summary>
    public static int FsyncRetrying(int fd)
    {
        int result;
        while ((result = Libc.fsync(fd)) < 0 && Libc.LastErrno == Libc.EINTR)
        {
        }
        return result;
    }

    /// <summary>"a character device", "a FIFO"...: what a file that is not regular is.</summary>
    public static string DescribeType(uint mode) => (mode & Libc.S_IFMT) switch
    {
        0x2000 => "a character device",
        0x6000 => "a block device",
        0x1000 => "a FIFO",
        0xC000 => "a socket",
        0x4000 => "a directory",
        0xA000 => "a symbolic link",
        _ => $"a file of type 0{Convert.ToString((mode & Libc.S_IFMT) >> 12, 8)}",
    };

    /// <summary>Reads exactly <paramref name="destination"/>.Length bytes at
    /// <paramref name="offset"/>, or fewer only at end of file; -1 on error.</summary>
    public static long ReadAt(int fd, Span<byte> destination, long offset)
    {
        long total = 0;
        fixed (byte* p = destination)
        {
            while (total < destination.Length)
            {
                nint read = Libc.pread(fd, p + total, (nuint)(destination.Length - total), offset + total);
                if (read < 0)
                {
                    if (Libc.LastErrno == Libc.EINTR) continue;
                    return -1;
                }
                if (read == 0)
                    break;
                total += read;
            }
        }
        return total;
    }
}
