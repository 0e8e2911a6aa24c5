using System.Collections;

namespace Tibet.Core.Gguf;

/// <summary>
/// The metadata of a GGUF file: key/value pairs in file order, with lookup by key and
/// typed accessors. A TryGet accessor returns false both when the key is absent and when
/// its value has another type; a Get accessor throws, saying which of the two it was.
/// </summary>
public sealed class GgufMetadata : IReadOnlyList<GgufMetadataEntry>
{
    private readonly GgufMetadataEntry[] _entries;
    private readonly Dictionary<string, int> _indexByKey;

    internal GgufMetadata(GgufMetadataEntry[] entries, Dictionary<string, int> indexByKey)
    {
        _entries = entries;
        _indexByKey = indexByKey;
    }

    public int Count => _entries.Length;

    public GgufMetadataEntry this[int index] => _entries[index];

    /// <summary>The value under <paramref name="key"/>; throws <see cref="KeyNotFoundException"/> when absent.</summary>
    public GgufValue this[string key] => TryGetValue(key, out var value)
        ? value
        : throw new KeyNotFoundException($"The GGUF metadata has no key {GgufStrings.Quote(key)}.");

    public bool ContainsKey(string key) => _indexByKey.ContainsKey(key);

    public bool TryGetValue(string key, out GgufValue value)
    {
        if (_indexByKey.TryGetValue(key, out int index))
        {
            value = _entries[index].Value;
            return true;
        }
        value = null!;
        return false;
    }

    public IEnumerator<GgufMetadataEntry> GetEnumerator() => ((IEnumerable<GgufMetadataEntry>)_entries).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    public bool TryGetString(string key, out string value) { value = string.Empty; return TryGetValue(key, out var v) && v.TryGetString(out value); }
    public bool TryGetUInt8(string key, out byte value) { value = 0; return TryGetValue(key, out var v) && v.TryGetUInt8(out value); }
    public bool TryGetInt8(string key, out sbyte value) { value = 0; return TryGetValue(key, out var v) && v.TryGetInt8(out value); }
    public bool TryGetUInt16(string key, out ushort value) { value = 0; return TryGetValue(key, out var v) && v.TryGetUInt16(out value); }
    public bool TryGetInt16(string key, out short value) { value = 0; return TryGetValue(key, out var v) && v.TryGetInt16(out value); }
    public bool TryGetUInt32(string key, out uint value) { value = 0; return TryGetValue(key, out var v) && v.TryGetUInt32(out value); }
    public bool TryGetInt32(string key, out int value) { value = 0; return TryGetValue(key, out var v) && v.TryGetInt32(out value); }
    public bool TryGetUInt64(string key, out ulong value) { value = 0; return TryGetValue(key, out var v) && v.TryGetUInt64(out value); }
    public bool TryGetInt64(string key, out long value) { value = 0; return TryGetValue(key, out var v) && v.TryGetInt64(out value); }
    public bool TryGetFloat32(string key, out float value) { value = 0; return TryGetValue(key, out var v) && v.TryGetFloat32(out value); }
    public bool TryGetFloat64(string key, out double value) { value = 0; return TryGetValue(key, out var v) && v.TryGetFloat64(out value); }
    public bool TryGetBool(string key, out bool value) { value = false; return TryGetValue(key, out var v) && v.TryGetBool(out value); }

    public bool TryGetStringArray(string key, out IReadOnlyList<string> values) { values = []; return TryGetValue(key, out var v) && v.TryGetStringArray(out values); }
    public bool TryGetUInt8Array(string key, out IReadOnlyList<byte> values) { values = []; return TryGetValue(key, out var v) && v.TryGetUInt8Array(out values); }
    public bool TryGetInt8Array(string key, out IReadOnlyList<sbyte> values) { values = []; return TryGetValue(key, out var v) && v.TryGetInt8Array(out values); }
    public bool TryGetUInt16Array(string key, out IReadOnlyList<ushort> values) { values = []; return TryGetValue(key, out var v) && v.TryGetUInt16Array(out values); }
    public bool TryGetInt16Array(string key, out IReadOnlyList<short> values) { values = []; return TryGetValue(key, out var v) && v.TryGetInt16Array(out values); }
    public bool TryGetUInt32Array(string key, out IReadOnlyList<uint> values) { values = []; return TryGetValue(key, out var v) && v.TryGetUInt32Array(out values); }
    public bool TryGetInt32Array(string key, out IReadOnlyList<int> values) { values = []; return TryGetValue(key, out var v) && v.TryGetInt32Array(out values); }
    public bool TryGetUInt64Array(string key, out IReadOnlyList<ulong> values) { values = []; return TryGetValue(key, out var v) && v.TryGetUInt64Array(out values); }
    public bool TryGetInt64Array(string key, out IReadOnlyList<long> values) { values = []; return TryGetValue(key, out var v) && v.TryGetInt64Array(out values); }
    public bool TryGetFloat32Array(string key, out IReadOnlyList<float> values) { values = []; return TryGetValue(key, out var v) && v.TryGetFloat32Array(out values); }
    public bool TryGetFloat64Array(string key, out IReadOnlyList<double> values) { values = []; return TryGetValue(key, out var v) && v.TryGetFloat64Array(out values); }
    public bool TryGetBoolArray(string key, out IReadOnlyList<bool> values) { values = []; return TryGetValue(key, out var v) && v.TryGetBoolArray(out values); }

