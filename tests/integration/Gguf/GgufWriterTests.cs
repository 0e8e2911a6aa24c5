using Tibet.Core.Gguf;
using Xunit;

namespace Tibet.IntegrationTests.Gguf;

/// <summary>The writer's layout rules, its streaming interface, and its refusals of misuse.</summary>
public class GgufWriterTests
{
    [Theory]
    [InlineData(4096u, 0)]
    [InlineData(4096u, 1)]
    [InlineData(4096u, 4000)]
    [InlineData(4096u, 4039)]
    [InlineData(4096u, 9000)]
    [InlineData(65536u, 17)]
    [InlineData(64u, 5)]
    public void DataSectionAlignment_makes_the_data_section_start_on_the_boundary(uint boundary, int nameLength)
    {
        // Sweeping the metadata size moves the unpadded header end through every residue
        // the padding has to absorb, including an exact fit (padding string of length 0).
        var writer = new GgufWriter { DataSectionAlignment = boundary };
        writer.Add("general.name", new string('n', nameLength));
        writer.AddTensor("a", GgmlType.F32, 3);
        writer.AddTensor("b", GgmlType.Q8_0, 64);

        var read = GgufRoundTripTests.WriteAndRead(writer);

        Assert.Equal(0, writer.DataOffset % boundary);
        Assert.Equal(writer.DataOffset, read.DataOffset);
        Assert.Equal(read.DataOffset, read.HeaderLength);
        Assert.Equal(GgufFormat.DefaultAlignment, read.Alignment);
        var padding = read.Metadata.GetString(GgufWriter.HeaderPaddingKey);
        Assert.True(padding.All(c => c == ' '));
        Assert.Equal(new string('n', nameLength), read.Metadata.GetString("general.name"));
    }

    [Fact]
    public void Every_padding_length_from_zero_to_a_full_page_is_exercised()
    {
        var paddingLengths = new HashSet<int>();
        for (int nameLength = 0; nameLength < 4096 + 64; nameLength += 1)
        {
            var writer = new GgufWriter { DataSectionAlignment = 4096 };
            writer.Add("general.name", new string('n', nameLength));
            var output = new MemoryStream();
            writer.WriteHeader(output);
            Assert.Equal(0, output.Length % 4096);
            var read = GgufAssert.Read(output.ToArray());
            Assert.Equal(output.Length, read.DataOffset);
            paddingLengths.Add(read.Metadata.GetString(GgufWriter.HeaderPaddingKey).Length);
        }
        Assert.Equal(4096, paddingLengths.Count);
        Assert.Contains(0, paddingLengths);
        Assert.Contains(4095, paddingLengths);
    }

    [Fact]
    public void Writing_in_chunks_produces_the_same_bytes_as_writing_whole_tensors()
    {
        GgufWriter Layout()
        {
            var writer = new GgufWriter(64);
            writer.Add("k", "v");
            writer.AddTensor("t0", GgmlType.Q4_0, 64, 3);
            writer.AddTensor("t1", GgmlType.F32, 1);
            writer.AddTensor("t2", GgmlType.F16, 1000);
            return writer;
        }

        byte[] whole = GgufRoundTripTests.Write(Layout(), t => GgufRoundTripTests.Pattern(t.ByteSize, t.Name[1]));

        var chunked = Layout();
        var output = new MemoryStream();
        chunked.WriteHeader(output);
        var random = new Random(1234);
        foreach (var tensor in chunked.Tensors)
        {
            byte[] data = GgufRoundTripTests.Pattern(tensor.ByteSize, tensor.Name[1]);
            chunked.BeginTensorData(output, tensor);
            for (int at = 0; at < data.Length;)
            {
                int length = Math.Min(random.Next(0, 50), data.Length - at);
                chunked.WriteTensorChunk(output, data.AsSpan(at, length));
                at += length;
            }
            chunked.EndTensorData(output);
        }

        Assert.True(chunked.IsComplete);
        Assert.Equal(whole, output.ToArray());
    }

    [Fact]
    public void A_1_GiB_model_streams_through_the_writer_in_bounded_memory()
    {
        var writer = new GgufWriter { DataSectionAlignment = 4096 };
        writer.AddArray("tokenizer.ggml.tokens", Enumerable.Range(0, 32_000).Select(i => $"t{i}").ToArray());
        for (int layer = 0; layer < 16; layer++)
            writer.AddTensor($"blk.{layer}.ffn.weight", GgmlType.Q8_0, 8192, 8192);
        long dataBytes = writer.Tensors.Sum(t => t.ByteSize);
        Assert.True(dataBytes > 1L << 30, $"the model is only {dataBytes} bytes");

        var sink = new CountingSink();
        writer.WriteHeader(sink);
        var chunk = new byte[1 << 20];
        long allocatedBefore = GC.GetAllocatedBytesForCurrentThread();
        foreach (var tensor in writer.Tensors)
        {
            writer.BeginTensorData(sink, tensor);
            for (long left = tensor.ByteSize; left > 0; left -= chunk.Length)
                writer.WriteTensorChunk(sink, chunk.AsSpan(0, (int)Math.Min(left, chunk.Length)));
            writer.EndTensorData(sink);
        }
        long allocated = GC.GetAllocatedBytesForCurrentThread() - allocatedBefore;

        Assert.True(writer.IsComplete);
        Assert.Equal(writer.FileLength, sink.Length);
        Assert.True(allocated < 1 << 20, $"writing {dataBytes} bytes of tensor data allocated {allocated} bytes");
    }

