using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.InteropServices;
using System.Text;

namespace Tibet.Core.Gguf;

/// <summary>
/// Reads and validates one GGUF header. Every count and length is checked against what
/// the rest of the file could possibly hold, and against <see cref="GgufLimits"/>, before
/// anything is allocated for it, so a hostile header costs memory in proportion to the
/// file's real size at worst.
/// </summary>
internal sealed class GgufHeaderParser
{
    // The least bytes one metadata entry can take: key length, a one-byte key, type tag,
    // a one-byte value.
    private const int MinEntryBytes = 8 + 1 + 4 + 1;
    // The least one tensor info can take: name length, a one-byte name, n_dims, one
    // dimension, type, offset.
    private const int MinTensorInfoBytes = 8 + 1 + 4 + 8 + 4 + 8;

    private readonly GgufInput _input;
    private readonly GgufLimits _limits;
    private long _metadataEnd;

    // What is being read, kept as parts and formatted only when something is wrong.
    private string _field = "the file header";
    private string? _itemKind;
    private long _itemIndex;
    private string? _itemName;
    private long _elementIndex = -1;

    public GgufHeaderParser(Stream stream, GgufLimits limits)
    {
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("GGUF files are little-endian; this reader supports little-endian hosts only.");
        _limits = limits;
        _input = new GgufInput(stream, Truncated);
        _metadataEnd = _input.FileLength;
    }

    public GgufFile Parse()
    {
        ReadMagic();
        uint version = ReadVersion();
        var (tensorCount, entryCount) = ReadCounts();
        var (metadata, alignment) = ReadMetadata(entryCount);
        var (tensors, tensorIndexByName, offsetFieldPositions) = ReadTensorInfos(tensorCount, alignment);
        long headerLength = _input.Position;
        // headerLength is within the file and alignment at most 2^31: no overflow.
        long dataOffset = GgufTensorShape.AlignUp(headerLength, alignment);
        ValidateDataLayout(tensors, offsetFieldPositions, alignment, dataOffset);
        return new GgufFile(version, alignment, headerLength, dataOffset, _input.FileLength, metadata, tensors, tensorIndexByName);
    }

    private void ReadMagic()
    {
        if (_input.FileLength < 4)
            throw Fail($"not a GGUF file: it is {_input.FileLength} bytes long, too short even for the 4-byte magic \"GGUF\"", 0);
        var magic = _input.Read(4);
        if (!GgufFile.HasMagic(magic))
            throw Fail($"not a GGUF file: it starts with bytes {Convert.ToHexString(magic)} (\"{Printable(magic)}\") where a GGUF file starts with 47475546 (\"GGUF\")", 0);
    }

    private uint ReadVersion()
    {
        _field = "the version";
        long at = _input.Position;
        uint version = _input.ReadUInt32();
        if (version == GgufFormat.Version)
            return version;
        if ((version & 0xFFFF) == 0)
            throw Fail($"GGUF version 0x{version:X8} looks byte-swapped: this is probably a big-endian GGUF file, and only little-endian version {GgufFormat.Version} is supported", at);
        throw Fail($"GGUF version {version} is not supported: this reader reads version {GgufFormat.Version}, which llama.cpp writes", at);
    }

    private (long TensorCount, long EntryCount) ReadCounts()
    {
        _field = "the tensor count";
        long tensorCountAt = _input.Position;
        ulong tensorCount = _input.ReadUInt64();
        _field = "the metadata entry count";
        long entryCountAt = _input.Position;
        ulong entryCount = _input.ReadUInt64();

        if (tensorCount > (ulong)_limits.MaxTensors)
            throw Fail($"the file claims {tensorCount} tensors, more than the limit of {_limits.MaxTensors} (GgufLimits.MaxTensors)", tensorCountAt);
        if (entryCount > (ulong)_limits.MaxMetadataEntries)
            throw Fail($"the file claims {entryCount} metadata entries, more than the limit of {_limits.MaxMetadataEntries} (GgufLimits.MaxMetadataEntries)", entryCountAt);
        long remaining = _input.Remaining;
        if (tensorCount > (ulong)(remaining / MinTensorInfoBytes))
            throw Fail($"the file claims {tensorCount} tensors, but the {remaining} bytes after the header fields can hold at most {remaining / MinTensorInfoBytes} tensor infos of at least {MinTensorInfoBytes} bytes each: the count is corrupt or the file is truncated", tensorCountAt);
        if ((UInt128)entryCount * MinEntryBytes + (UInt128)tensorCount * MinTensorInfoBytes > (ulong)remaining)
            throw Fail($"the file claims {entryCount} metadata entries and {tensorCount} tensors, but at least {MinEntryBytes} bytes per entry and {MinTensorInfoBytes} per tensor are more than the {remaining} bytes left: a count is corrupt or the file is truncated", entryCountAt);
        return ((long)tensorCount, (long)entryCount);
    }

