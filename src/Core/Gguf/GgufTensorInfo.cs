using System.Collections.ObjectModel;

namespace Tibet.Core.Gguf;

/// <summary>
/// The header record of one tensor: name, element type, shape and where its bytes lie
/// in the data section. The shape is in ggml order: <c>Dimensions[0]</c> (ne0) is the
/// innermost, contiguous dimension.
/// </summary>
/// <remarks>Deliberately a class with reference identity, not a record: the writer
/// checks that the tensor handed back to it is the very one it laid out.</remarks>
public sealed class GgufTensorInfo
{
    internal GgufTensorInfo(string name, GgmlType type, long[] dimensions, long elementCount, long byteSize, long offset)
    {
        Name = name;
        Type = type;
        Dimensions = new ReadOnlyCollection<long>(dimensions);
        ElementCount = elementCount;
        ByteSize = byteSize;
        Offset = offset;
    }

    public string Name { get; }

    public GgmlType Type { get; }

    /// <summary>ne0 first; between one and <see cref="GgufFormat.MaxDimensions"/> entries, each at least 1.</summary>
    public IReadOnlyList<long> Dimensions { get; }

    /// <summary>The product of <see cref="Dimensions"/>.</summary>
    public long ElementCount { get; }

    /// <summary>The tensor's bytes in the data section, without alignment padding.</summary>
    public long ByteSize { get; }

    /// <summary>Where the tensor starts, relative to the start of the data section. Add
    /// the file's data offset for a position in the file.</summary>
    public long Offset { get; }

    public override string ToString() => $"{Name} {Type} [{string.Join(", ", Dimensions)}] {ByteSize} bytes at data+{Offset}";
}
