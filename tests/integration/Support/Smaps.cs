using System.Globalization;

namespace Tibet.IntegrationTests.Support;

/// <summary>This process's /proc/self/smaps, field by field, for the mapping that holds an
/// address: the kernel's own view of what is mapped there and how.</summary>
internal static class Smaps
{
    /// <summary>AnonHugePages of the mapping holding <paramref name="address"/>, in kB.</summary>
    public static long AnonHugePagesKb(nint address) =>
        long.Parse(Field(address, "AnonHugePages:").Split(' ', StringSplitOptions.RemoveEmptyEntries)[0], CultureInfo.InvariantCulture);

    public static string VmFlags(nint address) => Field(address, "VmFlags:");

    public static string Field(nint address, string field)
    {
        bool inside = false;
        foreach (string line in File.ReadLines("/proc/self/smaps"))
        {
            int dash = line.IndexOf('-');
            if (dash > 0 && line.IndexOf(' ') > dash && ulong.TryParse(line[..dash], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong start)
                && ulong.TryParse(line[(dash + 1)..line.IndexOf(' ')], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong end))
                inside = (ulong)address >= start && (ulong)address < end;
            else if (inside && line.StartsWith(field, StringComparison.Ordinal))
                return line[field.Length..].Trim();
        }
        throw new InvalidOperationException($"no {field} for 0x{address:x} in /proc/self/smaps");
    }
}