    private (GgufMetadata Metadata, uint Alignment) ReadMetadata(long entryCount)
    {
        long metadataStart = _input.Position;
        _metadataEnd = metadataStart + Math.Min(_limits.MaxMetadataBytes, _input.FileLength - metadataStart);
        var entries = new GgufMetadataEntry[entryCount];
        var indexByKey = new Dictionary<string, int>((int)entryCount, StringComparer.Ordinal);
        uint alignment = GgufFormat.DefaultAlignment;
        _itemKind = "metadata entry";
        for (int i = 0; i < entries.Length; i++)
        {
            _itemIndex = i;
            _itemName = null;
            _field = "the key";
            long keyAt = _input.Position;
            string key = ReadString(_limits.MaxKeyBytes, "GgufLimits.MaxKeyBytes");
            if (key.Length == 0)
                throw Fail($"{Here()} is empty; a metadata key has at least one byte", keyAt);
            _itemName = key;
            if (indexByKey.TryGetValue(key, out int first))
                throw Fail($"{Here()}: the key {GgufStrings.Quote(key)} already appeared as metadata entry {first}; keys must be unique", keyAt);

            _field = "the value type";
            long typeAt = _input.Position;
            uint type = _input.ReadUInt32();
            if (!GgufValueTypes.IsDefined(type))
                throw Fail($"{Here()} is {type}, not a GGUF value type (0 to {(uint)GgufValueType.Float64})", typeAt);

            _field = "the value";
            long valueAt = _input.Position;
            var value = (GgufValueType)type == GgufValueType.Array ? ReadArray() : ReadScalar((GgufValueType)type);
            if (_input.Position > _metadataEnd)
                throw Fail($"{Here()} ends at byte {_input.Position}, past the metadata limit of {_limits.MaxMetadataBytes} bytes from byte {metadataStart} (GgufLimits.MaxMetadataBytes)", valueAt);
            if (key == GgufFormat.AlignmentKey)
                alignment = ValidateAlignment(value, typeAt, valueAt);

            entries[i] = new GgufMetadataEntry(key, value);
            indexByKey.Add(key, i);
        }
        _itemKind = null;
        _metadataEnd = _input.FileLength;
        return (new GgufMetadata(entries, indexByKey), alignment);
    }

    private uint ValidateAlignment(GgufValue value, long typeAt, long valueAt)
    {
        if (!value.TryGetUInt32(out uint alignment))
            throw Fail($"{GgufFormat.AlignmentKey} is a {value.DescribeType()}; it must be a uint32 (llama.cpp reads it as one)", typeAt);
        if (!GgufTensorShape.IsPowerOfTwo(alignment))
            throw Fail($"{GgufFormat.AlignmentKey} is {alignment}; it must be a nonzero power of two", valueAt);
        return alignment;
    }

    private GgufValue ReadScalar(GgufValueType type)
    {
        if (type == GgufValueType.String)
            return GgufValue.OfString(ReadString(_limits.MaxStringBytes, "GgufLimits.MaxStringBytes"));
        long at = _input.Position;
        ulong bits = type switch
        {
            GgufValueType.UInt8 or GgufValueType.Bool => _input.ReadUInt8(),
            GgufValueType.Int8 => (ulong)(sbyte)_input.ReadUInt8(),
            GgufValueType.UInt16 => _input.ReadUInt16(),
            GgufValueType.Int16 => (ulong)(short)_input.ReadUInt16(),
            GgufValueType.UInt32 or GgufValueType.Float32 => _input.ReadUInt32(),
            GgufValueType.Int32 => (ulong)(int)_input.ReadUInt32(),
            GgufValueType.UInt64 or GgufValueType.Int64 or GgufValueType.Float64 => _input.ReadUInt64(),
            _ => throw new ArgumentOutOfRangeException(nameof(type)),
        };
        if (type == GgufValueType.Bool && bits > 1)
            throw Fail($"{Here()} is a bool of value {bits}; a GGUF bool is 0 or 1", at);
        return GgufValue.Scalar(type, bits);
    }

