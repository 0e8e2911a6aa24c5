namespace Tibet.Core.Paging;

/// <summary>
/// The arenas one engine serves: by slot (resident-set elements name an arena by its
/// slot) and sorted by address (a fault or an event names an address).
/// </summary>
/// <remarks>Changed under the engine lock only; searched on the fault path without
/// allocating. Removing an arena and re-sorting after a move allocate nothing either: the
/// custodian's handler does both, for a served process's unmaps and remaps (UNMAP and
/// REMAP events). Adding one may grow the arrays (never on the handler).</remarks>
internal sealed class ArenaTable
{
    private Arena?[] _slots = new Arena?[8];
    private Arena?[] _sorted = new Arena?[8]; // [0, _count) in address order
    private int _count;

    /// <summary>Every live arena, sorted by address.</summary>
    public ReadOnlySpan<Arena> ByAddress => new(_sorted!, 0, _count);

    /// <summary>Every slot (null where free).</summary>
    public Arena?[] Slots => _slots;

    public int Add(Arena arena)
    {
        int slot = AddressIndex.TakeSlot(ref _slots, arena);
        if (_count == _sorted.Length)
            Array.Resize(ref _sorted, _sorted.Length * 2);
        int at = _count;
        while (at > 0 && _sorted[at - 1]!.Address > arena.Address)
        {
            _sorted[at] = _sorted[at - 1];
            at--;
        }
        _sorted[at] = arena;
        _count++;
        return slot;
    }

    public void Remove(Arena arena)
    {
        _slots[arena.Slot] = null;
        int at = Array.IndexOf(_sorted, arena, 0, _count);
        if (at < 0)
            return;
        Array.Copy(_sorted, at + 1, _sorted, at, _count - at - 1);
        _sorted[--_count] = null;
    }

    /// <summary>An arena moved (mremap of the whole arena): restores the address order.</summary>
    public void Reindex()
    {
        // Insertion sort: one arena moved, the rest are in order; no comparer, no allocation.
        for (int i = 1; i < _count; i++)
        {
            Arena moving = _sorted[i]!;
            int at = i;
            while (at > 0 && _sorted[at - 1]!.Address > moving.Address)
            {
                _sorted[at] = _sorted[at - 1];
                at--;
            }
            _sorted[at] = moving;
        }
    }

    /// <summary>The arena holding <paramref name="address"/>, or null.</summary>
    public Arena? Find(nint address) => AddressIndex.Find<Arena>(ByAddress, address);

    /// <summary>The arena in <paramref name="slot"/>, or null (released since).</summary>
    public Arena? InSlot(int slot) => slot < _slots.Length ? _slots[slot] : null;

    /// <summary>The start of the first arena above <paramref name="after"/>, or <paramref name="end"/>.</summary>
    public nint NextStart(nint after, nint end)
    {
        foreach (Arena arena in ByAddress)
            if (arena.Address > after) return arena.Address;
        return end;
    }
}
