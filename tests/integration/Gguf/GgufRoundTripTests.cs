using System.Buffers.Binary;
using Tibet.Core.Gguf;
using Xunit;

namespace Tibet.IntegrationTests.Gguf;

/// <summary>What <see cref="GgufWriter"/> writes, <see cref="GgufFile"/> reads back
/// exactly: every value type, extremes included, and tensors of several ggml types
/// whose bytes land where the header says.</summary>
public class GgufRoundTripTests
{
    [Fact]
    public void Every_scalar_type_reads_back_with_its_type_and_exact_value()
    {
        var writer = new GgufWriter();
        writer.Add("u8", byte.MaxValue);
        writer.Add("i8", sbyte.MinValue);
        writer.Add("u16", ushort.MaxValue);
        writer.Add("i16", short.MinValue);
        writer.Add("u32", uint.MaxValue);
        writer.Add("i32", int.MinValue);
        writer.Add("u64", ulong.MaxValue);
        writer.Add("i64", long.MinValue);
        writer.Add("f32", -1.5e-38f);
        writer.Add("f64", double.Epsilon);
        writer.Add("f32.nan", BitConverter.UInt32BitsToSingle(0x7FC0_1234));
        writer.Add("true", true);
        writer.Add("false", false);
        writer.Add("text", "llama 🦙 ламa 羊驼");
        writer.Add("empty", "");

        var metadata = WriteAndRead(writer).Metadata;

        Assert.Equal(["u8", "i8", "u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64", "f32.nan", "true", "false", "text", "empty"],
            metadata.Select(entry => entry.Key));
        Assert.Equal(byte.MaxValue, metadata.GetUInt8("u8"));
        Assert.Equal(sbyte.MinValue, metadata.GetInt8("i8"));
        Assert.Equal(ushort.MaxValue, metadata.GetUInt16("u16"));
        Assert.Equal(short.MinValue, metadata.GetInt16("i16"));
        Assert.Equal(uint.MaxValue, metadata.GetUInt32("u32"));
        Assert.Equal(int.MinValue, metadata.GetInt32("i32"));
        Assert.Equal(ulong.MaxValue, metadata.GetUInt64("u64"));
        Assert.Equal(long.MinValue, metadata.GetInt64("i64"));
        Assert.Equal(-1.5e-38f, metadata.GetFloat32("f32"));
        Assert.Equal(double.Epsilon, metadata.GetFloat64("f64"));
        Assert.Equal(0x7FC0_1234u, BitConverter.SingleToUInt32Bits(metadata.GetFloat32("f32.nan")));
        Assert.True(metadata.GetBool("true"));
        Assert.False(metadata.GetBool("false"));
        Assert.Equal("llama 🦙 ламa 羊驼", metadata.GetString("text"));
        Assert.Equal("", metadata.GetString("empty"));
        Assert.Equal(GgufValueType.Int16, metadata["i16"].Type);
        Assert.Null(metadata["i16"].ArrayElementType);
    }

    [Fact]
    public void Every_array_type_reads_back_element_for_element()
    {
        var writer = new GgufWriter();
        writer.AddArray("a.u8", new byte[] { 0, 1, 255 });
        writer.AddArray("a.i8", new sbyte[] { -128, 0, 127 });
        writer.AddArray("a.u16", new ushort[] { 0, 65535 });
        writer.AddArray("a.i16", new short[] { -32768, 32767 });
        writer.AddArray("a.u32", new uint[] { 0, uint.MaxValue });
        writer.AddArray("a.i32", new[] { int.MinValue, -1, int.MaxValue });
        writer.AddArray("a.u64", new ulong[] { 0, ulong.MaxValue });
        writer.AddArray("a.i64", new[] { long.MinValue, long.MaxValue });
        writer.AddArray("a.f32", new[] { 0f, -0f, float.PositiveInfinity, 3.25f });
        writer.AddArray("a.f64", new[] { double.MinValue, 1e300 });
        writer.AddArray("a.bool", new[] { true, false, true });
        writer.AddArray("a.str", ["<s>", "", "▁the", "ü", "\n"]);
        writer.AddArray("a.empty", ReadOnlySpan<float>.Empty);

        var metadata = WriteAndRead(writer).Metadata;

        Assert.Equal([0, 1, 255], metadata.GetUInt8Array("a.u8"));
        Assert.Equal([-128, 0, 127], metadata.GetInt8Array("a.i8"));
        Assert.Equal([0, 65535], metadata.GetUInt16Array("a.u16"));
        Assert.Equal([-32768, 32767], metadata.GetInt16Array("a.i16"));
        Assert.Equal([0, uint.MaxValue], metadata.GetUInt32Array("a.u32"));
        Assert.Equal([int.MinValue, -1, int.MaxValue], metadata.GetInt32Array("a.i32"));
        Assert.Equal([0, ulong.MaxValue], metadata.GetUInt64Array("a.u64"));
        Assert.Equal([long.MinValue, long.MaxValue], metadata.GetInt64Array("a.i64"));
        Assert.Equal([0u, 0x8000_0000u, 0x7F80_0000u, BitConverter.SingleToUInt32Bits(3.25f)],
            metadata.GetFloat32Array("a.f32").Select(BitConverter.SingleToUInt32Bits));
        Assert.Equal([double.MinValue, 1e300], metadata.GetFloat64Array("a.f64"));
        Assert.Equal([true, false, true], metadata.GetBoolArray("a.bool"));
        Assert.Equal(["<s>", "", "▁the", "ü", "\n"], metadata.GetStringArray("a.str"));
        Assert.Empty(metadata.GetFloat32Array("a.empty"));
        Assert.Equal(GgufValueType.Array, metadata["a.str"].Type);
        Assert.Equal(GgufValueType.String, metadata["a.str"].ArrayElementType);
        Assert.Equal(5, metadata["a.str"].ArrayLength);
    }

