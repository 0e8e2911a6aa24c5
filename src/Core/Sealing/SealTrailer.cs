using System.Buffers.Binary;

namespace Tibet.Core.Sealing;

/// <summary>
/// The trailer of a sealed model, minus its tag table: the wrapped keys (kept as the
/// exact bytes the MAC covers), where the tag table lies, and the stored MAC. Every
/// length is checked against what the rest of the file can hold before anything is
/// read or allocated for it, and the file must end exactly after the MAC.
/// </summary>
internal sealed class SealTrailer
{
    private SealTrailer(byte[] prefix, (int Offset, int Length)[] wrappedKeys, long tagTableOffset, byte[] mac)
    {
        Prefix = prefix;
        WrappedKeySlices = wrappedKeys;
        TagTableOffset = tagTableOffset;
        Mac = mac;
    }

    /// <summary>"TIBETSL1" ‖ u32 count ‖ each recipient's u32 length ‖ wrapped key: the
    /// trailer bytes before the tag table, all covered by the MAC.</summary>
    public byte[] Prefix { get; }

    public int WrappedKeyCount => WrappedKeySlices.Length;

    public long TagTableOffset { get; }

    public byte[] Mac { get; }

    private (int Offset, int Length)[] WrappedKeySlices { get; }

    public ReadOnlySpan<byte> WrappedKey(int index)
    {
        var (offset, length) = WrappedKeySlices[index];
        return Prefix.AsSpan(offset, length);
    }

    /// <exception cref="SealedModelException">MalformedSeal, for any trailer that does not fit the file exactly.</exception>
    public static SealTrailer Read(Stream stream, long fileLength, SealHeader header, string sourceName)
    {
        long start = header.TrailerOffset;
        // data_pages is at most the file's length / 4096, so the product cannot overflow.
        long tagTableBytes = header.DataPages * SealFormat.TagSize;
        long available = fileLength - start;
        long leastLength = SealFormat.TrailerFixedSize + tagTableBytes + SealFormat.MacSize;
        if (available < leastLength)
            throw Truncated(sourceName, fileLength, $"its trailer at byte {start} needs at least {leastLength} bytes for {header.DataPages} pages");

        stream.Seek(start, SeekOrigin.Begin);
        Span<byte> fixedPart = stackalloc byte[SealFormat.TrailerFixedSize];
        stream.ReadExactly(fixedPart);
        if (!fixedPart[..8].SequenceEqual(SealFormat.TrailerMagic))
            throw SealHeader.Malformed(sourceName, $"no trailer magic \"TIBETSL1\" at byte {start}, where the header says the trailer starts");
        uint count = BinaryPrimitives.ReadUInt32LittleEndian(fixedPart[8..]);
        int listed = header.Requirements.Recipients.Count;
        if (count != (uint)listed)
            throw SealHeader.Malformed(sourceName, $"the trailer holds {count} wrapped keys, but the header lists {listed} recipients");

        long recipientBytesLeft = available - leastLength;
        var slices = new (int Offset, int Length)[count];
        var prefix = new MemoryStream();
        prefix.Write(fixedPart);
        Span<byte> lengthField = stackalloc byte[4];
        for (int i = 0; i < slices.Length; i++)
        {
            if (recipientBytesLeft < lengthField.Length)
                throw Truncated(sourceName, fileLength, $"it ends inside the length of wrapped key {i}");
            stream.ReadExactly(lengthField);
            recipientBytesLeft -= lengthField.Length;
            uint length = BinaryPrimitives.ReadUInt32LittleEndian(lengthField);
            if (length is 0 or > SealFormat.MaxWrappedKeySize)
                throw SealHeader.Malformed(sourceName, $"wrapped key {i} claims {length} bytes, not 1 to {SealFormat.MaxWrappedKeySize}");
            if (length > recipientBytesLeft)
                throw Truncated(sourceName, fileLength, $"wrapped key {i} claims {length} bytes but only {recipientBytesLeft} remain before the tag table");
            prefix.Write(lengthField);
            var blob = new byte[length];
            stream.ReadExactly(blob);
            slices[i] = ((int)prefix.Length, (int)length);
            prefix.Write(blob);
            recipientBytesLeft -= length;
        }

        long tagTableOffset = start + prefix.Length;
        if (recipientBytesLeft != 0)
            throw SealHeader.Malformed(sourceName,
                $"the file is {fileLength} bytes long, {recipientBytesLeft} more than its trailer accounts for (bytes were appended, or a length is corrupt)");

        var mac = new byte[SealFormat.MacSize];
        stream.Seek(tagTableOffset + tagTableBytes, SeekOrigin.Begin);
        stream.ReadExactly(mac);
        return new SealTrailer(prefix.ToArray(), slices, tagTableOffset, mac);
    }

    private static SealedModelException Truncated(string sourceName, long fileLength, string problem) =>
        SealHeader.Malformed(sourceName, $"the file ends at byte {fileLength} too early: {problem} (it is truncated)");
}
