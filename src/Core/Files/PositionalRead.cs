using Tibet.Core.Interop;

namespace Tibet.Core.Files;

/// <summary>pread until the request is filled or the file ends.</summary>
internal static unsafe class PositionalRead
{
    /// <summary>Reads up to <paramref name="count"/> bytes at <paramref name="offset"/>,
    /// retrying on EINTR and short reads. Returns the bytes read (fewer only at the end of
    /// the file) or a negative errno. Allocation-free: the fault path uses it.</summary>
    /// <summary>A read of nothing, on the calling thread: the first call of a P/Invoke
    /// resolves its import, which allocates, and must not happen on a fault handler.</summary>
    public static void Prepare(int fd)
    {
        byte none;
        Libc.pread(fd, &none, 0, 0);
    }

    /// <summary>Fills <paramref name="destination"/> from <paramref name="offset"/>, zeros
    /// past the end of the file: the bytes read, or a negative errno.</summary>
    public static long FillFrom(int fd, Span<byte> destination, long offset)
    {
        long done;
        fixed (byte* d = destination)
            done = Fully(fd, d, destination.Length, offset);
        if (done >= 0)
            destination[(int)done..].Clear();
        return done;
    }

    public static long Fully(int fd, byte* buffer, int count, long offset)
    {
        int done = 0;
        while (done < count)
        {
            nint n = Libc.pread(fd, buffer + done, (nuint)(count - done), offset + done);
            if (n < 0 && Libc.LastErrno == Libc.EINTR)
                continue;
            if (n < 0)
                return -Libc.LastErrno;
            if (n == 0)
                break;
            done += (int)n;
        }
        return done;
    }
}
