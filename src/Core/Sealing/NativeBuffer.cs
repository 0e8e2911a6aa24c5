using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace Tibet.Core.Sealing;

/// <summary>
/// A zero-initialised block of native memory, outside the managed heap (so the GC never
/// copies it and its pages can be returned to the system), wiped before it is freed.
/// Being a SafeHandle, it is freed even if its owner is never disposed, and code that
/// holds a reference (DangerousAddRef) keeps it alive across a concurrent Dispose.
/// </summary>
internal sealed unsafe class NativeBuffer : SafeHandle
{
    private const nuint Alignment = 64;

    public NativeBuffer(long length) : base(IntPtr.Zero, ownsHandle: true)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        Length = length;
        // One byte at least, so that an empty buffer still has a valid, freeable pointer.
        nuint size = (nuint)Math.Max(length, 1);
        void* memory = NativeMemory.AlignedAlloc(size, Alignment);
        NativeMemory.Clear(memory, size);
        SetHandle((IntPtr)memory);
    }

    public long Length { get; }

    public override bool IsInvalid => handle == IntPtr.Zero;

    /// <summary>The memory; valid while the buffer is open (or referenced).</summary>
    public byte* Pointer => (byte*)handle;

    /// <summary>A span over [offset, offset + length) of the buffer.</summary>
    public Span<byte> Slice(long offset, int length)
    {
        if ((ulong)offset > (ulong)Length || (ulong)length > (ulong)(Length - offset))
            throw new ArgumentOutOfRangeException(nameof(offset), $"[{offset}, +{length}) is outside the {Length}-byte buffer.");
        return new Span<byte>(Pointer + offset, length);
    }

    protected override bool ReleaseHandle()
    {
        // ZeroMemory is never optimised away, unlike a clear right before a free can be.
        byte* memory = (byte*)handle;
        for (long done = 0; done < Length;)
        {
            int chunk = (int)Math.Min(Length - done, int.MaxValue);
            CryptographicOperations.ZeroMemory(new Span<byte>(memory + done, chunk));
            done += chunk;
        }
        NativeMemory.AlignedFree(memory);
        return true;
    }
}