    private GgufValue ReadArray()
    {
        _field = "the array element type";
        long elementTypeAt = _input.Position;
        uint elementTypeNumber = _input.ReadUInt32();
        if (elementTypeNumber == (uint)GgufValueType.Array)
            throw Fail($"{Here()} is array: this is an array of arrays, and GGUF metadata (like llama.cpp) allows only one level of array", elementTypeAt);
        if (!GgufValueTypes.IsDefined(elementTypeNumber))
            throw Fail($"{Here()} is {elementTypeNumber}, not a GGUF value type (0 to {(uint)GgufValueType.Float64})", elementTypeAt);
        var elementType = (GgufValueType)elementTypeNumber;

        _field = "the array length";
        long lengthAt = _input.Position;
        ulong length = _input.ReadUInt64();
        if (length > (ulong)_limits.MaxArrayElements)
            throw Fail($"{Here()} is {length}, more than the limit of {_limits.MaxArrayElements} elements (GgufLimits.MaxArrayElements)", lengthAt);
        int elementBytes = GgufValueTypes.MinimumEncodedSize(elementType);
        long available = Math.Max(0, _metadataEnd - _input.Position);
        if (length > (ulong)(available / elementBytes))
            throw Fail($"{Here()} is {length} {GgufValueTypes.Name(elementType)} elements, which need at least {(UInt128)length * (ulong)elementBytes} bytes, but {DescribeAvailable(available)}: the length is corrupt or the file is truncated", lengthAt);
        int count = (int)length;

        _field = "the array elements";
        Array elements = elementType switch
        {
            GgufValueType.String => ReadStrings(count),
            GgufValueType.Bool => ReadBools(count),
            GgufValueType.UInt8 => ReadNumbers<byte>(count),
            GgufValueType.Int8 => ReadNumbers<sbyte>(count),
            GgufValueType.UInt16 => ReadNumbers<ushort>(count),
            GgufValueType.Int16 => ReadNumbers<short>(count),
            GgufValueType.UInt32 => ReadNumbers<uint>(count),
            GgufValueType.Int32 => ReadNumbers<int>(count),
            GgufValueType.Float32 => ReadNumbers<float>(count),
            GgufValueType.UInt64 => ReadNumbers<ulong>(count),
            GgufValueType.Int64 => ReadNumbers<long>(count),
            GgufValueType.Float64 => ReadNumbers<double>(count),
            _ => throw new ArgumentOutOfRangeException(nameof(elementType)),
        };
        return GgufValue.WrapArray(elementType, elements);
    }

    private string[] ReadStrings(int count)
    {
        var strings = new string[count];
        for (int i = 0; i < strings.Length; i++)
        {
            _elementIndex = i;
            strings[i] = ReadString(_limits.MaxStringBytes, "GgufLimits.MaxStringBytes");
        }
        _elementIndex = -1;
        return strings;
    }

    private T[] ReadNumbers<T>(int count) where T : unmanaged
    {
        // The file is little-endian and so is this host (checked in the constructor).
        var numbers = new T[count];
        _input.ReadExactly(MemoryMarshal.AsBytes(numbers.AsSpan()));
        return numbers;
    }

    private bool[] ReadBools(int count)
    {
        long start = _input.Position;
        var raw = new byte[count];
        _input.ReadExactly(raw);
        var bools = new bool[count];
        for (int i = 0; i < raw.Length; i++)
        {
            if (raw[i] > 1)
                ThrowBadBoolElement(i, raw[i], start + i);
            bools[i] = raw[i] != 0;
        }
        return bools;
    }

