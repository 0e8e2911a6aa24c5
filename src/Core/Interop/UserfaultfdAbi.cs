using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>
/// The userfaultfd ABI, transcribed from include/uapi/linux/userfaultfd.h (Linux 6.8+).
/// Names and field order match the header so the two can be diffed by eye; the
/// integration tests compile a C program against the system header and compare every
/// size, offset and ioctl number with the values here.
/// https://docs.kernel.org/admin-guide/mm/userfaultfd.html
/// https://man7.org/linux/man-pages/man2/ioctl_userfaultfd.2.html
/// </summary>
internal static class UserfaultfdAbi
{
    public const ulong UFFD_API = 0xAA;
    private const uint UFFDIO = 0xAA;

    // Events delivered in uffd_msg.event.
    public const byte UFFD_EVENT_PAGEFAULT = 0x12;
    public const byte UFFD_EVENT_FORK = 0x13;
    public const byte UFFD_EVENT_REMAP = 0x14;
    public const byte UFFD_EVENT_REMOVE = 0x15;
    public const byte UFFD_EVENT_UNMAP = 0x16;

    // uffd_msg.arg.pagefault.flags
    public const ulong UFFD_PAGEFAULT_FLAG_WRITE = 1UL << 0;
    public const ulong UFFD_PAGEFAULT_FLAG_WP = 1UL << 1;
    public const ulong UFFD_PAGEFAULT_FLAG_MINOR = 1UL << 2;

    // uffdio_api.features
    public const ulong UFFD_FEATURE_PAGEFAULT_FLAG_WP = 1UL << 0;
    public const ulong UFFD_FEATURE_EVENT_FORK = 1UL << 1;
    public const ulong UFFD_FEATURE_EVENT_REMAP = 1UL << 2;
    public const ulong UFFD_FEATURE_EVENT_REMOVE = 1UL << 3;
    public const ulong UFFD_FEATURE_MISSING_HUGETLBFS = 1UL << 4;
    public const ulong UFFD_FEATURE_MISSING_SHMEM = 1UL << 5;
    public const ulong UFFD_FEATURE_EVENT_UNMAP = 1UL << 6;
    public const ulong UFFD_FEATURE_SIGBUS = 1UL << 7;
    public const ulong UFFD_FEATURE_THREAD_ID = 1UL << 8;
    public const ulong UFFD_FEATURE_MINOR_HUGETLBFS = 1UL << 9;
    public const ulong UFFD_FEATURE_MINOR_SHMEM = 1UL << 10;
    public const ulong UFFD_FEATURE_EXACT_ADDRESS = 1UL << 11;
    public const ulong UFFD_FEATURE_WP_HUGETLBFS_SHMEM = 1UL << 12;
    public const ulong UFFD_FEATURE_WP_UNPOPULATED = 1UL << 13;
    public const ulong UFFD_FEATURE_POISON = 1UL << 14;
    public const ulong UFFD_FEATURE_WP_ASYNC = 1UL << 15;
    public const ulong UFFD_FEATURE_MOVE = 1UL << 16;

    // uffdio_register.mode
    public const ulong UFFDIO_REGISTER_MODE_MISSING = 1UL << 0;
    public const ulong UFFDIO_REGISTER_MODE_WP = 1UL << 1;
    public const ulong UFFDIO_REGISTER_MODE_MINOR = 1UL << 2;

    public const ulong UFFDIO_COPY_MODE_DONTWAKE = 1UL << 0;
    public const ulong UFFDIO_COPY_MODE_WP = 1UL << 1;
    public const ulong UFFDIO_ZEROPAGE_MODE_DONTWAKE = 1UL << 0;
    public const ulong UFFDIO_MOVE_MODE_DONTWAKE = 1UL << 0;
    public const ulong UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES = 1UL << 1;
    public const ulong UFFDIO_POISON_MODE_DONTWAKE = 1UL << 0;
    public const ulong UFFDIO_WRITEPROTECT_MODE_WP = 1UL << 0;
    public const ulong UFFDIO_WRITEPROTECT_MODE_DONTWAKE = 1UL << 1;
    public const int _UFFDIO_WRITEPROTECT = 0x06;

    // Bits of uffdio_register.ioctls: which range ioctls the kernel allows on the range.
    public const int _UFFDIO_WAKE = 0x02;
    public const int _UFFDIO_COPY = 0x03;
    public const int _UFFDIO_ZEROPAGE = 0x04;
    public const int _UFFDIO_MOVE = 0x05;
    public const int _UFFDIO_POISON = 0x08;

