using Tibet.Core.Interop;

namespace Tibet.Core.Storage;

/// <summary>
/// Anonymous mappings straight from the kernel. The engine keeps ciphertext, page
/// tables and scratch space here rather than in the managed heap (whose pages the GC
/// never returns promptly) or in malloc (which the interposer forwards to the host's
/// allocator, and which a faulting thread may be holding locks in).
/// </summary>
internal static unsafe class KernelMemory
{
    public static nint Map(nuint length)
    {
        nint p = Libc.mmap(0, length, Libc.PROT_READ | Libc.PROT_WRITE,
            Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE, -1, 0);
        if (p == Libc.MAP_FAILED)
            throw new OutOfMemoryException($"mmap of {length} bytes failed: {Libc.Describe(Libc.LastErrno)}");
        return p;
    }

    /// <summary>Maps <paramref name="length"/> bytes aligned to <paramref name="alignment"/>
    /// (a power of two) by over-mapping and trimming both ends.</summary>
    public static nint MapAligned(nuint length, nuint alignment)
    {
        nint raw = Map(length + alignment);
        nint aligned = (nint)(((nuint)raw + alignment - 1) & ~(alignment - 1));
        nuint head = (nuint)(aligned - raw);
        nuint tail = alignment - head;
        if (head != 0) Libc.munmap(raw, head);
        if (tail != 0) Libc.munmap(aligned + (nint)length, tail);
        return aligned;
    }

    public static void Unmap(nint address, nuint length)
    {
        if (address != 0 && Libc.munmap(address, length) != 0)
            throw new InvalidOperationException($"munmap failed: {Libc.Describe(Libc.LastErrno)}");
    }
}
