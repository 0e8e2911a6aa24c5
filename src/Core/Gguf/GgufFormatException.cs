namespace Tibet.Core.Gguf;

/// <summary>
/// A GGUF file breaks the format or exceeds a <see cref="GgufLimits"/> bound. The message
/// says what is wrong, at which byte of the file, and what a valid file would have there.
/// </summary>
public sealed class GgufFormatException : Exception
{
    public GgufFormatException(string problem, long fileOffset)
        : base($"Invalid GGUF file at byte {fileOffset}: {problem}")
    {
        Problem = problem;
        FileOffset = fileOffset;
    }

    /// <summary>The description of the violation, without the location prefix.</summary>
    public string Problem { get; }

    /// <summary>The file offset of the field that is wrong (or where the file ended).</summary>
    public long FileOffset { get; }
}
