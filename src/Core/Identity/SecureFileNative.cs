using System.Runtime.InteropServices;

namespace Tibet.Core.Identity;

/// <summary>The libc calls behind <see cref="SecureFile"/>'s opens: .NET's File.OpenHandle
/// follows symbolic links and says nothing about who owns a file.</summary>
internal static unsafe partial class SecureFileNative
{
    public const int O_RDONLY = 0x0;
    public const int O_NOFOLLOW = 0x20000;
    public const int O_CLOEXEC = 0x80000;
    public const int ELOOP = 40;
    public const int ENOENT = 2;
    public const int ENOTDIR = 20;
    public const int EISDIR = 21;
    public const uint S_IFMT = 0xF000;
    public const uint S_IFREG = 0x8000;
    public const uint S_IFDIR = 0x4000;

    /// <summary>struct stat of x86-64 (asm/stat.h); only the fields read here are named.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 144)]
    public struct FileStatus
    {
        [FieldOffset(24)] public uint Mode;
        [FieldOffset(28)] public uint Owner;
    }

    /// <summary>https://man7.org/linux/man-pages/man2/open.2.html</summary>
    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string path, int flags);

    /// <summary>https://man7.org/linux/man-pages/man2/fstat.2.html</summary>
    [LibraryImport("libc", EntryPoint = "fstat", SetLastError = true)]
    public static partial int fstat(int fd, FileStatus* status);

    /// <summary>https://man7.org/linux/man-pages/man2/geteuid.2.html</summary>
    [LibraryImport("libc", EntryPoint = "geteuid")]
    public static partial uint geteuid();

    public static int LastErrno => Marshal.GetLastPInvokeError();

    public static string Describe(int errno) => Marshal.GetPInvokeErrorMessage(errno);
}
