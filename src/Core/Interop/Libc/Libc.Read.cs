using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>Reading, writing and seeking a descriptor (unistd.h). None calls malloc.</summary>
internal static unsafe partial class Libc
{
    public const int SEEK_SET = 0;
    public const int SEEK_CUR = 1;
    public const int SEEK_END = 2;

    // https://man7.org/linux/man-pages/man2/read.2.html
    [LibraryImport(Library, EntryPoint = "read", SetLastError = true)]
    public static partial nint read(int fd, void* buf, nuint count);

    // https://man7.org/linux/man-pages/man2/write.2.html
    [LibraryImport(Library, EntryPoint = "write", SetLastError = true)]
    public static partial nint write(int fd, void* buf, nuint count);

    // https://man7.org/linux/man-pages/man2/pread.2.html
    [LibraryImport(Library, EntryPoint = "pread", SetLastError = true)]
    public static partial nint pread(int fd, void* buf, nuint count, long offset);

    // https://man7.org/linux/man-pages/man2/lseek.2.html
    [LibraryImport(Library, EntryPoint = "lseek", SetLastError = true)]
    public static partial long lseek(int fd, long offset, int whence);
}
