using System.Diagnostics;
using Tibet.Core.Gguf;
using Xunit;
using Xunit.Abstractions;

namespace Tibet.IntegrationTests.Gguf;

/// <summary>The header of a real-sized model is read through a few large reads, not
/// field by field, and in far less than a second.</summary>
public class GgufReaderPerformanceTests(ITestOutputHelper output)
{
    [Fact]
    public void The_header_of_a_1_GiB_model_with_a_32k_vocabulary_is_read_in_few_large_reads()
    {
        var writer = new GgufWriter { DataSectionAlignment = 4096 };
        var tokens = Enumerable.Range(0, 32_000).Select(i => $"▁token{i}").ToArray();
        writer.Add("general.architecture", "llama");
        writer.AddArray("tokenizer.ggml.tokens", tokens);
        writer.AddArray("tokenizer.ggml.scores", tokens.Select((_, i) => (float)-i).ToArray());
        writer.AddArray("tokenizer.ggml.token_type", tokens.Select(_ => 1).ToArray());
        // TinyLlama-1.1B's shapes at Q8_0: about 1.1 GiB of tensor data.
        writer.AddTensor("token_embd.weight", GgmlType.Q8_0, 2048, 32_000);
        for (int layer = 0; layer < 22; layer++)
        {
            writer.AddTensor($"blk.{layer}.attn_q.weight", GgmlType.Q8_0, 2048, 2048);
            writer.AddTensor($"blk.{layer}.attn_k.weight", GgmlType.Q8_0, 2048, 256);
            writer.AddTensor($"blk.{layer}.attn_v.weight", GgmlType.Q8_0, 2048, 256);
            writer.AddTensor($"blk.{layer}.attn_output.weight", GgmlType.Q8_0, 2048, 2048);
            writer.AddTensor($"blk.{layer}.ffn_gate.weight", GgmlType.Q8_0, 2048, 5632);
            writer.AddTensor($"blk.{layer}.ffn_up.weight", GgmlType.Q8_0, 2048, 5632);
            writer.AddTensor($"blk.{layer}.ffn_down.weight", GgmlType.Q8_0, 5632, 2048);
        }
        writer.AddTensor("output.weight", GgmlType.Q8_0, 2048, 32_000);
        Assert.True(writer.FileLength > 1L << 30, $"the model is only {writer.FileLength} bytes");

        string path = Path.GetTempFileName();
        try
        {
            using (var file = new FileStream(path, FileMode.Create, FileAccess.Write))
            {
                writer.WriteHeader(file);
                // Sparse: the data section reads as zeros without being written.
                file.SetLength(writer.FileLength);
            }

            GgufFile.Read(path);
            using var counting = new ReadCountingStream(File.OpenRead(path));
            var stopwatch = Stopwatch.StartNew();
            var read = GgufFile.Read(counting);
            stopwatch.Stop();
            output.WriteLine($"header {read.DataOffset} bytes, {read.Tensors.Count} tensors, {counting.Reads} reads, {stopwatch.Elapsed.TotalMilliseconds:F1} ms");

            Assert.Equal(32_000, read.Metadata.GetStringArray("tokenizer.ggml.tokens").Count);
            Assert.Equal(writer.FileLength, read.FileLength);
            Assert.Equal(156, read.Tensors.Count);
            Assert.InRange(counting.Reads, 1, read.DataOffset / GgufInput.BufferSize + 3);
            // A generous bound: this takes a few milliseconds on an idle machine, and the
            // bound is there to catch a pathology (quadratic work, per-field reads).
            Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(2), $"reading the header took {stopwatch.Elapsed}");
        }
        finally
        {
            File.Delete(path);
        }
    }

    private sealed class ReadCountingStream(Stream inner) : Stream
    {
        public int Reads { get; private set; }

        public override bool CanRead => true;
        public override bool CanSeek => true;
        public override bool CanWrite => false;
        public override long Length => inner.Length;
        public override long Position { get => inner.Position; set => inner.Position = value; }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => inner.Seek(offset, origin);
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override int Read(byte[] buffer, int offset, int count)
        {
            Reads++;
            return inner.Read(buffer, offset, count);
        }

        public override int Read(Span<byte> buffer)
        {
            Reads++;
            return inner.Read(buffer);
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
                inner.Dispose();
            base.Dispose(disposing);
        }
    }
}
