using Tibet.Core.Interop;

namespace Tibet.Core.Paging.AddressSpace;

/// <summary>
/// Page-table operations on one userfaultfd: installing, waking and poisoning. Taking
/// pages out is not possible through a userfaultfd alone (see <see cref="LocalAddressSpace"/>).
/// Serves a forked child's address space (its userfaultfd came with the fork event), and
/// is the base of this process's.
/// </summary>
internal class UffdAddressSpace(Userfaultfd uffd) : AddressSpaceOps
{
    protected Userfaultfd Uffd { get; } = uffd;

    public sealed override int Copy(nint address, nint source, nuint length, bool writeProtect, out long done) =>
        Uffd.Copy(address, source, length, writeProtect ? UserfaultfdAbi.UFFDIO_COPY_MODE_WP : 0, out done);

    public sealed override int Unprotect(nint address, nuint length) => Uffd.WriteProtect(address, length, protect: false);

    public sealed override int Protect(nint address, nuint length) => Uffd.WriteProtect(address, length, protect: true);

    public sealed override int ZeroPage(nint address, nuint length) => Uffd.ZeroPage(address, length);

    public sealed override int Wake(nint address, nuint length) => Uffd.Wake(address, length);

    public sealed override int Poison(nint address, nuint length) => Uffd.Poison(address, length);

    /// <remarks>A userfaultfd alone cannot; this process's address space can (see
    /// <see cref="LocalAddressSpace"/>).</remarks>
    public override int Collapse(nint address, nuint length) => Interop.Libc.ENOSYS;

    public override bool CanTakeOut => false;

    public override int TakeOut(int slot, nint address, nuint length, out long done)
    {
        done = 0;
        return Interop.Libc.ENOSYS;
    }

    public override bool TookOutDespiteError(int slot, nint address) => false;

    public override nint TakenPage(int slot) => 0;

    public override void ReleaseTaken(int slots)
    {
    }
}
