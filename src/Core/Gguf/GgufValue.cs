using System.Collections.ObjectModel;

namespace Tibet.Core.Gguf;

/// <summary>
/// One metadata value of a GGUF file: a scalar of one of the twelve GGUF types, or a
/// one-level array of them. Immutable. Accessors only succeed for the exact stored type:
/// a uint32 is never silently read as an int32, because GGUF consumers (llama.cpp
/// among them) treat a type mismatch as a broken file.
/// </summary>
public sealed class GgufValue
{
    // Scalars are kept as raw bits (sign-extended for signed types, IEEE bits for
    // floats); strings and arrays as the object itself, arrays as exactly typed T[].
    private readonly ulong _scalarBits;
    private readonly object? _reference;

    private GgufValue(GgufValueType type, ulong scalarBits, object? reference, GgufValueType? arrayElementType)
    {
        Type = type;
        _scalarBits = scalarBits;
        _reference = reference;
        ArrayElementType = arrayElementType;
    }

    public GgufValueType Type { get; }

    /// <summary>The element type when <see cref="Type"/> is <see cref="GgufValueType.Array"/>; otherwise null.</summary>
    public GgufValueType? ArrayElementType { get; }

    /// <summary>The number of elements of an array value; 0 for a scalar.</summary>
    public int ArrayLength => _reference is Array array ? array.Length : 0;

    public static GgufValue OfUInt8(byte value) => Scalar(GgufValueType.UInt8, value);
    public static GgufValue OfInt8(sbyte value) => Scalar(GgufValueType.Int8, (ulong)value);
    public static GgufValue OfUInt16(ushort value) => Scalar(GgufValueType.UInt16, value);
    public static GgufValue OfInt16(short value) => Scalar(GgufValueType.Int16, (ulong)value);
    public static GgufValue OfUInt32(uint value) => Scalar(GgufValueType.UInt32, value);
    public static GgufValue OfInt32(int value) => Scalar(GgufValueType.Int32, (ulong)value);
    public static GgufValue OfUInt64(ulong value) => Scalar(GgufValueType.UInt64, value);
    public static GgufValue OfInt64(long value) => Scalar(GgufValueType.Int64, (ulong)value);
    public static GgufValue OfFloat32(float value) => Scalar(GgufValueType.Float32, BitConverter.SingleToUInt32Bits(value));
    public static GgufValue OfFloat64(double value) => Scalar(GgufValueType.Float64, BitConverter.DoubleToUInt64Bits(value));
    public static GgufValue OfBool(bool value) => Scalar(GgufValueType.Bool, value ? 1UL : 0UL);

    public static GgufValue OfString(string value)
    {
        ArgumentNullException.ThrowIfNull(value);
        return new GgufValue(GgufValueType.String, 0, value, null);
    }

    // Array factories copy their input, so the value stays immutable whatever the
    // caller does with its buffer afterwards.
    public static GgufValue OfArray(ReadOnlySpan<byte> values) => WrapArray(GgufValueType.UInt8, values.ToArray());
    public static GgufValue OfArray(ReadOnlySpan<sbyte> values) => WrapArray(GgufValueType.Int8, values.ToArray());
    public static GgufValue OfArray(ReadOnlySpan<ushort> values) => WrapArray(GgufValueType.UInt16, values.ToArray());
    public static GgufValue OfArray(ReadOnlySpan<short> values) => WrapArray(GgufValueType.Int16, values.ToArray());
    public static GgufValue OfArray(ReadOnlySpan<uint> values) => WrapArray(GgufValueType.UInt32, values.ToArray());
    public static GgufValue OfArray(ReadOnlySpan<int> values) => WrapArray(GgufValueType.Int32, values.ToArray());
    public static GgufValue OfArray(ReadOnlySpan<ulong> values) => WrapArray(GgufValueType.UInt64, values.ToArray());
    public static GgufValue OfArray(ReadOnlySpan<long> values) => WrapArray(GgufValueType.Int64, values.ToArray());
    public static GgufValue OfArray(ReadOnlySpan<float> values) => WrapArray(GgufValueType.Float32, values.ToArray());
    public static GgufValue OfArray(ReadOnlySpan<double> values) => WrapArray(GgufValueType.Float64, values.ToArray());
    public static GgufValue OfArray(ReadOnlySpan<bool> values) => WrapArray(GgufValueType.Bool, values.ToArray());

    public static GgufValue OfArray(IReadOnlyList<string> values)
    {
        ArgumentNullException.ThrowIfNull(values);
        var copy = new string[values.Count];
        for (int i = 0; i < copy.Length; i++)
            copy[i] = values[i] ?? throw new ArgumentException($"String array element {i} is null; GGUF strings cannot be null.", nameof(values));
        return WrapArray(GgufValueType.String, copy);
    }

