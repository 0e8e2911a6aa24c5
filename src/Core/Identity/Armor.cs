using System.Buffers;
using System.Buffers.Text;
using System.Text;

namespace Tibet.Core.Identity;

/// <summary>
/// The text form of every identity-layer file:
/// <code>
/// -----BEGIN LABEL-----
/// base64 of the binary, 64 characters a line (the last line shorter)
/// -----END LABEL-----
/// </code>
/// Exactly one form is accepted for given bytes (line breaks at 64, "\n" only, canonical
/// padding), so that a file cannot carry the same object in two spellings. The final
/// newline may be missing, because editors differ there.
/// </summary>
internal static class Armor
{
    public const int LineLength = 64;
    private const int BytesPerLine = LineLength / 4 * 3;
    private const string Dashes = "-----";

    /// <summary>The length of the armored text of <paramref name="dataLength"/> bytes.</summary>
    public static int EncodedLength(string label, int dataLength)
    {
        int base64 = (dataLength + 2) / 3 * 4;
        int lines = (base64 + LineLength - 1) / LineLength;
        return Header(label).Length + base64 + lines + Footer(label).Length;
    }

    /// <summary>Writes the armored text into <paramref name="destination"/> (exactly
    /// <see cref="EncodedLength"/> bytes), so that secret material can go into a buffer
    /// the caller wipes.</summary>
    public static void EncodeTo(string label, ReadOnlySpan<byte> data, Span<byte> destination)
    {
        int at = Encoding.ASCII.GetBytes(Header(label), destination);
        for (int offset = 0; offset < data.Length; offset += BytesPerLine)
        {
            ReadOnlySpan<byte> chunk = data.Slice(offset, Math.Min(BytesPerLine, data.Length - offset));
            Base64.EncodeToUtf8(chunk, destination[at..], out _, out int written);
            at += written;
            destination[at++] = (byte)'\n';
        }
        at += Encoding.ASCII.GetBytes(Footer(label), destination[at..]);
        if (at != destination.Length)
            throw new ArgumentException("The destination does not have the armored length.", nameof(destination));
    }

    /// <summary>The armored text of public data as a new array.</summary>
    public static byte[] Encode(string label, ReadOnlySpan<byte> data)
    {
        var text = new byte[EncodedLength(label, data.Length)];
        EncodeTo(label, data, text);
        return text;
    }

    /// <summary>An upper bound of the decoded size of armored text.</summary>
    public static int MaxDecodedLength(int textLength) => textLength / 4 * 3 + 3;

    /// <summary>
    /// Decodes armored text with the given label into <paramref name="destination"/>
    /// (at least <see cref="MaxDecodedLength"/> bytes). On failure <paramref name="error"/>
    /// says what is wrong, in a clause ("it does not start with ...", "line 3 is empty").
    /// </summary>
    public static bool TryDecode(string label, ReadOnlySpan<byte> text, Span<byte> destination, out int decodedLength, out string error)
    {
        decodedLength = 0;
        if (text.Contains((byte)'\r'))
        {
            error = "it has \\r\\n line ends, and tibet files use \\n only (convert it with dos2unix)";
            return false;
        }
        byte[] header = Encoding.ASCII.GetBytes(Header(label));
        if (!text.StartsWith(header))
        {
            string? other = ReadLabel(text);
            error = other != null
                ? $"it is a '{other}' file, not a '{label}' file"
                : $"it does not start with the line '{Dashes}BEGIN {label}{Dashes}'";
            return false;
        }

        byte[] footer = Encoding.ASCII.GetBytes(Footer(label));
        ReadOnlySpan<byte> footerLine = footer.AsSpan(0, footer.Length - 1);
        ReadOnlySpan<byte> rest = text[header.Length..];
        int lineNumber = 1;
        bool sawShortLine = false;
        while (true)
        {
            lineNumber++;
            int newline = rest.IndexOf((byte)'\n');
            ReadOnlySpan<byte> line = newline >= 0 ? rest[..newline] : rest;
            ReadOnlySpan<byte> after = newline >= 0 ? rest[(newline + 1)..] : [];

            if (line.SequenceEqual(footerLine))
            {
                if (decodedLength == 0)
                {
                    error = "it has no data between its BEGIN and END lines";
                    return false;
                }
                if (!after.IsEmpty)
                {
                    error = $"it has text after its '{Dashes}END {label}{Dashes}' line";
                    return false;
                }
                error = "";
                return true;
            }
            if (newline < 0)
            {
                error = $"it ends without the line '{Dashes}END {label}{Dashes}' (it was cut short)";
                return false;
            }
            if (sawShortLine)
            {
                error = $"line {lineNumber - 1} is shorter than {LineLength} characters but is not the last line of data";
                return false;
            }
            if (!TryDecodeLine(line, destination[decodedLength..], out int written, out string? lineError))
            {
                error = $"line {lineNumber} {lineError}";
                return false;
            }
            decodedLength += written;
            sawShortLine = line.Length < LineLength || line[^1] == (byte)'=';
            rest = after;
        }
    }

    /// <summary>The label of armored text ("TIBET CLAIM"), or null when the text does not
    /// start with a BEGIN line.</summary>
    public static string? ReadLabel(ReadOnlySpan<byte> text)
    {
        ReadOnlySpan<byte> begin = "-----BEGIN "u8;
        if (!text.StartsWith(begin))
            return null;
        ReadOnlySpan<byte> rest = text[begin.Length..];
        int end = rest.IndexOf("-----\n"u8);
        if (end is <= 0 or > 64)
            return null;
        foreach (byte b in rest[..end])
            if (b is not ((>= (byte)'A' and <= (byte)'Z') or (byte)' '))
                return null;
        return Encoding.ASCII.GetString(rest[..end]);
    }

    private static bool TryDecodeLine(ReadOnlySpan<byte> line, Span<byte> destination, out int written, out string? error)
    {
        written = 0;
        if (line.IsEmpty)
        {
            error = "is empty";
            return false;
        }
        if (line.Length > LineLength)
        {
            error = $"is longer than {LineLength} characters";
            return false;
        }
        if (line.Length % 4 != 0)
        {
            error = "does not hold a whole number of base64 groups (characters are missing)";
            return false;
        }
        int padding = line.EndsWith("=="u8) ? 2 : line.EndsWith("="u8) ? 1 : 0;
        for (int i = 0; i < line.Length - padding; i++)
        {
            if (SextetOf(line[i]) < 0)
            {
                error = $"has a character that is not base64 in column {i + 1}";
                return false;
            }
        }
        // Base64 leaves spare bits in the last character before padding; canonical
        // encoding keeps them zero, and other values would be a second spelling.
        if (padding == 1 && (SextetOf(line[^2]) & 0b11) != 0 || padding == 2 && (SextetOf(line[^3]) & 0b1111) != 0)
        {
            error = "has non-canonical base64 padding";
            return false;
        }
        if (Base64.DecodeFromUtf8(line, destination, out _, out written, isFinalBlock: true) != OperationStatus.Done)
        {
            error = "is not valid base64";
            return false;
        }
        error = null;
        return true;
    }

    private static int SextetOf(byte c) => c switch
    {
        >= (byte)'A' and <= (byte)'Z' => c - 'A',
        >= (byte)'a' and <= (byte)'z' => c - 'a' + 26,
        >= (byte)'0' and <= (byte)'9' => c - '0' + 52,
        (byte)'+' => 62,
        (byte)'/' => 63,
        _ => -1,
    };

    private static string Header(string label) => $"{Dashes}BEGIN {label}{Dashes}\n";

    private static string Footer(string label) => $"{Dashes}END {label}{Dashes}\n";
}
