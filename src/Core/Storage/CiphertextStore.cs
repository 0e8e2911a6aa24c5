using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Tibet.Core.Storage;

/// <summary>
/// The sealed-page store of this process: a slab allocator in native memory, whose
/// handles are the slots' addresses.
/// </summary>
/// <remarks>
/// Sealed pages come in few sizes: a raw page (4096 + the cipher's tag) or a compressed
/// page rounded up to a 512-byte class. Each class carves 1 MiB chunks into slots. A
/// chunk is aligned to its size, so the chunk header of any slot is found by masking
/// the slot's address, and a chunk that empties is unmapped at once: freed arenas and
/// freed pages give their memory back to the kernel.
/// <para>Not thread-safe: the engine calls it under its lock. Allocation-free.</para>
/// </remarks>
internal sealed unsafe class CiphertextStore : SealedPageStore
{
    public const int CompressedClassStep = 512;
    public const int CompressedClassCount = 7; // 512 .. 3584
    private const int ClassCount = CompressedClassCount + 1;
    private const nuint ChunkSize = 1 << 20;
    private const int HeaderSize = 64;

    [StructLayout(LayoutKind.Sequential)]
    private struct ChunkHeader
    {
        public int ClassIndex;
        public int SlotSize;
        public int TotalSlots;
        public int LiveSlots;
        public int BumpSlots;
        public int Padding;
        public nint FreeList;
        public ChunkHeader* NextPartial;
        public ChunkHeader* PrevPartial;
    }

    private readonly long _limitBytes;
    private readonly nint[] _partialHeads = new nint[ClassCount];
    private readonly int[] _partialCounts = new int[ClassCount];
    private long _chunkCount;
    private int _pins;
    private nint* _deferred;
    private long _deferredCount;
    private long _deferredCapacity;
    private long _payloadBytes;
    private long _liveSlots;

    private readonly int _rawSlotSize;

    /// <param name="limitBytes">The most memory the store may map; a chunk beyond it is
    /// refused like a failed mmap.</param>
    /// <param name="rawSealedLength">The sealed size of an uncompressed page: 4096 plus the
    /// cipher's tag.</param>
    public CiphertextStore(long limitBytes, int rawSealedLength)
    {
        if (rawSealedLength <= LargestCompressedSealedSize || rawSealedLength > 4096 + Crypto.PageCipherSuite.MaxTagSize)
            throw new ArgumentOutOfRangeException(nameof(rawSealedLength), rawSealedLength, "not the sealed size of a 4 KiB page");
        _limitBytes = limitBytes;
        _rawSlotSize = rawSealedLength;
    }

    /// <summary>The slot size of an uncompressed sealed page.</summary>
    public int RawSlotSize => _rawSlotSize;

    /// <summary>Bytes of ciphertext held (slot sizes of live slots).</summary>
    public override long PayloadBytes => _payloadBytes;

    /// <summary>Bytes mapped for the store, including free slots.</summary>
    public override long MappedBytes => _chunkCount * (long)ChunkSize;

    public long LiveSlots => _liveSlots;

    /// <summary>The largest sealed size that fits a compressed class.</summary>
    public static int LargestCompressedSealedSize => CompressedClassCount * CompressedClassStep;

    public override Span<byte> Reserve(int sealedLength, out ulong handle)
    {
        nint slot = Allocate(sealedLength);
        handle = (ulong)slot;
        return new Span<byte>((void*)slot, sealedLength);
    }

    // Bytes are written into the slot itself: nothing to do.
    public override void Commit(ulong handle) => Debug.Assert(handle != 0);

    public override ReadOnlySpan<byte> Read(ulong handle, int sealedLength, Span<byte> staging) =>
        new((void*)(nint)handle, sealedLength);

    public override void Free(ulong handle) => Free((nint)handle);

    /// <summary>Where a slot's bytes are, for tests that tamper with ciphertext.</summary>
    public static nint AddressOf(ulong handle) => (nint)handle;

    /// <summary>Returns a slot that can hold <paramref name="sealedLength"/> bytes.</summary>
    /// <exception cref="OutOfMemoryException">The store must grow and cannot: mmap failed,
    /// or the store's limit is reached. The engine treats this as a handler failure.</exception>
    private nint Allocate(int sealedLength)
    {
        int classIndex = ClassOf(sealedLength);
        var chunk = (ChunkHeader*)_partialHeads[classIndex];
        if (chunk == null)
            chunk = NewChunk(classIndex);

        nint slot;
        if (chunk->FreeList != 0)
        {
            slot = chunk->FreeList;
            chunk->FreeList = *(nint*)slot;
        }
        else
        {
            Debug.Assert(chunk->BumpSlots < chunk->TotalSlots);
            slot = (nint)chunk + HeaderSize + chunk->BumpSlots * chunk->SlotSize;
            chunk->BumpSlots++;
        }

        chunk->LiveSlots++;
        _liveSlots++;
        _payloadBytes += chunk->SlotSize;
        if (chunk->LiveSlots == chunk->TotalSlots)
            Unlink(chunk);
        return slot;
    }

