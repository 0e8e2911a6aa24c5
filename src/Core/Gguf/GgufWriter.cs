using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Tibet.Core.Gguf;

/// <summary>
/// Writes a GGUF v3 file as llama.cpp lays it out, streaming: first add all metadata and
/// tensors (which fixes the layout), then <see cref="WriteHeader"/>, then each tensor's
/// bytes in the order the tensors were added, whole (<see cref="WriteTensorData"/>) or
/// in chunks (<see cref="BeginTensorData"/>, <see cref="WriteTensorChunk"/>,
/// <see cref="EndTensorData"/>), so a model of any size is written with bounded memory.
/// </summary>
/// <remarks>
/// <para>Tensors are packed in the order added, each at the previous one's end rounded
/// up to <see cref="Alignment"/>, and each is followed by zero padding to the
/// alignment, exactly as gguf.cpp writes and requires them.</para>
/// <para>Everything added is checked against the rules <see cref="GgufFile"/> enforces
/// with <see cref="GgufLimits.Default"/>, so a file this writer completes is one the
/// reader accepts. Misuse (wrong order, wrong sizes, adding after the header is
/// written) throws <see cref="InvalidOperationException"/> or <see cref="ArgumentException"/>
/// before anything is written.</para>
/// </remarks>
public sealed class GgufWriter
{
    /// <summary>The metadata key under which <see cref="DataSectionAlignment"/> pads the
    /// header: a string of spaces, meaningless to any reader.</summary>
    public const string HeaderPaddingKey = "tibet.header_padding";

    /// <summary>The largest <see cref="DataSectionAlignment"/>: its padding string must
    /// stay within the reader's default string limit.</summary>
    public const uint MaxDataSectionAlignment = 16 << 20;

    private const uint MaxAlignment = 1u << 30;
    // magic, version, tensor count, metadata count
    private const int FixedHeaderBytes = 4 + 4 + 8 + 8;
    // key length, key, type tag, then the value itself
    private const int EntryOverheadBytes = 8 + 4;
    private const int TensorInfoOverheadBytes = 8 + 4 + 4 + 8;
    // general.alignment and the header padding are entries too; the limits on the
    // caller's metadata leave room for them.
    private const int MaxImplicitEntries = 2;
    private const long ReservedImplicitEntryBytes = MaxDataSectionAlignment + 1024;

    private static readonly byte[] Zeros = new byte[4096];
    private static readonly GgufLimits Limits = GgufLimits.Default;

    private readonly List<PendingEntry> _metadata = [];
    private readonly HashSet<string> _keys = new(StringComparer.Ordinal);
    private readonly List<GgufTensorInfo> _tensors = [];
    private readonly Dictionary<string, int> _tensorIndexByName = new(StringComparer.Ordinal);
    private readonly uint _dataSectionAlignment;
    private long _metadataBytes;
    private long _tensorInfoBytes;
    private long _dataSize;

    private WriterState _state = WriterState.Building;
    private Stream? _output;
    private long _dataOffset;
    private int _nextTensor;
    private long _openTensorWritten;

    private readonly record struct PendingEntry(string Key, GgufValue Value, long EncodedBytes);

    private enum WriterState
    {
        Building,
        BetweenTensors,
        InTensor,
        Complete,
        Faulted,
    }

    /// <param name="alignment">Alignment of every tensor within the data section; a
    /// power of two. The default, 32, is what llama.cpp uses, and general.alignment is
    /// written only for other values.</param>
    public GgufWriter(uint alignment = GgufFormat.DefaultAlignment)
    {
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("GGUF files are written little-endian; this writer supports little-endian hosts only.");
        if (!GgufTensorShape.IsPowerOfTwo(alignment) || alignment > MaxAlignment)
            throw new ArgumentOutOfRangeException(nameof(alignment), alignment,
                $"The tensor alignment must be a power of two no larger than {MaxAlignment}.");
        Alignment = alignment;
        _dataSectionAlignment = alignment;
    }

    public uint Alignment { get; }

