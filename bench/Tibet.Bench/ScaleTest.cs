using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Tibet.Core.Diagnostics;
using Tibet.Core.Paging;

namespace Tibet.Bench;

/// <summary>
/// Reads arenas of 64 to 16,384 sealed pages page by page, sequentially and in random
/// order, encrypt-only and zstd+encrypt, with each page cipher (AES-256-GCM, AEGIS-256),
/// for incompressible and text-like data, beside plain anonymous memory measured in the
/// same run. For the largest size it sets the default path (encrypt-only) of each cipher
/// against the targets: sequential MB/s and the latency of a random touch of a sealed
/// page, both as the program sees them.
/// </summary>
internal static class ScaleTest
{
    private const int PageSize = TestData.PageSize;
    private static readonly int[] AllSizes = [64, 256, 1024, 4096, 16384];

    // Targets (docs/background.md), as the program sees them.
    private const double TargetMegabytesPerSecond = 2000;
    private const double TargetP50 = 10;
    private const double TargetP99 = 40;

    private const string NativeFirstTouch = "native first touch";
    private const string NativeResident = "native resident";
    private const string NoCipher = "-";

    private sealed record Row(
        int Pages, string Data, string Cipher, string Path, string Order,
        double MegabytesPerSecond, double P50, double P99,
        double HandlerP50, double HandlerP99, double PagesPerFault, double SealedBytesPerPage,
        int Mismatches)
    {
        public double Ratio { get; set; } = double.NaN;
    }

    /// <summary>One engine measured in every run: its cipher, and whether it compresses.</summary>
    private sealed record EngineUnderTest(PageEngine Engine, string Cipher, string Path);

    /// <summary>The largest size, one line per kind of memory: sequential throughput and
    /// the random-touch latency of the same memory (NaN where not measured).</summary>
    private sealed record SummaryRow(string Memory, string Cipher, double MegabytesPerSecond, double Ratio,
        double RandomP50, double RandomP99, double RandomPagesPerFault)
    {
        public bool IsEngine => Cipher != NoCipher;
    }

    /// <summary>One timed pass: throughput and per-touch percentiles.</summary>
    private readonly record struct Pass(double MegabytesPerSecond, double P50, double P99);

    public static int Run(int maxPages, int repeat, FileInfo? json, FileInfo? markdown, bool handlerPerCpu = false)
    {
        int[] sizes = AllSizes.Where(s => s <= maxPages).ToArray();
        if (sizes.Length == 0) sizes = [Math.Max(1, maxPages)];
        int largest = sizes.Max();
        string command = $"{MachineInfo.TasksetPrefix()}tibet-bench scaletest --max-pages {maxPages} --repeat {repeat}" + (handlerPerCpu ? " --handler-per-cpu" : "");

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
        var setup = new Setup(command, machine, maxPages, repeat, largest,
            RandomRatio: TestData.ZstdPageRatio(data[DataKind.Random]), TextRatio: TestData.ZstdPageRatio(data[DataKind.TextLike]));
        Console.WriteLine($"data: random (zstd-3 page ratio {setup.RandomRatio:F2}x), text-like (zstd-3 page ratio {setup.TextRatio:F2}x)");

        var engines = new List<EngineUnderTest>();
        try
        {
            // Path-major, so that the ciphers of one path sit next to each other in the table.
            var suites = PageCiphers.Supported();
            foreach (var compression in (CompressionMode[])[CompressionMode.Off, CompressionMode.Auto])
                foreach (var suite in suites)
                    engines.Add(new(PageEngine.Create(new EngineOptions { Compression = compression, Cipher = suite, HandlerPerCpu = handlerPerCpu }),
                        suite.Name, compression == CompressionMode.Off ? "encrypt" : "zstd+encrypt"));
            setup = setup with
            {
                Ciphers = suites.Select(s => s.Name).ToArray(),
                Defaults = engines[0].Engine.Options,
                CompressedKeepBytes = engines[^1].Engine.Options.CompressedKeepBytes,
            };
            Console.WriteLine($"ciphers: {string.Join(", ", setup.Ciphers)}; engine: read-ahead up to {setup.Defaults.ReadAheadMaxPages} pages, " +
                              $"handler spin {setup.Defaults.SpinMicroseconds} µs, {(setup.Defaults.HandlerPerCpu ? "a handler per CPU" : "one handler")}, compressed pages kept when sealed <= {setup.CompressedKeepBytes} B");
            return MeasureAndReport(setup, sizes, kinds, data, engines, json, markdown);
        }
        finally
        {
            foreach (var e in engines) e.Engine.Dispose();
        }
    }

