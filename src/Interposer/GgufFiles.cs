using Tibet.Core.Gguf;
using Tibet.Core.Interop;

namespace Tibet.Interposer;

/// <summary>Tells a GGUF model file from any other file a program maps.</summary>
internal static unsafe class GgufFiles
{
    /// <summary>True when <paramref name="fd"/> is a regular file whose first four bytes
    /// are the GGUF magic. Read with pread, so the program's file offset is untouched.</summary>
    public static bool StartsWithMagic(int fd)
    {
        Libc.Stat status;
        if (Libc.fstat(fd, &status) != 0 || (status.st_mode & Libc.S_IFMT) != Libc.S_IFREG)
            return false;
        byte* start = stackalloc byte[4];
        return Libc.pread(fd, start, 4, 0) == 4 && GgufFile.HasMagic(new ReadOnlySpan<byte>(start, 4));
    }
}
