namespace Tibet.Core.Identity;

/// <summary>
/// The spelling of clearance levels on command lines and in output:
/// UNCLASSIFIED &lt; RESTRICTED &lt; CONFIDENTIAL &lt; SECRET &lt; TOPSECRET.
/// </summary>
public static class ClearanceLevelNames
{
    private static readonly string[] Names = ["UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET", "TOPSECRET"];

    /// <summary>All names, lowest level first, joined for help texts and error messages.</summary>
    public static string Syntax { get; } = string.Join(" < ", Names);

    /// <summary>The highest level value; any byte above it is not a level.</summary>
    public const ClearanceLevel Highest = ClearanceLevel.TopSecret;

    /// <summary>The upper-case name of <paramref name="level"/>, or "LEVEL(n)" for a value that is not a level.</summary>
    public static string ToName(ClearanceLevel level) =>
        IsDefined(level) ? Names[(int)level] : $"LEVEL({(byte)level})";

    /// <summary>True for the five defined levels.</summary>
    public static bool IsDefined(ClearanceLevel level) => (byte)level <= (byte)Highest;

    /// <summary>Parses a level name, ignoring case ("secret", "TOPSECRET"); "TOP-SECRET" and
    /// "TOP_SECRET" are accepted for the top level because people write it that way.</summary>
    public static bool TryParse(string? text, out ClearanceLevel level)
    {
        level = ClearanceLevel.Unclassified;
        if (string.IsNullOrWhiteSpace(text))
            return false;
        string normalized = text.Trim().Replace("-", "", StringComparison.Ordinal).Replace("_", "", StringComparison.Ordinal);
        for (int i = 0; i < Names.Length; i++)
        {
            if (string.Equals(Names[i], normalized, StringComparison.OrdinalIgnoreCase))
            {
                level = (ClearanceLevel)i;
                return true;
            }
        }
        return false;
    }
}
