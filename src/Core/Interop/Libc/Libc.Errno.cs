using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

internal static partial class Libc
{
    // errno values (asm-generic/errno-base.h, asm-generic/errno.h):
    // https://man7.org/linux/man-pages/man3/errno.3.html
    public const int EPERM = 1;
    public const int ENOENT = 2;
    public const int ESRCH = 3;
    public const int EINTR = 4;
    public const int EIO = 5;
    public const int EBADF = 9;
    public const int EAGAIN = 11;
    public const int EWOULDBLOCK = EAGAIN;
    public const int ENOMEM = 12;
    public const int EACCES = 13;
    public const int EFAULT = 14;
    public const int EBUSY = 16;
    public const int EEXIST = 17;
    public const int ENOTDIR = 20;
    public const int EINVAL = 22;
    public const int ENOSYS = 38;
    public const int ELOOP = 40;
    public const int EBADMSG = 74;
    public const int EOPNOTSUPP = 95;
    public const int ECONNABORTED = 103;

    /// <summary>The errno the last import declared with <c>SetLastError = true</c> left on
    /// this thread. Reads a thread-local; allocates nothing.</summary>
    public static int LastErrno => Marshal.GetLastPInvokeError();

    /// <summary>What <paramref name="errno"/> means, in strerror(3)'s words.</summary>
    public static string ErrorMessage(int errno) => Marshal.GetPInvokeErrorMessage(errno);

    /// <summary><see cref="ErrorMessage"/> followed by the number.</summary>
    public static string Describe(int errno) => ErrorMessage(errno) + $" (errno {errno})";
}
