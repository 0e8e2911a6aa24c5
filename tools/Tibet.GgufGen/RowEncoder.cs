using System.Runtime.InteropServices;
using Tibet.Core.Gguf;

namespace Tibet.GgufGen;

/// <summary>
/// Produces a tensor's rows in its on-disk encoding, streaming, from one seeded random
/// stream per tensor.
/// </summary>
/// <remarks>
/// Every element of a <see cref="TensorValues.Uniform"/> tensor is q·d, with q a random
/// signed byte and d = amplitude/127 rounded to F16, drawn in element order. Q8_0 stores
/// exactly that (its block scale is d), F32 stores it exactly, and F16 rounds it, so the
/// type changes the encoding, not the model.
/// </remarks>
internal sealed class RowEncoder
{
    private const int Q8BlockElements = 32;

    private readonly TensorSpec _tensor;
    private readonly Half _scale;
    private readonly float[] _floatLevels = new float[256];
    private readonly ushort[] _halfLevels = new ushort[256];
    private readonly byte[] _randomBytes;
    private Xoshiro256 _random;

    public RowEncoder(TensorSpec tensor, ulong seed)
    {
        _tensor = tensor;
        _random = new Xoshiro256(seed ^ Fnv1a64(tensor.Name));
        _scale = (Half)(tensor.Amplitude / 127f);
        for (int q = -128; q < 128; q++)
        {
            float value = q * (float)_scale;
            _floatLevels[(byte)q] = value;
            _halfLevels[(byte)q] = BitConverter.HalfToUInt16Bits((Half)value);
        }
        _randomBytes = new byte[tensor.RowLength];
    }

    /// <summary>Fills <paramref name="rows"/>, a whole number of rows, with the next rows.</summary>
    public void Fill(Span<byte> rows)
    {
        long rowBytes = _tensor.RowBytes;
        for (int start = 0; start < rows.Length; start += (int)rowBytes)
            FillRow(rows.Slice(start, (int)rowBytes));
    }

    private void FillRow(Span<byte> row)
    {
        if (_tensor.Values == TensorValues.Ones)
        {
            if (_tensor.Type != GgmlType.F32)
                throw new NotSupportedException($"constant tensors are F32, not {_tensor.Type}");
            MemoryMarshal.Cast<byte, float>(row).Fill(1f);
            return;
        }
        switch (_tensor.Type)
        {
            case GgmlType.Q8_0:
                // A block is an F16 scale followed by 32 signed bytes.
                ushort scaleBits = BitConverter.HalfToUInt16Bits(_scale);
                const int blockBytes = 2 + Q8BlockElements;
                for (int block = 0; block < row.Length; block += blockBytes)
                {
                    row[block] = (byte)scaleBits;
                    row[block + 1] = (byte)(scaleBits >> 8);
                    _random.NextBytes(row.Slice(block + 2, Q8BlockElements));
                }
                break;
            case GgmlType.F32:
                _random.NextBytes(_randomBytes);
                Span<float> floats = MemoryMarshal.Cast<byte, float>(row);
                for (int i = 0; i < floats.Length; i++)
                    floats[i] = _floatLevels[_randomBytes[i]];
                break;
            case GgmlType.F16:
                _random.NextBytes(_randomBytes);
                Span<ushort> halves = MemoryMarshal.Cast<byte, ushort>(row);
                for (int i = 0; i < halves.Length; i++)
                    halves[i] = _halfLevels[_randomBytes[i]];
                break;
            default:
                throw new NotSupportedException($"the generator writes F32, F16 and Q8_0 weights, not {_tensor.Type}");
        }
    }

    private static ulong Fnv1a64(string text)
    {
        ulong hash = 0xcbf29ce484222325;
        foreach (char c in text)
        {
            hash ^= c;
            hash *= 0x100000001b3;
        }
        return hash;
    }
}
