using System.Buffers;
using System.Buffers.Binary;
using System.Text;

namespace Tibet.Core.Gguf;

/// <summary>
/// Serialises header fields little-endian into a 64 KiB buffer and hands the stream
/// large writes only, so that a header with a 32k-entry vocabulary costs a handful of
/// write calls rather than one per field.
/// </summary>
internal sealed class GgufHeaderOutput
{
    private const int BufferSize = 64 * 1024;

    private readonly Stream _stream;
    private readonly byte[] _buffer = new byte[BufferSize];
    private int _used;

    public GgufHeaderOutput(Stream stream) => _stream = stream;

    /// <summary>Bytes accepted so far, buffered or not.</summary>
    public long Written { get; private set; }

    public void WriteUInt8(byte value) => Reserve(1)[0] = value;
    public void WriteUInt16(ushort value) => BinaryPrimitives.WriteUInt16LittleEndian(Reserve(2), value);
    public void WriteUInt32(uint value) => BinaryPrimitives.WriteUInt32LittleEndian(Reserve(4), value);
    public void WriteUInt64(ulong value) => BinaryPrimitives.WriteUInt64LittleEndian(Reserve(8), value);

    /// <summary>A GGUF string: uint64 byte length, then UTF-8 without terminator.
    /// <paramref name="utf8Length"/> is the length the caller already measured with
    /// <see cref="GgufStrings.Utf8Length"/>.</summary>
    public void WriteString(string value, int utf8Length)
    {
        WriteUInt64((ulong)utf8Length);
        if (utf8Length <= BufferSize)
        {
            GgufStrings.StrictUtf8.GetBytes(value, Reserve(utf8Length));
            return;
        }
        byte[] rented = ArrayPool<byte>.Shared.Rent(utf8Length);
        try
        {
            int encoded = GgufStrings.StrictUtf8.GetBytes(value, rented);
            WriteBytes(rented.AsSpan(0, encoded));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    public void WriteBytes(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length <= BufferSize - _used)
        {
            bytes.CopyTo(_buffer.AsSpan(_used));
            _used += bytes.Length;
        }
        else
        {
            Flush();
            _stream.Write(bytes);
        }
        Written += bytes.Length;
    }

    public void WriteZeros(long count)
    {
        while (count > 0)
        {
            int chunk = (int)Math.Min(count, BufferSize);
            Reserve(chunk).Clear();
            count -= chunk;
        }
    }

    public void Flush()
    {
        _stream.Write(_buffer, 0, _used);
        _used = 0;
    }

    private Span<byte> Reserve(int count)
    {
        if (count > BufferSize - _used)
            Flush();
        var span = _buffer.AsSpan(_used, count);
        _used += count;
        Written += count;
        return span;
    }
}
