using Tibet.Core.Paging;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Engine;

/// <summary>
/// The 2 MiB ranges of a model map (an arena with a source) become transparent huge pages
/// (MADV_COLLAPSE) once all their pages are resident, stay exact through eviction, which
/// splits them again, and anonymous arenas stay in 4 KiB pages. The kernel's own view
/// (/proc/self/smaps, AnonHugePages) says whether they were collapsed.
/// </summary>
public class CollapseTests
{
    private const long Range = 2L << 20;

    /// <summary>A model map (an arena with a source) is in huge pages as soon as its reads
    /// return: each whole 2 MiB range is read into a huge page and moved in (placed) where
    /// the kernel gives transparent huge pages, and a range that came in otherwise is
    /// collapsed by the fault that completes it.</summary>
    [Fact]
    public void Ranges_of_a_file_are_huge_pages_as_soon_as_they_are_read_and_survive_eviction()
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
            long huge = stats.CollapsedRanges + stats.PlacedRanges;
            Assert.True(huge + stats.CollapseFailures == alignedRanges,
                $"{alignedRanges} ranges were read whole; by the time the reads returned {stats.PlacedRanges} were placed, " +
                $"{stats.CollapsedRanges} collapsed and {stats.CollapseFailures} refused: " + stats.ToJson());
            Assert.True(huge >= 1,
                "no range became a huge page: MADV_COLLAPSE needs Linux 6.1 or later and a free 2 MiB page. " + stats.ToJson());
            Assert.True(Smaps.AnonHugePagesKb(arena.Address) * 1024 >= huge * Range,
                $"smaps shows {Smaps.AnonHugePagesKb(arena.Address)} kB of huge pages at the arena, {huge} ranges were reported placed or collapsed");
            if (Tibet.Core.Paging.Collapse.TransparentHugePages.Enabled)
            {
                Assert.True(stats.PlacedRanges >= alignedRanges - 1,
                    "transparent huge pages are enabled here, so each whole untouched range (all but the first, which the first fault, at the unaligned " +
                    "start of the arena, may read page by page) should have been read into a huge page and moved in: " + stats.ToJson());
                // Each range placed has the reader read the next one while the program works
                // on it. How many of them the program reaches before the reader is done, or
                // after the read waited too long (RangeReader.StaleAfterMilliseconds, under a
                // loaded machine), depends on scheduling: at least the range after the first
                // placed one, which the idle handler moves in, comes so.
                Assert.True(stats.PlacedReadAhead >= 1,
                    "the range reader should have read the range after the first placed one ahead of its fault: " + stats.ToJson());
            }
            else
                Assert.Equal(0, stats.PlacedRanges);

            // Eviction takes 4 KiB pages out of the huge pages (the kernel splits them).
            arena.Evict();
            Assert.Equal(arena.Length / 4096, engine.GetStats().SealedPages);
            Assert.Equal(0, Smaps.AnonHugePagesKb(arena.Address));
            Array.Clear(read);
            ArenaMemory.Read(arena.Address, read);
            Assert.True(read.AsSpan().SequenceEqual(contents), "pages taken out of huge pages did not read back exact");
            Assert.Equal(0, engine.GetStats().AuthenticationFailures);
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>An anonymous arena is never collapsed (collapsing while a program runs took
    /// a CPU from it: Redis GETs 0.985x native without, 0.674x with), nor a model map with
    /// collapsing off; both stay MADV_NOHUGEPAGE, so khugepaged leaves them alone too.</summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Anonymous_arenas_and_maps_with_collapsing_off_stay_in_4_KiB_pages(bool collapse)
    {
        using var engine = Engines.Create(new EngineOptions { CollapseResidentRanges = collapse });
        using var arena = engine.CreateArena(8L << 20, "anonymous");
        ArenaMemory.Write(arena.Address, new byte[arena.Length].Select((_, i) => (byte)(i * 7 + 1)).ToArray());
        Thread.Sleep(200);
        Assert.Equal(0, engine.GetStats().CollapsedRanges);
        Assert.Equal(0, Smaps.AnonHugePagesKb(arena.Address));
        Assert.Contains(" nh", Smaps.VmFlags(arena.Address));
        if (collapse)
            return;

        string path = Path.Combine(RepoPaths.DiskTemp, $"no-collapse-{Guid.NewGuid():N}.bin");
        File.WriteAllBytes(path, new byte[6 << 20].Select((_, i) => (byte)(i % 251 + 1)).ToArray());
        try
        {
            using var model = engine.CreateArena(6 << 20, "model");
            using (var file = File.OpenHandle(path))
                model.AttachSource(Tibet.Core.Files.FileSource.Open((int)file.DangerousGetHandle(), 0));
            var read = new byte[6 << 20];
            ArenaMemory.Read(model.Address, read);
            Assert.Equal(0, engine.GetStats().CollapsedRanges);
            Assert.Equal(0, Smaps.AnonHugePagesKb(model.Address));
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static nint AlignUp(nint address) => (nint)(((long)address + Range - 1) & ~(Range - 1));

    private static nint AlignDown(nint address) => (nint)((long)address & ~(Range - 1));
}
