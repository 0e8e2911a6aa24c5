using ZstdSharp;

namespace Tibet.Core.Compression;

/// <summary>
/// zstd for single pages, reusing one compression and one decompression context.
/// </summary>
/// <remarks>
/// Decompressing a page costs several times what decrypting it does (docs/background.md: ~410 MB/s
/// against ~3 GB/s), so the engine compresses only when asked and keeps the result only
/// when it is small enough to pay for that cost in memory saved. Not thread-safe: each
/// instance has one user at a time (the sealer's, under the engine lock; the handler's
/// own outside it, in Paging.Sealing.UnlockedSealer and Paging.Faults.UnlockedOpener).
/// </remarks>
internal sealed class PageCompressor : IDisposable
{
    public const int DefaultLevel = 3;

    private readonly Compressor _compressor;
    private readonly Decompressor _decompressor = new();

    public PageCompressor(int level = DefaultLevel) => _compressor = new Compressor(level);

    /// <summary>Compresses into <paramref name="destination"/>; false when the result
    /// does not fit, which is the caller's signal to store the page raw.</summary>
    public bool TryCompress(ReadOnlySpan<byte> page, Span<byte> destination, out int written)
    {
        try
        {
            return _compressor.TryWrap(page, destination, out written) && written > 0;
        }
        catch (ZstdException)
        {
            // zstd reports "destination too small" as an error code, not as false.
            written = 0;
            return false;
        }
    }

    /// <summary>Decompresses a page; false unless exactly <paramref name="page"/>.Length
    /// bytes came out.</summary>
    public bool TryDecompress(ReadOnlySpan<byte> compressed, Span<byte> page)
    {
        try
        {
            return _decompressor.TryUnwrap(compressed, page, out int written) && written == page.Length;
        }
        catch (ZstdException)
        {
            return false;
        }
    }

    public void Dispose()
    {
        _compressor.Dispose();
        _decompressor.Dispose();
    }
}
