using System.Runtime.InteropServices;
using Tibet.Core.Interop;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Abi;

/// <summary>
/// The libc structs and constants that Libc re-declares (src/Core/Interop/Libc/) equal
/// what gcc reads from glibc's headers.
/// </summary>
public unsafe class LibcAbiTests
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
            ["offsetof_stat.st_rdev"] = (ulong)Marshal.OffsetOf<Libc.Stat>(nameof(Libc.Stat.st_rdev)),
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
            ["S_IFCHR"] = Libc.S_IFCHR,
            ["O_PATH"] = Libc.O_PATH,
            ["LOCK_SH"] = Libc.LOCK_SH,
            ["LOCK_EX"] = Libc.LOCK_EX,
            ["LOCK_NB"] = Libc.LOCK_NB,
            ["LOCK_UN"] = Libc.LOCK_UN,
            ["EINTR"] = Libc.EINTR,
            ["EBADF"] = Libc.EBADF,
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
            ["MAP_PRIVATE"] = Libc.MAP_PRIVATE,
            ["MAP_FIXED"] = Libc.MAP_FIXED,
            ["MAP_ANONYMOUS"] = Libc.MAP_ANONYMOUS,
            ["MAP_NORESERVE"] = Libc.MAP_NORESERVE,
            ["PROT_NONE"] = Libc.PROT_NONE,
            ["PROT_READ"] = Libc.PROT_READ,
            ["PROT_WRITE"] = Libc.PROT_WRITE,
            ["MADV_DONTNEED"] = Libc.MADV_DONTNEED,
            ["MADV_FREE"] = Libc.MADV_FREE,
            ["MADV_NOHUGEPAGE"] = Libc.MADV_NOHUGEPAGE,
            ["MADV_DONTDUMP"] = Libc.MADV_DONTDUMP,
            ["MREMAP_MAYMOVE"] = Libc.MREMAP_MAYMOVE,
            ["MREMAP_FIXED"] = Libc.MREMAP_FIXED,
            ["F_DUPFD"] = Libc.F_DUPFD,
            ["F_GETFD"] = Libc.F_GETFD,
            ["F_SETFD"] = Libc.F_SETFD,
            ["F_DUPFD_CLOEXEC"] = Libc.F_DUPFD_CLOEXEC,
            ["FD_CLOEXEC"] = Libc.FD_CLOEXEC,
            ["sizeof_rlimit"] = (ulong)Marshal.SizeOf<Libc.RLimit>(),
            ["offsetof_rlimit.rlim_max"] = (ulong)Marshal.OffsetOf<Libc.RLimit>(nameof(Libc.RLimit.Maximum)),
            ["RLIMIT_NOFILE"] = Libc.RLIMIT_NOFILE,
            ["RLIMIT_MEMLOCK"] = Libc.RLIMIT_MEMLOCK,
            ["RLIM_INFINITY"] = Libc.RLIM_INFINITY,
            ["PR_GET_DUMPABLE"] = Libc.PR_GET_DUMPABLE,
            ["PR_SET_DUMPABLE"] = Libc.PR_SET_DUMPABLE,
            ["AT_SECURE"] = Libc.AT_SECURE,
            ["EFD_NONBLOCK"] = Libc.EFD_NONBLOCK,
            ["EFD_CLOEXEC"] = Libc.EFD_CLOEXEC,
            ["POLLIN"] = (ulong)Libc.POLLIN,
            ["sizeof_pollfd"] = (ulong)Marshal.SizeOf<Libc.PollFd>(),
            ["SIGBUS"] = Libc.SIGBUS,
            ["SIGPIPE"] = Libc.SIGPIPE,
            ["SYS_tgkill"] = Libc.SYS_tgkill,
            ["SYS_getrandom"] = Libc.SYS_getrandom,
            ["SYS_userfaultfd"] = Libc.SYS_userfaultfd,
            ["SYS_mremap"] = Libc.SYS_mremap,
            ["SYS_memfd_secret"] = Libc.SYS_memfd_secret,
            ["SYS_pidfd_open"] = Libc.SYS_pidfd_open,
            ["ECONNABORTED"] = Libc.ECONNABORTED,
            ["SOCK_STREAM"] = Libc.SOCK_STREAM,
            ["AF_UNIX"] = Libc.AF_UNIX,
            ["SOCK_SEQPACKET"] = Libc.SOCK_SEQPACKET,
            ["SOCK_NONBLOCK"] = Libc.SOCK_NONBLOCK,
            ["SOCK_CLOEXEC"] = Libc.SOCK_CLOEXEC,
            ["SOL_SOCKET"] = Libc.SOL_SOCKET,
            ["SO_PEERCRED"] = Libc.SO_PEERCRED,
            ["SO_TYPE"] = Libc.SO_TYPE,
            ["SO_RCVTIMEO"] = Libc.SO_RCVTIMEO,
            ["SO_SNDTIMEO"] = Libc.SO_SNDTIMEO,
            ["sizeof_timeval"] = (ulong)sizeof(Libc.TimeVal),
            ["MSG_DONTWAIT"] = Libc.MSG_DONTWAIT,
            ["MSG_NOSIGNAL"] = Libc.MSG_NOSIGNAL,
            ["sizeof_sockaddr_un"] = (ulong)sizeof(Libc.SockAddrUnix),
            ["offsetof_sockaddr_un.sun_path"] = (ulong)Marshal.OffsetOf<Libc.SockAddrUnix>(nameof(Libc.SockAddrUnix.Path)),
            ["sizeof_ucred"] = (ulong)Marshal.SizeOf<Libc.UCred>(),
            ["offsetof_ucred.uid"] = (ulong)Marshal.OffsetOf<Libc.UCred>(nameof(Libc.UCred.Uid)),
            ["SCM_RIGHTS"] = Libc.SCM_RIGHTS,
            ["MSG_CMSG_CLOEXEC"] = Libc.MSG_CMSG_CLOEXEC,
            ["MSG_CTRUNC"] = Libc.MSG_CTRUNC,
            ["MFD_CLOEXEC"] = Libc.MFD_CLOEXEC,
            ["sizeof_msghdr"] = (ulong)sizeof(Libc.MsgHdr),
            ["offsetof_msghdr.msg_control"] = (ulong)Marshal.OffsetOf<Libc.MsgHdr>(nameof(Libc.MsgHdr.Control)),
            ["offsetof_msghdr.msg_flags"] = (ulong)Marshal.OffsetOf<Libc.MsgHdr>(nameof(Libc.MsgHdr.Flags)),
            ["sizeof_cmsghdr"] = (ulong)sizeof(Libc.CmsgHdr),
            ["cmsg_space_4_fds"] = Libc.DescriptorControlBytes,
            ["cmsg_len_0"] = (ulong)sizeof(Libc.CmsgHdr),
        };

        HeaderValues.AssertSame(fromHeader, ours);
    }
}
