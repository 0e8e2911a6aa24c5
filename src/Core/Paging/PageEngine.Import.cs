using Tibet.Core.Files;

namespace Tibet.Core.Paging;

// Import: contents that exist before the program first touches them (a model file's
// pages), sealed straight into the store so they are never plaintext in the arena.
public sealed unsafe partial class PageEngine
{
    /// <summary>
    /// Seals <paramref name="plaintext"/> (whole pages) as the contents of the untouched
    /// pages from <paramref name="firstPage"/> on. A page of zeros is recorded as a zero
    /// page and costs nothing.
    /// </summary>
    /// <remarks>The lock is held for one call only, so callers import a large file in
    /// slices (a few hundred KiB) and the handler serves faults of other arenas between
    /// them.</remarks>
    internal void ImportPages(Arena arena, long firstPage, ReadOnlySpan<byte> plaintext)
    {
        if (plaintext.Length % PageSize != 0)
            throw new ArgumentException("Imported contents must be whole pages.", nameof(plaintext));
        long count = plaintext.Length / PageSize;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(arena.Released, arena);
            if (firstPage < 0 || firstPage + count > arena.PageCount)
                throw new ArgumentOutOfRangeException(nameof(firstPage), $"pages {firstPage}..{firstPage + count} lie outside arena '{arena.Label}' ({arena.PageCount} pages)");
            for (long i = 0; i < count; i++)
            {
                ref PageEntry entry = ref arena.Entries[firstPage + i];
                if (entry.State != PageState.Untouched)
                    throw new InvalidOperationException($"page {firstPage + i} of arena '{arena.Label}' was touched before its contents were imported");
                SealInto(arena, firstPage + i, ref entry, plaintext.Slice((int)(i * PageSize), PageSize));
                _importedPages++;
            }
        }
    }

    /// <summary>
    /// Marks the untouched page <paramref name="page"/> as failed authentication before
    /// the program sees it (a tampered page of a sealed model file): every touch raises
    /// SIGBUS, exactly as for a page of the store that fails to open.
    /// </summary>
    internal void ImportPoisonedPage(Arena arena, long page)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(arena.Released, arena);
            ArgumentOutOfRangeException.ThrowIfNegative(page);
            ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(page, arena.PageCount);
            ref PageEntry entry = ref arena.Entries[page];
            if (entry.State != PageState.Untouched)
                throw new InvalidOperationException($"page {page} of arena '{arena.Label}' was touched before its contents were imported");
            entry.State = PageState.Poisoned;
            _authenticationFailures++;
        }
    }

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
    /// the arena's source. Fault path: no allocation; a throwing source counts as tampered.</summary>
    private PageVerdict FillFromSource(Arena arena, long index, byte* destination)
    {
        var page = new Span<byte>(destination, PageSize);
        PageVerdict verdict;
        try
        {
            verdict = arena.Source!.Fill(index, page);
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
