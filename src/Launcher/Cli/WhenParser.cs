using System.Globalization;

namespace Tibet.Cli;

/// <summary>
/// Parses the WHEN of --expires, --not-before and --at: an ISO-8601 date (midnight UTC) or
/// date and time with a zone (Z or ±hh:mm), "now", or an offset from now made of
/// signed amounts with units s, m, h, d, w ("+30d", "+12h", "-1d", "+1d12h").
/// </summary>
internal static class WhenParser
{
    public const string Syntax =
        "an ISO-8601 date or time with zone (2026-01-31, 2026-01-31T12:00:00Z, 2026-01-31T12:00+02:00), 'now', " +
        "or an offset from now (+30d, +12h, +45m, +90s, +2w, -1d, +1d12h)";

    private static readonly string[] DateTimeFormats =
    [
        "yyyy-MM-dd'T'HH:mmzzz",
        "yyyy-MM-dd'T'HH:mm:sszzz",
        "yyyy-MM-dd'T'HH:mm:ss.FFFFFFFzzz",
        "yyyy-MM-dd'T'HH:mm'Z'",
        "yyyy-MM-dd'T'HH:mm:ss'Z'",
        "yyyy-MM-dd'T'HH:mm:ss.FFFFFFF'Z'",
    ];

    public static bool TryParse(string? text, DateTimeOffset now, out DateTimeOffset when)
    {
        when = default;
        if (string.IsNullOrWhiteSpace(text))
            return false;
        text = text.Trim();
        if (text == "now")
        {
            when = now;
            return true;
        }
        if (text[0] is '+' or '-')
            return TryParseOffset(text, now, out when);
        if (DateTimeOffset.TryParseExact(text, "yyyy-MM-dd", CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out when))
            return true;
        // A time without a zone would silently mean the machine's local zone; require one.
        return DateTimeOffset.TryParseExact(text, DateTimeFormats, CultureInfo.InvariantCulture,
            DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out when);
    }

    private static bool TryParseOffset(string text, DateTimeOffset now, out DateTimeOffset when)
    {
        when = default;
        int sign = text[0] == '-' ? -1 : 1;
        long totalSeconds = 0;
        int at = 1;
        if (at >= text.Length)
            return false;
        while (at < text.Length)
        {
            int digitsStart = at;
            while (at < text.Length && char.IsAsciiDigit(text[at]))
                at++;
            if (at == digitsStart || at - digitsStart > 9 || at >= text.Length)
                return false;
            long amount = long.Parse(text.AsSpan(digitsStart, at - digitsStart), CultureInfo.InvariantCulture);
            long unit = text[at] switch
            {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86400,
                'w' => 7 * 86400,
                _ => 0,
            };
            if (unit == 0)
                return false;
            totalSeconds += amount * unit;
            at++;
        }
        try
        {
            when = now.AddSeconds(sign * (double)totalSeconds);
            return true;
        }
        catch (ArgumentOutOfRangeException)
        {
            return false;
        }
    }
}