    [Fact]
    public void Typed_accessors_refuse_a_value_of_another_type_instead_of_converting_it()
    {
        var writer = new GgufWriter();
        writer.Add("count", 7u);
        writer.AddArray("ids", new[] { 1, 2 });
        var metadata = WriteAndRead(writer).Metadata;

        Assert.True(metadata.TryGetUInt32("count", out uint count));
        Assert.Equal(7u, count);
        Assert.False(metadata.TryGetInt32("count", out _));
        Assert.False(metadata.TryGetUInt32("missing", out _));
        // int32[] and uint32[] share a runtime representation; the type tag still decides.
        Assert.False(metadata.TryGetUInt32Array("ids", out _));
        var wrongType = Assert.Throws<InvalidCastException>(() => metadata.GetString("count"));
        Assert.Contains("'count' holds a uint32, not a string", wrongType.Message);
        var missing = Assert.Throws<KeyNotFoundException>(() => metadata.GetStringArray("tokenizer.ggml.tokens"));
        Assert.Contains("no key 'tokenizer.ggml.tokens'", missing.Message);
    }

    public static TheoryData<GgmlType, long[]> TensorShapes => new()
    {
        { GgmlType.F32, [7] },
        { GgmlType.F16, [3, 5] },
        { GgmlType.BF16, [64, 2, 3] },
        { GgmlType.Q4_0, [64, 3] },
        { GgmlType.Q8_0, [96, 1, 2, 2] },
        { GgmlType.Q4_K, [256, 3] },
        { GgmlType.Q6_K, [512, 1] },
        { GgmlType.IQ4_XS, [256, 2] },
        { GgmlType.MXFP4, [32, 5] },
        { GgmlType.I32, [11, 1, 1, 1] },
    };

    [Theory]
    [MemberData(nameof(TensorShapes))]
    public void A_tensor_reads_back_with_its_shape_and_its_bytes_at_the_stated_offset(GgmlType type, long[] shape)
    {
        GgmlTypeInfo.TryGetBlock(type, out int blockElements, out int blockBytes);
        long expectedBytes = shape[0] / blockElements * blockBytes * shape.Skip(1).Aggregate(1L, (a, b) => a * b);
        var writer = new GgufWriter();
        writer.Add("general.architecture", "test");
        var before = writer.AddTensor("before", GgmlType.F32, 3);
        var tensor = writer.AddTensor("blk.0.weight", type, shape);
        var after = writer.AddTensor("after", GgmlType.F16, 5);
        Assert.Equal(expectedBytes, tensor.ByteSize);

        var data = new Dictionary<string, byte[]>();
        byte[] file = Write(writer, t => data[t.Name] = Pattern(t.ByteSize, t.Name.Length));
        var read = GgufAssert.Read(file);

        Assert.Equal(["before", "blk.0.weight", "after"], read.Tensors.Select(t => t.Name));
        var readTensor = read.Tensors[1];
        Assert.Equal(type, readTensor.Type);
        Assert.Equal(shape, readTensor.Dimensions);
        Assert.Equal(shape.Aggregate(1L, (a, b) => a * b), readTensor.ElementCount);
        Assert.Equal(expectedBytes, readTensor.ByteSize);
        Assert.Equal(0, read.DataOffset % read.Alignment);
        foreach (var t in read.Tensors)
        {
            Assert.Equal(0, t.Offset % read.Alignment);
            long at = read.FileOffsetOf(t);
            Assert.Equal(data[t.Name], file.AsSpan((int)at, (int)t.ByteSize).ToArray());
        }
        Assert.Equal(writer.FileOffsetOf(after), read.FileOffsetOf(read.Tensors[2]));
        Assert.Equal(0, read.FileOffsetOf(read.Tensors[0]) - writer.DataOffset);
        Assert.Equal(writer.FileLength, file.Length);
        Assert.True(read.TryGetTensor("blk.0.weight", out var byName) && ReferenceEquals(byName, readTensor));
        Assert.Equal(before.Offset, read.Tensors[0].Offset);
    }

