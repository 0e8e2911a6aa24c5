namespace Tibet.Core.Paging.Eviction;

/// <summary>First in, first out: <see cref="EvictionPolicy.Fifo"/>.</summary>
internal sealed class FifoResidentSet(IResidency residency) : ResidentSet
{
    private readonly ResidentQueue _queue = new();

    public override long Count => _queue.Count;

    public override long Capacity => _queue.Capacity;

    public override void Admit(in ResidentQueue.Element element, uint refaultDistance) => Append(element);

    public override void Return(in ResidentQueue.Element element) => Append(element);

    public override void Keep(in ResidentQueue.Element element) => Append(element);

    public override bool TryTakeNext(out ResidentQueue.Element element) => _queue.TryDequeue(out element);

    public override bool TryPeekNext(out ResidentQueue.Element element) => _queue.TryPeek(out element);

    private void Append(in ResidentQueue.Element element)
    {
        // Shed stale elements before growing: with no budget nothing is ever dequeued.
        if (_queue.IsFull)
            _queue.Compact(residency);
        _queue.Enqueue(element);
    }

    public override void Dispose() => _queue.Dispose();
}
