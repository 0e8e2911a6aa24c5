using System.Buffers.Binary;
using System.Text;
using Tibet.Core.Gguf;

namespace Tibet.IntegrationTests.Gguf;

/// <summary>
/// Builds GGUF bytes field by field, independently of <see cref="GgufWriter"/>, so that
/// tests can state exactly which bytes a broken file has.
/// </summary>
internal sealed class GgufBytes
{
    private readonly MemoryStream _bytes = new();

    public long Length => _bytes.Length;

    /// <summary>Magic, version 3 and the two counts.</summary>
    public static GgufBytes Header(ulong tensorCount, ulong entryCount) =>
        new GgufBytes().U32(GgufFormat.Magic).U32(GgufFormat.Version).U64(tensorCount).U64(entryCount);

    public GgufBytes U8(byte value) { _bytes.WriteByte(value); return this; }

    public GgufBytes U32(uint value)
    {
        Span<byte> field = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(field, value);
        _bytes.Write(field);
        return this;
    }

    public GgufBytes U64(ulong value)
    {
        Span<byte> field = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(field, value);
        _bytes.Write(field);
        return this;
    }

    public GgufBytes Raw(ReadOnlySpan<byte> bytes) { _bytes.Write(bytes); return this; }

    /// <summary>A GGUF string: uint64 length, then the bytes as given (valid or not).</summary>
    public GgufBytes Str(ReadOnlySpan<byte> utf8) => U64((ulong)utf8.Length).Raw(utf8);

    public GgufBytes Str(string text) => Str(Encoding.UTF8.GetBytes(text));

    public GgufBytes Key(string key, GgufValueType type) => Str(key).U32((uint)type);

    public GgufBytes StringEntry(string key, string value) => Key(key, GgufValueType.String).Str(value);

    public GgufBytes UInt32Entry(string key, uint value) => Key(key, GgufValueType.UInt32).U32(value);

    public GgufBytes TensorInfo(string name, GgmlType type, ulong offset, params ulong[] dimensions)
    {
        Str(name).U32((uint)dimensions.Length);
        foreach (ulong dimension in dimensions)
            U64(dimension);
        return U32((uint)type).U64(offset);
    }

    /// <summary>Zeros up to the next multiple of <paramref name="alignment"/>.</summary>
    public GgufBytes PadTo(int alignment)
    {
        while (_bytes.Length % alignment != 0)
            _bytes.WriteByte(0);
        return this;
    }

    public GgufBytes Zeros(int count)
    {
        _bytes.Write(new byte[count]);
        return this;
    }

    public byte[] ToArray() => _bytes.ToArray();
}
