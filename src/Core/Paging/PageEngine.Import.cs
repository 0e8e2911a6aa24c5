using Tibet.Core.Interop;

namespace Tibet.Core.Paging;

// Page sources: contents that exist before the program first touches them (a model
// file's pages), read from their source on first touch.
public sealed unsafe partial class PageEngine
{
    /// <summary>Under the lock, so that no collapse of the arena's protected ranges is
    /// under way when the program's mprotect goes on (see Collapse.RangeCollapser).</summary>
    internal void MarkWritable(Arena arena)
    {
        lock (_gate)
            arena.MappedReadOnly = false;
    }

    internal void AttachSource(Arena arena, PageSource source, bool refetchWhenEvicted, bool mappedReadOnly)
    {
        ArgumentNullException.ThrowIfNull(source);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(arena.Released, arena);
            for (long i = 0; i < arena.PageCount; i++)
                if (arena.Entries[i].State != PageState.Untouched)
                    throw new InvalidOperationException($"arena '{arena.Label}' has touched pages; a source can only back a fresh arena");
            arena.Source = source;
            // Refetching needs write tracking: a page written since it came from the source
            // must be sealed, not dropped.
            arena.RefetchesSource = refetchWhenEvicted && _tracksWrites;
            arena.MappedReadOnly = mappedReadOnly;
            arena.SourceFillsRunsConcurrently = source.FillsRunsConcurrently;
            arena.PlacedWhole = new bool[(arena.PageCount + Collapse.RangeCollapser.RangePages - 1) / Collapse.RangeCollapser.RangePages];
            // MADV_COLLAPSE refuses areas marked MADV_NOHUGEPAGE (see RangeCollapser).
            if (_collapser.Enabled)
                Libc.madvise(arena.Address, (nuint)arena.Length, Libc.MADV_HUGEPAGE);
        }
    }
}
