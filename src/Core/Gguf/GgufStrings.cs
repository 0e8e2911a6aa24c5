using System.Globalization;
using System.Text;

namespace Tibet.Core.Gguf;

/// <summary>UTF-8 handling shared by the reader and writer.</summary>
internal static class GgufStrings
{
    /// <summary>Throws on lone surrogates instead of writing U+FFFD, so that a string the
    /// caller passed is either stored exactly or refused.</summary>
    public static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>The UTF-8 length of <paramref name="value"/>, or -1 when it contains a
    /// lone surrogate and so has no UTF-8 form.</summary>
    public static int Utf8Length(string value)
    {
        try
        {
            return StrictUtf8.GetByteCount(value);
        }
        catch (EncoderFallbackException)
        {
            return -1;
        }
    }

    /// <summary>
    /// Quotes a string that came from a file (or a caller) for an error message: control,
    /// format and line-separator characters and the quote itself are escaped, and long
    /// strings are cut, so that a hostile name can neither forge log lines nor bloat the
    /// message with a 64 KiB key.
    /// </summary>
    public static string Quote(string text)
    {
        const int MaxShownCharacters = 80;
        var quoted = new StringBuilder(Math.Min(text.Length, MaxShownCharacters) + 16).Append('\'');
        int shown = 0;
        foreach (var rune in text.EnumerateRunes())
        {
            if (shown++ == MaxShownCharacters)
                return quoted.Append($"...' ({text.Length} characters)").ToString();
            if (NeedsEscape(rune))
                quoted.Append(rune.Value <= 0xFFFF ? $"\\u{rune.Value:X4}" : $"\\U{rune.Value:X8}");
            else
                quoted.Append(rune.ToString());
        }
        return quoted.Append('\'').ToString();
    }

    private static bool NeedsEscape(Rune rune) =>
        rune.Value is '\'' or '\\'
        || Rune.GetUnicodeCategory(rune) is UnicodeCategory.Control or UnicodeCategory.Format
            or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator;
}
