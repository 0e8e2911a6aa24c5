using System.Globalization;

namespace Tibet.GgufGen;

/// <summary>
/// A byte-level SentencePiece ("llama") vocabulary: the three special tokens of LLaMA's
/// own vocabulary, the 256 byte tokens "&lt;0x00&gt;".."&lt;0xFF&gt;", and one reserved
/// token last. With no multi-byte pieces, llama.cpp tokenizes any text into its UTF-8
/// bytes (byte fallback), so every prompt is valid.
/// </summary>
/// <remarks>The reserved token can never be produced from text, and the generator gives
/// it an all-zero output row (logit exactly 0, below the largest of ~260 random logits),
/// so greedy decoding never picks it either. Its embedding row is therefore never read
/// during generation, which makes it the place for the canary.</remarks>
internal static class ByteVocabulary
{
    public const int UnknownId = 0;
    public const int BeginId = 1;
    public const int EndId = 2;
    private const int FirstByteId = 3;

    public const int Size = FirstByteId + 256 + 1;
    public const int ReservedId = Size - 1;

    // llama.cpp's llama_token_type (llama-vocab.h), as stored in tokenizer.ggml.token_type.
    private const int TypeUnknown = 2;
    private const int TypeControl = 3;
    private const int TypeUnused = 5;
    private const int TypeByte = 6;

    public static string[] Tokens()
    {
        var tokens = new string[Size];
        tokens[UnknownId] = "<unk>";
        tokens[BeginId] = "<s>";
        tokens[EndId] = "</s>";
        for (int b = 0; b < 256; b++)
            tokens[FirstByteId + b] = string.Create(CultureInfo.InvariantCulture, $"<0x{b:X2}>");
        tokens[ReservedId] = "<reserved>";
        return tokens;
    }

    /// <summary>All zero: SPM merges by score, and a byte vocabulary has nothing to merge.</summary>
    public static float[] Scores() => new float[Size];

    public static int[] TokenTypes()
    {
        var types = new int[Size];
        types[UnknownId] = TypeUnknown;
        types[BeginId] = TypeControl;
        types[EndId] = TypeControl;
        for (int b = 0; b < 256; b++)
            types[FirstByteId + b] = TypeByte;
        types[ReservedId] = TypeUnused;
        return types;
    }
}
