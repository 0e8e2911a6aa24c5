using System.Globalization;
using System.Text;
using Tibet.Core.Sealing;

namespace Tibet.Cli.Sealing;

/// <summary>What the seal, inspect and unseal commands share: their error handling and
/// how they print sizes, rates and text taken from a model file.</summary>
internal static class SealingConsole
{
    /// <summary>Like <see cref="TibetCommand.Guarded"/>, and also reports a file that is
    /// not a (plain or sealed) model as one line with exit status 2.</summary>
    public static int Guarded(Func<int> work) => TibetCommand.Guarded(() =>
    {
        try
        {
            return work();
        }
        catch (SealedModelException e)
        {
            Console.Error.WriteLine($"tibet: {e.Message}");
            return ExitCodes.Failed;
        }
    });

    /// <summary>"105.0 MB": decimal megabytes, the unit rates are given in.</summary>
    public static string Megabytes(long bytes) => (bytes / 1e6).ToString("F1", CultureInfo.InvariantCulture) + " MB";

    /// <summary>"85 MB/s", or "-" for a duration too short to measure.</summary>
    public static string Rate(long bytes, TimeSpan elapsed) =>
        elapsed.TotalSeconds < 1e-3 ? "-" : (bytes / 1e6 / elapsed.TotalSeconds).ToString("F0", CultureInfo.InvariantCulture) + " MB/s";

    public static string Seconds(TimeSpan elapsed) => elapsed.TotalSeconds.ToString("F2", CultureInfo.InvariantCulture) + " s";

    /// <summary>Text from a model's metadata, made safe for a terminal: control characters
    /// (escape sequences, newlines) become '?', and long values are cut.</summary>
    public static string Printable(string text, int maxLength = 120)
    {
        var printable = new StringBuilder(Math.Min(text.Length, maxLength + 3));
        foreach (char c in text.Length > maxLength ? text[..maxLength] : text)
            printable.Append(char.IsControl(c) ? '?' : c);
        if (text.Length > maxLength)
            printable.Append("...");
        return printable.ToString();
    }
}