    [Fact]
    public void Tensor_data_out_of_order_is_refused_before_anything_is_written()
    {
        var (writer, output, first, second) = TwoTensorWriterWithHeader();
        long length = output.Length;
        var error = Assert.Throws<InvalidOperationException>(() => writer.WriteTensorData(output, second, new byte[second.ByteSize]));
        Assert.Contains("'second' was given, but the next tensor in the file is 'first'", error.Message);
        Assert.Equal(length, output.Length);
        writer.WriteTensorData(output, first, new byte[first.ByteSize]);
    }

    [Fact]
    public void Tensor_data_of_the_wrong_size_is_refused()
    {
        var (writer, output, first, _) = TwoTensorWriterWithHeader();
        var error = Assert.Throws<ArgumentException>(() => writer.WriteTensorData(output, first, new byte[first.ByteSize - 1]));
        Assert.Contains($"takes {first.ByteSize} bytes, but {first.ByteSize - 1} were given", error.Message);
    }

    [Fact]
    public void A_chunk_that_overruns_its_tensor_is_refused_and_an_incomplete_tensor_cannot_be_closed()
    {
        var (writer, output, first, second) = TwoTensorWriterWithHeader();
        writer.BeginTensorData(output, first);
        writer.WriteTensorChunk(output, new byte[8]);
        var overrun = Assert.Throws<ArgumentException>(() => writer.WriteTensorChunk(output, new byte[first.ByteSize]));
        Assert.Contains("would overrun tensor 'first'", overrun.Message);
        var incomplete = Assert.Throws<InvalidOperationException>(() => writer.EndTensorData(output));
        Assert.Contains("'first' is incomplete: 8 of its 12 bytes", incomplete.Message);
        var stillOpen = Assert.Throws<InvalidOperationException>(() => writer.BeginTensorData(output, second));
        Assert.Contains("'first' is still open", stillOpen.Message);
    }

    [Fact]
    public void Tensor_data_before_the_header_after_the_last_tensor_or_to_another_stream_is_refused()
    {
        var writer = new GgufWriter();
        var tensor = writer.AddTensor("only", GgmlType.F32, 2);
        var output = new MemoryStream();
        var early = Assert.Throws<InvalidOperationException>(() => writer.WriteTensorData(output, tensor, new byte[8]));
        Assert.Contains("call WriteHeader first", early.Message);
        var noOpenTensor = Assert.Throws<InvalidOperationException>(() => writer.WriteTensorChunk(output, new byte[1]));
        Assert.Contains("No tensor is open", noOpenTensor.Message);

        writer.WriteHeader(output);
        var elsewhere = Assert.Throws<InvalidOperationException>(() => writer.WriteTensorData(new MemoryStream(), tensor, new byte[8]));
        Assert.Contains("same stream the header was written to", elsewhere.Message);
        writer.WriteTensorData(output, tensor, new byte[8]);
        var late = Assert.Throws<InvalidOperationException>(() => writer.WriteTensorData(output, tensor, new byte[8]));
        Assert.Contains("all 1 tensors have already been written", late.Message);
        var twice = Assert.Throws<InvalidOperationException>(() => writer.WriteHeader(output));
        Assert.Contains("already been written", twice.Message);
    }

    [Fact]
    public void A_writer_whose_output_failed_refuses_to_continue()
    {
        var writer = new GgufWriter();
        var tensor = writer.AddTensor("t", GgmlType.F32, 4);
        // The header takes 64 bytes; the tensor data would take the file to 80.
        var output = new FailingAfter(70);
        writer.WriteHeader(output);
        Assert.Throws<IOException>(() => writer.WriteTensorData(output, tensor, new byte[16]));
        var error = Assert.Throws<InvalidOperationException>(() => writer.WriteTensorData(output, tensor, new byte[16]));
        Assert.Contains("a previous write to the output failed", error.Message);
        Assert.False(writer.IsComplete);
    }

    [Fact]
    public void Nothing_can_be_added_once_the_header_is_written()
    {
        var writer = new GgufWriter();
        writer.WriteHeader(new MemoryStream());
        var metadata = Assert.Throws<InvalidOperationException>(() => writer.Add("late", 1u));
        var tensor = Assert.Throws<InvalidOperationException>(() => writer.AddTensor("late", GgmlType.F32, 1));
        Assert.Contains("must be added before WriteHeader", metadata.Message);
        Assert.Contains("must be added before WriteHeader", tensor.Message);
    }

