using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>Mappings: mmap, munmap, mremap, madvise, mincore (sys/mman.h). None calls
/// malloc; all may run on the fault path.</summary>
internal static unsafe partial class Libc
{
    public const int PROT_NONE = 0x0;
    public const int PROT_READ = 0x1;
    public const int PROT_WRITE = 0x2;

    public const int MAP_SHARED = 0x01;
    public const int MAP_PRIVATE = 0x02;
    public const int MAP_TYPE = 0x0f;
    public const int MAP_FIXED = 0x10;
    public const int MAP_ANONYMOUS = 0x20;
    public const int MAP_NORESERVE = 0x4000;
    public const int MAP_HUGETLB = 0x40000;
    public const int MAP_FIXED_NOREPLACE = 0x100000;
    public static readonly nint MAP_FAILED = -1;

    public const int MADV_DONTNEED = 4;
    public const int MADV_FREE = 8;
    public const int MADV_DONTFORK = 10;
    public const int MADV_HUGEPAGE = 14;
    public const int MADV_NOHUGEPAGE = 15;
    public const int MADV_DONTDUMP = 16;
    public const int MADV_COLLAPSE = 25;

    public const int MREMAP_MAYMOVE = 1;
    public const int MREMAP_FIXED = 2;
    public const long SYS_mremap = 25; // x86_64

    // https://man7.org/linux/man-pages/man2/mmap.2.html
    [LibraryImport(Library, EntryPoint = "mmap", SetLastError = true)]
    public static partial nint mmap(nint addr, nuint length, int prot, int flags, int fd, long offset);

    // https://man7.org/linux/man-pages/man2/munmap.2.html
    [LibraryImport(Library, EntryPoint = "munmap", SetLastError = true)]
    public static partial int munmap(nint addr, nuint length);

    // https://man7.org/linux/man-pages/man2/mprotect.2.html
    [LibraryImport(Library, EntryPoint = "mprotect", SetLastError = true)]
    public static partial int mprotect(nint addr, nuint length, int prot);

    // https://man7.org/linux/man-pages/man2/madvise.2.html
    [LibraryImport(Library, EntryPoint = "madvise", SetLastError = true)]
    public static partial int madvise(nint addr, nuint length, int advice);

    // https://man7.org/linux/man-pages/man2/mincore.2.html
    [LibraryImport(Library, EntryPoint = "mincore", SetLastError = true)]
    public static partial int mincore(nint addr, nuint length, byte* vec);

    /// <summary>https://man7.org/linux/man-pages/man2/mremap.2.html, through syscall(2)
    /// because the libc wrapper is variadic (new_address is passed only with MREMAP_FIXED).</summary>
    public static nint mremap(nint oldAddress, nuint oldSize, nuint newSize, int flags, nint newAddress) =>
        (nint)syscall(SYS_mremap, oldAddress, (long)oldSize, (long)newSize, flags, newAddress);
}
