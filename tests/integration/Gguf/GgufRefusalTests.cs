using Tibet.Core.Gguf;
using Xunit;

namespace Tibet.IntegrationTests.Gguf;

/// <summary>
/// Byte-level files, each broken in one way, are refused with a
/// <see cref="GgufFormatException"/> that names the problem. Every file starts from the
/// same valid layout (checked by <see cref="The_hand_built_baseline_is_accepted"/>), so
/// each refusal is caused by the one thing the test changes.
/// </summary>
public class GgufRefusalTests
{
    private const ulong Huge = 1UL << 60;

    [Fact]
    public void The_hand_built_baseline_is_accepted()
    {
        var file = GgufAssert.Read(TwoTensorFile());
        Assert.Equal(["first", "second"], file.Tensors.Select(t => t.Name));
        Assert.Equal([0L, 64L], file.Tensors.Select(t => t.Offset));
        Assert.Equal("x", file.Metadata.GetString("general.name"));
    }

    [Fact]
    public void An_empty_file_is_not_a_GGUF_file() =>
        GgufAssert.Refuses([], "not a GGUF file", "0 bytes long");

    [Fact]
    public void A_file_shorter_than_the_magic_is_not_a_GGUF_file() =>
        GgufAssert.Refuses("GGU"u8.ToArray(), "not a GGUF file", "3 bytes long");

    [Fact]
    public void An_ELF_file_is_not_a_GGUF_file()
    {
        var error = GgufAssert.Refuses([0x7F, (byte)'E', (byte)'L', (byte)'F', 2, 1, 1, 0], "not a GGUF file", "7F454C46", "\"GGUF\"");
        Assert.Equal(0, error.FileOffset);
    }

    [Theory]
    [InlineData(2u, "version 2 is not supported")]
    [InlineData(1u, "version 1 is not supported")]
    [InlineData(4u, "version 4 is not supported")]
    [InlineData(0x0300_0000u, "byte-swapped")]
    public void An_unsupported_version_is_refused(uint version, string problem)
    {
        var bytes = new GgufBytes().U32(GgufFormat.Magic).U32(version).U64(0).U64(0).ToArray();
        Assert.Equal(4, GgufAssert.Refuses(bytes, problem).FileOffset);
    }

    [Theory]
    [InlineData(6)]
    [InlineData(12)]
    [InlineData(23)]
    public void A_file_cut_inside_the_fixed_header_is_truncated(int length)
    {
        var bytes = GgufBytes.Header(0, 0).ToArray()[..length];
        GgufAssert.Refuses(bytes, "the file is truncated", $"the file ends at byte {length}");
    }

    [Fact]
    public void Truncation_anywhere_in_a_valid_file_is_refused_as_truncation()
    {
        byte[] file = TwoTensorFile();
        for (int length = 0; length < file.Length; length++)
        {
            var error = Assert.Throws<GgufFormatException>(() => GgufAssert.Read(file[..length]));
            Assert.True(error.Message.Contains("truncated") || error.Message.Contains("not a GGUF file"),
                $"cut at {length}: {error.Message}");
        }
    }