    private (GgufTensorInfo[] Tensors, Dictionary<string, int> IndexByName, long[] OffsetFieldPositions) ReadTensorInfos(long tensorCount, uint alignment)
    {
        _itemKind = null;
        _field = "the tensor infos";
        long remaining = _input.Remaining;
        if (tensorCount > remaining / MinTensorInfoBytes)
            throw Fail($"the file claims {tensorCount} tensors, but the {remaining} bytes after the metadata can hold at most {remaining / MinTensorInfoBytes} tensor infos of at least {MinTensorInfoBytes} bytes each: the count is corrupt or the file is truncated", _input.Position);

        var tensors = new GgufTensorInfo[tensorCount];
        var offsetFieldPositions = new long[tensorCount];
        var indexByName = new Dictionary<string, int>((int)tensorCount, StringComparer.Ordinal);
        Span<long> dimensions = stackalloc long[GgufFormat.MaxDimensions];
        _itemKind = "tensor info";
        for (int i = 0; i < tensors.Length; i++)
        {
            _itemIndex = i;
            _itemName = null;
            _field = "the name";
            long nameAt = _input.Position;
            string name = ReadString(GgufFormat.MaxTensorNameBytes, "ggml's GGML_MAX_NAME of 64 bytes including the NUL");
            if (name.Length == 0)
                throw Fail($"{Here()} is empty; a tensor needs a name", nameAt);
            _itemName = name;
            if (indexByName.TryGetValue(name, out int first))
                throw Fail($"{Here()}: the name {GgufStrings.Quote(name)} already belongs to tensor {first}; tensor names must be unique", nameAt);

            _field = "the dimension count";
            long dimensionCountAt = _input.Position;
            uint dimensionCount = _input.ReadUInt32();
            if (dimensionCount is 0 or > GgufFormat.MaxDimensions)
                throw Fail($"{Here()} is {dimensionCount}; a tensor has 1 to {GgufFormat.MaxDimensions} dimensions", dimensionCountAt);

            _field = "the dimensions";
            long dimensionsAt = _input.Position;
            for (int d = 0; d < dimensionCount; d++)
            {
                ulong extent = _input.ReadUInt64();
                if (extent == 0 || extent > long.MaxValue)
                    throw Fail($"{Here()}: ne{d} is {extent}; every dimension must be between 1 and 2^63-1", dimensionsAt + 8L * d);
                dimensions[d] = (long)extent;
            }

            _field = "the ggml type";
            long typeAt = _input.Position;
            var type = (GgmlType)_input.ReadUInt32();
            if (!GgmlTypeInfo.TryGetBlock(type, out _, out _))
                throw Fail($"{Here()} is {GgufTensorShape.DescribeUnknownType(type)}", typeAt);
            if (!GgufTensorShape.TryMeasure(type, dimensions[..(int)dimensionCount], out long elementCount, out long byteSize, out string? problem))
                throw Fail($"tensor {GgufStrings.Quote(name)} (tensor info {i}) has an invalid shape: {problem}", dimensionsAt);

            _field = "the data offset";
            offsetFieldPositions[i] = _input.Position;
            ulong offset = _input.ReadUInt64();
            if (offset > long.MaxValue)
                throw Fail($"{Here()} is {offset}, beyond any file", offsetFieldPositions[i]);

            tensors[i] = new GgufTensorInfo(name, type, dimensions[..(int)dimensionCount].ToArray(), elementCount, byteSize, (long)offset);
            indexByName.Add(name, i);
        }
        _itemKind = null;
        return (tensors, indexByName, offsetFieldPositions);
    }

    /// <summary>
    /// Tensors must be packed as gguf.cpp writes and requires them: in file order, the
    /// first at data offset 0 and each next one at the previous one's end rounded up to
    /// the alignment, all inside the file.
    /// </summary>
    private void ValidateDataLayout(GgufTensorInfo[] tensors, long[] offsetFieldPositions, uint alignment, long dataOffset)
    {
        long expectedOffset = 0;
        for (int i = 0; i < tensors.Length; i++)
        {
            var tensor = tensors[i];
            long at = offsetFieldPositions[i];
            if (tensor.Offset % alignment != 0)
                throw Fail($"tensor {GgufStrings.Quote(tensor.Name)} starts at data offset {tensor.Offset}, which is not a multiple of the alignment {alignment}", at);
            if (tensor.Offset < expectedOffset)
            {
                var previous = tensors[i - 1];
                throw Fail($"tensor {GgufStrings.Quote(tensor.Name)} starts at data offset {tensor.Offset}, inside tensor {GgufStrings.Quote(previous.Name)}, which occupies data offsets {previous.Offset} to {previous.Offset + previous.ByteSize} (padded to {expectedOffset}): tensors must not overlap", at);
            }
            if (tensor.Offset > expectedOffset)
            {
                string expectation = i == 0
                    ? "the first tensor must start at data offset 0"
                    : $"it must start at {expectedOffset}, where {GgufStrings.Quote(tensors[i - 1].Name)} ends after padding";
                throw Fail($"tensor {GgufStrings.Quote(tensor.Name)} starts at data offset {tensor.Offset}, leaving a gap: {expectation} (gguf.cpp requires tensors packed in order)", at);
            }
            // Offsets and sizes are each below 2^63, so their sum is exact in 128 bits.
            UInt128 start = (ulong)dataOffset + (UInt128)(ulong)tensor.Offset;
            UInt128 end = start + (ulong)tensor.ByteSize;
            if (end > (ulong)_input.FileLength)
                throw Fail($"tensor {GgufStrings.Quote(tensor.Name)} ({tensor.ByteSize} bytes from byte {start}) ends at byte {end} but the file is only {_input.FileLength} bytes long: the file is truncated", at);
            expectedOffset = GgufTensorShape.AlignUp(tensor.Offset + tensor.ByteSize, alignment);
        }
    }

