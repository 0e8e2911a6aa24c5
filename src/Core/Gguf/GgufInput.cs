using System.Buffers.Binary;
using System.Diagnostics;

namespace Tibet.Core.Gguf;

/// <summary>
/// Sequential little-endian reads over a seekable stream through a 64 KiB buffer, so that
/// a header of a hundred thousand small fields costs a few dozen read calls. Every read
/// first checks that the file holds the bytes; when it does not, the owner's
/// <c>truncated</c> callback supplies the exception, because only the owner knows which
/// field was being read.
/// </summary>
internal sealed class GgufInput
{
    public const int BufferSize = 64 * 1024;

    private readonly Stream _stream;
    private readonly byte[] _buffer = new byte[BufferSize];
    private readonly Func<long, long, Exception> _truncated;
    private long _bufferFileOffset;
    private int _next;
    private int _filled;

    /// <param name="truncated">Builds the exception for a read of <c>needed</c> bytes at
    /// file offset <c>position</c> that runs past the end of the file.</param>
    public GgufInput(Stream stream, Func<long, long, Exception> truncated)
    {
        _stream = stream;
        _truncated = truncated;
        _stream.Position = 0;
        FileLength = stream.Length;
    }

    public long FileLength { get; }

    public long Position => _bufferFileOffset + _next;

    public long Remaining => FileLength - Position;

    /// <summary>The next <paramref name="count"/> bytes (at most <see cref="BufferSize"/>),
    /// valid until the next read.</summary>
    public ReadOnlySpan<byte> Read(int count)
    {
        Debug.Assert(count is >= 0 and <= BufferSize);
        if (_filled - _next < count)
            Refill(count);
        var bytes = _buffer.AsSpan(_next, count);
        _next += count;
        return bytes;
    }

    public byte ReadUInt8() => Read(1)[0];
    public ushort ReadUInt16() => BinaryPrimitives.ReadUInt16LittleEndian(Read(2));
    public uint ReadUInt32() => BinaryPrimitives.ReadUInt32LittleEndian(Read(4));
    public ulong ReadUInt64() => BinaryPrimitives.ReadUInt64LittleEndian(Read(8));

    /// <summary>Fills <paramref name="destination"/> completely, of any length.</summary>
    public void ReadExactly(Span<byte> destination)
    {
        if (destination.Length > Remaining)
            throw _truncated(Position, destination.Length);
        int buffered = Math.Min(_filled - _next, destination.Length);
        _buffer.AsSpan(_next, buffered).CopyTo(destination);
        _next += buffered;
        var rest = destination[buffered..];
        if (rest.IsEmpty)
            return;
        if (rest.Length < BufferSize)
        {
            Read(rest.Length).CopyTo(rest);
            return;
        }

        // Large arrays go straight from the stream into their destination.
        _bufferFileOffset += _filled;
        _next = _filled = 0;
        while (!rest.IsEmpty)
        {
            int read = _stream.Read(rest);
            if (read == 0)
                throw _truncated(_bufferFileOffset, rest.Length);
            _bufferFileOffset += read;
            rest = rest[read..];
        }
    }

    private void Refill(int needed)
    {
        if (needed > Remaining)
            throw _truncated(Position, needed);
        int unread = _filled - _next;
        Buffer.BlockCopy(_buffer, _next, _buffer, 0, unread);
        _bufferFileOffset += _next;
        _next = 0;
        _filled = unread;
        while (_filled < needed)
        {
            int read = _stream.Read(_buffer, _filled, BufferSize - _filled);
            // Length promised more; the file shrank while we read it.
            if (read == 0)
                throw _truncated(Position, needed);
            _filled += read;
        }
    }
}
