using System.Diagnostics;
using System.Globalization;
using Tibet.Core.Paging;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Engine;

/// <summary>
/// Fully resident 2 MiB ranges become transparent huge pages (MADV_COLLAPSE) when the
/// handler is idle, and stay exact through eviction, which splits them again. The kernel's
/// own view (/proc/self/smaps, AnonHugePages) says whether they were collapsed.
/// </summary>
public class CollapseTests
{
    private const long Range = 2L << 20;

    [Fact]
    public void Fully_resident_ranges_become_huge_pages_and_survive_eviction_exactly()
    {
        using var engine = Engines.Create(new EngineOptions());
        Engines.RequireEviction(engine);
        // 10 MiB: at least 4 aligned 2 MiB ranges lie inside wherever the arena starts.
        using var arena = engine.CreateArena(10L << 20, "collapse");
        var data = new byte[arena.Length];
        new Random(20261206).NextBytes(data);
        ArenaMemory.Write(arena.Address, data);

        long alignedRanges = (AlignDown(arena.Address + (nint)arena.Length) - AlignUp(arena.Address)) / Range;
        EngineStatsWait(engine, s => s.CollapsedRanges + s.CollapseFailures >= alignedRanges, TimeSpan.FromSeconds(10));
        var stats = engine.GetStats();
        Assert.True(stats.CollapsedRanges >= 1,
            $"the kernel collapsed none of {alignedRanges} fully resident ranges ({stats.CollapseFailures} refused): " +
            "MADV_COLLAPSE needs Linux 6.1 or later and a free 2 MiB page. " + stats.ToJson());
        long hugeBytes = AnonHugePagesKb(arena.Address) * 1024;
        Assert.True(hugeBytes >= stats.CollapsedRanges * Range,
            $"smaps shows {hugeBytes} bytes of huge pages at the arena, {stats.CollapsedRanges} ranges were reported collapsed");

        var back = new byte[data.Length];
        ArenaMemory.Read(arena.Address, back);
        Assert.True(back.AsSpan().SequenceEqual(data), "collapsing changed the contents");

        // Eviction takes 4 KiB pages out of the huge pages (the kernel splits them).
        arena.Evict();
        var sealedStats = engine.GetStats();
        Assert.Equal(arena.Length / 4096, sealedStats.SealedPages);
        Assert.Equal(0, AnonHugePagesKb(arena.Address));
        ArenaMemory.Read(arena.Address, back);
        Assert.True(back.AsSpan().SequenceEqual(data), "pages taken out of huge pages did not read back exact");
        Assert.Equal(0, engine.GetStats().AuthenticationFailures);
    }

    /// <summary>A model map (an arena with a source) is collapsed by the fault that
    /// completes a range, not later: when the reads return, the huge pages are there.</summary>
    [Fact]
    public void Ranges_of_a_file_are_collapsed_as_soon_as_they_are_read()
    {
        string path = Path.Combine(RepoPaths.DiskTemp, $"collapse-source-{Guid.NewGuid():N}.bin");
        var contents = new byte[10 << 20];
        new Random(1206).NextBytes(contents);
        File.WriteAllBytes(path, contents);
        try
        {
            using var engine = Engines.Create(new EngineOptions());
            Engines.RequireEviction(engine);
            using var arena = engine.CreateArena(contents.Length, "model");
            using (var file = File.OpenHandle(path))
                arena.AttachSource(Tibet.Core.Files.FileSource.Open((int)file.DangerousGetHandle(), 0));
            var read = new byte[contents.Length];
            ArenaMemory.Read(arena.Address, read);
            Assert.True(read.AsSpan().SequenceEqual(contents), "the file's bytes");

            long alignedRanges = (AlignDown(arena.Address + (nint)arena.Length) - AlignUp(arena.Address)) / Range;
            var stats = engine.GetStats();
            Assert.True(stats.CollapsedRanges + stats.CollapseFailures == alignedRanges,
                $"{alignedRanges} ranges were read whole, {stats.CollapsedRanges} collapsed and {stats.CollapseFailures} refused by the time the reads returned: " + stats.ToJson());
            Assert.True(stats.CollapsedRanges >= 1,
                "the kernel collapsed no range: MADV_COLLAPSE needs Linux 6.1 or later and a free 2 MiB page. " + stats.ToJson());
            Assert.True(AnonHugePagesKb(arena.Address) * 1024 >= stats.CollapsedRanges * Range);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void With_collapsing_off_arenas_stay_in_4_KiB_pages()
    {
        using var engine = Engines.Create(new EngineOptions { CollapseResidentRanges = false });
        using var arena = engine.CreateArena(8L << 20, "no-collapse");
        ArenaMemory.Write(arena.Address, new byte[arena.Length].Select((_, i) => (byte)(i * 7 + 1)).ToArray());
        Thread.Sleep(200);
        Assert.Equal(0, engine.GetStats().CollapsedRanges);
        Assert.Equal(0, AnonHugePagesKb(arena.Address));
        Assert.Contains(" nh", VmFlags(arena.Address));
    }

    private static void EngineStatsWait(PageEngine engine, Func<Tibet.Core.Diagnostics.EngineStats, bool> done, TimeSpan limit)
    {
        var clock = Stopwatch.StartNew();
        while (!done(engine.GetStats()) && clock.Elapsed < limit)
            Thread.Sleep(10);
    }

    private static nint AlignUp(nint address) => (nint)(((long)address + Range - 1) & ~(Range - 1));

    private static nint AlignDown(nint address) => (nint)((long)address & ~(Range - 1));

    /// <summary>AnonHugePages of the mapping holding <paramref name="address"/>, in kB.</summary>
    private static long AnonHugePagesKb(nint address) =>
        long.Parse(SmapsField(address, "AnonHugePages:").Split(' ', StringSplitOptions.RemoveEmptyEntries)[0], CultureInfo.InvariantCulture);

    private static string VmFlags(nint address) => SmapsField(address, "VmFlags:");

    private static string SmapsField(nint address, string field)
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
