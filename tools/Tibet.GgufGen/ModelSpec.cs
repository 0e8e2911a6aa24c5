using Tibet.Core.Gguf;

namespace Tibet.GgufGen;

/// <summary>The hyperparameters of a generated llama-architecture model.</summary>
internal sealed record ModelSpec(
    string Name,
    GgmlType WeightType,
    int EmbeddingLength,
    int HeadCount,
    int KeyValueHeadCount,
    int FeedForwardLength,
    int LayerCount)
{
    public const int ContextLength = 2048;
    public const float RmsNormEpsilon = 1e-5f;
    public const float RopeFrequencyBase = 10000f;
    public const string TokenEmbeddingName = "token_embd.weight";
    public const string OutputName = "output.weight";

    public int HeadDimension => EmbeddingLength / HeadCount;
    public int KeyValueLength => HeadDimension * KeyValueHeadCount;

    /// <summary>
    /// small: about 2 MB at the default F32, for quick tests. medium: the same layers as
    /// large, as many as make about 100 MB (benchmarks at small budgets). large: 2048-wide layers
    /// shaped like TinyLlama's (32 query heads, 8 key/value heads, 5632-wide FFN), as
    /// many as make the file about 1 GiB in the chosen type (22 at Q8_0, 12 at F16), so
    /// that a token reads ~1 GiB of weights and 2 vCPUs still generate several per second.
    /// </summary>
    public static ModelSpec ForPreset(string preset, GgmlType? type) => preset switch
    {
        "small" => new ModelSpec("tibet-random-small", type ?? GgmlType.F32, EmbeddingLength: 128, HeadCount: 4,
            KeyValueHeadCount: 2, FeedForwardLength: 384, LayerCount: 2),
        "medium" => WithLayersFor(100L << 20, TinyLlamaLayer("tibet-random-medium", type)),
        "large" => WithLayersFor(1L << 30, TinyLlamaLayer("tibet-random-large", type)),
        _ => throw new ArgumentException($"unknown preset '{preset}'; expected small, medium or large", nameof(preset)),
    };

    private static ModelSpec TinyLlamaLayer(string name, GgmlType? type) => new(name, type ?? GgmlType.Q8_0, EmbeddingLength: 2048,
        HeadCount: 32, KeyValueHeadCount: 8, FeedForwardLength: 5632, LayerCount: 1);

    private static ModelSpec WithLayersFor(long targetFileBytes, ModelSpec oneLayer)
    {
        long layerBytes = oneLayer.Tensors().Where(t => t.Name.StartsWith("blk.0.", StringComparison.Ordinal)).Sum(t => t.ByteSize);
        return oneLayer with { LayerCount = (int)Math.Max(1, Math.Round((double)targetFileBytes / layerBytes)) };
    }

    /// <summary>The tensors in file order (the token embedding last, see below): what llama.cpp's llama architecture requires
    /// (no biases, separate Q/K/V, an output matrix of its own).</summary>
    public IReadOnlyList<TensorSpec> Tensors()
    {
        int embd = EmbeddingLength, ff = FeedForwardLength, vocab = ByteVocabulary.Size;
        var tensors = new List<TensorSpec>
        {
            TensorSpec.Norm("output_norm.weight", embd),
            TensorSpec.Matrix(OutputName, WeightType, embd, vocab),
        };
        // GPT-2's residual scaling: the blocks' output projections are shrunk so that the
        // residual stream keeps about unit variance after all layers. Without it the
        // deep models' stream is dominated by the layers, not the current token, and
        // greedy decoding settles on one token repeated.
        float residualScale = (float)(1 / Math.Sqrt(2.0 * LayerCount));
        for (int layer = 0; layer < LayerCount; layer++)
        {
            string block = $"blk.{layer}.";
            tensors.Add(TensorSpec.Norm(block + "attn_norm.weight", embd));
            tensors.Add(TensorSpec.Matrix(block + "attn_q.weight", WeightType, embd, embd));
            tensors.Add(TensorSpec.Matrix(block + "attn_k.weight", WeightType, embd, KeyValueLength));
            tensors.Add(TensorSpec.Matrix(block + "attn_v.weight", WeightType, embd, KeyValueLength));
            tensors.Add(TensorSpec.Matrix(block + "attn_output.weight", WeightType, embd, embd, residualScale * TensorSpec.UnitGainAmplitude(embd)));
            tensors.Add(TensorSpec.Norm(block + "ffn_norm.weight", embd));
            tensors.Add(TensorSpec.Matrix(block + "ffn_gate.weight", WeightType, embd, ff));
            tensors.Add(TensorSpec.Matrix(block + "ffn_up.weight", WeightType, embd, ff));
            tensors.Add(TensorSpec.Matrix(block + "ffn_down.weight", WeightType, ff, embd, residualScale * TensorSpec.UnitGainAmplitude(ff)));
        }
        // The token embedding goes last, so that its last row (the <reserved> token's,
        // where --canary plants its bytes) shares no page with a tensor that every decode
        // reads in full: a test checks that the canary's page is evicted, and a page kept
        // hot by output.weight never would be.
        tensors.Add(TensorSpec.Matrix(TokenEmbeddingName, WeightType, embd, vocab, TensorSpec.EmbeddingAmplitude));
        return tensors;
    }

    /// <summary>llama.cpp's llama_ftype for a model whose matrices are all of one type.</summary>
    public uint FileType => WeightType switch
    {
        GgmlType.F32 => 0,
        GgmlType.F16 => 1,
        GgmlType.Q8_0 => 7,
        _ => throw new NotSupportedException($"no file type for {WeightType}"),
    };
}

/// <summary>How a tensor's values are made.</summary>
internal enum TensorValues
{
    /// <summary>Every element 1: the RMS-norm weights of an untrained model.</summary>
    Ones,

    /// <summary>Seeded uniform random values in ±<see cref="TensorSpec.Amplitude"/>.</summary>
    Uniform,
}

/// <summary>One tensor: its shape (ne0 = row length first) and how its values are drawn.</summary>
internal sealed record TensorSpec(string Name, GgmlType Type, long RowLength, long RowCount, TensorValues Values, float Amplitude)
{
    /// <summary>Embedding entries are uniform with unit variance (amplitude √3), the scale
    /// RMS normalisation gives a trained model's activations.</summary>
    public const float EmbeddingAmplitude = 1.7320508f;

    public static TensorSpec Norm(string name, int length) => new(name, GgmlType.F32, length, 1, TensorValues.Ones, Amplitude: 1);

    /// <summary>A weight matrix, uniform in ±√3/√(input length) unless told otherwise:
    /// each output then has unit variance for unit-variance inputs (variance-preserving
    /// initialisation), so activations neither vanish nor overflow through the layers.</summary>
    public static TensorSpec Matrix(string name, GgmlType type, long inputLength, long outputLength, float? amplitude = null) =>
        new(name, type, inputLength, outputLength, TensorValues.Uniform, amplitude ?? UnitGainAmplitude(inputLength));

    public static float UnitGainAmplitude(long inputLength) => (float)(Math.Sqrt(3) / Math.Sqrt(inputLength));

    public long RowBytes
    {
        get
        {
            GgmlTypeInfo.TryGetBlock(Type, out int blockElements, out int blockBytes);
            return RowLength / blockElements * blockBytes;
        }
    }

    public long ByteSize => RowBytes * RowCount;

    public long[] Dimensions => RowCount == 1 ? [RowLength] : [RowLength, RowCount];
}
