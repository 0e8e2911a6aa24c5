namespace Tibet.Core.Storage;

/// <summary>
/// Where sealed pages live while they are not resident: ciphertext and tag, addressed by
/// an opaque handle that the page table keeps (<see cref="Paging.PageEntry.Slot"/>).
/// </summary>
/// <remarks>
/// <para>The engine sees only this seam, as Tsavorite sees only its <c>IDevice</c>: the
/// store in this process (<see cref="CiphertextStore"/>) hands out slots of native memory;
/// a remote store (a later issue) can keep the same handles in a table of its own and
/// move the bytes through the staging spans.</para>
/// <para>Every call comes from the engine under its lock, on the fault path: an
/// implementation allocates no managed memory and calls no malloc. It holds ciphertext
/// only; nothing here ever sees a key or plaintext, so it needs no trust beyond
/// availability (a store that alters bytes is caught by authentication).</para>
/// <para>An abstract class, not an interface, for the reason given on
/// <see cref="Paging.AddressSpace.AddressSpaceOps"/>: no call-site resolution (and malloc)
/// on the handler thread.</para>
/// </remarks>
internal abstract class SealedPageStore : IDisposable
{
    /// <summary>Takes a slot for <paramref name="sealedLength"/> bytes and returns where
    /// to write them; the slot holds them once <see cref="Commit"/> is called.</summary>
    /// <exception cref="OutOfMemoryException">The store cannot grow: the engine treats this
    /// as a handler failure (it never drops a page it cannot keep).</exception>
    public abstract Span<byte> Reserve(int sealedLength, out ulong handle);

    /// <summary>The bytes written into <see cref="Reserve"/>'s span are final.</summary>
    public abstract void Commit(ulong handle);

    /// <summary>The <paramref name="sealedLength"/> bytes of a slot: a view of the slot
    /// itself, or <paramref name="staging"/> filled from it.</summary>
    public abstract ReadOnlySpan<byte> Read(ulong handle, int sealedLength, Span<byte> staging);

    /// <summary>Gives the slot back (deferred while pinned, see <see cref="Pin"/>).</summary>
    public abstract void Free(ulong handle);

    /// <summary>While pinned (a forked child may still read ciphertext as it was at fork
    /// time), freed slots are only set aside; the last <see cref="Unpin"/> frees them.</summary>
    public abstract void Pin();

    public abstract void Unpin();

    public abstract void Dispose();

    /// <summary>Bytes of ciphertext held (slot sizes of live slots).</summary>
    public abstract long PayloadBytes { get; }

    /// <summary>Bytes of memory the store holds, including free slots.</summary>
    public abstract long MappedBytes { get; }
}