    /// <summary>What every report states about the run besides its figures.</summary>
    private sealed record Setup(string Command, string Machine, int MaxPages, int Repeat, int Largest, double RandomRatio, double TextRatio)
    {
        public string[] Ciphers { get; init; } = [];
        public EngineOptions Defaults { get; init; } = new();
        public int CompressedKeepBytes { get; init; }
    }

    private static int MeasureAndReport(Setup setup, int[] sizes, DataKind[] kinds, Dictionary<DataKind, byte[]> data,
        List<EngineUnderTest> engines, FileInfo? json, FileInfo? markdown)
    {
        int largest = setup.Largest;
        byte[] readBack = new byte[largest * PageSize];
        long[] ticks = new long[largest];

        // Warm-up, results discarded: run every path once before measuring (and, should
        // tiered compilation be switched back on, give it time to replace tier-0 code).
        for (int round = 0; round < 2; round++)
        {
            Measure(Math.Min(1024, largest), 1, kinds, data, readBack, ticks, engines);
            Thread.Sleep(300);
        }

        var stopwatch = Stopwatch.StartNew();
        var rows = new List<Row>();
        foreach (int pages in sizes)
        {
            rows.AddRange(Measure(pages, setup.Repeat, kinds, data, readBack, ticks, engines));
            Console.Error.WriteLine($"  measured {pages,5} pages ({stopwatch.Elapsed.TotalSeconds:F1} s)");
        }
        var summary = Summarize(rows, largest, setup.Ciphers);
        int mismatches = rows.Sum(r => r.Mismatches);

        Console.WriteLine();
        Console.WriteLine(FormatTable(rows, markdown: false));
        Console.WriteLine(Legend(markdown: false));
        Console.WriteLine();
        Console.WriteLine(SummaryTitle(largest));
        Console.WriteLine(FormatSummary(summary, markdown: false));
        Console.WriteLine(mismatches == 0
            ? "verify: PASS (every page of every engine run read back byte for byte equal)"
            : $"verify: FAIL ({mismatches} pages differ)");
        Console.WriteLine($"total measuring time {stopwatch.Elapsed.TotalSeconds:F1} s");

        string date = DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm", CultureInfo.InvariantCulture) + " UTC";
        if (markdown != null)
        {
            WriteMarkdown(markdown, setup, date, rows, summary, mismatches);
            Console.WriteLine($"markdown written to {markdown.FullName}");
        }
        if (json != null)
        {
            WriteJson(json, setup, date, sizes, rows, summary, mismatches);
            Console.WriteLine($"json written to {json.FullName}");
        }
        return mismatches == 0 ? 0 : 1;
    }

