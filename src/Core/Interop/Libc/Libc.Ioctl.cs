using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>ioctl(2), for userfaultfd's requests (their numbers and structs are in
/// <see cref="UserfaultfdAbi"/>). Does not call malloc.</summary>
internal static unsafe partial class Libc
{
    // https://man7.org/linux/man-pages/man2/ioctl.2.html
    [LibraryImport(Library, EntryPoint = "ioctl", SetLastError = true)]
    public static partial int ioctl(int fd, ulong request, void* argp);
}