    [Theory]
    [InlineData(1u)]
    [InlineData(32u)]
    [InlineData(64u)]
    [InlineData(4096u)]
    public void The_alignment_is_recorded_only_when_it_is_not_the_default_and_is_honoured(uint alignment)
    {
        var writer = new GgufWriter(alignment);
        writer.Add("general.name", "x");
        writer.AddTensor("a", GgmlType.F32, 3);
        writer.AddTensor("b", GgmlType.I8, 5);
        writer.AddTensor("c", GgmlType.F64, 1);
        var read = WriteAndRead(writer);

        Assert.Equal(alignment, read.Alignment);
        Assert.Equal(alignment != GgufFormat.DefaultAlignment, read.Metadata.ContainsKey(GgufFormat.AlignmentKey));
        Assert.Equal(0, read.DataOffset % alignment);
        Assert.Equal([0L, AlignUp(12, alignment), AlignUp(AlignUp(12, alignment) + 5, alignment)],
            read.Tensors.Select(t => t.Offset));
    }

    [Fact]
    public void A_file_without_tensors_reads_back()
    {
        var writer = new GgufWriter();
        writer.AddArray("tokenizer.ggml.tokens", ["a", "b"]);
        var read = WriteAndRead(writer);
        Assert.Empty(read.Tensors);
        Assert.True(writer.IsComplete);
        Assert.Equal(["a", "b"], read.Metadata.GetStringArray("tokenizer.ggml.tokens"));
    }

    [Fact]
    public void A_llama_shaped_model_with_a_32k_vocabulary_round_trips()
    {
        var tokens = Enumerable.Range(0, 32_000).Select(i => i < 3 ? new[] { "<unk>", "<s>", "</s>" }[i] : $"▁tok{i}").ToArray();
        var scores = Enumerable.Range(0, tokens.Length).Select(i => -i / 10f).ToArray();
        var types = Enumerable.Range(0, tokens.Length).Select(i => i < 3 ? 3 : 1).ToArray();
        var writer = new GgufWriter();
        writer.Add("general.architecture", "llama");
        writer.Add("llama.context_length", 4096u);
        writer.Add("llama.rope.freq_base", 10000f);
        writer.Add("tokenizer.ggml.model", "llama");
        writer.AddArray("tokenizer.ggml.tokens", tokens);
        writer.AddArray("tokenizer.ggml.scores", scores);
        writer.AddArray("tokenizer.ggml.token_type", types);
        writer.AddTensor("token_embd.weight", GgmlType.Q4_K, 256, 32_000);
        for (int layer = 0; layer < 4; layer++)
            writer.AddTensor($"blk.{layer}.attn_q.weight", GgmlType.Q8_0, 256, 256);

        var read = WriteAndRead(writer);

        Assert.Equal(tokens, read.Metadata.GetStringArray("tokenizer.ggml.tokens"));
        Assert.Equal(scores, read.Metadata.GetFloat32Array("tokenizer.ggml.scores"));
        Assert.Equal(types, read.Metadata.GetInt32Array("tokenizer.ggml.token_type"));
        Assert.Equal(4096u, read.Metadata.GetUInt32("llama.context_length"));
        Assert.Equal(5, read.Tensors.Count);
        Assert.Equal(256L / 256 * 144 * 32_000, read.Tensors[0].ByteSize);
    }

    internal static GgufFile WriteAndRead(GgufWriter writer) => GgufAssert.Read(Write(writer, t => Pattern(t.ByteSize, 1)));

    /// <summary>Writes the header and every tensor with the data <paramref name="dataFor"/> gives.</summary>
    internal static byte[] Write(GgufWriter writer, Func<GgufTensorInfo, byte[]> dataFor)
    {
        var output = new MemoryStream();
        writer.WriteHeader(output);
        Assert.Equal(writer.DataOffset, output.Length);
        foreach (var tensor in writer.Tensors)
            writer.WriteTensorData(output, tensor, dataFor(tensor));
        Assert.True(writer.IsComplete);
        Assert.Equal(writer.FileLength, output.Length);
        return output.ToArray();
    }

    /// <summary>Bytes that differ from tensor to tensor and position to position, so a
    /// misplaced tensor cannot compare equal by accident.</summary>
    internal static byte[] Pattern(long length, int seed)
    {
        var bytes = new byte[length];
        for (int i = 0; i < bytes.Length; i++)
            bytes[i] = (byte)(i * 31 + seed * 7 + (i >> 8));
        return bytes;
    }

    private static long AlignUp(long value, uint alignment) => (value + alignment - 1) / alignment * alignment;

    [Fact]
    public void HasMagic_recognises_GGUF_and_nothing_else()
    {
        Span<byte> magic = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(magic, GgufFormat.Magic);
        Assert.Equal("GGUF"u8.ToArray(), magic.ToArray());
        Assert.True(GgufFile.HasMagic("GGUF\x03\0\0\0"u8));
        Assert.False(GgufFile.HasMagic("GGU"u8));
        Assert.False(GgufFile.HasMagic("\x7fELF"u8));
        Assert.False(GgufFile.HasMagic("FUGG"u8));
    }
}
