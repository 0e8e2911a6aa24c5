using Tibet.Core.Interop;

namespace Tibet.Core.Paging;

/// <summary>
/// Reads and writes arena memory from native code.
/// </summary>
/// <remarks>
/// A thread that faults on an arena page sleeps in the kernel until the handler serves
/// it. If that thread is running managed code, a garbage collection that starts
/// meanwhile waits for it to reach a safe point, while the handler thread (itself
/// managed) waits for the collection: a deadlock. A thread inside a P/Invoke is already
/// in preemptive mode, so the collector does not wait for it. Managed code in the same
/// process as an engine therefore touches arena memory only through these calls.
/// Unmodified programs under the interposer are native, so the rule does not bind them.
/// </remarks>
public static unsafe class ArenaMemory
{
    public static void Write(nint destination, ReadOnlySpan<byte> source)
    {
        fixed (byte* s = source)
            Libc.memcpy((void*)destination, s, (nuint)source.Length);
    }

    public static void Read(nint source, Span<byte> destination)
    {
        fixed (byte* d = destination)
            Libc.memcpy(d, (void*)source, (nuint)destination.Length);
    }

    public static void Fill(nint destination, byte value, long length) =>
        Libc.memset((void*)destination, value, (nuint)length);

    /// <summary>True when the arena bytes equal <paramref name="expected"/>.</summary>
    public static bool SequenceEqual(nint source, ReadOnlySpan<byte> expected)
    {
        fixed (byte* e = expected)
            return Libc.memcmp((void*)source, e, (nuint)expected.Length) == 0;
    }

    /// <summary>Touches one byte in every page of the range, for reading.</summary>
    public static void TouchPages(nint start, long length)
    {
        byte sink;
        for (long offset = 0; offset < length; offset += Userfaultfd.PageSize)
            Libc.memcpy(&sink, (void*)(start + (nint)offset), 1);
    }
}
