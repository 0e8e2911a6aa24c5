using Tibet.Core.Interop;

namespace Tibet.IntegrationTests.Support;

/// <summary>Helpers over the syscalls the tests issue themselves, as a program would. The
/// calls are Core's <see cref="Libc"/>.</summary>
internal static class NativeCalls
{
    /// <summary>Pages of the range the kernel has mapped right now.</summary>
    public static unsafe long CountPresentPages(nint address, long length)
    {
        long pages = length / 4096;
        var vec = new byte[pages];
        fixed (byte* v = vec)
        {
            if (Libc.mincore(address, (nuint)length, v) != 0)
                throw new InvalidOperationException("mincore failed: errno " + Libc.LastErrno);
        }
        long present = 0;
        foreach (byte b in vec)
            present += b & 1;
        return present;
    }

    public static void Check(int rc, string what)
    {
        if (rc != 0)
            throw new InvalidOperationException($"{what} failed: {Libc.ErrorMessage(Libc.LastErrno)}");
    }
}
