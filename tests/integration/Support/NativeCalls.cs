using System.Runtime.InteropServices;

namespace Tibet.IntegrationTests.Support;

/// <summary>The few syscalls the tests issue themselves, as a program would.</summary>
internal static partial class NativeCalls
{
    public const int MADV_DONTNEED = 4;
    public const int MADV_FREE = 8;
    public const int MREMAP_MAYMOVE = 1;

    /// <summary>https://man7.org/linux/man-pages/man2/madvise.2.html</summary>
    [LibraryImport("libc", EntryPoint = "madvise", SetLastError = true)]
    public static partial int madvise(nint addr, nuint length, int advice);

    /// <summary>https://man7.org/linux/man-pages/man2/munmap.2.html</summary>
    [LibraryImport("libc", EntryPoint = "munmap", SetLastError = true)]
    public static partial int munmap(nint addr, nuint length);

    public const int MREMAP_FIXED = 2;
    private const long SYS_mremap = 25;

    /// <summary>https://man7.org/linux/man-pages/man2/mremap.2.html, through syscall(2)
    /// because the libc wrapper is variadic.</summary>
    public static nint mremap(nint oldAddress, nuint oldSize, nuint newSize, int flags, nint newAddress) =>
        (nint)syscall(SYS_mremap, oldAddress, (long)oldSize, (long)newSize, flags, newAddress);

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial long syscall(long number, long a1, long a2, long a3, long a4, long a5);

    /// <summary>https://man7.org/linux/man-pages/man2/mmap.2.html</summary>
    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    public static partial nint mmap(nint addr, nuint length, int prot, int flags, int fd, long offset);

    /// <summary>https://man7.org/linux/man-pages/man2/mincore.2.html</summary>
    [LibraryImport("libc", EntryPoint = "mincore", SetLastError = true)]
    public static unsafe partial int mincore(nint addr, nuint length, byte* vec);

    /// <summary>Pages of the range the kernel has mapped right now.</summary>
    public static unsafe long CountPresentPages(nint address, long length)
    {
        long pages = length / 4096;
        var vec = new byte[pages];
        fixed (byte* v = vec)
        {
            if (mincore(address, (nuint)length, v) != 0)
                throw new InvalidOperationException("mincore failed: errno " + Marshal.GetLastPInvokeError());
        }
        long present = 0;
        foreach (byte b in vec)
            present += b & 1;
        return present;
    }

    public static void Check(int rc, string what)
    {
        if (rc != 0)
            throw new InvalidOperationException($"{what} failed: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
    }
}
