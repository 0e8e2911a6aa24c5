namespace Tibet.Core.Paging;

/// <summary>
/// The arenas one engine serves: by slot (resident-set elements name an arena by its
/// slot) and sorted by address (a fault or an event names an address).
/// </summary>
/// <remarks>Changed under the engine lock only; searched on the fault path without
/// allocating. Shared by the engine's parts.</remarks>
internal sealed class ArenaTable
{
    private Arena?[] _slots = new Arena?[8];
    private Arena[] _byAddress = [];

    /// <summary>Every live arena, sorted by address.</summary>
    public Arena[] ByAddress => _byAddress;

    /// <summary>Every slot (null where free).</summary>
    public Arena?[] Slots => _slots;

    public int Add(Arena arena)
    {
        int slot = AddressIndex.TakeSlot(ref _slots, arena);
        _byAddress = AddressIndex.Build(_slots);
        return slot;
    }

    public void Remove(Arena arena)
    {
        _slots[arena.Slot] = null;
        _byAddress = AddressIndex.Build(_slots);
    }

    /// <summary>An arena moved (mremap of the whole arena).</summary>
    public void Reindex() => _byAddress = AddressIndex.Build(_slots);

    /// <summary>The arena holding <paramref name="address"/>, or null.</summary>
    public Arena? Find(nint address) => AddressIndex.Find(_byAddress, address);

    /// <summary>The arena in <paramref name="slot"/>, or null (released since).</summary>
    public Arena? InSlot(int slot) => slot < _slots.Length ? _slots[slot] : null;

    /// <summary>The start of the first arena above <paramref name="after"/>, or <paramref name="end"/>.</summary>
    public nint NextStart(nint after, nint end)
    {
        foreach (Arena arena in _byAddress)
            if (arena.Address > after) return arena.Address;
        return end;
    }
}