    /// <summary>Reads a GGUF string: uint64 length, then that many bytes of UTF-8.</summary>
    private string ReadString(int maxBytes, string limitName)
    {
        long lengthAt = _input.Position;
        ulong length = _input.ReadUInt64();
        if (length > (ulong)maxBytes)
            ThrowStringTooLong(length, maxBytes, limitName, lengthAt);
        // Negative only when a tightened metadata limit was already overrun by this entry.
        long available = Math.Max(0, _metadataEnd - _input.Position);
        if ((long)length > available)
            ThrowStringBeyondEnd(length, available, lengthAt);
        if (length == 0)
            return string.Empty;

        int byteCount = (int)length;
        if (byteCount <= GgufInput.BufferSize)
            return DecodeUtf8(_input.Read(byteCount), lengthAt + 8);
        byte[] rented = ArrayPool<byte>.Shared.Rent(byteCount);
        try
        {
            var bytes = rented.AsSpan(0, byteCount);
            _input.ReadExactly(bytes);
            return DecodeUtf8(bytes, lengthAt + 8);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    private string DecodeUtf8(ReadOnlySpan<byte> bytes, long at)
    {
        // One pass that validates while it decodes; the exception path is taken only
        // by a broken file.
        try
        {
            return GgufStrings.StrictUtf8.GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            ThrowInvalidUtf8(bytes, at);
            throw;
        }
    }

    [DoesNotReturn]
    private void ThrowStringTooLong(ulong length, int maxBytes, string limitName, long at) =>
        throw Fail($"{Here()} is a string of {length} bytes, longer than the limit of {maxBytes} bytes ({limitName})", at);

    [DoesNotReturn]
    private void ThrowStringBeyondEnd(ulong length, long available, long at) =>
        throw Fail($"{Here()} is a string of {length} bytes, but {DescribeAvailable(available)}: the length is corrupt or the file is truncated", at);

    [DoesNotReturn]
    private void ThrowInvalidUtf8(ReadOnlySpan<byte> bytes, long at)
    {
        int firstBad = 0;
        while (firstBad < bytes.Length && Rune.DecodeFromUtf8(bytes[firstBad..], out _, out int consumed) == OperationStatus.Done)
            firstBad += consumed;
        throw Fail($"{Here()} is not valid UTF-8 (byte {firstBad} of the string, 0x{bytes[firstBad]:X2}, starts no valid sequence); GGUF strings are UTF-8", at + firstBad);
    }

    [DoesNotReturn]
    private void ThrowBadBoolElement(int index, byte value, long at)
    {
        _elementIndex = index;
        throw Fail($"{Here()} is a bool of value {value}; a GGUF bool is 0 or 1", at);
    }

    private string DescribeAvailable(long available) => _metadataEnd < _input.FileLength
        ? $"only {available} bytes remain within the metadata limit of {_limits.MaxMetadataBytes} bytes (GgufLimits.MaxMetadataBytes)"
        : $"only {available} bytes remain in the file";

    private Exception Truncated(long position, long needed) =>
        Fail($"the file ends at byte {_input.FileLength}, in the middle of {Here()} ({needed} bytes needed from byte {position}): the file is truncated", position);

    /// <summary>The field being read, e.g. "the value of metadata entry 7
    /// ('tokenizer.ggml.tokens'), element 12".</summary>
    private string Here()
    {
        if (_itemKind is null)
            return _field;
        var text = new StringBuilder($"{_field} of {_itemKind} {_itemIndex}");
        if (_itemName is not null)
            text.Append($" ({GgufStrings.Quote(_itemName)})");
        if (_elementIndex >= 0)
            text.Append($", element {_elementIndex}");
        return text.ToString();
    }

    private static GgufFormatException Fail(string problem, long at) => new(problem, at);

    private static string Printable(ReadOnlySpan<byte> bytes)
    {
        var text = new StringBuilder(bytes.Length);
        foreach (byte b in bytes)
            text.Append(b is >= 0x20 and < 0x7F ? (char)b : '?');
        return text.ToString();
    }
}