    private static List<Row> Measure(int pages, int repeat, DataKind[] kinds, Dictionary<DataKind, byte[]> data,
        byte[] readBack, long[] ticks, List<EngineUnderTest> engines)
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
            rows.Add(MedianRow(pages, "zeros", NoCipher, NativeFirstTouch, name, passes, [], 1, 0, 0));
        }
        {
            var passes = new List<Pass>();
            for (int r = 0; r < repeat; r++)
            {
                using var buffer = new NativeBuffer(bytes);
                ArenaMemory.Write(buffer.Address, data[DataKind.Random].AsSpan(0, (int)bytes));
                passes.Add(TimeRead(buffer.Address, sequential, pages, readBack, ticks));
            }
            rows.Add(MedianRow(pages, "random", NoCipher, NativeResident, "seq", passes, [], 1, 0, 0));
        }

        // b./c. every engine (encrypt-only and zstd+encrypt, each cipher), for both data
        //       kinds, sequential and random.
        foreach (var kind in kinds)
        {
            foreach (var (engine, cipher, path) in engines)
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
                rows.Add(MedianRow(pages, TestData.Name(kind), cipher, path, "seq", seq, seqHandler, 0, perPage, seqBad));
                rows.Add(MedianRow(pages, TestData.Name(kind), cipher, path, "random", rnd, rndHandler, 0, perPage, rndBad));
            }
        }

        // ×native: against native first touch in the same order.
        foreach (var row in rows)
        {
            var native = rows.First(n => n.Path == NativeFirstTouch && n.Order == row.Order);
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
    /// each, timing every touch in this (the program's) thread.</summary>
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

    private static Row MedianRow(int pages, string data, string cipher, string path, string order, List<Pass> passes,
        List<(double P50, double P99, double PagesPerFault)> handler, double pagesPerFault, double sealedPerPage, int mismatches) =>
        new(pages, data, cipher, path, order,
            Percentiles.Median(passes.Select(p => p.MegabytesPerSecond)),
            Percentiles.Median(passes.Select(p => p.P50)),
            Percentiles.Median(passes.Select(p => p.P99)),
            handler.Count == 0 ? double.NaN : Percentiles.Median(handler.Select(h => h.P50)),
            handler.Count == 0 ? double.NaN : Percentiles.Median(handler.Select(h => h.P99)),
            handler.Count == 0 ? pagesPerFault : Percentiles.Median(handler.Select(h => h.PagesPerFault)),
            sealedPerPage,
            mismatches);

    /// <summary>The largest size against the targets: native first touch (sequential and
    /// random), native resident (sequential), and each cipher's encrypt-only path (the
    /// engine default) on random data, sequential and random.</summary>
    private static List<SummaryRow> Summarize(List<Row> rows, int largest, string[] ciphers)
    {
        Row Find(string data, string cipher, string path, string order) =>
            rows.First(r => r.Pages == largest && r.Data == data && r.Cipher == cipher && r.Path == path && r.Order == order);

        var summary = new List<SummaryRow>();
        Row nativeSeq = Find("zeros", NoCipher, NativeFirstTouch, "seq");
        Row nativeRandom = Find("zeros", NoCipher, NativeFirstTouch, "random");
        summary.Add(new(NativeFirstTouch, NoCipher, nativeSeq.MegabytesPerSecond, 1, nativeRandom.P50, nativeRandom.P99, 1));
        Row resident = Find("random", NoCipher, NativeResident, "seq");
        summary.Add(new(NativeResident, NoCipher, resident.MegabytesPerSecond, resident.Ratio, double.NaN, double.NaN, double.NaN));
        foreach (string cipher in ciphers)
        {
            Row seq = Find("random", cipher, "encrypt", "seq");
            Row random = Find("random", cipher, "encrypt", "random");
            summary.Add(new("tibet, encrypt", cipher, seq.MegabytesPerSecond, seq.Ratio, random.P50, random.P99, random.PagesPerFault));
        }
        return summary;
    }

    private static readonly string[] Headers =
        ["pages", "data", "cipher", "path", "order", "MB/s", "x native", "p50 µs", "p99 µs", "handler p50 µs", "handler p99 µs", "pages/fault", "sealed B/page"];

    private static string FormatTable(List<Row> rows, bool markdown)
    {
        var cells = rows.Select(r => new[]
        {
            r.Pages.ToString(CultureInfo.InvariantCulture),
            r.Data,
            r.Cipher,
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

    private static string SummaryTitle(int largest) =>
        $"Against the targets, {largest} pages ({largest * (long)PageSize / 1048576.0:F0} MiB), random data, encrypt-only (the engine default), program side:";

    private static string FormatSummary(List<SummaryRow> summary, bool markdown)
    {
        string[] header = ["memory", "cipher", "seq MB/s", "x native", "random p50 µs", "random p99 µs", "pages/fault",
            $"seq >= {TargetMegabytesPerSecond:F0}", $"p50 <= {TargetP50:F0}", $"p99 <= {TargetP99:F0}"];
        var cells = summary.Select(s => new[]
        {
            s.Memory, s.Cipher, Fixed(s.MegabytesPerSecond, 0), Fixed(s.Ratio, 2) + "x",
            Fixed(s.RandomP50, 2), Fixed(s.RandomP99, 2), Fixed(s.RandomPagesPerFault, 1),
            Verdict(s.IsEngine, s.MegabytesPerSecond >= TargetMegabytesPerSecond),
            Verdict(s.IsEngine, s.RandomP50 <= TargetP50),
            Verdict(s.IsEngine, s.RandomP99 <= TargetP99),
        }).ToList();
        return TextTable.Format(header, cells, markdown);
    }

    private static string Verdict(bool applies, bool met) => !applies ? "" : met ? "yes" : "NO";

    private static string Legend(bool markdown)
    {
        string[] lines =
        [
            "cipher: the AEAD that seals the engine's pages (EngineOptions.Cipher); native rows have none.",
            "MB/s: 10^6 bytes per second of page-by-page reads (one 4 KiB ArenaMemory.Read per page), app side, wall time of the whole pass.",
            "x native: MB/s over native first touch of fresh anonymous memory (MADV_NOHUGEPAGE) in the same order; native resident is memcpy from populated memory.",
            "p50/p99 µs: per page touch, app side (Stopwatch around each read, in the reading thread); with read-ahead most sequential touches find the page already mapped, " +
            "in random order nearly every touch faults on a sealed page.",
            "handler p50/p99 µs: the engine's own fault service time (message read to wake), per fault message; one message may serve a read-ahead run.",
            "pages/fault: pages read per fault message the handler served (read-ahead). sealed B/page: store slot bytes (ciphertext + tag: 16 B AES-256-GCM, 32 B AEGIS-256) per sealed page, native = 4096.",
        ];
        return markdown ? string.Join("\n", lines.Select(l => "- " + l)) : string.Join("\n", lines);
    }

    private static void WriteMarkdown(FileInfo markdown, Setup setup, string date, List<Row> rows, List<SummaryRow> summary, int mismatches)
    {
        var md = new StringBuilder();
        md.AppendLine($"# tibet scaletest, {date}");
        md.AppendLine();
        md.AppendLine($"Machine: {setup.Machine}. Command: `{setup.Command}`. " +
                      $"Each figure is the median of {setup.Repeat} run(s); all rows of one page count come from the same process run.");
        md.AppendLine();
        md.AppendLine($"Data: `random` is seeded random bytes (zstd-3 page ratio {setup.RandomRatio:F2}x); `text-like` is English-ish prose with numbers " +
                      $"(zstd-3 page ratio {setup.TextRatio:F2}x). Ciphers: {string.Join(", ", setup.Ciphers)}. Engine defaults: read-ahead up to " +
                      $"{setup.Defaults.ReadAheadMaxPages} pages, handler spin {setup.Defaults.SpinMicroseconds} µs, {(setup.Defaults.HandlerPerCpu ? "a handler per CPU" : "one handler")}, a compressed page is kept when sealed <= {setup.CompressedKeepBytes} B.");
        md.AppendLine();
        md.AppendLine("## " + SummaryTitle(setup.Largest).TrimEnd(':'));
        md.AppendLine();
        md.AppendLine(FormatSummary(summary, markdown: true));
        md.AppendLine();
        md.AppendLine($"Targets (docs/background.md): sequential >= {TargetMegabytesPerSecond:F0} MB/s (2 GB/s); a random 4 KiB fault p50 <= {TargetP50:F0} µs, p99 <= {TargetP99:F0} µs, " +
                      "timed around the touch in the program's thread (not the handler's histogram). Native first touch: the kernel's own fault on fresh anonymous memory.");
        md.AppendLine();
        md.AppendLine("## Every measurement");
        md.AppendLine();
        md.AppendLine(FormatTable(rows, markdown: true));
        md.AppendLine();
        md.AppendLine(Legend(markdown: true));
        md.AppendLine();
        md.AppendLine("Reference point (docs/background.md): the Rust proof of concept's scaletest, 16,384 pages: 152 MB/s, p50 53 µs, p99 122 µs.");
        md.AppendLine();
        md.AppendLine(mismatches == 0 ? "Verification: every page of every engine run read back byte for byte equal." : $"Verification FAILED: {mismatches} pages differ.");
        Directory.CreateDirectory(markdown.DirectoryName ?? ".");
        File.WriteAllText(markdown.FullName, md.ToString());
    }

    private static void WriteJson(FileInfo json, Setup setup, string date, int[] sizes, List<Row> rows, List<SummaryRow> summary, int mismatches)
    {
        using var stream = BenchJson.Create(json);
        using var w = BenchJson.Begin(stream, "scaletest", date, setup.Machine, setup.Command, PageSize,
            sizes.Select(size => (long)size), setup.Ciphers);
        w.WriteNumber("repeat", setup.Repeat);
        w.WriteStartObject("engine");
        w.WriteNumber("readAheadMaxPages", setup.Defaults.ReadAheadMaxPages);
        w.WriteNumber("spinMicroseconds", setup.Defaults.SpinMicroseconds);
        w.WriteBoolean("handlerPerCpu", setup.Defaults.HandlerPerCpu);
        w.WriteNumber("compressedKeepBytes", setup.CompressedKeepBytes);
        w.WriteEndObject();
        w.WriteStartObject("zstdPageRatio");
        WriteFigure(w, "random", setup.RandomRatio, 3);
        WriteFigure(w, "textLike", setup.TextRatio, 3);
        w.WriteEndObject();
        w.WriteStartObject("targets");
        w.WriteNumber("sequentialMegabytesPerSecond", TargetMegabytesPerSecond);
        w.WriteNumber("randomP50Microseconds", TargetP50);
        w.WriteNumber("randomP99Microseconds", TargetP99);
        w.WriteEndObject();

        w.WriteStartObject("summary");
        w.WriteNumber("pages", setup.Largest);
        w.WriteString("data", "random");
        w.WriteStartArray("rows");
        foreach (var s in summary)
        {
            w.WriteStartObject();
            w.WriteString("memory", s.Memory);
            WriteCipher(w, s.Cipher);
            WriteFigure(w, "sequentialMegabytesPerSecond", s.MegabytesPerSecond, 1);
            WriteFigure(w, "sequentialRatioToNative", s.Ratio, 4);
            WriteFigure(w, "randomP50Microseconds", s.RandomP50, 2);
            WriteFigure(w, "randomP99Microseconds", s.RandomP99, 2);
            WriteFigure(w, "randomPagesPerFault", s.RandomPagesPerFault, 2);
            if (s.IsEngine)
            {
                w.WriteBoolean("meetsSequential", s.MegabytesPerSecond >= TargetMegabytesPerSecond);
                w.WriteBoolean("meetsP50", s.RandomP50 <= TargetP50);
                w.WriteBoolean("meetsP99", s.RandomP99 <= TargetP99);
            }
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();

        w.WriteStartArray("rows");
        foreach (var r in rows)
        {
            w.WriteStartObject();
            w.WriteNumber("pages", r.Pages);
            w.WriteString("data", r.Data);
            WriteCipher(w, r.Cipher);
            w.WriteString("path", r.Path);
            w.WriteString("order", r.Order);
            WriteFigure(w, "megabytesPerSecond", r.MegabytesPerSecond, 1);
            WriteFigure(w, "ratioToNative", r.Ratio, 4);
            WriteFigure(w, "p50Microseconds", r.P50, 2);
            WriteFigure(w, "p99Microseconds", r.P99, 2);
            WriteFigure(w, "handlerP50Microseconds", r.HandlerP50, 2);
            WriteFigure(w, "handlerP99Microseconds", r.HandlerP99, 2);
            WriteFigure(w, "pagesPerFault", r.PagesPerFault, 2);
            WriteFigure(w, "sealedBytesPerPage", r.SealedBytesPerPage == 0 ? double.NaN : r.SealedBytesPerPage, 0);
            w.WriteNumber("mismatchedPages", r.Mismatches);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteBoolean("verified", mismatches == 0);
        w.WriteEndObject();
    }

    private static void WriteCipher(Utf8JsonWriter w, string cipher)
    {
        if (cipher == NoCipher) w.WriteNull("cipher");
        else w.WriteString("cipher", cipher);
    }

    /// <summary>A figure rounded to <paramref name="decimals"/>, or null where not measured.</summary>
    private static void WriteFigure(Utf8JsonWriter w, string name, double value, int decimals)
    {
        if (double.IsNaN(value) || double.IsInfinity(value)) w.WriteNull(name);
        else w.WriteNumber(name, Math.Round(value, decimals, MidpointRounding.AwayFromZero));
    }

    private static string Fixed(double value, int decimals) =>
        double.IsNaN(value) ? "-" : value.ToString("F" + decimals, CultureInfo.InvariantCulture);
}
