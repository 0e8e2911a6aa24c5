using System.Diagnostics;
using System.Globalization;
using System.Text;
using Tibet.Core.Diagnostics;
using Tibet.Core.Paging;

namespace Tibet.Bench;

/// <summary>
/// Reads arenas of 64 to 16,384 sealed pages page by page, sequentially and in random
/// order, encrypt-only and zstd+encrypt, for incompressible and text-like data, beside
/// plain anonymous memory measured in the same run.
/// </summary>
internal static class ScaleTest
{
    private const int PageSize = TestData.PageSize;
    private static readonly int[] AllSizes = [64, 256, 1024, 4096, 16384];

    private sealed record Row(
        int Pages, string Data, string Path, string Order,
        double MegabytesPerSecond, double P50, double P99,
        double HandlerP50, double HandlerP99, double PagesPerFault, double SealedBytesPerPage,
        int Mismatches)
    {
        public double Ratio { get; set; } = double.NaN;
    }

    /// <summary>One timed pass: throughput and per-touch percentiles.</summary>
    private readonly record struct Pass(double MegabytesPerSecond, double P50, double P99);

    public static int Run(int maxPages, int repeat, FileInfo? markdown)
    {
        int[] sizes = AllSizes.Where(s => s <= maxPages).ToArray();
        if (sizes.Length == 0) sizes = [Math.Max(1, maxPages)];
        int largest = sizes.Max();

        var machine = MachineInfo.Read();
        Console.WriteLine($"tibet scaletest — {string.Join(", ", sizes)} pages of 4 KiB, median of {repeat} run(s)");
        Console.WriteLine($"machine: {machine}");

        // Test data, one buffer per kind, large enough for the largest arena.
        var kinds = new[] { DataKind.Random, DataKind.TextLike };
        var data = new Dictionary<DataKind, byte[]>();
        foreach (var kind in kinds)
        {
            data[kind] = new byte[largest * PageSize];
            TestData.Fill(kind, data[kind], seed: 4242 + (int)kind);
        }
        double textRatio = TestData.ZstdPageRatio(data[DataKind.TextLike]);
        double randomRatio = TestData.ZstdPageRatio(data[DataKind.Random]);
        Console.WriteLine($"data: random (zstd-3 page ratio {randomRatio:F2}x), text-like (zstd-3 page ratio {textRatio:F2}x)");

        byte[] readBack = new byte[largest * PageSize];
        long[] ticks = new long[largest];

        using var encryptEngine = PageEngine.Create(new EngineOptions { Compression = CompressionMode.Off });
        using var compressEngine = PageEngine.Create(new EngineOptions { Compression = CompressionMode.Auto });
        var defaults = encryptEngine.Options;
        Console.WriteLine($"engine: read-ahead up to {defaults.ReadAheadMaxPages} pages, handler spin {defaults.SpinMicroseconds} µs, " +
                          $"compressed pages kept when sealed <= {compressEngine.Options.CompressedKeepBytes} B");

        // Warm-up, results discarded: run every path once before measuring (and, should
        // tiered compilation be switched back on, give it time to replace tier-0 code).
        for (int round = 0; round < 2; round++)
        {
            Measure(Math.Min(1024, largest), 1, kinds, data, readBack, ticks, encryptEngine, compressEngine);
            Thread.Sleep(300);
        }

        var stopwatch = Stopwatch.StartNew();
        var rows = new List<Row>();
        foreach (int pages in sizes)
        {
            var sizeRows = Measure(pages, repeat, kinds, data, readBack, ticks, encryptEngine, compressEngine);
            rows.AddRange(sizeRows);
            Console.Error.WriteLine($"  measured {pages,5} pages ({stopwatch.Elapsed.TotalSeconds:F1} s)");
        }

        string table = FormatTable(rows, markdown: false);
        Console.WriteLine();
        Console.WriteLine(table);
        Console.WriteLine(Legend(markdown: false));
        int mismatches = rows.Sum(r => r.Mismatches);
        Console.WriteLine(mismatches == 0
            ? "verify: PASS (every page of every engine run read back byte for byte equal)"
            : $"verify: FAIL ({mismatches} pages differ)");
        Console.WriteLine($"total measuring time {stopwatch.Elapsed.TotalSeconds:F1} s");

        if (markdown != null)
        {
            var md = new StringBuilder();
            md.AppendLine($"# tibet scaletest, {DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm", CultureInfo.InvariantCulture)} UTC");
            md.AppendLine();
            md.AppendLine($"Machine: {machine}. Command: `{MachineInfo.TasksetPrefix()}tibet-bench scaletest --max-pages {maxPages} --repeat {repeat}`. " +
                          $"Each figure is the median of {repeat} run(s); all rows of one page count come from the same process run.");
            md.AppendLine();
            md.AppendLine($"Data: `random` is seeded random bytes (zstd-3 page ratio {randomRatio:F2}x); `text-like` is English-ish prose with numbers " +
                          $"(zstd-3 page ratio {textRatio:F2}x). Engine defaults: read-ahead up to {defaults.ReadAheadMaxPages} pages, handler spin {defaults.SpinMicroseconds} µs, " +
                          $"a compressed page is kept when sealed <= {compressEngine.Options.CompressedKeepBytes} B.");
            md.AppendLine();
            md.AppendLine(FormatTable(rows, markdown: true));
            md.AppendLine();
            md.AppendLine(Legend(markdown: true));
            md.AppendLine();
            md.AppendLine("Reference points (docs/background.md): the Rust proof of concept's scaletest, 16,384 pages: 152 MB/s, p50 53 µs, p99 122 µs. " +
                          "Targets: 4 KiB fault p50 <= 10 µs, p99 <= 40 µs; sequential 4 KiB throughput >= 2 GB/s.");
            md.AppendLine();
            md.AppendLine(mismatches == 0 ? "Verification: every page of every engine run read back byte for byte equal." : $"Verification FAILED: {mismatches} pages differ.");
            Directory.CreateDirectory(markdown.DirectoryName ?? ".");
            File.WriteAllText(markdown.FullName, md.ToString());
            Console.WriteLine($"markdown written to {markdown.FullName}");
        }
        return mismatches == 0 ? 0 : 1;
    }

    private static List<Row> Measure(int pages, int repeat, DataKind[] kinds, Dictionary<DataKind, byte[]> data,
        byte[] readBack, long[] ticks, PageEngine encryptEngine, PageEngine compressEngine)
    {
        int[] sequential = Enumerable.Range(0, pages).ToArray();
        int[] shuffled = Enumerable.Range(0, pages).ToArray();
        new Random(pages).Shuffle(shuffled);
        long bytes = (long)pages * PageSize;
        var rows = new List<Row>();

        // a. native baseline: fresh anonymous memory, first touch of each page; and,
        //    for reference, the same reads once the memory is populated.
        foreach (var (order, name) in new[] { (sequential, "seq"), (shuffled, "random") })
        {
            var passes = new List<Pass>();
            for (int r = 0; r < repeat; r++)
            {
                using var buffer = new NativeBuffer(bytes);
                passes.Add(TimeRead(buffer.Address, order, pages, readBack, ticks));
            }
            rows.Add(MedianRow(pages, "zeros", "native first touch", name, passes, [], 1, 0, 0));
        }
        {
            var passes = new List<Pass>();
            for (int r = 0; r < repeat; r++)
            {
                using var buffer = new NativeBuffer(bytes);
                ArenaMemory.Write(buffer.Address, data[DataKind.Random].AsSpan(0, (int)bytes));
                passes.Add(TimeRead(buffer.Address, sequential, pages, readBack, ticks));
            }
            rows.Add(MedianRow(pages, "random", "native resident", "seq", passes, [], 1, 0, 0));
        }

        // b./c. encrypt-only and zstd+encrypt, for both data kinds, sequential and random.
        foreach (var kind in kinds)
        {
            foreach (var (engine, path) in new[] { (encryptEngine, "encrypt"), (compressEngine, "zstd+encrypt") })
            {
                var seq = new List<Pass>();
                var rnd = new List<Pass>();
                var seqHandler = new List<(double, double, double)>();
                var rndHandler = new List<(double, double, double)>();
                var sealedPerPage = new List<double>();
                int seqBad = 0, rndBad = 0;
                ReadOnlySpan<byte> expected = data[kind].AsSpan(0, (int)bytes);
                for (int r = 0; r < repeat; r++)
                {
                    using Arena arena = engine.CreateArena(bytes, $"scaletest-{pages}");
                    ArenaMemory.Write(arena.Address, expected);

                    arena.Evict();
                    EngineStats sealedStats = engine.GetStats();
                    sealedPerPage.Add(sealedStats.SealedPages == 0 ? 0 : (double)sealedStats.SealedBytes / sealedStats.SealedPages);
                    engine.ResetLatency();
                    seq.Add(TimeRead(arena.Address, sequential, pages, readBack, ticks));
                    EngineStats after = engine.GetStats();
                    seqHandler.Add(HandlerFigures(after, sealedStats, pages));
                    if (!readBack.AsSpan(0, (int)bytes).SequenceEqual(expected)) seqBad += CountBadPages(readBack, expected, pages);

                    arena.Evict();
                    sealedStats = engine.GetStats();
                    engine.ResetLatency();
                    rnd.Add(TimeRead(arena.Address, shuffled, pages, readBack, ticks));
                    after = engine.GetStats();
                    rndHandler.Add(HandlerFigures(after, sealedStats, pages));
                    if (!readBack.AsSpan(0, (int)bytes).SequenceEqual(expected)) rndBad += CountBadPages(readBack, expected, pages);
                }
                double perPage = Percentiles.Median(sealedPerPage);
                rows.Add(MedianRow(pages, TestData.Name(kind), path, "seq", seq, seqHandler, 0, perPage, seqBad));
                rows.Add(MedianRow(pages, TestData.Name(kind), path, "random", rnd, rndHandler, 0, perPage, rndBad));
            }
        }

        // ×native: against native first touch in the same order.
        foreach (var row in rows)
        {
            var native = rows.First(n => n.Path == "native first touch" && n.Order == row.Order);
            row.Ratio = row.MegabytesPerSecond / native.MegabytesPerSecond;
        }
        return rows;
    }

    /// <summary>Handler p50/p99 (µs) and pages served per fault message over one pass.</summary>
    private static (double, double, double) HandlerFigures(EngineStats after, EngineStats before, int pages)
    {
        long faults = after.Faults - before.Faults;
        return (after.FaultP50Nanoseconds / 1000.0, after.FaultP99Nanoseconds / 1000.0,
            faults == 0 ? 0 : (double)pages / faults);
    }

    private static int CountBadPages(byte[] actual, ReadOnlySpan<byte> expected, int pages)
    {
        int bad = 0;
        for (int p = 0; p < pages; p++)
            if (!actual.AsSpan(p * PageSize, PageSize).SequenceEqual(expected.Slice(p * PageSize, PageSize)))
                bad++;
        return bad;
    }

    /// <summary>Reads the pages in <paramref name="order"/>, one 4 KiB ArenaMemory.Read
    /// each, timing every touch.</summary>
    private static Pass TimeRead(nint address, int[] order, int pages, byte[] destination, long[] ticks)
    {
        // Touch the destination first, so its own first-touch faults stay out of the timing.
        destination.AsSpan(0, pages * PageSize).Fill(0xEE);
        long begin = Stopwatch.GetTimestamp();
        for (int k = 0; k < pages; k++)
        {
            int p = order[k];
            long start = Stopwatch.GetTimestamp();
            ArenaMemory.Read(address + (nint)p * PageSize, destination.AsSpan(p * PageSize, PageSize));
            ticks[k] = Stopwatch.GetTimestamp() - start;
        }
        double seconds = (Stopwatch.GetTimestamp() - begin) / (double)Stopwatch.Frequency;
        var (p50, p99) = Percentiles.Of(ticks, pages);
        return new Pass((double)pages * PageSize / seconds / 1e6, p50, p99);
    }

    private static Row MedianRow(int pages, string data, string path, string order, List<Pass> passes,
        List<(double P50, double P99, double PagesPerFault)> handler, double pagesPerFault, double sealedPerPage, int mismatches) =>
        new(pages, data, path, order,
            Percentiles.Median(passes.Select(p => p.MegabytesPerSecond)),
            Percentiles.Median(passes.Select(p => p.P50)),
            Percentiles.Median(passes.Select(p => p.P99)),
            handler.Count == 0 ? double.NaN : Percentiles.Median(handler.Select(h => h.P50)),
            handler.Count == 0 ? double.NaN : Percentiles.Median(handler.Select(h => h.P99)),
            handler.Count == 0 ? pagesPerFault : Percentiles.Median(handler.Select(h => h.PagesPerFault)),
            sealedPerPage,
            mismatches);

    private static readonly string[] Headers =
        ["pages", "data", "path", "order", "MB/s", "x native", "p50 µs", "p99 µs", "handler p50 µs", "handler p99 µs", "pages/fault", "sealed B/page"];

    private static string FormatTable(List<Row> rows, bool markdown)
    {
        var cells = rows.Select(r => new[]
        {
            r.Pages.ToString(CultureInfo.InvariantCulture),
            r.Data,
            r.Path,
            r.Order,
            Fixed(r.MegabytesPerSecond, 0),
            Fixed(r.Ratio, 2) + "x",
            Fixed(r.P50, 2),
            Fixed(r.P99, 2),
            double.IsNaN(r.HandlerP50) ? "-" : Fixed(r.HandlerP50, 1),
            double.IsNaN(r.HandlerP99) ? "-" : Fixed(r.HandlerP99, 1),
            r.PagesPerFault == 0 ? "-" : Fixed(r.PagesPerFault, 1),
            r.SealedBytesPerPage == 0 ? "-" : Fixed(r.SealedBytesPerPage, 0) + (r.Mismatches > 0 ? $" ({r.Mismatches} BAD)" : ""),
        }).ToList();
        return TextTable.Format(Headers, cells, markdown, breakBefore: i => rows[i].Pages != rows[i - 1].Pages);
    }

    private static string Legend(bool markdown)
    {
        string[] lines =
        [
            "MB/s: 10^6 bytes per second of page-by-page reads (one 4 KiB ArenaMemory.Read per page), app side, wall time of the whole pass.",
            "x native: MB/s over native first touch of fresh anonymous memory (MADV_NOHUGEPAGE) in the same order; native resident is memcpy from populated memory.",
            "p50/p99 µs: per page touch, app side (Stopwatch around each read); with read-ahead most sequential touches find the page already mapped.",
            "handler p50/p99 µs: the engine's own fault service time (message read to wake), per fault message; one message may serve a read-ahead run.",
            "pages/fault: pages read per fault message the handler served (read-ahead). sealed B/page: store slot bytes (ciphertext + 16 B tag) per sealed page, native = 4096.",
        ];
        return markdown ? string.Join("\n", lines.Select(l => "- " + l)) : string.Join("\n", lines);
    }

    private static string Fixed(double value, int decimals) =>
        double.IsNaN(value) ? "-" : value.ToString("F" + decimals, CultureInfo.InvariantCulture);
}
