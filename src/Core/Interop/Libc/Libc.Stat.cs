using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>File status (sys/stat.h).</summary>
internal static unsafe partial class Libc
{
    public const int S_IFMT = 0xF000;
    public const int S_IFCHR = 0x2000;
    public const int S_IFDIR = 0x4000;
    public const int S_IFREG = 0x8000;

    /// <summary>struct stat of x86-64 (asm/stat.h); only the fields tibet reads are
    /// named. The ABI test compares size and offsets with the C header.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 144)]
    public struct Stat
    {
        [FieldOffset(0)] public ulong st_dev;
        [FieldOffset(8)] public ulong st_ino;
        [FieldOffset(24)] public uint st_mode;
        [FieldOffset(28)] public uint st_uid;
        [FieldOffset(40)] public ulong st_rdev;
        [FieldOffset(48)] public long st_size;
        [FieldOffset(88)] public long st_mtim_sec;
        [FieldOffset(96)] public long st_mtim_nsec;
    }

    // https://man7.org/linux/man-pages/man2/fstat.2.html
    [LibraryImport(Library, EntryPoint = "fstat", SetLastError = true)]
    public static partial int fstat(int fd, Stat* buf);
}