    public string GetString(string key) => Get<string>(key, "string", static (GgufValue v, out string x) => v.TryGetString(out x));
    public byte GetUInt8(string key) => Get<byte>(key, "uint8", static (GgufValue v, out byte x) => v.TryGetUInt8(out x));
    public sbyte GetInt8(string key) => Get<sbyte>(key, "int8", static (GgufValue v, out sbyte x) => v.TryGetInt8(out x));
    public ushort GetUInt16(string key) => Get<ushort>(key, "uint16", static (GgufValue v, out ushort x) => v.TryGetUInt16(out x));
    public short GetInt16(string key) => Get<short>(key, "int16", static (GgufValue v, out short x) => v.TryGetInt16(out x));
    public uint GetUInt32(string key) => Get<uint>(key, "uint32", static (GgufValue v, out uint x) => v.TryGetUInt32(out x));
    public int GetInt32(string key) => Get<int>(key, "int32", static (GgufValue v, out int x) => v.TryGetInt32(out x));
    public ulong GetUInt64(string key) => Get<ulong>(key, "uint64", static (GgufValue v, out ulong x) => v.TryGetUInt64(out x));
    public long GetInt64(string key) => Get<long>(key, "int64", static (GgufValue v, out long x) => v.TryGetInt64(out x));
    public float GetFloat32(string key) => Get<float>(key, "float32", static (GgufValue v, out float x) => v.TryGetFloat32(out x));
    public double GetFloat64(string key) => Get<double>(key, "float64", static (GgufValue v, out double x) => v.TryGetFloat64(out x));
    public bool GetBool(string key) => Get<bool>(key, "bool", static (GgufValue v, out bool x) => v.TryGetBool(out x));

    public IReadOnlyList<string> GetStringArray(string key) => Get<IReadOnlyList<string>>(key, "array of string", static (GgufValue v, out IReadOnlyList<string> x) => v.TryGetStringArray(out x));
    public IReadOnlyList<byte> GetUInt8Array(string key) => Get<IReadOnlyList<byte>>(key, "array of uint8", static (GgufValue v, out IReadOnlyList<byte> x) => v.TryGetUInt8Array(out x));
    public IReadOnlyList<sbyte> GetInt8Array(string key) => Get<IReadOnlyList<sbyte>>(key, "array of int8", static (GgufValue v, out IReadOnlyList<sbyte> x) => v.TryGetInt8Array(out x));
    public IReadOnlyList<ushort> GetUInt16Array(string key) => Get<IReadOnlyList<ushort>>(key, "array of uint16", static (GgufValue v, out IReadOnlyList<ushort> x) => v.TryGetUInt16Array(out x));
    public IReadOnlyList<short> GetInt16Array(string key) => Get<IReadOnlyList<short>>(key, "array of int16", static (GgufValue v, out IReadOnlyList<short> x) => v.TryGetInt16Array(out x));
    public IReadOnlyList<uint> GetUInt32Array(string key) => Get<IReadOnlyList<uint>>(key, "array of uint32", static (GgufValue v, out IReadOnlyList<uint> x) => v.TryGetUInt32Array(out x));
    public IReadOnlyList<int> GetInt32Array(string key) => Get<IReadOnlyList<int>>(key, "array of int32", static (GgufValue v, out IReadOnlyList<int> x) => v.TryGetInt32Array(out x));
    public IReadOnlyList<ulong> GetUInt64Array(string key) => Get<IReadOnlyList<ulong>>(key, "array of uint64", static (GgufValue v, out IReadOnlyList<ulong> x) => v.TryGetUInt64Array(out x));
    public IReadOnlyList<long> GetInt64Array(string key) => Get<IReadOnlyList<long>>(key, "array of int64", static (GgufValue v, out IReadOnlyList<long> x) => v.TryGetInt64Array(out x));
    public IReadOnlyList<float> GetFloat32Array(string key) => Get<IReadOnlyList<float>>(key, "array of float32", static (GgufValue v, out IReadOnlyList<float> x) => v.TryGetFloat32Array(out x));
    public IReadOnlyList<double> GetFloat64Array(string key) => Get<IReadOnlyList<double>>(key, "array of float64", static (GgufValue v, out IReadOnlyList<double> x) => v.TryGetFloat64Array(out x));
    public IReadOnlyList<bool> GetBoolArray(string key) => Get<IReadOnlyList<bool>>(key, "array of bool", static (GgufValue v, out IReadOnlyList<bool> x) => v.TryGetBoolArray(out x));

    private delegate bool Accessor<T>(GgufValue value, out T result);

    private T Get<T>(string key, string expected, Accessor<T> accessor)
    {
        var value = this[key];
        if (!accessor(value, out T result))
            throw new InvalidCastException($"The GGUF metadata key {GgufStrings.Quote(key)} holds a {value.DescribeType()}, not a {expected}.");
        return result;
    }
}
