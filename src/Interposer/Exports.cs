using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Tibet.Interposer;

/// <summary>
/// The managed entry points the shim calls. Each is a thin, exception-proof door into
/// <see cref="InterposerRuntime"/>: an exception escaping an UnmanagedCallersOnly method
/// would end the host program, so each failure is reported and answered.
/// </summary>
/// <remarks>
/// Sizes arrive as size_t and stay unsigned: a program may pass anything up to 2^64-1,
/// and a cast to long would turn 2^63 and above into negative lengths.
/// tibet_managed_alloc, _realloc and _mmap answer with a pointer (served), 0 (not taken:
/// the shim forwards the call to libc) or <see cref="PlaintextFallbacks.Refused"/> (-1:
/// the shim fails the call with ENOMEM, leaving a realloc's old block as it was). Each
/// case in which memory that should be encrypted is not goes through
/// <see cref="PlaintextFallbacks"/>.
/// </remarks>
internal static unsafe class Exports
{
    /// <remarks>The first managed call of the process: the runtime starts inside it and
    /// randomises the stack cookie while doing so, so this method must not use
    /// stackalloc or anything guarded by the cookie. The work happens one call deeper.</remarks>
    [UnmanagedCallersOnly(EntryPoint = "tibet_managed_init")]
    private static int Init() => InitCore();

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static int InitCore() => InterposerRuntime.Start() ? 1 : 0;

    [UnmanagedCallersOnly(EntryPoint = "tibet_managed_alloc")]
    private static nint Alloc(nuint size, nuint alignment)
    {
        try { return InterposerRuntime.Redirector?.Allocate(size, alignment) ?? 0; }
        catch (Exception e) { return InterposerRuntime.Failed("malloc"u8, e, size); }
    }