    [Fact]
    public void A_hostile_tensor_count_is_refused_before_anything_is_allocated_for_it()
    {
        var bytes = GgufBytes.Header(Huge, 0).Zeros(64).ToArray();
        long before = GC.GetAllocatedBytesForCurrentThread();
        GgufAssert.Refuses(bytes, $"claims {Huge} tensors", "GgufLimits.MaxTensors");
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 1 << 20);
    }

    [Fact]
    public void A_tensor_count_the_file_cannot_hold_is_refused() =>
        GgufAssert.Refuses(GgufBytes.Header(1000, 0).Zeros(64).ToArray(), "claims 1000 tensors", "can hold at most 1 tensor infos");

    [Fact]
    public void A_hostile_metadata_count_is_refused() =>
        GgufAssert.Refuses(GgufBytes.Header(0, Huge).Zeros(64).ToArray(), $"claims {Huge} metadata entries", "GgufLimits.MaxMetadataEntries");

    [Fact]
    public void A_metadata_count_the_file_cannot_hold_is_refused() =>
        GgufAssert.Refuses(GgufBytes.Header(0, 100).Zeros(64).ToArray(), "claims 100 metadata entries", "a count is corrupt or the file is truncated");

    [Fact]
    public void A_key_length_beyond_the_limit_is_refused()
    {
        var bytes = GgufBytes.Header(0, 1).U64(Huge).Zeros(64).ToArray();
        var error = GgufAssert.Refuses(bytes, "the key of metadata entry 0", $"string of {Huge} bytes", "GgufLimits.MaxKeyBytes");
        Assert.Equal(24, error.FileOffset);
    }

    [Fact]
    public void A_key_length_beyond_the_file_is_refused() =>
        GgufAssert.Refuses(GgufBytes.Header(0, 1).U64(1000).Zeros(64).ToArray(), "string of 1000 bytes", "remain in the file");

    [Fact]
    public void A_string_value_longer_than_the_file_is_refused()
    {
        var bytes = GgufBytes.Header(0, 1).Key("general.name", GgufValueType.String).U64(1UL << 20).Raw("abc"u8).ToArray();
        GgufAssert.Refuses(bytes, "the value of metadata entry 0 ('general.name')", "string of 1048576 bytes", "only 3 bytes remain");
    }

    [Fact]
    public void A_string_value_beyond_a_tightened_limit_is_refused()
    {
        var bytes = GgufBytes.Header(0, 1).StringEntry("general.name", "twelve bytes").ToArray();
        GgufAssert.RefusesWithLimits(bytes, new GgufLimits { MaxStringBytes = 8 }, "string of 12 bytes", "GgufLimits.MaxStringBytes");
    }

    [Theory]
    [InlineData(new byte[] { 0xFF }, 0)]
    [InlineData(new byte[] { (byte)'a', 0xC0, 0x80 }, 1)]            // overlong NUL
    [InlineData(new byte[] { 0xED, 0xA0, 0x80 }, 0)]                 // UTF-16 surrogate
    [InlineData(new byte[] { (byte)'o', (byte)'k', 0xE2, 0x82 }, 2)] // cut sequence
    public void A_key_that_is_not_UTF8_is_refused_at_the_first_bad_byte(byte[] key, int firstBad)
    {
        var bytes = GgufBytes.Header(0, 1).Str(key).U32((uint)GgufValueType.UInt8).U8(1).ToArray();
        var error = GgufAssert.Refuses(bytes, "the key of metadata entry 0", "not valid UTF-8");
        Assert.Equal(24 + 8 + firstBad, error.FileOffset);
    }

    [Fact]
    public void A_string_array_element_that_is_not_UTF8_is_refused_naming_the_element()
    {
        var bytes = GgufBytes.Header(0, 1).Key("tokenizer.ggml.tokens", GgufValueType.Array)
            .U32((uint)GgufValueType.String).U64(3).Str("a").Str("b").Str([0xFE]).ToArray();
        GgufAssert.Refuses(bytes, "'tokenizer.ggml.tokens'", "element 2", "not valid UTF-8");
    }

    [Fact]
    public void A_tensor_name_that_is_not_UTF8_is_refused()
    {
        var bytes = GgufBytes.Header(1, 0).Str([0x80]).U32(1).U64(1).U32(0).U64(0).PadTo(32).Zeros(4).ToArray();
        GgufAssert.Refuses(bytes, "the name of tensor info 0", "not valid UTF-8");
    }

    [Fact]
    public void A_duplicate_key_is_refused_at_its_second_occurrence()
    {
        var builder = GgufBytes.Header(0, 2).UInt32Entry("llama.block_count", 2);
        long secondAt = builder.Length;
        var error = GgufAssert.Refuses(builder.UInt32Entry("llama.block_count", 3).ToArray(),
            "'llama.block_count' already appeared as metadata entry 0", "keys must be unique");
        Assert.Equal(secondAt, error.FileOffset);
    }

    [Fact]
    public void A_hostile_name_is_escaped_and_shortened_in_the_message()
    {
        string forged = "k\nInvalid GGUF file at byte 0: all is well" + new string('x', 60_000);
        var bytes = GgufBytes.Header(0, 2).UInt32Entry(forged, 1).UInt32Entry(forged, 2).ToArray();
        var error = GgufAssert.Refuses(bytes, "already appeared as metadata entry 0", "'k\\u000AInvalid GGUF", "characters)");
        Assert.DoesNotContain('\n', error.Message);
        Assert.True(error.Message.Length < 1000, $"the message is {error.Message.Length} characters long");
    }

    [Fact]
    public void An_empty_key_is_refused() =>
        GgufAssert.Refuses(GgufBytes.Header(0, 1).Key("", GgufValueType.UInt8).U8(0).Zeros(8).ToArray(), "the key of metadata entry 0 is empty");

    [Theory]
    [InlineData(13u)]
    [InlineData(0xFFFF_FFFFu)]
    public void An_unknown_value_type_is_refused(uint type)
    {
        var bytes = GgufBytes.Header(0, 1).Str("k").U32(type).U64(0).ToArray();
        GgufAssert.Refuses(bytes, $"the value type of metadata entry 0 ('k') is {type}", "not a GGUF value type");
    }

    [Fact]
    public void A_nested_array_is_refused()
    {
        var bytes = GgufBytes.Header(0, 1).Key("nested", GgufValueType.Array)
            .U32((uint)GgufValueType.Array).U64(1).U32((uint)GgufValueType.UInt8).U64(1).U8(0).ToArray();
        GgufAssert.Refuses(bytes, "array of arrays", "one level of array");
    }

    [Fact]
    public void An_unknown_array_element_type_is_refused()
    {
        var bytes = GgufBytes.Header(0, 1).Key("a", GgufValueType.Array).U32(77).U64(0).ToArray();
        GgufAssert.Refuses(bytes, "the array element type of metadata entry 0 ('a') is 77", "not a GGUF value type");
    }

    [Fact]
    public void An_array_length_beyond_the_limit_is_refused()
    {
        var bytes = GgufBytes.Header(0, 1).Key("a", GgufValueType.Array).U32((uint)GgufValueType.UInt8).U64(Huge).Zeros(16).ToArray();
        long before = GC.GetAllocatedBytesForCurrentThread();
        GgufAssert.Refuses(bytes, $"the array length of metadata entry 0 ('a') is {Huge}", "GgufLimits.MaxArrayElements");
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 1 << 20);
    }

    [Fact]
    public void An_array_longer_than_the_rest_of_the_file_is_refused_before_allocation()
    {
        // 16M strings would need 128 MiB of references if allocated on trust.
        var bytes = GgufBytes.Header(0, 1).Key("a", GgufValueType.Array).U32((uint)GgufValueType.String).U64(16_000_000).Zeros(16).ToArray();
        long before = GC.GetAllocatedBytesForCurrentThread();
        GgufAssert.Refuses(bytes, "is 16000000 string elements", "need at least 128000000 bytes", "only 16 bytes remain in the file");
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 1 << 20);
    }

    [Fact]
    public void Metadata_beyond_a_tightened_size_limit_is_refused()
    {
        var bytes = GgufBytes.Header(0, 1).Key("a", GgufValueType.Array).U32((uint)GgufValueType.Int32).U64(100).Zeros(400).ToArray();
        GgufAssert.RefusesWithLimits(bytes, new GgufLimits { MaxMetadataBytes = 256 }, "GgufLimits.MaxMetadataBytes");
        GgufAssert.RefusesWithLimits(bytes, new GgufLimits { MaxArrayElements = 99 }, "is 100", "GgufLimits.MaxArrayElements");
        Assert.Equal(100, GgufAssert.Read(bytes).Metadata.GetInt32Array("a").Count);
    }

    [Fact]
    public void A_bool_other_than_0_or_1_is_refused()
    {
        GgufAssert.Refuses(GgufBytes.Header(0, 1).Key("b", GgufValueType.Bool).U8(2).ToArray(), "bool of value 2", "0 or 1");
        var array = GgufBytes.Header(0, 1).Key("bs", GgufValueType.Array).U32((uint)GgufValueType.Bool).U64(3).U8(1).U8(0).U8(0x80).ToArray();
        GgufAssert.Refuses(array, "element 2", "bool of value 128");
    }

    [Theory]
    [InlineData(0u, "is 0; it must be a nonzero power of two")]
    [InlineData(48u, "is 48; it must be a nonzero power of two")]
    public void An_alignment_that_is_not_a_power_of_two_is_refused(uint alignment, string problem)
    {
        var bytes = GgufBytes.Header(0, 1).UInt32Entry(GgufFormat.AlignmentKey, alignment).ToArray();
        GgufAssert.Refuses(bytes, GgufFormat.AlignmentKey, problem);
    }

    [Fact]
    public void An_alignment_of_the_wrong_type_is_refused()
    {
        var asInt32 = GgufBytes.Header(0, 1).Key(GgufFormat.AlignmentKey, GgufValueType.Int32).U32(64).ToArray();
        GgufAssert.Refuses(asInt32, "general.alignment is a int32; it must be a uint32");
        var asString = GgufBytes.Header(0, 1).StringEntry(GgufFormat.AlignmentKey, "64").ToArray();
        GgufAssert.Refuses(asString, "general.alignment is a string; it must be a uint32");
    }

    [Fact]
    public void A_non_default_alignment_is_honoured_for_offsets()
    {
        // 64-aligned: "second" at 32 would be fine by default but is misaligned here.
        var bytes = GgufBytes.Header(2, 1).UInt32Entry(GgufFormat.AlignmentKey, 64)
            .TensorInfo("first", GgmlType.F32, 0, 4).TensorInfo("second", GgmlType.F32, 32, 4).PadTo(64).Zeros(128).ToArray();
        GgufAssert.Refuses(bytes, "tensor 'second' starts at data offset 32, which is not a multiple of the alignment 64");
    }

    [Fact]
    public void A_duplicate_tensor_name_is_refused() =>
        GgufAssert.Refuses(TwoTensorFile(secondName: "first"), "the name 'first' already belongs to tensor 0", "must be unique");

    [Fact]
    public void An_empty_tensor_name_is_refused() =>
        GgufAssert.Refuses(TwoTensorFile(secondName: ""), "the name of tensor info 1 is empty");

    [Fact]
    public void A_tensor_name_longer_than_ggml_allows_is_refused() =>
        GgufAssert.Refuses(TwoTensorFile(secondName: new string('n', 64)), "string of 64 bytes", "limit of 63 bytes", "GGML_MAX_NAME");

    [Theory]
    [InlineData(4u)]
    [InlineData(31u)]
    [InlineData(43u)]
    [InlineData(0xFFFF_FFFFu)]
    public void An_unknown_ggml_type_is_refused(uint type) =>
        GgufAssert.Refuses(TwoTensorFile(secondType: (GgmlType)type), $"the ggml type of tensor info 1 ('second') is ggml type {type}, which ggml does not define", "0-3, 6-30");

    [Theory]
    [InlineData(0)]
    [InlineData(5)]
    public void A_dimension_count_outside_1_to_4_is_refused(int dimensionCount)
    {
        var bytes = GgufBytes.Header(1, 0).Str("t").U32((uint)dimensionCount);
        for (int i = 0; i < dimensionCount; i++)
            bytes.U64(1);
        GgufAssert.Refuses(bytes.U32(0).U64(0).PadTo(32).Zeros(32).ToArray(),
            $"the dimension count of tensor info 0 ('t') is {dimensionCount}", "1 to 4 dimensions");
    }

    [Theory]
    [InlineData(0UL, "ne1 is 0")]
    [InlineData(1UL << 63, "ne1 is 9223372036854775808")]
    public void A_zero_or_negative_dimension_is_refused(ulong extent, string problem) =>
        GgufAssert.Refuses(TwoTensorFile(secondShape: [16, extent]), problem, "between 1 and 2^63-1");

    [Fact]
    public void A_dimension_product_that_overflows_is_refused() =>
        GgufAssert.Refuses(TwoTensorFile(secondShape: [1UL << 32, 1UL << 32]), "tensor 'second'", "more elements or bytes than an int64");

    [Fact]
    public void A_byte_size_that_overflows_although_the_element_count_does_not_is_refused() =>
        // 2^61 F32 elements fit an int64, their 2^63 bytes do not.
        GgufAssert.Refuses(TwoTensorFile(secondShape: [1UL << 31, 1UL << 30]), "more elements or bytes than an int64");

    [Fact]
    public void A_row_that_is_not_a_whole_number_of_blocks_is_refused() =>
        GgufAssert.Refuses(TwoTensorFile(secondType: GgmlType.Q4_K, secondShape: [128, 2]),
            "ne0 = 128 is not a multiple of the 256-element block of type Q4_K");

    [Fact]
    public void A_misaligned_tensor_offset_is_refused() =>
        GgufAssert.Refuses(TwoTensorFile(secondOffset: 65), "tensor 'second' starts at data offset 65", "not a multiple of the alignment 32");

    [Fact]
    public void Overlapping_tensors_are_refused() =>
        GgufAssert.Refuses(TwoTensorFile(secondOffset: 32), "tensor 'second' starts at data offset 32, inside tensor 'first'", "must not overlap");

    [Fact]
    public void A_tensor_at_the_same_offset_as_another_is_refused() =>
        GgufAssert.Refuses(TwoTensorFile(secondOffset: 0), "inside tensor 'first'", "must not overlap");

    [Fact]
    public void A_gap_between_tensors_is_refused_as_gguf_cpp_does() =>
        GgufAssert.Refuses(TwoTensorFile(secondOffset: 96), "leaving a gap", "must start at 64, where 'first' ends after padding");

    [Fact]
    public void A_tensor_past_the_end_of_the_file_is_refused_as_truncation()
    {
        byte[] file = TwoTensorFile();
        var error = GgufAssert.Refuses(file[..^1], "tensor 'second'", $"ends at byte {file.Length} but the file is only {file.Length - 1} bytes long", "truncated");
        Assert.Equal(OffsetFieldOfSecondTensor(), error.FileOffset);
    }

    [Fact]
    public void A_tensor_offset_near_2_to_the_64_is_refused_without_overflow()
    {
        GgufAssert.Refuses(TwoTensorFile(secondOffset: ulong.MaxValue - 31), "beyond any file");
        GgufAssert.Refuses(TwoTensorFile(secondOffset: (1UL << 63) - 32), "leaving a gap");
    }

    [Fact]
    public void A_stream_that_cannot_seek_is_rejected_as_an_argument_not_as_a_bad_file()
    {
        Assert.Throws<ArgumentException>(() => GgufFile.Read(new UnseekableStream(TwoTensorFile())));
    }

    /// <summary>
    /// general.name = "x"; tensor "first" F32 [16] at 0 (64 bytes); tensor "second" at
    /// 64, F32 [16] unless changed; then exactly the data both need.
    /// </summary>
    private static byte[] TwoTensorFile(string secondName = "second", GgmlType secondType = GgmlType.F32,
        ulong[]? secondShape = null, ulong secondOffset = 64)
    {
        return GgufBytes.Header(2, 1)
            .StringEntry("general.name", "x")
            .TensorInfo("first", GgmlType.F32, 0, 16)
            .TensorInfo(secondName, secondType, secondOffset, secondShape ?? [16])
            .PadTo(32)
            .Zeros(128)
            .ToArray();
    }

    private static long OffsetFieldOfSecondTensor()
    {
        var prefix = GgufBytes.Header(2, 1).StringEntry("general.name", "x").TensorInfo("first", GgmlType.F32, 0, 16)
            .Str("second").U32(1).U64(16).U32((uint)GgmlType.F32);
        return prefix.Length;
    }

    private sealed class UnseekableStream(byte[] bytes) : MemoryStream(bytes)
    {
        public override bool CanSeek => false;
    }
}
