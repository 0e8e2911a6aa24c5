using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Tibet.Interposer;

/// <summary>
/// The managed entry points the shim calls. Each is a thin, exception-proof door into
/// <see cref="InterposerRuntime"/>: an exception escaping an UnmanagedCallersOnly method
/// would end the host program, so each failure is reported and answered with "not
/// handled", which the shim turns into forwarding to libc.
/// </summary>
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
        try { return InterposerRuntime.Redirector?.Allocate((long)size, (long)alignment) ?? 0; }
        catch (Exception e) { return InterposerRuntime.Failed("malloc", e); }
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
        try { return InterposerRuntime.Redirector?.Reallocate(pointer, (long)size) ?? 0; }
        catch (Exception e) { return InterposerRuntime.Failed("realloc", e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "tibet_managed_mmap")]
    private static nint Mmap(nuint length)
    {
        try { return InterposerRuntime.Redirector?.Map((long)length) ?? 0; }
        catch (Exception e) { return InterposerRuntime.Failed("mmap", e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "tibet_managed_map_file")]
    private static nint MapFile(nuint length, int fd, long offset)
    {
        try { return InterposerRuntime.Redirector?.MapFile((long)length, fd, offset) ?? 0; }
        catch (Exception e) { return InterposerRuntime.Failed("mmap of a model file", e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "tibet_managed_unmap")]
    private static int Unmap(nint address, nuint length)
    {
        try { return InterposerRuntime.Redirector?.Unmap(address, (long)length) ?? 22; }
        catch (Exception e) { InterposerRuntime.Failed("munmap", e); return 12; }
    }

    [UnmanagedCallersOnly(EntryPoint = "tibet_managed_mremap")]
    private static nint Mremap(nint old, nuint oldSize, nuint newSize, int flags, int* error)
    {
        try
        {
            if (InterposerRuntime.Redirector is not { } redirector) { *error = 22; return -1; }
            nint result = redirector.Remap(old, (long)oldSize, (long)newSize, flags, out int errno);
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
    private static void Forked(int pid)
    {
        try { InterposerRuntime.Forked(pid); }
        catch (Exception e) { InterposerRuntime.Failed("fork", e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "tibet_managed_exit")]
    private static void Exit()
    {
        try { InterposerRuntime.Stop(); }
        catch (Exception e) { InterposerRuntime.Failed("exit", e); }
    }
}
