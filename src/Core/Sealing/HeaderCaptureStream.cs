using NSec.Cryptography;

namespace Tibet.Core.Sealing;

/// <summary>
/// A read-only view of a file that keeps a copy of every byte read through it, in order
/// from offset 0. The header is parsed through it, and the header hash is then taken
/// over that very copy: the bytes whose MAC is checked are the bytes that were parsed,
/// even if the file changes underneath (no time-of-check/time-of-use gap).
/// </summary>
internal sealed class HeaderCaptureStream : Stream
{
    private readonly Stream _source;
    private readonly MemoryStream _captured = new();

    public HeaderCaptureStream(Stream source)
    {
        _source = source;
        _source.Position = 0;
    }

    public override bool CanRead => true;
    public override bool CanSeek => true;
    public override bool CanWrite => false;
    public override long Length => _source.Length;

    /// <summary>Only the current position can be "sought": the copy must stay contiguous.</summary>
    public override long Position
    {
        get => _captured.Length;
        set
        {
            if (value != _captured.Length)
                throw new NotSupportedException("The header is captured in one sequential pass from offset 0; it cannot seek.");
        }
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        int read = _source.Read(buffer);
        _captured.Write(buffer[..read]);
        return read;
    }

    public override long Seek(long offset, SeekOrigin origin)
    {
        long target = origin switch
        {
            SeekOrigin.Begin => offset,
            SeekOrigin.Current => _captured.Length + offset,
            _ => Length + offset,
        };
        Position = target;
        return target;
    }

    /// <summary>SHA-256 of the file's bytes [0, <paramref name="length"/>), reading what was
    /// not captured yet (the padding after the parsed header).</summary>
    /// <exception cref="EndOfStreamException">The file is shorter than <paramref name="length"/>.</exception>
    public void HashPrefix(long length, Span<byte> hash)
    {
        if (_captured.Length < length)
        {
            byte[] rest = new byte[length - _captured.Length];
            _source.ReadExactly(rest);
            _captured.Write(rest);
        }
        HashAlgorithm.Sha256.Hash(_captured.GetBuffer().AsSpan(0, checked((int)length)), hash);
    }

    public override void Flush() { }

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}
