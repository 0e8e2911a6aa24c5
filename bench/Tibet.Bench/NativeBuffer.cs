using Tibet.Core.Interop;

namespace Tibet.Bench;

/// <summary>
/// Plain anonymous memory, not in any arena: the native baseline. Mapped with
/// MADV_NOHUGEPAGE like the engine's arenas, so both are faulted in 4 KiB at a time.
/// </summary>
internal sealed class NativeBuffer : IDisposable
{
    public NativeBuffer(long length)
    {
        Length = length;
        Address = Libc.mmap(0, (nuint)length, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE, -1, 0);
        if (Address == Libc.MAP_FAILED)
            throw new OutOfMemoryException($"mmap of {length} bytes failed (errno {Libc.LastErrno})");
        Libc.madvise(Address, (nuint)length, Libc.MADV_NOHUGEPAGE);
    }

    public nint Address { get; private set; }

    public long Length { get; }

    public void Dispose()
    {
        if (Address == 0) return;
        Libc.munmap(Address, (nuint)Length);
        Address = 0;
    }
}
