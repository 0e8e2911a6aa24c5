
namespace Tibet.Core.Paging;

// Page sources: contents that exist before the program first touches them (a model
// file's pages), read from their source on first touch.
public sealed unsafe partial class PageEngine
{
    internal void AttachSource(Arena arena, IPageSource source)
    {
        ArgumentNullException.ThrowIfNull(source);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(arena.Released, arena);
            for (long i = 0; i < arena.PageCount; i++)
                if (arena.Entries[i].State != PageState.Untouched)
                    throw new InvalidOperationException($"arena '{arena.Label}' has touched pages; a source can only back a fresh arena");
            arena.Source = source;
        }
    }

    /// <summary>Fills <paramref name="destination"/> with page <paramref name="index"/> from
    /// <paramref name="source"/> (an arena's, or a forked child's copy of it); anything but
    /// data leaves it cleared. Fault path: no allocation; a throwing source counts as tampered.</summary>
    private PageVerdict FillFromSource(IPageSource source, long index, byte* destination)
    {
        var page = new Span<byte>(destination, PageSize);
        PageVerdict verdict;
        try
        {
            verdict = source.Fill(index, page);
        }
        catch
        {
            verdict = PageVerdict.Tampered;
        }
        if (verdict == PageVerdict.Keep)
            _sourcedPages++;
        else
            page.Clear();
        return verdict;
    }
}
