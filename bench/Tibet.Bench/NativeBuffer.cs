using System.Runtime.InteropServices;

namespace Tibet.Bench;

/// <summary>
/// Plain anonymous memory, not in any arena: the native baseline. Mapped with
/// MADV_NOHUGEPAGE like the engine's arenas, so both are faulted in 4 KiB at a time.
/// </summary>
internal sealed partial class NativeBuffer : IDisposable
{
    private const int PROT_READ = 0x1, PROT_WRITE = 0x2;
    private const int MAP_PRIVATE = 0x02, MAP_ANONYMOUS = 0x20, MAP_NORESERVE = 0x4000;
    private const int MADV_NOHUGEPAGE = 15;

    public NativeBuffer(long length)
    {
        Length = length;
        Address = mmap(0, (nuint)length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (Address == -1)
            throw new OutOfMemoryException($"mmap of {length} bytes failed (errno {Marshal.GetLastPInvokeError()})");
        madvise(Address, (nuint)length, MADV_NOHUGEPAGE);
    }

    public nint Address { get; private set; }

    public long Length { get; }

    public void Dispose()
    {
        if (Address == 0) return;
        munmap(Address, (nuint)Length);
        Address = 0;
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint mmap(nint addr, nuint length, int prot, int flags, int fd, nint offset);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int munmap(nint addr, nuint length);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int madvise(nint addr, nuint length, int advice);
}
