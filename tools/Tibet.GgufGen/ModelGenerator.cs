using Tibet.Core.Crypto;
using Tibet.Core.Gguf;

namespace Tibet.GgufGen;

/// <summary>What <see cref="ModelGenerator.Generate"/> wrote.</summary>
/// <param name="CanaryOffset">The canary's absolute file offset, or null without one.</param>
internal sealed record GeneratedModel(long Size, byte[] Sha256, long? CanaryOffset);

/// <summary>
/// Writes a llama-architecture GGUF with seeded random weights and a byte-level SPM
/// vocabulary: the same seed and options always give the same bytes.
/// </summary>
internal static class ModelGenerator
{
    private const int ChunkTargetBytes = 4 << 20;

    /// <param name="canary">Bytes to plant at the start of the reserved token's row of
    /// token_embd.weight, a row that neither a prompt nor greedy generation ever reads
    /// (see <see cref="ByteVocabulary"/>). The rest of the file is the same with or
    /// without it.</param>
    public static GeneratedModel Generate(string path, ModelSpec spec, ulong seed, byte[]? canary)
    {
        var tensors = spec.Tensors();
        var writer = new GgufWriter();
        AddMetadata(writer, spec);
        var infos = tensors.Select(t => writer.AddTensor(t.Name, t.Type, t.Dimensions)).ToList();

        var tokenEmbedding = tensors.Single(t => t.Name == ModelSpec.TokenEmbeddingName);
        if (canary != null && canary.Length > tokenEmbedding.RowBytes)
            throw new ArgumentException($"the canary ({canary.Length} bytes) is longer than a row of {ModelSpec.TokenEmbeddingName} ({tokenEmbedding.RowBytes} bytes)", nameof(canary));
        long? canaryOffset = canary == null ? null
            : writer.FileOffsetOf(infos.Single(i => i.Name == ModelSpec.TokenEmbeddingName)) + ByteVocabulary.ReservedId * tokenEmbedding.RowBytes;

        // Per process, so that two runs making the same model never write one file.
        string partialPath = $"{path}.{Environment.ProcessId}.partial";
        byte[] sha256;
        try
        {
            using (var file = new FileStream(partialPath, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 0))
            using (var output = new HashingWriteStream(file))
            {
                writer.WriteHeader(output);
                byte[] chunk = new byte[ChunkBytesFor(tensors)];
                for (int i = 0; i < tensors.Count; i++)
                    WriteTensor(writer, output, infos[i], tensors[i], seed, chunk, canary);
                if (!writer.IsComplete || output.Length != writer.FileLength)
                    throw new InvalidOperationException($"wrote {output.Length} bytes, but the layout says {writer.FileLength}");
                sha256 = new byte[32];
                output.FinishHash(sha256);
            }
            File.Move(partialPath, path, overwrite: true);
        }
        catch
        {
            File.Delete(partialPath);
            throw;
        }
        return new GeneratedModel(writer.FileLength, sha256, canaryOffset);
    }

    private static void AddMetadata(GgufWriter writer, ModelSpec spec)
    {
        writer.Add("general.architecture", "llama");
        writer.Add("general.name", spec.Name);
        writer.Add("general.file_type", spec.FileType);
        writer.Add("llama.context_length", (uint)ModelSpec.ContextLength);
        writer.Add("llama.embedding_length", (uint)spec.EmbeddingLength);
        writer.Add("llama.block_count", (uint)spec.LayerCount);
        writer.Add("llama.feed_forward_length", (uint)spec.FeedForwardLength);
        writer.Add("llama.attention.head_count", (uint)spec.HeadCount);
        writer.Add("llama.attention.head_count_kv", (uint)spec.KeyValueHeadCount);
        writer.Add("llama.rope.dimension_count", (uint)spec.HeadDimension);
        writer.Add("llama.rope.freq_base", ModelSpec.RopeFrequencyBase);
        writer.Add("llama.attention.layer_norm_rms_epsilon", ModelSpec.RmsNormEpsilon);
        writer.Add("llama.vocab_size", (uint)ByteVocabulary.Size);
        writer.Add("tokenizer.ggml.model", "llama");
        writer.AddArray("tokenizer.ggml.tokens", ByteVocabulary.Tokens());
        writer.AddArray("tokenizer.ggml.scores", ByteVocabulary.Scores());
        writer.AddArray("tokenizer.ggml.token_type", ByteVocabulary.TokenTypes());
        writer.Add("tokenizer.ggml.unknown_token_id", (uint)ByteVocabulary.UnknownId);
        writer.Add("tokenizer.ggml.bos_token_id", (uint)ByteVocabulary.BeginId);
        writer.Add("tokenizer.ggml.eos_token_id", (uint)ByteVocabulary.EndId);
        writer.Add("tokenizer.ggml.add_bos_token", true);
        writer.Add("tokenizer.ggml.add_eos_token", false);
    }

    /// <summary>About <see cref="ChunkTargetBytes"/>, and at least the longest row, so
    /// that every chunk holds whole rows.</summary>
    private static int ChunkBytesFor(IReadOnlyList<TensorSpec> tensors) =>
        (int)Math.Max(ChunkTargetBytes, tensors.Max(t => t.RowBytes));

    private static void WriteTensor(GgufWriter writer, Stream output, GgufTensorInfo info, TensorSpec tensor,
        ulong seed, byte[] chunk, byte[]? canary)
    {
        var encoder = new RowEncoder(tensor, seed);
        long rowsPerChunk = chunk.Length / tensor.RowBytes;
        writer.BeginTensorData(output, info);
        for (long row = 0; row < tensor.RowCount; row += rowsPerChunk)
        {
            long rows = Math.Min(rowsPerChunk, tensor.RowCount - row);
            Span<byte> data = chunk.AsSpan(0, (int)(rows * tensor.RowBytes));
            encoder.Fill(data);
            bool holdsReservedRow = tensor.Name is ModelSpec.OutputName or ModelSpec.TokenEmbeddingName
                && row <= ByteVocabulary.ReservedId && ByteVocabulary.ReservedId < row + rows;
            if (holdsReservedRow)
            {
                Span<byte> reservedRow = data.Slice((int)((ByteVocabulary.ReservedId - row) * tensor.RowBytes), (int)tensor.RowBytes);
                // All-zero bytes are 0.0 in F32, F16 and Q8_0 (scale 0): the reserved
                // token's logit is exactly 0, so greedy decoding never picks it.
                if (tensor.Name == ModelSpec.OutputName)
                    reservedRow.Clear();
                else if (canary != null)
                    canary.CopyTo(reservedRow);
            }
            writer.WriteTensorChunk(output, data);
        }
        writer.EndTensorData(output);
    }
}