    public bool TryGetUInt8(out byte value) { value = (byte)_scalarBits; return Type == GgufValueType.UInt8; }
    public bool TryGetInt8(out sbyte value) { value = (sbyte)_scalarBits; return Type == GgufValueType.Int8; }
    public bool TryGetUInt16(out ushort value) { value = (ushort)_scalarBits; return Type == GgufValueType.UInt16; }
    public bool TryGetInt16(out short value) { value = (short)_scalarBits; return Type == GgufValueType.Int16; }
    public bool TryGetUInt32(out uint value) { value = (uint)_scalarBits; return Type == GgufValueType.UInt32; }
    public bool TryGetInt32(out int value) { value = (int)_scalarBits; return Type == GgufValueType.Int32; }
    public bool TryGetUInt64(out ulong value) { value = _scalarBits; return Type == GgufValueType.UInt64; }
    public bool TryGetInt64(out long value) { value = (long)_scalarBits; return Type == GgufValueType.Int64; }
    public bool TryGetFloat32(out float value) { value = BitConverter.UInt32BitsToSingle((uint)_scalarBits); return Type == GgufValueType.Float32; }
    public bool TryGetFloat64(out double value) { value = BitConverter.UInt64BitsToDouble(_scalarBits); return Type == GgufValueType.Float64; }
    public bool TryGetBool(out bool value) { value = _scalarBits != 0; return Type == GgufValueType.Bool; }

    public bool TryGetString(out string value)
    {
        value = _reference as string ?? string.Empty;
        return Type == GgufValueType.String;
    }

    public bool TryGetUInt8Array(out IReadOnlyList<byte> values) => TryGetArray(GgufValueType.UInt8, out values);
    public bool TryGetInt8Array(out IReadOnlyList<sbyte> values) => TryGetArray(GgufValueType.Int8, out values);
    public bool TryGetUInt16Array(out IReadOnlyList<ushort> values) => TryGetArray(GgufValueType.UInt16, out values);
    public bool TryGetInt16Array(out IReadOnlyList<short> values) => TryGetArray(GgufValueType.Int16, out values);
    public bool TryGetUInt32Array(out IReadOnlyList<uint> values) => TryGetArray(GgufValueType.UInt32, out values);
    public bool TryGetInt32Array(out IReadOnlyList<int> values) => TryGetArray(GgufValueType.Int32, out values);
    public bool TryGetUInt64Array(out IReadOnlyList<ulong> values) => TryGetArray(GgufValueType.UInt64, out values);
    public bool TryGetInt64Array(out IReadOnlyList<long> values) => TryGetArray(GgufValueType.Int64, out values);
    public bool TryGetFloat32Array(out IReadOnlyList<float> values) => TryGetArray(GgufValueType.Float32, out values);
    public bool TryGetFloat64Array(out IReadOnlyList<double> values) => TryGetArray(GgufValueType.Float64, out values);
    public bool TryGetBoolArray(out IReadOnlyList<bool> values) => TryGetArray(GgufValueType.Bool, out values);
    public bool TryGetStringArray(out IReadOnlyList<string> values) => TryGetArray(GgufValueType.String, out values);

    /// <summary>"uint32", "array of 32000 string", ...: the type as a reader would name it.</summary>
    public string DescribeType() => Type == GgufValueType.Array
        ? $"array of {ArrayLength} {GgufValueTypes.Name(ArrayElementType!.Value)}"
        : GgufValueTypes.Name(Type);

    public override string ToString() => Type switch
    {
        GgufValueType.Array => DescribeType(),
        GgufValueType.String => $"string {GgufStrings.Quote((string)_reference!)}",
        GgufValueType.Bool => $"bool {(_scalarBits != 0 ? "true" : "false")}",
        GgufValueType.Float32 => $"float32 {BitConverter.UInt32BitsToSingle((uint)_scalarBits)}",
        GgufValueType.Float64 => $"float64 {BitConverter.UInt64BitsToDouble(_scalarBits)}",
        GgufValueType.Int8 or GgufValueType.Int16 or GgufValueType.Int32 or GgufValueType.Int64
            => $"{GgufValueTypes.Name(Type)} {(long)_scalarBits}",
        _ => $"{GgufValueTypes.Name(Type)} {_scalarBits}",
    };

    /// <summary>The stored array itself, for the writer; never handed to callers.</summary>
    internal Array? ArrayStorage => _reference as Array;

    internal string? StringStorage => _reference as string;

    internal ulong ScalarBits => _scalarBits;

    /// <summary>Takes ownership of an exactly typed element array (byte[] for UInt8,
    /// string[] for String, ...); the reader uses it to avoid a copy.</summary>
    internal static GgufValue WrapArray(GgufValueType elementType, Array elements) =>
        new(GgufValueType.Array, 0, elements, elementType);

    internal static GgufValue Scalar(GgufValueType type, ulong bits) => new(type, bits, null, null);

    private bool TryGetArray<T>(GgufValueType elementType, out IReadOnlyList<T> values)
    {
        // The element-type tag decides, not a cast: the runtime lets an int[] pass as a
        // uint[], and that must not let an int32 array be read as uint32.
        if (ArrayElementType == elementType)
        {
            values = new ReadOnlyCollection<T>((T[])_reference!);
            return true;
        }
        values = [];
        return false;
    }
}
