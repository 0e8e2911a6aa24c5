using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>
/// mlock(2) with its result checked. tibet locks the few buffers that plaintext passes
/// through (the fault handler's inject and seal buffers, file windows, sealed-model
/// scratch), so that they never reach swap. Under a small RLIMIT_MEMLOCK, and without
/// CAP_IPC_LOCK, the lock fails; the buffer still works, but it may be swapped out. That
/// is said once per process on stderr, and every failure is counted.
/// </summary>
/// <remarks>tibet-run raises the soft RLIMIT_MEMLOCK to the hard limit before it starts
/// the program, so the line appears only when the hard limit itself is too small. Nothing
/// here allocates: a buffer may be locked on the fault path.</remarks>
public static unsafe class MemoryLocking
{
    private static long _failures;
    private static long _unlockedBytes;
    private static int _announced;

    /// <summary>Failed mlock calls in this process.</summary>
    public static long Failures => Interlocked.Read(ref _failures);

    /// <summary>Bytes of plaintext buffers left unlocked (swappable).</summary>
    public static long UnlockedBytes => Interlocked.Read(ref _unlockedBytes);

    /// <summary>Locks [<paramref name="address"/>, + <paramref name="length"/>); on failure
    /// counts it, says so once, and returns -1 with errno set, like mlock.</summary>
    public static int Lock(nint address, nuint length)
    {
        if (Libc.mlock_unchecked(address, length) == 0)
            return 0;
        int errno = Libc.LastErrno;
        Interlocked.Increment(ref _failures);
        Interlocked.Add(ref _unlockedBytes, (long)length);
        if (Interlocked.Exchange(ref _announced, 1) == 0)
            Announce(length, errno);
        Marshal.SetLastPInvokeError(errno);
        return -1;
    }

    private static void Announce(nuint length, int errno)
    {
        Libc.RLimit limit;
        bool known = Libc.getrlimit(Libc.RLIMIT_MEMLOCK, &limit) == 0;
        Span<byte> line = stackalloc byte[512];
        int at = 0;
        Append(line, ref at, "tibet: mlock of a "u8);
        Append(line, ref at, (ulong)length >> 10);
        Append(line, ref at, " KiB plaintext buffer failed (errno "u8);
        Append(line, ref at, (ulong)errno);
        if (known)
        {
            Append(line, ref at, ", RLIMIT_MEMLOCK "u8);
            if (limit.Current == Libc.RLIM_INFINITY) Append(line, ref at, "unlimited"u8);
            else { Append(line, ref at, limit.Current >> 10); Append(line, ref at, " KiB"u8); }
        }
        Append(line, ref at, "): it and any later ones stay unlocked, so plaintext passing through them may be swapped out; "u8);
        Append(line, ref at, "raise the limit (ulimit -l; tibet-run raises the soft limit to the hard one) to lock them.\n"u8);
        fixed (byte* p = line)
            Libc.write(2, p, (nuint)at);
    }

    private static void Append(Span<byte> line, ref int at, ReadOnlySpan<byte> text)
    {
        int n = Math.Min(text.Length, line.Length - at);
        text[..n].CopyTo(line[at..]);
        at += n;
    }

    private static void Append(Span<byte> line, ref int at, ulong value)
    {
        if (value.TryFormat(line[at..], out int written, default, System.Globalization.CultureInfo.InvariantCulture))
            at += written;
    }
}
