using System.Buffers.Binary;
using System.Text;
using Tibet.Core.Sealing;

namespace Tibet.IntegrationTests.Sealing;

/// <summary>A sealed file's bytes in memory, with the offsets of its parts, for tests
/// that alter exactly one part.</summary>
internal sealed class SealedBytes
{
    public SealedBytes(string path)
    {
        Bytes = File.ReadAllBytes(path);
        using var model = SealedModel.Open(path);
        DataOffset = model.DataOffset;
        DataPages = model.DataPages;
        TrailerOffset = model.TrailerOffset;
        // "TIBETSL1", count, then per recipient a length and the wrapped key.
        long at = TrailerOffset + 12;
        var wrappedKeys = new List<(long, int)>();
        for (int i = 0; i < model.WrappedKeyCount; i++)
        {
            int length = (int)BinaryPrimitives.ReadUInt32LittleEndian(Bytes.AsSpan((int)at));
            wrappedKeys.Add((at + 4, length));
            at += 4 + length;
        }
        WrappedKeys = wrappedKeys;
        TagTableOffset = at;
        MacOffset = Bytes.Length - 32;
    }

    public byte[] Bytes { get; }
    public long DataOffset { get; }
    public long DataPages { get; }
    public long TrailerOffset { get; }
    public IReadOnlyList<(long Offset, int Length)> WrappedKeys { get; }
    public long TagTableOffset { get; }
    public long MacOffset { get; }

    public ReadOnlySpan<byte> CiphertextPage(long index) => Bytes.AsSpan((int)(DataOffset + index * SealedModel.PageSize), SealedModel.PageSize);

    /// <summary>Where <paramref name="text"/> (ASCII) first occurs in the header.</summary>
    public int HeaderOffsetOf(string text)
    {
        int at = Bytes.AsSpan(0, (int)DataOffset).IndexOf(Encoding.ASCII.GetBytes(text));
        if (at < 0)
            throw new InvalidOperationException($"'{text}' does not occur in the sealed header.");
        return at;
    }

    public byte[] With(Action<byte[]> change)
    {
        var copy = (byte[])Bytes.Clone();
        change(copy);
        return copy;
    }

    public byte[] WithFlippedBit(long offset, int bit = 0) => With(bytes => bytes[offset] ^= (byte)(1 << bit));

    public static SealedModel Open(byte[] bytes) => SealedModel.Open(new MemoryStream(bytes, writable: false), "test.sealed.gguf");
}
