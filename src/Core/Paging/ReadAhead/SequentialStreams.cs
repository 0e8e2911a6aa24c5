using System.Diagnostics;

namespace Tibet.Core.Paging.ReadAhead;

/// <summary>
/// Tells apart the sequential streams reading one arena, so that each grows its own
/// read-ahead window. llama.cpp's threads each scan their own rows of a tensor: with one
/// expected-next-page per arena, their faults interleave, no fault lands where the last
/// run ended, and every fault is served one page at a time.
/// </summary>
/// <remarks>A small table, most recently used first, replaced least recently used.
/// Fault path: no allocation (the table is allocated with the arena).</remarks>
internal sealed class SequentialStreams
{
    private struct Stream
    {
        /// <summary>The page a fault would hit if this stream goes on (−1: unused).</summary>
        public long Next;
        public int Window;
        public long LastUsed;
    }

    private readonly Stream[] _streams;
    private long _clock;

    public SequentialStreams(int streams)
    {
        Debug.Assert(streams >= 1);
        _streams = new Stream[streams];
        for (int i = 0; i < _streams.Length; i++)
            _streams[i].Next = -1;
    }

    /// <summary>
    /// The read-ahead window for a fault at <paramref name="index"/>: double the window of
    /// the stream that expected this page (up to <paramref name="maxPages"/>), or 1 for
    /// a fault no stream expected, which starts a new stream in the least recently used
    /// slot. Call <see cref="Advance"/> with the run actually served.
    /// </summary>
    public int WindowFor(long index, int maxPages, out int stream)
    {
        _clock++;
        int oldest = 0;
        for (int i = 0; i < _streams.Length; i++)
        {
            if (_streams[i].Next == index)
            {
                stream = i;
                _streams[i].LastUsed = _clock;
                _streams[i].Window = Math.Min(_streams[i].Window * 2, maxPages);
                return _streams[i].Window;
            }
            if (_streams[i].LastUsed < _streams[oldest].LastUsed)
                oldest = i;
        }
        stream = oldest;
        _streams[oldest] = new Stream { Next = -1, Window = 1, LastUsed = _clock };
        return 1;
    }

    /// <summary>The stream served <paramref name="count"/> pages from <paramref name="index"/>.</summary>
    public void Advance(int stream, long index, int count) => _streams[stream].Next = index + count;
}