    /// <summary>
    /// Where the data section must start: a power of two at least <see cref="Alignment"/>
    /// (e.g. 4096, so that the data section is made of whole pages that can be encrypted
    /// one by one). When larger than the alignment, the header is padded up to it with a
    /// <see cref="HeaderPaddingKey"/> string entry; the file stays ordinary GGUF.
    /// </summary>
    public uint DataSectionAlignment
    {
        get => _dataSectionAlignment;
        init
        {
            if (!GgufTensorShape.IsPowerOfTwo(value) || value < Alignment || value > MaxDataSectionAlignment)
                throw new ArgumentOutOfRangeException(nameof(DataSectionAlignment), value,
                    $"The data section alignment must be a power of two between the tensor alignment ({Alignment}) and {MaxDataSectionAlignment}.");
            _dataSectionAlignment = value;
        }
    }

    /// <summary>The tensors in file order, with the offsets assigned to them.</summary>
    public IReadOnlyList<GgufTensorInfo> Tensors => _tensors;

    /// <summary>The file offset where the data section starts: the header's length
    /// including its padding. It grows with every addition until the header is written.</summary>
    public long DataOffset => _state == WriterState.Building ? ComputeLayout().DataOffset : _dataOffset;

    /// <summary>The data section's length, including the padding after the last tensor.</summary>
    public long DataSize => _dataSize;

    /// <summary>The length the complete file will have.</summary>
    public long FileLength => checked(DataOffset + _dataSize);

    /// <summary>True once the header and every tensor's data have been written.</summary>
    public bool IsComplete => _state == WriterState.Complete;

    public void Add(string key, string value) => Add(key, GgufValue.OfString(value));
    public void Add(string key, byte value) => Add(key, GgufValue.OfUInt8(value));
    public void Add(string key, sbyte value) => Add(key, GgufValue.OfInt8(value));
    public void Add(string key, ushort value) => Add(key, GgufValue.OfUInt16(value));
    public void Add(string key, short value) => Add(key, GgufValue.OfInt16(value));
    public void Add(string key, uint value) => Add(key, GgufValue.OfUInt32(value));
    public void Add(string key, int value) => Add(key, GgufValue.OfInt32(value));
    public void Add(string key, ulong value) => Add(key, GgufValue.OfUInt64(value));
    public void Add(string key, long value) => Add(key, GgufValue.OfInt64(value));
    public void Add(string key, float value) => Add(key, GgufValue.OfFloat32(value));
    public void Add(string key, double value) => Add(key, GgufValue.OfFloat64(value));
    public void Add(string key, bool value) => Add(key, GgufValue.OfBool(value));

    public void AddArray(string key, IReadOnlyList<string> values) => Add(key, GgufValue.OfArray(values));
    public void AddArray(string key, ReadOnlySpan<byte> values) => Add(key, GgufValue.OfArray(values));
    public void AddArray(string key, ReadOnlySpan<sbyte> values) => Add(key, GgufValue.OfArray(values));
    public void AddArray(string key, ReadOnlySpan<ushort> values) => Add(key, GgufValue.OfArray(values));
    public void AddArray(string key, ReadOnlySpan<short> values) => Add(key, GgufValue.OfArray(values));
    public void AddArray(string key, ReadOnlySpan<uint> values) => Add(key, GgufValue.OfArray(values));
    public void AddArray(string key, ReadOnlySpan<int> values) => Add(key, GgufValue.OfArray(values));
    public void AddArray(string key, ReadOnlySpan<ulong> values) => Add(key, GgufValue.OfArray(values));
    public void AddArray(string key, ReadOnlySpan<long> values) => Add(key, GgufValue.OfArray(values));
    public void AddArray(string key, ReadOnlySpan<float> values) => Add(key, GgufValue.OfArray(values));
    public void AddArray(string key, ReadOnlySpan<double> values) => Add(key, GgufValue.OfArray(values));
    public void AddArray(string key, ReadOnlySpan<bool> values) => Add(key, GgufValue.OfArray(values));