    public override void Pin() => _pins++;

    public override void Unpin()
    {
        Debug.Assert(_pins > 0);
        if (--_pins > 0)
            return;
        for (long i = 0; i < _deferredCount; i++)
            FreeNow(_deferred[i]);
        _deferredCount = 0;
    }

    private void Free(nint slot)
    {
        if (_pins == 0)
        {
            FreeNow(slot);
            return;
        }
        if (_deferredCount == _deferredCapacity)
        {
            long capacity = Math.Max(4096, _deferredCapacity * 2);
            var grown = (nint*)KernelMemory.Map((nuint)(capacity * sizeof(nint)));
            for (long i = 0; i < _deferredCount; i++) grown[i] = _deferred[i];
            if (_deferred != null) KernelMemory.Unmap((nint)_deferred, (nuint)(_deferredCapacity * sizeof(nint)));
            _deferred = grown;
            _deferredCapacity = capacity;
        }
        _deferred[_deferredCount++] = slot;
    }

    private void FreeNow(nint slot)
    {
        Debug.Assert(slot != 0);
        var chunk = (ChunkHeader*)((nuint)slot & ~(ChunkSize - 1));
        bool wasFull = chunk->LiveSlots == chunk->TotalSlots;
        *(nint*)slot = chunk->FreeList;
        chunk->FreeList = slot;
        chunk->LiveSlots--;
        _liveSlots--;
        _payloadBytes -= chunk->SlotSize;

        if (wasFull)
            Link(chunk);
        // Give an empty chunk back unless it is the class's only spare, so that a page
        // bouncing in and out of one class does not map and unmap a chunk every time.
        if (chunk->LiveSlots == 0 && _partialCounts[chunk->ClassIndex] > 1)
        {
            Unlink(chunk);
            KernelMemory.Unmap((nint)chunk, ChunkSize);
            _chunkCount--;
        }
    }

    public override void Dispose()
    {
        if (_deferred != null)
            KernelMemory.Unmap((nint)_deferred, (nuint)(_deferredCapacity * sizeof(nint)));
        // The engine releases every arena before the store, so each remaining chunk is
        // empty and sits on its class's partial list.
        Debug.Assert(_liveSlots == 0, "the store is disposed while pages still hold ciphertext");
        for (int c = 0; c < ClassCount; c++)
        {
            while (_partialHeads[c] != 0)
            {
                var chunk = (ChunkHeader*)_partialHeads[c];
                Unlink(chunk);
                KernelMemory.Unmap((nint)chunk, ChunkSize);
                _chunkCount--;
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int ClassOf(int sealedLength)
    {
        if (sealedLength == RawSlotSize)
            return CompressedClassCount;
        Debug.Assert(sealedLength > 0 && sealedLength <= LargestCompressedSealedSize);
        return (sealedLength - 1) / CompressedClassStep;
    }

    private ChunkHeader* NewChunk(int classIndex)
    {
        if ((_chunkCount + 1) * (long)ChunkSize > _limitBytes)
            throw new OutOfMemoryException($"the ciphertext store reached its limit of {_limitBytes} bytes ({_chunkCount} chunks)");
        var chunk = (ChunkHeader*)KernelMemory.MapAligned(ChunkSize, ChunkSize);
        int slotSize = classIndex == CompressedClassCount ? RawSlotSize : (classIndex + 1) * CompressedClassStep;
        chunk->ClassIndex = classIndex;
        chunk->SlotSize = slotSize;
        chunk->TotalSlots = (int)((ChunkSize - HeaderSize) / (nuint)slotSize);
        chunk->LiveSlots = 0;
        chunk->BumpSlots = 0;
        chunk->FreeList = 0;
        chunk->NextPartial = null;
        chunk->PrevPartial = null;
        _chunkCount++;
        Link(chunk);
        return chunk;
    }

    private void Link(ChunkHeader* chunk)
    {
        int c = chunk->ClassIndex;
        var head = (ChunkHeader*)_partialHeads[c];
        chunk->PrevPartial = null;
        chunk->NextPartial = head;
        if (head != null) head->PrevPartial = chunk;
        _partialHeads[c] = (nint)chunk;
        _partialCounts[c]++;
    }

    private void Unlink(ChunkHeader* chunk)
    {
        int c = chunk->ClassIndex;
        if (chunk->PrevPartial != null) chunk->PrevPartial->NextPartial = chunk->NextPartial;
        else _partialHeads[c] = (nint)chunk->NextPartial;
        if (chunk->NextPartial != null) chunk->NextPartial->PrevPartial = chunk->PrevPartial;
        chunk->NextPartial = null;
        chunk->PrevPartial = null;
        _partialCounts[c]--;
    }
}
