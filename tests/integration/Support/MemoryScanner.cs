using System.Buffers.Binary;
using System.Globalization;

namespace Tibet.IntegrationTests.Support;

/// <summary>
/// Counts how often a byte string occurs in the pages another process has present in
/// RAM right now: /proc/PID/maps for the readable ranges, /proc/PID/pagemap for which
/// pages are present (bit 63), /proc/PID/mem for their bytes. Pages that are not present
/// are never read, so the scan itself does not fault sealed pages back in.
/// </summary>
internal static class MemoryScanner
{
    public static int CountInPresentPages(int pid, byte[] needle)
    {
        int hits = 0;
        using var pagemap = File.OpenRead($"/proc/{pid}/pagemap");
        using var mem = File.OpenRead($"/proc/{pid}/mem");
        var page = new byte[4096 + needle.Length - 1];
        foreach (var (start, entries) in ReadableRanges(pid, pagemap))
        {
            long pages = entries.Length / 8;
            for (long i = 0; i < pages; i++)
            {
                if (!Present(entries, i))
                    continue;
                // A needle that starts in this page may run into the next: read that far
                // when the next page is present too. Every match in what is read then
                // starts in this page, so none is counted twice.
                int wanted = i + 1 < pages && Present(entries, i + 1) ? page.Length : 4096;
                mem.Position = start + i * 4096;
                int read = 0;
                try
                {
                    for (int n; read < wanted && (n = mem.Read(page, read, wanted - read)) > 0;)
                        read += n;
                }
                catch (IOException) { if (read < 4096) continue; }
                hits += Count(page.AsSpan(0, read), needle);
            }
        }
        return hits;
    }

    /// <summary>How many bytes of another process's memory are present in RAM or in swap
    /// now (its readable mappings' pages, as pagemap shows them): whatever it holds, in any
    /// form, fits in that.</summary>
    public static long PresentBytes(int pid)
    {
        long present = 0;
        using var pagemap = File.OpenRead($"/proc/{pid}/pagemap");
        foreach (var (_, entries) in ReadableRanges(pid, pagemap))
            for (int i = 0; i < entries.Length; i += 8)
                if ((BinaryPrimitives.ReadUInt64LittleEndian(entries.AsSpan(i)) & (3UL << 62)) != 0)
                    present += 4096; // present (bit 63) or swapped (bit 62)
        return present;
    }

    /// <summary>Each readable mapping of <paramref name="pid"/> (not the kernel's [vvar] and
    /// [vsyscall]): its start and the pagemap entries of its pages, 8 bytes each.</summary>
    private static IEnumerable<(long Start, byte[] Entries)> ReadableRanges(int pid, FileStream pagemap)
    {
        foreach (string line in File.ReadAllLines($"/proc/{pid}/maps"))
        {
            string[] fields = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
            if (fields[1][0] != 'r' || (fields.Length > 5 && (fields[5].Contains("[vvar") || fields[5].Contains("[vsyscall]"))))
                continue;
            string[] range = fields[0].Split('-');
            long start = long.Parse(range[0], NumberStyles.HexNumber);
            long end = long.Parse(range[1], NumberStyles.HexNumber);
            var entries = new byte[(end - start) / 4096 * 8];
            pagemap.Position = start / 4096 * 8;
            pagemap.ReadExactly(entries);
            yield return (start, entries);
        }
    }

    private static bool Present(byte[] entries, long page) =>
        (BinaryPrimitives.ReadUInt64LittleEndian(entries.AsSpan((int)(page * 8))) & (1UL << 63)) != 0;

    private static int Count(ReadOnlySpan<byte> haystack, ReadOnlySpan<byte> needle)
    {
        int count = 0, at;
        while ((at = haystack.IndexOf(needle)) >= 0)
        {
            count++;
            haystack = haystack[(at + 1)..];
        }
        return count;
    }
}
