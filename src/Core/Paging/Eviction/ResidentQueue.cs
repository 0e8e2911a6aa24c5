using System.Runtime.InteropServices;
using Tibet.Core.Storage;

namespace Tibet.Core.Paging.Eviction;

/// <summary>
/// Resident pages in the order they were queued (first in, first out), as a growable
/// ring in native memory: the building block of every <see cref="ResidentSet"/>.
/// </summary>
/// <remarks>
/// Elements are never removed from the middle: a page that stops being resident leaves a
/// stale element behind, recognised by its ticket and skipped when popped. Not
/// thread-safe; allocation-free except when the ring doubles (mmap, never malloc).
/// </remarks>
internal sealed unsafe class ResidentQueue : IDisposable
{
    [StructLayout(LayoutKind.Sequential)]
    public struct Element
    {
        public int ArenaSlot;
        private readonly int _padding;
        public long PageIndex;
        public ulong Ticket;

        public Element(int arenaSlot, long pageIndex, ulong ticket)
        {
            ArenaSlot = arenaSlot;
            PageIndex = pageIndex;
            Ticket = ticket;
        }
    }

    private Element* _ring;
    private long _capacity;
    private long _head;
    private long _count;

    public ResidentQueue(long initialCapacity = 1 << 14)
    {
        _capacity = initialCapacity;
        _ring = (Element*)KernelMemory.Map((nuint)(_capacity * sizeof(Element)));
    }

    public long Count => _count;

    public bool IsFull => _count == _capacity;

    public long Capacity => _capacity;

    public void Enqueue(int arenaSlot, long pageIndex, ulong ticket)
    {
        if (_count == _capacity)
            Grow();
        Element* e = _ring + (_head + _count) % _capacity;
        e->ArenaSlot = arenaSlot;
        e->PageIndex = pageIndex;
        e->Ticket = ticket;
        _count++;
    }

    public void Enqueue(in Element element) => Enqueue(element.ArenaSlot, element.PageIndex, element.Ticket);

    /// <summary>The element <see cref="TryDequeue"/> would return, left in place.</summary>
    public bool TryPeek(out Element element)
    {
        if (_count == 0)
        {
            element = default;
            return false;
        }
        element = _ring[_head];
        return true;
    }

    public bool TryDequeue(out Element element)
    {
        if (_count == 0)
        {
            element = default;
            return false;
        }
        element = _ring[_head];
        _head = (_head + 1) % _capacity;
        _count--;
        return true;
    }

    /// <summary>
    /// Drops the stale elements, keeping the order of the rest. Called when the ring is
    /// full, so that pages that came and went do not grow it without bound (with no
    /// budget, nothing ever dequeues).
    /// </summary>
    public void Compact(IResidency residency)
    {
        long kept = 0;
        for (long i = 0; i < _count; i++)
        {
            Element e = _ring[(_head + i) % _capacity];
            if (residency.IsLiveResident(in e))
                _ring[(_head + kept++) % _capacity] = e;
        }
        _count = kept;
    }

    public void Dispose()
    {
        if (_ring != null)
        {
            KernelMemory.Unmap((nint)_ring, (nuint)(_capacity * sizeof(Element)));
            _ring = null;
        }
    }

    private void Grow()
    {
        long newCapacity = _capacity * 2;
        var grown = (Element*)KernelMemory.Map((nuint)(newCapacity * sizeof(Element)));
        for (long i = 0; i < _count; i++)
            grown[i] = _ring[(_head + i) % _capacity];
        KernelMemory.Unmap((nint)_ring, (nuint)(_capacity * sizeof(Element)));
        _ring = grown;
        _capacity = newCapacity;
        _head = 0;
    }
}
