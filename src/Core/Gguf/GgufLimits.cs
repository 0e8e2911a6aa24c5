namespace Tibet.Core.Gguf;

/// <summary>
/// Bounds the reader enforces on top of the format, so that a hostile or corrupt header
/// can cost at most a bounded amount of memory and time. The defaults admit every model
/// llama.cpp produces; callers that know what to expect can tighten them.
/// </summary>
public sealed record GgufLimits
{
    /// <summary>The limits used when the caller passes none.</summary>
    public static GgufLimits Default { get; } = new();

    /// <summary>Most tensors in one file. Large MoE models have a few tens of thousands.</summary>
    public long MaxTensors { get; init; } = 1 << 20;

    /// <summary>Most metadata key/value pairs. Real models have a few dozen.</summary>
    public long MaxMetadataEntries { get; init; } = 1 << 20;

    /// <summary>Most elements in one metadata array. Vocabularies reach ~260k tokens,
    /// merges lists a few hundred thousand.</summary>
    public long MaxArrayElements { get; init; } = 16 << 20;

    /// <summary>Longest metadata key, in UTF-8 bytes.</summary>
    public int MaxKeyBytes { get; init; } = 64 << 10;

    /// <summary>Longest metadata string value (also each string in an array), in UTF-8
    /// bytes. Chat templates are the longest strings in practice, tens of KiB.</summary>
    public int MaxStringBytes { get; init; } = 16 << 20;

    /// <summary>Most bytes the whole metadata section (all key/value pairs) may occupy in
    /// the file. This also bounds the memory the parsed metadata takes.</summary>
    public long MaxMetadataBytes { get; init; } = 1L << 30;

    internal void Validate()
    {
        RequirePositive(MaxTensors, nameof(MaxTensors));
        RequirePositive(MaxMetadataEntries, nameof(MaxMetadataEntries));
        RequirePositive(MaxArrayElements, nameof(MaxArrayElements));
        RequirePositive(MaxKeyBytes, nameof(MaxKeyBytes));
        RequirePositive(MaxStringBytes, nameof(MaxStringBytes));
        RequirePositive(MaxMetadataBytes, nameof(MaxMetadataBytes));
        if (MaxStringBytes > Array.MaxLength || MaxKeyBytes > Array.MaxLength)
            throw new ArgumentOutOfRangeException(nameof(MaxStringBytes),
                $"String limits above {Array.MaxLength} bytes cannot be honoured: a .NET array holds at most that many.");
        RequireArrayLength(MaxArrayElements, nameof(MaxArrayElements));
        RequireArrayLength(MaxTensors, nameof(MaxTensors));
        RequireArrayLength(MaxMetadataEntries, nameof(MaxMetadataEntries));
    }

    private static void RequireArrayLength(long value, string name)
    {
        if (value > Array.MaxLength)
            throw new ArgumentOutOfRangeException(name, value,
                $"{name} above {Array.MaxLength} cannot be honoured: a .NET array holds at most that many.");
    }

    private static void RequirePositive(long value, string name)
    {
        if (value <= 0)
            throw new ArgumentOutOfRangeException(name, value, $"{name} must be positive.");
    }
}