    // ioctl numbers: _IOWR/_IOR(UFFDIO, nr, struct), spelled out by IoctlNumber below.
    public static readonly ulong UFFDIO_API = IoWR(0x3F, (uint)sizeof_uffdio_api);
    public static readonly ulong UFFDIO_REGISTER = IoWR(0x00, (uint)sizeof_uffdio_register);
    public static readonly ulong UFFDIO_UNREGISTER = IoR(0x01, (uint)sizeof_uffdio_range);
    public static readonly ulong UFFDIO_WAKE = IoR(0x02, (uint)sizeof_uffdio_range);
    public static readonly ulong UFFDIO_COPY = IoWR(0x03, (uint)sizeof_uffdio_copy);
    public static readonly ulong UFFDIO_ZEROPAGE = IoWR(0x04, (uint)sizeof_uffdio_zeropage);
    public static readonly ulong UFFDIO_MOVE = IoWR(0x05, (uint)sizeof_uffdio_move);
    public static readonly ulong UFFDIO_WRITEPROTECT = IoWR(0x06, (uint)sizeof_uffdio_writeprotect);
    public static readonly ulong UFFDIO_POISON = IoWR(0x08, (uint)sizeof_uffdio_poison);

    /// <summary>/dev/userfaultfd's USERFAULTFD_IOC_NEW = _IO(0xAA, 0x00).</summary>
    public const ulong USERFAULTFD_IOC_NEW = (UFFDIO << 8) | 0x00;

    public static unsafe int sizeof_uffd_msg => sizeof(uffd_msg);
    public static unsafe int sizeof_uffdio_api => sizeof(uffdio_api);
    public static unsafe int sizeof_uffdio_range => sizeof(uffdio_range);
    public static unsafe int sizeof_uffdio_register => sizeof(uffdio_register);
    public static unsafe int sizeof_uffdio_copy => sizeof(uffdio_copy);
    public static unsafe int sizeof_uffdio_zeropage => sizeof(uffdio_zeropage);
    public static unsafe int sizeof_uffdio_move => sizeof(uffdio_move);
    public static unsafe int sizeof_uffdio_writeprotect => sizeof(uffdio_writeprotect);
    public static unsafe int sizeof_uffdio_poison => sizeof(uffdio_poison);

    // asm-generic/ioctl.h: dir:2 | size:14 | type:8 | nr:8, with _IOC_WRITE=1, _IOC_READ=2.
    private static ulong IoWR(uint nr, uint size) => (3UL << 30) | ((ulong)size << 16) | (UFFDIO << 8) | nr;
    private static ulong IoR(uint nr, uint size) => (2UL << 30) | ((ulong)size << 16) | (UFFDIO << 8) | nr;

    /// <summary>struct uffd_msg: 32 bytes, packed in the header.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 32)]
    public struct uffd_msg
    {
        [FieldOffset(0)] public byte @event;
        [FieldOffset(1)] public byte reserved1;
        [FieldOffset(2)] public ushort reserved2;
        [FieldOffset(4)] public uint reserved3;

        // arg.pagefault
        [FieldOffset(8)] public ulong pagefault_flags;
        [FieldOffset(16)] public ulong pagefault_address;
        [FieldOffset(24)] public uint pagefault_feat_ptid;

        // arg.fork
        [FieldOffset(8)] public uint fork_ufd;

        // arg.remap
        [FieldOffset(8)] public ulong remap_from;
        [FieldOffset(16)] public ulong remap_to;
        [FieldOffset(24)] public ulong remap_len;

        // arg.remove (also used by UFFD_EVENT_UNMAP)
        [FieldOffset(8)] public ulong remove_start;
        [FieldOffset(16)] public ulong remove_end;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct uffdio_api
    {
        public ulong api;
        public ulong features;
        public ulong ioctls;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct uffdio_range
    {
        public ulong start;
        public ulong len;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct uffdio_register
    {
        public uffdio_range range;
        public ulong mode;
        public ulong ioctls;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct uffdio_copy
    {
        public ulong dst;
        public ulong src;
        public ulong len;
        public ulong mode;
        public long copy;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct uffdio_zeropage
    {
        public uffdio_range range;
        public ulong mode;
        public long zeropage;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct uffdio_writeprotect
    {
        public uffdio_range range;
        public ulong mode;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct uffdio_move
    {
        public ulong dst;
        public ulong src;
        public ulong len;
        public ulong mode;
        public long move;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct uffdio_poison
    {
        public uffdio_range range;
        public ulong mode;
        public long updated;
    }
}
