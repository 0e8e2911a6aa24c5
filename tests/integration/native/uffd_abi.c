/*
 * Prints the userfaultfd ABI as the kernel headers define it, one "name value" per
 * line, for UserfaultfdAbiTests to compare with src/Core/Interop/UserfaultfdAbi.cs.
 * This must be C: only a C compiler reading <linux/userfaultfd.h> can say what the
 * kernel's structs really look like.
 */
#include <sys/ioctl.h>
#include <linux/userfaultfd.h>
#include <stddef.h>
#include <stdio.h>

#define SIZE(s) printf("sizeof_%s %zu\n", #s, sizeof(struct s))
#define OFF(s, f, name) printf("offsetof_%s.%s %zu\n", #s, name, offsetof(struct s, f))
#define VALUE(c) printf("%s %llu\n", #c, (unsigned long long)(c))

int main(void)
{
    SIZE(uffd_msg);
    SIZE(uffdio_api);
    SIZE(uffdio_range);
    SIZE(uffdio_register);
    SIZE(uffdio_copy);
    SIZE(uffdio_zeropage);
    SIZE(uffdio_writeprotect);
    SIZE(uffdio_move);
    SIZE(uffdio_poison);

    OFF(uffd_msg, event, "event");
    OFF(uffd_msg, arg.pagefault.flags, "pagefault_flags");
    OFF(uffd_msg, arg.pagefault.address, "pagefault_address");
    OFF(uffd_msg, arg.pagefault.feat.ptid, "pagefault_feat_ptid");
    OFF(uffd_msg, arg.fork.ufd, "fork_ufd");
    OFF(uffd_msg, arg.remap.from, "remap_from");
    OFF(uffd_msg, arg.remap.to, "remap_to");
    OFF(uffd_msg, arg.remap.len, "remap_len");
    OFF(uffd_msg, arg.remove.start, "remove_start");
    OFF(uffd_msg, arg.remove.end, "remove_end");
    OFF(uffdio_register, mode, "mode");
    OFF(uffdio_register, ioctls, "ioctls");
    OFF(uffdio_copy, copy, "copy");
    OFF(uffdio_zeropage, zeropage, "zeropage");
    OFF(uffdio_move, move, "move");
    OFF(uffdio_poison, updated, "updated");

    VALUE(UFFD_API);
    VALUE(UFFDIO_API);
    VALUE(UFFDIO_REGISTER);
    VALUE(UFFDIO_UNREGISTER);
    VALUE(UFFDIO_WAKE);
    VALUE(UFFDIO_COPY);
    VALUE(UFFDIO_ZEROPAGE);
    VALUE(UFFDIO_MOVE);
    VALUE(UFFDIO_WRITEPROTECT);
    VALUE(UFFDIO_POISON);
    VALUE(USERFAULTFD_IOC_NEW);

    VALUE(UFFD_EVENT_PAGEFAULT);
    VALUE(UFFD_EVENT_FORK);
    VALUE(UFFD_EVENT_REMAP);
    VALUE(UFFD_EVENT_REMOVE);
    VALUE(UFFD_EVENT_UNMAP);
    VALUE(UFFD_PAGEFAULT_FLAG_WRITE);
    VALUE(UFFD_FEATURE_PAGEFAULT_FLAG_WP);
    VALUE(UFFD_FEATURE_EVENT_FORK);
    VALUE(UFFD_FEATURE_EVENT_REMAP);
    VALUE(UFFD_FEATURE_EVENT_REMOVE);
    VALUE(UFFD_FEATURE_EVENT_UNMAP);
    VALUE(UFFD_FEATURE_THREAD_ID);
    VALUE(UFFD_FEATURE_POISON);
    VALUE(UFFD_FEATURE_MOVE);
    VALUE(UFFDIO_REGISTER_MODE_MISSING);
    VALUE(UFFDIO_REGISTER_MODE_WP);
    VALUE(UFFDIO_MOVE_MODE_DONTWAKE);
    VALUE(_UFFDIO_COPY);
    VALUE(_UFFDIO_ZEROPAGE);
    VALUE(_UFFDIO_WAKE);
    VALUE(_UFFDIO_MOVE);
    return 0;
}