    [UnmanagedCallersOnly(EntryPoint = "tibet_managed_free")]
    private static void Free(nint pointer)
    {
        try { InterposerRuntime.Redirector?.Free(pointer); }
        catch (Exception e) { InterposerRuntime.Failed("free", e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "tibet_managed_realloc")]
    private static nint Realloc(nint pointer, nuint size)
    {
        try { return InterposerRuntime.Redirector?.Reallocate(pointer, size) ?? 0; }
        catch (Exception e)
        {
            // Never forwarded: the block is ours, and after an error its state is unknown.
            // The call fails and the program keeps its old block.
            InterposerRuntime.Failed("realloc", e);
            return PlaintextFallbacks.Refuse(PlaintextReason.InternalError, "realloc"u8, size);
        }
    }

    /// <summary>A large anonymous map: readable and writable, or with <paramref name="prot"/>
    /// PROT_NONE a reservation, mapped inaccessible (the shim's redirectable_mapping).</summary>
    [UnmanagedCallersOnly(EntryPoint = "tibet_managed_mmap")]
    private static nint Mmap(nuint length, int prot)
    {
        try { return InterposerRuntime.Redirector?.Map(length, inaccessible: prot == Tibet.Core.Interop.Libc.PROT_NONE) ?? 0; }
        catch (Exception e) { return InterposerRuntime.Failed("mmap"u8, e, length); }
    }

    /// <summary>A writable anonymous MAP_FIXED map of the program's, at or above the
    /// threshold, which the kernel will serve in plaintext: 0 to let it (counted and
    /// said), or PlaintextFallbacks.Refused under --require-encryption.</summary>
    [UnmanagedCallersOnly(EntryPoint = "tibet_managed_fixed_map")]
    private static nint FixedMap(nuint length)
    {
        try { return PlaintextFallbacks.Forward(PlaintextReason.FixedAddress, "mmap"u8, length); }
        catch (Exception e) { return InterposerRuntime.Failed("mmap"u8, e, length); }
    }

    [UnmanagedCallersOnly(EntryPoint = "tibet_managed_map_file")]
    private static nint MapFile(nuint length, int prot, int flags, int fd, long offset, int* error)
    {
        try
        {
            *error = 0;
            if (InterposerRuntime.Redirector is not { } redirector) return 0;
            nint address = redirector.MapFile(length, prot, flags, fd, offset, out int errno);
            *error = errno;
            return address;
        }
        catch (Exception e)
        {
            // A sealed model must not be mapped raw: fail the map rather than forward it.
            InterposerRuntime.Failed("mmap of a model file", e);
            *error = 5; // EIO
            return 0;
        }
    }

    [UnmanagedCallersOnly(EntryPoint = "tibet_managed_file_opened")]
    private static int FileOpened(int fd)
    {
        try { return InterposerRuntime.SealedFiles?.Opened(fd) == true ? 1 : 0; }
        catch (Exception e) { InterposerRuntime.Failed("open of a model file", e); return 0; }
    }

    [UnmanagedCallersOnly(EntryPoint = "tibet_managed_file_closed")]
    private static void FileClosed(int fd)
    {
        try { InterposerRuntime.SealedFiles?.Closed(fd); }
        catch (Exception e) { InterposerRuntime.Failed("close of a model file", e); }
    }

    /// <returns>Bytes read, or a negative errno; never 0 for a failure (0 means end of file).</returns>
    [UnmanagedCallersOnly(EntryPoint = "tibet_managed_read")]
    private static nint Read(int fd, byte* buffer, nuint count, long offset, int atPosition)
    {
        try
        {
            if (InterposerRuntime.SealedFiles is not { } files) return -5;
            return (nint)files.Read(fd, buffer, (long)Math.Min((ulong)count, (ulong)long.MaxValue), offset, atPosition != 0);
        }
        catch (Exception e)
        {
            InterposerRuntime.Failed("read of a sealed model", e);
            return -5; // EIO
        }
    }

    [UnmanagedCallersOnly(EntryPoint = "tibet_managed_unmap")]
    private static int Unmap(nint address, nuint length)
    {
        try { return InterposerRuntime.Redirector?.Unmap(address, length) ?? 22; }
        catch (Exception e) { InterposerRuntime.Failed("munmap", e); return 12; }
    }

    [UnmanagedCallersOnly(EntryPoint = "tibet_managed_protect")]
    private static void Protect(nint address, nuint length, int prot)
    {
        try { InterposerRuntime.Redirector?.MadeWritable(address, length); }
        catch (Exception e) { InterposerRuntime.Failed("mprotect", e); }
    }

    /// <summary>1 when [address, address+length) lies wholly inside one anonymous arena of
    /// the program's own engine: a MAP_FIXED map there is a commit inside it (the shim's
    /// commit_in_arena), not a replacement by plaintext.</summary>
    [UnmanagedCallersOnly(EntryPoint = "tibet_managed_covers")]
    private static int Covers(nint address, nuint length)
    {
        try { return InterposerRuntime.Redirector?.CoversAnonymous(address, length) == true ? 1 : 0; }
        catch (Exception e) { InterposerRuntime.Failed("mmap", e); return 0; }
    }

    [UnmanagedCallersOnly(EntryPoint = "tibet_managed_mremap")]
    private static nint Mremap(nint old, nuint oldSize, nuint newSize, int flags, int* error)
    {
        try
        {
            if (InterposerRuntime.Redirector is not { } redirector) { *error = 22; return -1; }
            nint result = redirector.Remap(old, oldSize, newSize, flags, out int errno);
            *error = errno;
            return result;
        }
        catch (Exception e)
        {
            InterposerRuntime.Failed("mremap", e);
            *error = 12;
            return -1;
        }
    }

    [UnmanagedCallersOnly(EntryPoint = "tibet_managed_forked")]
    private static void Forked(int pid, int agentFd)
    {
        try { InterposerRuntime.Forked(pid, agentFd); }
        catch (Exception e) { InterposerRuntime.Failed("fork", e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "tibet_managed_hand_over")]
    private static void HandOver()
    {
        try { InterposerRuntime.HandOver(); }
        catch (Exception e) { InterposerRuntime.Failed("_exit", e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "tibet_managed_exit")]
    private static void Exit()
    {
        try { InterposerRuntime.Stop(); }
        catch (Exception e) { InterposerRuntime.Failed("exit", e); }
    }
}