    [Fact]
    public void A_tensor_of_another_writer_is_refused()
    {
        var (writer, output, _, _) = TwoTensorWriterWithHeader();
        var stranger = new GgufWriter().AddTensor("first", GgmlType.F32, 3);
        var error = Assert.Throws<ArgumentException>(() => writer.WriteTensorData(output, stranger, new byte[12]));
        Assert.Contains("'first' was not added to this writer", error.Message);
    }

    [Fact]
    public void Invalid_metadata_is_refused_when_added()
    {
        var writer = new GgufWriter();
        writer.Add("general.name", "a");
        Assert.Contains("already added", Assert.Throws<ArgumentException>(() => writer.Add("general.name", "b")).Message);
        Assert.Contains("reserved", Assert.Throws<ArgumentException>(() => writer.Add(GgufFormat.AlignmentKey, 64u)).Message);
        Assert.Contains("reserved", Assert.Throws<ArgumentException>(() => writer.Add(GgufWriter.HeaderPaddingKey, "")).Message);
        Assert.Contains("must not be empty", Assert.Throws<ArgumentException>(() => writer.Add("", 1)).Message);
        Assert.Contains("lone UTF-16 surrogate", Assert.Throws<ArgumentException>(() => writer.Add("bad", "\uD800")).Message);
        Assert.Contains("lone UTF-16 surrogate", Assert.Throws<ArgumentException>(() => writer.AddArray("bad.array", ["ok", "\uDC00"])).Message);
        Assert.Contains("longer than the 65536", Assert.Throws<ArgumentException>(() => writer.Add(new string('k', 65537), 1)).Message);
    }

    [Theory]
    [InlineData("", GgmlType.F32, new long[] { 1 }, "must not be empty")]
    [InlineData("this.tensor.name.is.sixty.four.bytes.long.which.ggml.cannot.hold", GgmlType.F32, new long[] { 1 }, "longer than the 63")]
    [InlineData("t", GgmlType.Q4_0, new long[] { 33 }, "ne0 = 33 is not a multiple of the 32-element block")]
    [InlineData("t", GgmlType.F32, new long[] { }, "0 dimensions")]
    [InlineData("t", GgmlType.F32, new long[] { 1, 1, 1, 1, 1 }, "5 dimensions")]
    [InlineData("t", GgmlType.F32, new long[] { 4, 0 }, "dimension 1 (ne1) is 0")]
    [InlineData("t", GgmlType.F32, new long[] { 1L << 40, 1L << 30 }, "more elements or bytes than an int64")]
    [InlineData("t", (GgmlType)4, new long[] { 32 }, "ggml type 4, which ggml does not define")]
    public void An_invalid_tensor_is_refused_when_added(string name, GgmlType type, long[] shape, string problem)
    {
        var writer = new GgufWriter();
        var error = Assert.Throws<ArgumentException>(() => writer.AddTensor(name, type, shape));
        Assert.Contains(problem, error.Message);
        Assert.Empty(writer.Tensors);
    }

    [Fact]
    public void Duplicate_tensor_names_are_refused()
    {
        var writer = new GgufWriter();
        writer.AddTensor("w", GgmlType.F32, 1);
        Assert.Contains("'w' was already added", Assert.Throws<ArgumentException>(() => writer.AddTensor("w", GgmlType.F32, 1)).Message);
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(48u)]
    [InlineData(1u << 31)]
    public void An_alignment_that_is_not_a_sane_power_of_two_is_refused(uint alignment)
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new GgufWriter(alignment));
    }

    [Theory]
    [InlineData(16u)]
    [InlineData(3000u)]
    [InlineData(32u << 20)]
    public void A_data_section_alignment_below_the_alignment_or_not_a_power_of_two_is_refused(uint boundary)
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new GgufWriter(32) { DataSectionAlignment = boundary });
    }

    private static (GgufWriter Writer, MemoryStream Output, GgufTensorInfo First, GgufTensorInfo Second) TwoTensorWriterWithHeader()
    {
        var writer = new GgufWriter();
        var first = writer.AddTensor("first", GgmlType.F32, 3);
        var second = writer.AddTensor("second", GgmlType.F32, 5);
        var output = new MemoryStream();
        writer.WriteHeader(output);
        return (writer, output, first, second);
    }

    /// <summary>A stream that fails once more than <paramref name="capacity"/> bytes are written.</summary>
    private sealed class FailingAfter(int capacity) : MemoryStream
    {
        public override void Write(byte[] buffer, int offset, int count)
        {
            if (Length + count > capacity)
                throw new IOException("disk full");
            base.Write(buffer, offset, count);
        }

        // MemoryStream's span overload calls back into the array overload in derived
        // classes; routing it there explicitly keeps one place that decides.
        public override void Write(ReadOnlySpan<byte> buffer) => Write(buffer.ToArray(), 0, buffer.Length);
    }

    /// <summary>A write-only stream that only counts, so a 1 GiB file costs no memory.</summary>
    private sealed class CountingSink : Stream
    {
        private long _length;

        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => _length;
        public override long Position { get => _length; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => _length += count;
        public override void Write(ReadOnlySpan<byte> buffer) => _length += buffer.Length;
    }
}
