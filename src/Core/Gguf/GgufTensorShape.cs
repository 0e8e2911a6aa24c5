using System.Diagnostics.CodeAnalysis;

namespace Tibet.Core.Gguf;

/// <summary>The size rules for a tensor, shared by the reader and the writer so that
/// both accept exactly the same shapes.</summary>
internal static class GgufTensorShape
{
    /// <summary>
    /// Checks a shape against ggml's rules and computes its size: one to four
    /// dimensions, each at least 1, ne0 a multiple of the type's block size, and element
    /// count and byte size representable as an int64 (ggml's own limit).
    /// </summary>
    public static bool TryMeasure(GgmlType type, ReadOnlySpan<long> dimensions,
        out long elementCount, out long byteSize, [NotNullWhen(false)] out string? problem)
    {
        elementCount = 0;
        byteSize = 0;
        if (!GgmlTypeInfo.TryGetBlock(type, out int blockElements, out int blockBytes))
        {
            problem = DescribeUnknownType(type);
            return false;
        }
        if (dimensions.Length is 0 or > GgufFormat.MaxDimensions)
        {
            problem = $"it has {dimensions.Length} dimensions; a tensor has 1 to {GgufFormat.MaxDimensions}";
            return false;
        }
        for (int i = 0; i < dimensions.Length; i++)
        {
            if (dimensions[i] < 1)
            {
                problem = $"dimension {i} (ne{i}) is {dimensions[i]}; every dimension must be at least 1";
                return false;
            }
        }
        if (dimensions[0] % blockElements != 0)
        {
            problem = $"ne0 = {dimensions[0]} is not a multiple of the {blockElements}-element block of type {type}";
            return false;
        }
        try
        {
            long elements = 1;
            long bytes = checked(dimensions[0] / blockElements * blockBytes);
            elements = checked(elements * dimensions[0]);
            for (int i = 1; i < dimensions.Length; i++)
            {
                elements = checked(elements * dimensions[i]);
                bytes = checked(bytes * dimensions[i]);
            }
            elementCount = elements;
            byteSize = bytes;
        }
        catch (OverflowException)
        {
            problem = $"the shape [{string.Join(", ", dimensions.ToArray())}] of type {type} has more elements or bytes than an int64 can count";
            return false;
        }
        problem = null;
        return true;
    }

    public static string DescribeUnknownType(GgmlType type) =>
        $"ggml type {(uint)type}, which ggml does not define (it defines {KnownTypeNumbers})";

    /// <summary>Rounds up to a multiple of a power of two; throws OverflowException when
    /// the result does not fit.</summary>
    public static long AlignUp(long value, long alignment) =>
        checked(value + (alignment - 1)) & ~(alignment - 1);

    public static bool IsPowerOfTwo(ulong value) => value != 0 && (value & (value - 1)) == 0;

    /// <summary>The defined type numbers as ranges ("0-3, 6-30, ..."), derived from the
    /// block table so that the message cannot drift from what is accepted.</summary>
    private static readonly string KnownTypeNumbers = DescribeKnownTypeNumbers();

    private static string DescribeKnownTypeNumbers()
    {
        var ranges = new List<string>();
        int rangeStart = -1;
        for (int number = 0; number <= 256; number++)
        {
            bool known = number < 256 && GgmlTypeInfo.TryGetBlock((GgmlType)number, out _, out _);
            if (known && rangeStart < 0)
                rangeStart = number;
            else if (!known && rangeStart >= 0)
            {
                ranges.Add(rangeStart == number - 1 ? $"{rangeStart}" : $"{rangeStart}-{number - 1}");
                rangeStart = -1;
            }
        }
        return string.Join(", ", ranges);
    }
}
