using System.Runtime.InteropServices;
using Tibet.Core.Interop;
using Tibet.IntegrationTests.Support;
using Xunit;
using static Tibet.Core.Interop.UserfaultfdAbi;

namespace Tibet.IntegrationTests.Abi;

/// <summary>
/// Every size, offset and number of UserfaultfdAbi equals what gcc reads from the
/// kernel's own header.
/// </summary>
public class UserfaultfdAbiTests
{
    [Fact]
    public void Declarations_match_the_kernel_header()
    {
        var fromHeader = HeaderValues.Compile("uffd_abi.c", "-isystem", RepoPaths.KernelHeaders);

        var ours = new Dictionary<string, ulong>
        {
            ["sizeof_uffd_msg"] = (ulong)sizeof_uffd_msg,
            ["sizeof_uffdio_api"] = (ulong)sizeof_uffdio_api,
            ["sizeof_uffdio_range"] = (ulong)sizeof_uffdio_range,
            ["sizeof_uffdio_register"] = (ulong)sizeof_uffdio_register,
            ["sizeof_uffdio_copy"] = (ulong)sizeof_uffdio_copy,
            ["sizeof_uffdio_zeropage"] = (ulong)sizeof_uffdio_zeropage,
            ["sizeof_uffdio_writeprotect"] = (ulong)sizeof_uffdio_writeprotect,
            ["sizeof_uffdio_move"] = (ulong)sizeof_uffdio_move,
            ["sizeof_uffdio_poison"] = (ulong)sizeof_uffdio_poison,
            ["offsetof_uffd_msg.event"] = Offset<uffd_msg>(nameof(uffd_msg.@event)),
            ["offsetof_uffd_msg.pagefault_flags"] = Offset<uffd_msg>(nameof(uffd_msg.pagefault_flags)),
            ["offsetof_uffd_msg.pagefault_address"] = Offset<uffd_msg>(nameof(uffd_msg.pagefault_address)),
            ["offsetof_uffd_msg.pagefault_feat_ptid"] = Offset<uffd_msg>(nameof(uffd_msg.pagefault_feat_ptid)),
            ["offsetof_uffd_msg.fork_ufd"] = Offset<uffd_msg>(nameof(uffd_msg.fork_ufd)),
            ["offsetof_uffd_msg.remap_from"] = Offset<uffd_msg>(nameof(uffd_msg.remap_from)),
            ["offsetof_uffd_msg.remap_to"] = Offset<uffd_msg>(nameof(uffd_msg.remap_to)),
            ["offsetof_uffd_msg.remap_len"] = Offset<uffd_msg>(nameof(uffd_msg.remap_len)),
            ["offsetof_uffd_msg.remove_start"] = Offset<uffd_msg>(nameof(uffd_msg.remove_start)),
            ["offsetof_uffd_msg.remove_end"] = Offset<uffd_msg>(nameof(uffd_msg.remove_end)),
            ["offsetof_uffdio_register.mode"] = Offset<uffdio_register>(nameof(uffdio_register.mode)),
            ["offsetof_uffdio_register.ioctls"] = Offset<uffdio_register>(nameof(uffdio_register.ioctls)),
            ["offsetof_uffdio_copy.copy"] = Offset<uffdio_copy>(nameof(uffdio_copy.copy)),
            ["offsetof_uffdio_zeropage.zeropage"] = Offset<uffdio_zeropage>(nameof(uffdio_zeropage.zeropage)),
            ["offsetof_uffdio_move.move"] = Offset<uffdio_move>(nameof(uffdio_move.move)),
            ["offsetof_uffdio_poison.updated"] = Offset<uffdio_poison>(nameof(uffdio_poison.updated)),
            ["UFFD_API"] = UFFD_API,
            ["UFFDIO_API"] = UserfaultfdAbi.UFFDIO_API,
            ["UFFDIO_REGISTER"] = UFFDIO_REGISTER,
            ["UFFDIO_UNREGISTER"] = UFFDIO_UNREGISTER,
            ["UFFDIO_WAKE"] = UFFDIO_WAKE,
            ["UFFDIO_COPY"] = UFFDIO_COPY,
            ["UFFDIO_ZEROPAGE"] = UFFDIO_ZEROPAGE,
            ["UFFDIO_MOVE"] = UFFDIO_MOVE,
            ["UFFDIO_WRITEPROTECT"] = UFFDIO_WRITEPROTECT,
            ["UFFDIO_POISON"] = UFFDIO_POISON,
            ["USERFAULTFD_IOC_NEW"] = USERFAULTFD_IOC_NEW,
            ["UFFD_EVENT_PAGEFAULT"] = UFFD_EVENT_PAGEFAULT,
            ["UFFD_EVENT_FORK"] = UFFD_EVENT_FORK,
            ["UFFD_EVENT_REMAP"] = UFFD_EVENT_REMAP,
            ["UFFD_EVENT_REMOVE"] = UFFD_EVENT_REMOVE,
            ["UFFD_EVENT_UNMAP"] = UFFD_EVENT_UNMAP,
            ["UFFD_PAGEFAULT_FLAG_WRITE"] = UFFD_PAGEFAULT_FLAG_WRITE,
            ["UFFD_FEATURE_PAGEFAULT_FLAG_WP"] = UFFD_FEATURE_PAGEFAULT_FLAG_WP,
            ["UFFD_FEATURE_EVENT_FORK"] = UFFD_FEATURE_EVENT_FORK,
            ["UFFD_FEATURE_EVENT_REMAP"] = UFFD_FEATURE_EVENT_REMAP,
            ["UFFD_FEATURE_EVENT_REMOVE"] = UFFD_FEATURE_EVENT_REMOVE,
            ["UFFD_FEATURE_EVENT_UNMAP"] = UFFD_FEATURE_EVENT_UNMAP,
            ["UFFD_FEATURE_THREAD_ID"] = UFFD_FEATURE_THREAD_ID,
            ["UFFD_FEATURE_POISON"] = UFFD_FEATURE_POISON,
            ["UFFD_FEATURE_MOVE"] = UFFD_FEATURE_MOVE,
            ["UFFDIO_REGISTER_MODE_MISSING"] = UFFDIO_REGISTER_MODE_MISSING,
            ["UFFDIO_REGISTER_MODE_WP"] = UFFDIO_REGISTER_MODE_WP,
            ["UFFDIO_MOVE_MODE_DONTWAKE"] = UFFDIO_MOVE_MODE_DONTWAKE,
            ["_UFFDIO_COPY"] = _UFFDIO_COPY,
            ["_UFFDIO_ZEROPAGE"] = _UFFDIO_ZEROPAGE,
            ["_UFFDIO_WAKE"] = _UFFDIO_WAKE,
            ["_UFFDIO_MOVE"] = _UFFDIO_MOVE,
        };

        HeaderValues.AssertSame(fromHeader, ours);
    }

    private static ulong Offset<T>(string field) => (ulong)Marshal.OffsetOf<T>(field);
}
