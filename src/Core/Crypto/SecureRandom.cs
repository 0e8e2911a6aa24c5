using Tibet.Core.Interop;

namespace Tibet.Core.Crypto;

/// <summary>
/// Randomness straight from the kernel's getrandom(2).
/// </summary>
/// <remarks>
/// NSec's Key.Create and .NET's RandomNumberGenerator both load OpenSSL into the
/// process (thousands of mallocs in a host we are interposing), so key material is
/// drawn here and handed to Key.Import instead.
/// https://man7.org/linux/man-pages/man2/getrandom.2.html
/// </remarks>
internal static unsafe class SecureRandom
{
    public static void Fill(Span<byte> destination)
    {
        fixed (byte* p = destination)
        {
            int done = 0;
            while (done < destination.Length)
            {
                long n = Libc.syscall(Libc.SYS_getrandom, (long)(p + done), destination.Length - done, 0);
                if (n < 0)
                {
                    int errno = Libc.LastErrno;
                    if (errno == Libc.EINTR) continue;
                    throw new InvalidOperationException("getrandom failed: " + Libc.Describe(errno));
                }
                done += (int)n;
            }
        }
    }

    public static ulong NextUInt64()
    {
        ulong value;
        Fill(new Span<byte>(&value, sizeof(ulong)));
        return value;
    }
}
