using System.Runtime.InteropServices;
using Tibet.Core.Interop;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Abi;

/// <summary>
/// The libc struct and constants that Libc re-declares for the GGUF map path, the audit
/// log and the identity files equal what gcc reads from glibc's headers.
/// </summary>
public class LibcAbiTests
{
    [Fact]
    public void Declarations_match_the_glibc_headers()
    {
        var fromHeader = HeaderValues.Compile("libc_abi.c");

        var ours = new Dictionary<string, ulong>
        {
            ["sizeof_stat"] = (ulong)Marshal.SizeOf<Libc.Stat>(),
            ["offsetof_stat.st_mode"] = (ulong)Marshal.OffsetOf<Libc.Stat>(nameof(Libc.Stat.st_mode)),
            ["offsetof_stat.st_uid"] = (ulong)Marshal.OffsetOf<Libc.Stat>(nameof(Libc.Stat.st_uid)),
            ["offsetof_stat.st_size"] = (ulong)Marshal.OffsetOf<Libc.Stat>(nameof(Libc.Stat.st_size)),
            ["offsetof_stat.st_dev"] = (ulong)Marshal.OffsetOf<Libc.Stat>(nameof(Libc.Stat.st_dev)),
            ["offsetof_stat.st_ino"] = (ulong)Marshal.OffsetOf<Libc.Stat>(nameof(Libc.Stat.st_ino)),
            ["offsetof_stat.st_mtim"] = (ulong)Marshal.OffsetOf<Libc.Stat>(nameof(Libc.Stat.st_mtim_sec)),
            ["O_RDONLY"] = Libc.O_RDONLY,
            ["O_DIRECT"] = Libc.O_DIRECT,
            ["O_CLOEXEC"] = Libc.O_CLOEXEC,
            ["O_RDWR"] = Libc.O_RDWR,
            ["O_CREAT"] = Libc.O_CREAT,
            ["O_APPEND"] = Libc.O_APPEND,
            ["O_NONBLOCK"] = Libc.O_NONBLOCK,
            ["O_NOFOLLOW"] = Libc.O_NOFOLLOW,
            ["S_IFMT"] = Libc.S_IFMT,
            ["S_IFREG"] = Libc.S_IFREG,
            ["S_IFDIR"] = Libc.S_IFDIR,
            ["LOCK_SH"] = Libc.LOCK_SH,
            ["LOCK_EX"] = Libc.LOCK_EX,
            ["LOCK_NB"] = Libc.LOCK_NB,
            ["LOCK_UN"] = Libc.LOCK_UN,
            ["EINTR"] = Libc.EINTR,
            ["ENOENT"] = Libc.ENOENT,
            ["ENOTDIR"] = Libc.ENOTDIR,
            ["ELOOP"] = Libc.ELOOP,
            ["EWOULDBLOCK"] = Libc.EWOULDBLOCK,
            ["POSIX_FADV_DONTNEED"] = Libc.POSIX_FADV_DONTNEED,
            ["SEEK_SET"] = Libc.SEEK_SET,
            ["SEEK_CUR"] = Libc.SEEK_CUR,
            ["SEEK_END"] = Libc.SEEK_END,
            ["MAP_SHARED"] = Libc.MAP_SHARED,
            ["MAP_TYPE"] = Libc.MAP_TYPE,
            ["MAP_FIXED_NOREPLACE"] = Libc.MAP_FIXED_NOREPLACE,
        };

        HeaderValues.AssertSame(fromHeader, ours);
    }
}
