using System.Globalization;

namespace Tibet.Core.Policy;

/// <summary>Sizes as people write them: 4096, 64K, 256M, 2G, 1.5G, 64KiB, 512MB (K = 1024).</summary>
public static class SizeParser
{
    public const string Syntax = "a number of bytes with an optional K, M or G suffix (powers of 1024), e.g. 256M";

    public static bool TryParse(string text, out long bytes)
    {
        bytes = 0;
        string s = text.Trim();
        long multiplier = 1;
        string upper = s.ToUpperInvariant();
        foreach (var (suffix, factor) in new[]
                 {
                     ("KIB", 1L << 10), ("MIB", 1L << 20), ("GIB", 1L << 30), ("TIB", 1L << 40),
                     ("KB", 1L << 10), ("MB", 1L << 20), ("GB", 1L << 30), ("TB", 1L << 40),
                     ("K", 1L << 10), ("M", 1L << 20), ("G", 1L << 30), ("T", 1L << 40), ("B", 1L),
                 })
        {
            if (upper.EndsWith(suffix, StringComparison.Ordinal))
            {
                multiplier = factor;
                s = s[..^suffix.Length];
                break;
            }
        }
        if (!decimal.TryParse(s, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out decimal value) || value < 0)
            return false;
        // Checked before multiplying: decimal overflows (and throws) near 7.9e28.
        if (value > long.MaxValue / multiplier)
            return false;
        decimal total = value * multiplier;
        if (total > long.MaxValue)
            return false;
        bytes = (long)Math.Ceiling(total);
        return true;
    }

    public static string Format(long bytes) => bytes switch
    {
        >= 1L << 30 when bytes % (1L << 30) == 0 => $"{bytes >> 30}G",
        >= 1L << 20 when bytes % (1L << 20) == 0 => $"{bytes >> 20}M",
        >= 1L << 10 when bytes % (1L << 10) == 0 => $"{bytes >> 10}K",
        _ => $"{bytes}",
    };
}
