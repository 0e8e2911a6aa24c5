using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>process_vm_readv(2), on this process: a copy that answers EFAULT where a page
/// cannot be read (PROT_NONE), instead of SIGSEGV. Does not call malloc.</summary>
internal static unsafe partial class Libc
{
    // struct iovec: Libc.Msg.cs.

    // https://man7.org/linux/man-pages/man2/process_vm_readv.2.html
    [LibraryImport(Library, EntryPoint = "process_vm_readv", SetLastError = true)]
    public static partial nint process_vm_readv(int pid, IoVec* local, nuint localCount, IoVec* remote, nuint remoteCount, nuint flags);

    /// <summary>Copies <paramref name="length"/> bytes of this process's memory; false where
    /// a page of <paramref name="from"/> cannot be read.</summary>
    public static bool CopyMapped(void* to, void* from, nuint length)
    {
        IoVec local = new() { Base = to, Length = length }, remote = new() { Base = from, Length = length };
        return process_vm_readv(getpid(), &local, 1, &remote, 1, 0) == (nint)length;
    }
}
