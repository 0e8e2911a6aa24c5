using System.Text;

namespace Tibet.Bench;

/// <summary>Aligned plain-text or Markdown tables: text columns left, figures right.</summary>
internal static class TextTable
{
    /// <param name="breakBefore">In plain text, an empty line goes before each row for which
    /// this is true (groups of rows); Markdown tables have no such lines.</param>
    public static string Format(string[] header, IReadOnlyList<string[]> rows, bool markdown, Func<int, bool>? breakBefore = null)
    {
        int columns = header.Length;
        bool[] right = new bool[columns];
        for (int c = 0; c < columns; c++)
            right[c] = rows.All(r => r[c].Length == 0 || r[c] == "—" || char.IsDigit(r[c][0]) || r[c][0] is '-' or '+');
        int[] widths = new int[columns];
        for (int c = 0; c < columns; c++)
            widths[c] = Math.Max(header[c].Length, rows.Count == 0 ? 0 : rows.Max(r => r[c].Length));

        string Line(string[] values) => markdown
            ? "| " + string.Join(" | ", values.Select((v, i) => right[i] ? v.PadLeft(widths[i]) : v.PadRight(widths[i]))) + " |"
            : string.Join("  ", values.Select((v, i) => right[i] ? v.PadLeft(widths[i]) : v.PadRight(widths[i])));

        var sb = new StringBuilder();
        sb.AppendLine(Line(header));
        sb.AppendLine(markdown
            ? "|" + string.Join("|", widths.Select((w, i) => right[i] ? new string('-', w + 1) + ":" : ":" + new string('-', w + 1))) + "|"
            : string.Join("  ", widths.Select(w => new string('-', w))));
        for (int i = 0; i < rows.Count; i++)
        {
            if (!markdown && i > 0 && breakBefore?.Invoke(i) == true)
                sb.AppendLine();
            sb.AppendLine(Line(rows[i]));
        }
        return sb.ToString().TrimEnd();
    }
}
