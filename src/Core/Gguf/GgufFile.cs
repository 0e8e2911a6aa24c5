using System.Buffers.Binary;

namespace Tibet.Core.Gguf;

/// <summary>
/// The parsed header of a GGUF v3 file: its metadata and the layout of its tensors.
/// Tensor data is not read; <see cref="DataOffset"/> and each tensor's
/// <see cref="GgufTensorInfo.Offset"/> say where it lies.
/// </summary>
/// <remarks>
/// Reading is strict: anything llama.cpp would refuse, and anything that could make a
/// consumer read outside the file, throws <see cref="GgufFormatException"/>. A file that
/// reads successfully has every tensor inside the file, packed in order at aligned
/// offsets exactly as gguf.cpp requires, and valid UTF-8 in every string.
/// </remarks>
public sealed class GgufFile
{
    private readonly Dictionary<string, int> _tensorIndexByName;
    private readonly GgufTensorInfo[] _tensors;

    internal GgufFile(uint version, uint alignment, long headerLength, long dataOffset, long fileLength,
        GgufMetadata metadata, GgufTensorInfo[] tensors, Dictionary<string, int> tensorIndexByName)
    {
        Version = version;
        Alignment = alignment;
        HeaderLength = headerLength;
        DataOffset = dataOffset;
        FileLength = fileLength;
        Metadata = metadata;
        _tensors = tensors;
        _tensorIndexByName = tensorIndexByName;
    }

    public uint Version { get; }

    /// <summary>general.alignment, or 32 when the file does not set it.</summary>
    public uint Alignment { get; }

    /// <summary>Where the tensor infos end, before the padding to the data section.</summary>
    public long HeaderLength { get; }

    /// <summary>The file offset of the data section: the header's end rounded up to
    /// <see cref="Alignment"/>, as <see cref="GgufWriter"/> lays it out. In a file without
    /// tensors it may lie past the end of the file (gguf.cpp reports the unpadded header
    /// end there instead; with tensors the two always agree).</summary>
    public long DataOffset { get; }

    public long FileLength { get; }

    public GgufMetadata Metadata { get; }

    /// <summary>The tensors in file order, which is also their order in the data section.</summary>
    public IReadOnlyList<GgufTensorInfo> Tensors => _tensors;

    public bool TryGetTensor(string name, out GgufTensorInfo tensor)
    {
        if (_tensorIndexByName.TryGetValue(name, out int index))
        {
            tensor = _tensors[index];
            return true;
        }
        tensor = null!;
        return false;
    }

    /// <summary>The absolute file offset of a tensor of this file.</summary>
    public long FileOffsetOf(GgufTensorInfo tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        if (!_tensorIndexByName.TryGetValue(tensor.Name, out int index) || !ReferenceEquals(_tensors[index], tensor))
            throw new ArgumentException($"Tensor {GgufStrings.Quote(tensor.Name)} does not belong to this file.", nameof(tensor));
        return DataOffset + tensor.Offset;
    }

    /// <summary>True when the bytes start with the GGUF magic. Cheap enough to sniff
    /// every file a process opens.</summary>
    public static bool HasMagic(ReadOnlySpan<byte> firstBytes) =>
        firstBytes.Length >= 4 && BinaryPrimitives.ReadUInt32LittleEndian(firstBytes) == GgufFormat.Magic;

    /// <summary>Reads and validates the header of the GGUF file that makes up the whole
    /// of <paramref name="stream"/> (from offset 0 to its length), which must be
    /// readable and seekable. Throws <see cref="GgufFormatException"/> on any violation.</summary>
    public static GgufFile Read(Stream stream, GgufLimits? limits = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        if (!stream.CanRead || !stream.CanSeek)
            throw new ArgumentException("Reading a GGUF header needs a readable, seekable stream.", nameof(stream));
        var effectiveLimits = limits ?? GgufLimits.Default;
        effectiveLimits.Validate();
        return new GgufHeaderParser(stream, effectiveLimits).Parse();
    }

    /// <summary>Opens <paramref name="path"/> read-only and reads its header.</summary>
    public static GgufFile Read(string path, GgufLimits? limits = null)
    {
        // The parser buffers on its own; a FileStream buffer would only add a copy.
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0);
        return Read(stream, limits);
    }
}