    /// <summary>Adds one metadata entry. Keys are unique; <see cref="GgufFormat.AlignmentKey"/>
    /// and <see cref="HeaderPaddingKey"/> are reserved, because the writer derives them
    /// from <see cref="Alignment"/> and <see cref="DataSectionAlignment"/>.</summary>
    public void Add(string key, GgufValue value)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(value);
        EnsureBuilding();
        if (key is GgufFormat.AlignmentKey or HeaderPaddingKey)
            throw new ArgumentException(
                $"The key {GgufStrings.Quote(key)} is reserved: the writer sets it from its Alignment and DataSectionAlignment.", nameof(key));
        int keyBytes = MeasureString(key, Limits.MaxKeyBytes, "metadata key", key);
        if (keyBytes == 0)
            throw new ArgumentException("A metadata key must not be empty.", nameof(key));
        if (_keys.Contains(key))
            throw new ArgumentException($"The metadata key {GgufStrings.Quote(key)} was already added; keys must be unique.", nameof(key));
        if (_metadata.Count + 1 + MaxImplicitEntries > Limits.MaxMetadataEntries)
            throw new InvalidOperationException($"A file may hold at most {Limits.MaxMetadataEntries} metadata entries.");

        long entryBytes = checked(8 + keyBytes + 4 + MeasureValue(key, value));
        if (_metadataBytes + entryBytes > Limits.MaxMetadataBytes - ReservedImplicitEntryBytes)
            throw new ArgumentException(
                $"Adding {GgufStrings.Quote(key)} ({entryBytes} bytes) would take the metadata past {Limits.MaxMetadataBytes} bytes, more than a reader accepts.", nameof(value));
        _keys.Add(key);
        _metadata.Add(new PendingEntry(key, value, entryBytes));
        _metadataBytes += entryBytes;
    }

    /// <summary>
    /// Adds a tensor of the given type and shape (ne0 first) and assigns it the next
    /// aligned offset in the data section.
    /// </summary>
    public GgufTensorInfo AddTensor(string name, GgmlType type, params long[] dimensions)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(dimensions);
        EnsureBuilding();
        int nameBytes = MeasureString(name, GgufFormat.MaxTensorNameBytes, "tensor name", name);
        if (nameBytes == 0)
            throw new ArgumentException("A tensor name must not be empty.", nameof(name));
        if (_tensorIndexByName.ContainsKey(name))
            throw new ArgumentException($"A tensor named {GgufStrings.Quote(name)} was already added; names must be unique.", nameof(name));
        if (_tensors.Count >= Limits.MaxTensors)
            throw new InvalidOperationException($"A file may hold at most {Limits.MaxTensors} tensors.");
        if (!GgufTensorShape.TryMeasure(type, dimensions, out long elementCount, out long byteSize, out string? problem))
            throw new ArgumentException($"Tensor {GgufStrings.Quote(name)} cannot be stored: {problem}.", nameof(dimensions));

        long offset = _dataSize;
        long nextOffset;
        try
        {
            nextOffset = GgufTensorShape.AlignUp(checked(offset + byteSize), Alignment);
        }
        catch (OverflowException)
        {
            throw new ArgumentException($"Tensor {GgufStrings.Quote(name)} ({byteSize} bytes) would take the data section past 2^63 bytes.", nameof(dimensions));
        }

        var tensor = new GgufTensorInfo(name, type, (long[])dimensions.Clone(), elementCount, byteSize, offset);
        _tensorIndexByName.Add(name, _tensors.Count);
        _tensors.Add(tensor);
        _tensorInfoBytes += TensorInfoOverheadBytes + nameBytes + 8L * dimensions.Length;
        _dataSize = nextOffset;
        return tensor;
    }

    /// <summary>The absolute file offset of a tensor of this writer.</summary>
    public long FileOffsetOf(GgufTensorInfo tensor) => checked(DataOffset + _tensors[IndexOf(tensor)].Offset);

    /// <summary>
    /// Fixes the layout and writes the header, including the padding up to
    /// <see cref="DataOffset"/>. The same stream must then receive the tensor data.
    /// </summary>
    public void WriteHeader(Stream output)
    {
        ArgumentNullException.ThrowIfNull(output);
        if (!output.CanWrite)
            throw new ArgumentException("The output stream is not writable.", nameof(output));
        EnsureBuilding();
        var (dataOffset, paddingLength) = ComputeLayout();

        _state = WriterState.Faulted;
        var header = new GgufHeaderOutput(output);
        header.WriteUInt32(GgufFormat.Magic);
        header.WriteUInt32(GgufFormat.Version);
        header.WriteUInt64((ulong)_tensors.Count);
        header.WriteUInt64((ulong)(_metadata.Count + ImplicitEntryCount(paddingLength)));
        if (Alignment != GgufFormat.DefaultAlignment)
            WriteEntry(header, GgufFormat.AlignmentKey, GgufValue.OfUInt32(Alignment));
        foreach (var entry in _metadata)
            WriteEntry(header, entry.Key, entry.Value);
        if (paddingLength >= 0)
            WriteEntry(header, HeaderPaddingKey, GgufValue.OfString(new string(' ', paddingLength)));
        foreach (var tensor in _tensors)
            WriteTensorInfo(header, tensor);
        header.WriteZeros(dataOffset - header.Written);
        header.Flush();
        if (header.Written != dataOffset)
            throw new UnreachableException($"The header came out {header.Written} bytes long but its layout said {dataOffset}.");

        _output = output;
        _dataOffset = dataOffset;
        _state = _tensors.Count == 0 ? WriterState.Complete : WriterState.BetweenTensors;
    }

    /// <summary>Writes the whole data of the next tensor, followed by its padding.</summary>
    public void WriteTensorData(Stream output, GgufTensorInfo tensor, ReadOnlySpan<byte> data)
    {
        EnsureNextTensor(output, tensor);
        if (data.Length != tensor.ByteSize)
            throw new ArgumentException(
                $"Tensor {GgufStrings.Quote(tensor.Name)} ({tensor.Type} [{string.Join(", ", tensor.Dimensions)}]) takes {tensor.ByteSize} bytes, but {data.Length} were given.",
                nameof(data));
        BeginTensorData(output, tensor);
        WriteTensorChunk(output, data);
        EndTensorData(output);
    }

    /// <summary>Opens the next tensor for <see cref="WriteTensorChunk"/> calls.</summary>
    public void BeginTensorData(Stream output, GgufTensorInfo tensor)
    {
        EnsureNextTensor(output, tensor);
        _openTensorWritten = 0;
        _state = WriterState.InTensor;
    }

    /// <summary>Appends bytes to the open tensor; refuses to run past its size.</summary>
    public void WriteTensorChunk(Stream output, ReadOnlySpan<byte> chunk)
    {
        EnsureSameOutput(output);
        if (_state != WriterState.InTensor)
            throw new InvalidOperationException($"No tensor is open{DescribeStateForMisuse()}; call BeginTensorData first.");
        var tensor = _tensors[_nextTensor];
        if (chunk.Length > tensor.ByteSize - _openTensorWritten)
            throw new ArgumentException(
                $"A chunk of {chunk.Length} bytes would overrun tensor {GgufStrings.Quote(tensor.Name)}: it takes {tensor.ByteSize} bytes and {_openTensorWritten} are already written.",
                nameof(chunk));
        _state = WriterState.Faulted;
        output.Write(chunk);
        _openTensorWritten += chunk.Length;
        _state = WriterState.InTensor;
    }

    /// <summary>Closes the open tensor, which must be complete, and writes its padding.</summary>
    public void EndTensorData(Stream output)
    {
        EnsureSameOutput(output);
        if (_state != WriterState.InTensor)
            throw new InvalidOperationException($"No tensor is open{DescribeStateForMisuse()}; call BeginTensorData first.");
        var tensor = _tensors[_nextTensor];
        if (_openTensorWritten != tensor.ByteSize)
            throw new InvalidOperationException(
                $"Tensor {GgufStrings.Quote(tensor.Name)} is incomplete: {_openTensorWritten} of its {tensor.ByteSize} bytes were written.");

        long end = tensor.Offset + tensor.ByteSize;
        long padding = GgufTensorShape.AlignUp(end, Alignment) - end;
        _state = WriterState.Faulted;
        while (padding > 0)
        {
            int chunk = (int)Math.Min(padding, Zeros.Length);
            output.Write(Zeros, 0, chunk);
            padding -= chunk;
        }
        _nextTensor++;
        _state = _nextTensor == _tensors.Count ? WriterState.Complete : WriterState.BetweenTensors;
    }

    private (long DataOffset, int PaddingLength) ComputeLayout()
    {
        long headerLength = FixedHeaderBytes + AlignmentEntryBytes() + _metadataBytes + _tensorInfoBytes;
        if (_dataSectionAlignment == Alignment)
            return (GgufTensorShape.AlignUp(headerLength, Alignment), -1);

        // The padding entry's own overhead counts towards the header, so size its string
        // to make the whole header end exactly on the boundary.
        long withEmptyPadding = headerLength + EntryOverheadBytes + 8 + HeaderPaddingKey.Length;
        long dataOffset = GgufTensorShape.AlignUp(withEmptyPadding, _dataSectionAlignment);
        return (dataOffset, checked((int)(dataOffset - withEmptyPadding)));
    }

    private int AlignmentEntryBytes() =>
        Alignment == GgufFormat.DefaultAlignment ? 0 : EntryOverheadBytes + GgufFormat.AlignmentKey.Length + 4;

    private int ImplicitEntryCount(int paddingLength) =>
        (Alignment == GgufFormat.DefaultAlignment ? 0 : 1) + (paddingLength >= 0 ? 1 : 0);

    private static void WriteEntry(GgufHeaderOutput header, string key, GgufValue value)
    {
        header.WriteString(key, GgufStrings.Utf8Length(key));
        header.WriteUInt32((uint)value.Type);
        if (value.Type != GgufValueType.Array)
        {
            WriteScalar(header, value);
            return;
        }
        var elementType = value.ArrayElementType!.Value;
        var elements = value.ArrayStorage!;
        header.WriteUInt32((uint)elementType);
        header.WriteUInt64((ulong)elements.Length);
        // Little-endian hosts only (checked in the constructor), so numeric arrays are
        // already in file byte order.
        switch (elementType)
        {
            case GgufValueType.String:
                foreach (string element in (string[])elements)
                    header.WriteString(element, GgufStrings.Utf8Length(element));
                break;
            case GgufValueType.UInt8: header.WriteBytes((byte[])elements); break;
            case GgufValueType.Int8: header.WriteBytes(MemoryMarshal.AsBytes<sbyte>((sbyte[])elements)); break;
            case GgufValueType.UInt16: header.WriteBytes(MemoryMarshal.AsBytes<ushort>((ushort[])elements)); break;
            case GgufValueType.Int16: header.WriteBytes(MemoryMarshal.AsBytes<short>((short[])elements)); break;
            case GgufValueType.UInt32: header.WriteBytes(MemoryMarshal.AsBytes<uint>((uint[])elements)); break;
            case GgufValueType.Int32: header.WriteBytes(MemoryMarshal.AsBytes<int>((int[])elements)); break;
            case GgufValueType.UInt64: header.WriteBytes(MemoryMarshal.AsBytes<ulong>((ulong[])elements)); break;
            case GgufValueType.Int64: header.WriteBytes(MemoryMarshal.AsBytes<long>((long[])elements)); break;
            case GgufValueType.Float32: header.WriteBytes(MemoryMarshal.AsBytes<float>((float[])elements)); break;
            case GgufValueType.Float64: header.WriteBytes(MemoryMarshal.AsBytes<double>((double[])elements)); break;
            case GgufValueType.Bool: header.WriteBytes(MemoryMarshal.AsBytes<bool>((bool[])elements)); break;
            default: throw new UnreachableException($"array of {elementType}");
        }
    }

    private static void WriteScalar(GgufHeaderOutput header, GgufValue value)
    {
        switch (GgufValueTypes.MinimumEncodedSize(value.Type))
        {
            case 1: header.WriteUInt8((byte)value.ScalarBits); break;
            case 2: header.WriteUInt16((ushort)value.ScalarBits); break;
            case 4: header.WriteUInt32((uint)value.ScalarBits); break;
            case 8 when value.Type == GgufValueType.String:
                header.WriteString(value.StringStorage!, GgufStrings.Utf8Length(value.StringStorage!));
                break;
            case 8: header.WriteUInt64(value.ScalarBits); break;
        }
    }

    private static void WriteTensorInfo(GgufHeaderOutput header, GgufTensorInfo tensor)
    {
        header.WriteString(tensor.Name, GgufStrings.Utf8Length(tensor.Name));
        header.WriteUInt32((uint)tensor.Dimensions.Count);
        foreach (long dimension in tensor.Dimensions)
            header.WriteUInt64((ulong)dimension);
        header.WriteUInt32((uint)tensor.Type);
        header.WriteUInt64((ulong)tensor.Offset);
    }

    /// <summary>The bytes a value takes after its type tag; refuses what the default
    /// reader limits would refuse.</summary>
    private static long MeasureValue(string key, GgufValue value)
    {
        if (value.Type == GgufValueType.String)
            return 8L + MeasureString(value.StringStorage!, Limits.MaxStringBytes, $"string value of {GgufStrings.Quote(key)}", key);
        if (value.Type != GgufValueType.Array)
            return GgufValueTypes.MinimumEncodedSize(value.Type);

        var elements = value.ArrayStorage!;
        if (elements.Length > Limits.MaxArrayElements)
            throw new ArgumentException(
                $"The array {GgufStrings.Quote(key)} has {elements.Length} elements; a reader accepts at most {Limits.MaxArrayElements}.", nameof(value));
        var elementType = value.ArrayElementType!.Value;
        if (elementType != GgufValueType.String)
            return 12L + (long)elements.Length * GgufValueTypes.MinimumEncodedSize(elementType);
        long total = 12;
        var strings = (string[])elements;
        for (int i = 0; i < strings.Length; i++)
            total += 8L + MeasureString(strings[i], Limits.MaxStringBytes, $"element {i} of {GgufStrings.Quote(key)}", key);
        return total;
    }

    /// <summary>The UTF-8 length of a string the writer will store, refusing strings with
    /// no UTF-8 form or longer than <paramref name="maxBytes"/>.</summary>
    private static int MeasureString(string value, int maxBytes, string what, string key)
    {
        // A UTF-16 string never has fewer UTF-8 bytes than chars, so this early check
        // also keeps GetByteCount away from lengths that overflow an int.
        int length = value.Length > maxBytes ? int.MaxValue : GgufStrings.Utf8Length(value);
        if (length < 0)
            throw new ArgumentException($"The {what} ({GgufStrings.Quote(key)}) contains a lone UTF-16 surrogate and has no UTF-8 form.");
        if (length > maxBytes)
            throw new ArgumentException($"The {what} ({GgufStrings.Quote(key)}) is longer than the {maxBytes} UTF-8 bytes a reader accepts.");
        return length;
    }

    private int IndexOf(GgufTensorInfo tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        if (!_tensorIndexByName.TryGetValue(tensor.Name, out int index) || !ReferenceEquals(_tensors[index], tensor))
            throw new ArgumentException($"Tensor {GgufStrings.Quote(tensor.Name)} was not added to this writer.", nameof(tensor));
        return index;
    }

    private void EnsureBuilding()
    {
        if (_state == WriterState.Faulted)
            throw new InvalidOperationException($"The writer cannot continue{DescribeStateForMisuse()}.");
        if (_state != WriterState.Building)
            throw new InvalidOperationException(
                "The header has already been written: all metadata and tensors must be added before WriteHeader, and a writer writes one file.");
    }

    private void EnsureNextTensor(Stream output, GgufTensorInfo tensor)
    {
        int index = IndexOf(tensor);
        EnsureSameOutput(output);
        switch (_state)
        {
            case WriterState.BetweenTensors when index == _nextTensor:
                return;
            case WriterState.BetweenTensors:
                throw new InvalidOperationException(
                    $"Tensor {GgufStrings.Quote(tensor.Name)} was given, but the next tensor in the file is {GgufStrings.Quote(_tensors[_nextTensor].Name)}: tensor data must be written in the order the tensors were added.");
            case WriterState.InTensor:
                var open = _tensors[_nextTensor];
                throw new InvalidOperationException(
                    $"Tensor {GgufStrings.Quote(open.Name)} is still open ({_openTensorWritten} of {open.ByteSize} bytes written): finish it and call EndTensorData before starting {GgufStrings.Quote(tensor.Name)}.");
            default:
                throw new InvalidOperationException($"Tensor {GgufStrings.Quote(tensor.Name)} cannot be written now{DescribeStateForMisuse()}.");
        }
    }

    private void EnsureSameOutput(Stream output)
    {
        ArgumentNullException.ThrowIfNull(output);
        if (_output is not null && !ReferenceEquals(output, _output))
            throw new InvalidOperationException("Tensor data must go to the same stream the header was written to.");
    }

    private string DescribeStateForMisuse() => _state switch
    {
        WriterState.Building => ": the header has not been written yet (call WriteHeader first)",
        WriterState.Complete => $": all {_tensors.Count} tensors have already been written",
        WriterState.Faulted => ": a previous write to the output failed, so the file is incomplete; start again with a new GgufWriter",
        _ => "",
    };
}
