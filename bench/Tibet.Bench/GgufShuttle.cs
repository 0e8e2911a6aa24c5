using System.Diagnostics;
using System.Globalization;
using System.IO.MemoryMappedFiles;
using System.Text;
using System.Text.Json;
using Tibet.Core.Diagnostics;
using Tibet.Core.Files;
using Tibet.Core.Gguf;
using Tibet.Core.Paging;

namespace Tibet.Bench;

/// <summary>
/// A GGUF model's weights through the encrypted arena, the way the interposer serves
/// llama.cpp's map of the file: the arena is backed by the file (FileSource), and read
/// page by page in file order, which is how inference first walks the weights: each first
/// touch reads the file with O_DIRECT. Then every page is evicted (sealed) and read again,
/// each touch now decrypting from the store, as under a budget smaller than the model.
/// Beside them, the same reads from a plain map of the file (page cache warm), measured
/// in the same run. Each page cipher (AES-256-GCM, AEGIS-256) has its own engine and arena.
/// </summary>
internal static unsafe class GgufShuttle
{
    private const int PageSize = TestData.PageSize;
    private static readonly long[] StepBytes = [64L << 20, 256L << 20, 1L << 30, 4L << 30];

    private const string NoCipher = "-";
    private const double TargetMegabytesPerSecond = 1500, TargetP50 = 10, TargetP99 = 40; // docs/background.md

    private sealed record Row(long Bytes, string Cipher, string Path, double EvictMegabytesPerSecond, double MegabytesPerSecond,
        double P50, double P99, double HandlerP50, double HandlerP99, double PagesPerFault, bool Verified);

    public static int Run(FileInfo model, FileInfo? markdown, FileInfo? json)
    {
        if (!model.Exists)
        {
            Console.Error.WriteLine($"tibet-bench: {model.FullName} does not exist; make one with tibet-gguf-gen --preset large");
            return 2;
        }
        using (var probe = File.OpenRead(model.FullName))
        {
            Span<byte> magic = stackalloc byte[4];
            if (probe.Read(magic) != 4 || !GgufFile.HasMagic(magic))
            {
                Console.Error.WriteLine($"tibet-bench: {model.FullName} is not a GGUF file (it does not start with 'GGUF')");
                return 2;
            }
        }
        long fileLength = model.Length;
        long[] steps = StepBytes.Where(s => s < fileLength).Append(fileLength & ~(long)(PageSize - 1)).ToArray();

        var machine = MachineInfo.Read();
        Console.WriteLine($"tibet gguf-shuttle — {model.Name}, {fileLength / 1048576.0:F0} MiB; prefixes of {string.Join(", ", steps.Select(Megabytes))}");
        Console.WriteLine($"machine: {machine}");

        var engines = PageCiphers.Supported().Select(suite =>
            (Cipher: suite.Name, Engine: PageEngine.Create(new EngineOptions { Compression = CompressionMode.Off, Cipher = suite }))).ToList();
        using var handle = new FileStream(model.FullName, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.None);
        int fd = (int)handle.SafeFileHandle.DangerousGetHandle();
        using var plain = MemoryMappedFile.CreateFromFile(handle, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: true);
        using var view = plain.CreateViewAccessor(0, fileLength, MemoryMappedFileAccess.Read);
        byte* plainBase = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref plainBase);
        try
        {
            // Warm the page cache so the native baseline reads memory, not the disk.
            ReadPages((nint)plainBase, fileLength / PageSize, new long[1], timed: false);
            var rows = new List<Row>();
            foreach (long bytes in steps)
            {
                long pages = bytes / PageSize;
                long[] ticks = new long[pages];
                // The file source drops the file's cached pages: warm them again for the baseline.
                ReadPages((nint)plainBase, pages, ticks, timed: false);
                var (nativeRate, nativeHash) = ReadPages((nint)plainBase + 0, pages, ticks, timed: true);
                var (np50, np99) = Percentiles.Of(ticks, (int)pages);
                rows.Add(new Row(bytes, NoCipher, "native map (page cache)", double.NaN, nativeRate, np50, np99, double.NaN, double.NaN, double.NaN, true));

                foreach (var (cipher, engine) in engines)
                {
                    using Arena arena = engine.CreateArena(bytes, "gguf-shuttle");
                    arena.AttachSource(FileSource.Open(fd, 0));
                    rows.Add(Measure(engine, arena, bytes, cipher, "tibet, first touch (file)", double.NaN, ticks, nativeHash));
                    long evictStart = Stopwatch.GetTimestamp();
                    arena.Evict();
                    double evictSeconds = Stopwatch.GetElapsedTime(evictStart).TotalSeconds;
                    rows.Add(Measure(engine, arena, bytes, cipher, "tibet, after eviction (store)", bytes / evictSeconds / 1e6, ticks, nativeHash));
                }
                Console.Error.WriteLine($"  measured {Megabytes(bytes)}");
            }

            string table = FormatTable(rows, markdown: false);
            Console.WriteLine();
            Console.WriteLine(table);
            bool verified = rows.All(r => r.Verified);
            Console.WriteLine(verified ? "verify: PASS (the arena read back the file's bytes at every size)" : "verify: FAIL (the arena's bytes differ from the file's)");
            string date = DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm", CultureInfo.InvariantCulture) + " UTC";
            string[] ciphers = engines.Select(e => e.Cipher).ToArray();
            if (markdown != null)
                WriteMarkdown(markdown, model, machine, date, ciphers, rows, verified);
            if (json != null)
            {
                WriteJson(json, model, machine, date, steps, ciphers, rows, verified);
                Console.WriteLine($"json written to {json.FullName}");
            }
            return verified ? 0 : 1;
        }
        finally
        {
            view.SafeMemoryMappedViewHandle.ReleasePointer();
            foreach (var (_, engine) in engines) engine.Dispose();
        }
    }

    /// <summary>Reads every page of the arena once, timing each touch, with the handler's view of the faults.</summary>
    private static Row Measure(PageEngine engine, Arena arena, long bytes, string cipher, string path, double evictRate, long[] ticks, ulong nativeHash)
    {
        long pages = bytes / PageSize;
        EngineStats before = engine.GetStats();
        engine.ResetLatency();
        var (rate, hash) = ReadPages(arena.Address, pages, ticks, timed: true);
        EngineStats after = engine.GetStats();
        var (p50, p99) = Percentiles.Of(ticks, (int)pages);
        long faults = after.Faults - before.Faults;
        return new Row(bytes, cipher, path, evictRate, rate, p50, p99, after.FaultP50Nanoseconds / 1000.0, after.FaultP99Nanoseconds / 1000.0,
            faults == 0 ? 0 : (double)pages / faults, hash == nativeHash);
    }

    /// <summary>Copies out every page in order (one 4 KiB native memcpy each, as the
    /// engine's own rule for managed readers requires), timing each, and hashes the bytes.</summary>
    private static (double MegabytesPerSecond, ulong Hash) ReadPages(nint start, long pages, long[] ticks, bool timed)
    {
        byte* page = stackalloc byte[PageSize];
        var destination = new Span<byte>(page, PageSize);
        ulong hash = 14695981039346656037UL;
        long begin = Stopwatch.GetTimestamp();
        for (long p = 0; p < pages; p++)
        {
            long t0 = Stopwatch.GetTimestamp();
            ArenaMemory.Read(start + (nint)(p * PageSize), destination);
            if (timed) ticks[p] = Stopwatch.GetTimestamp() - t0;
            hash = (hash ^ FoldPage(page)) * 1099511628211UL;
        }
        double seconds = Stopwatch.GetElapsedTime(begin).TotalSeconds;
        return ((double)pages * PageSize / seconds / 1e6, hash);
    }

    private static ulong FoldPage(byte* page)
    {
        ulong* words = (ulong*)page;
        ulong a = 0, b = 0;
        for (int i = 0; i < PageSize / 8; i += 2)
        {
            a = (a ^ words[i]) * 0x9E3779B97F4A7C15UL;
            b = (b ^ words[i + 1]) * 0xC2B2AE3D27D4EB4FUL;
        }
        return a ^ (b << 1 | b >> 63);
    }

    private static string Megabytes(long bytes) => bytes >= 1L << 30 && bytes % (1L << 30) == 0
        ? $"{bytes >> 30} GiB" : $"{bytes / 1048576.0:F0} MiB";

    private static string FormatTable(List<Row> rows, bool markdown)
    {
        string[] header = ["size", "cipher", "path", "evict MB/s", "read MB/s", "×native", "touch p50 µs", "touch p99 µs", "handler p50 µs", "handler p99 µs", "pages/fault", "bytes"];
        var lines = new List<string[]>();
        foreach (var row in rows)
        {
            var native = rows.First(r => r.Bytes == row.Bytes && r.Path.StartsWith("native", StringComparison.Ordinal));
            lines.Add([
                Megabytes(row.Bytes), row.Cipher, row.Path, Format(row.EvictMegabytesPerSecond, "F0"), Format(row.MegabytesPerSecond, "F0"),
                Format(row.MegabytesPerSecond / native.MegabytesPerSecond, "F2"), Format(row.P50, "F1"), Format(row.P99, "F1"),
                Format(row.HandlerP50, "F1"), Format(row.HandlerP99, "F1"), Format(row.PagesPerFault, "F1"), row.Verified ? "equal" : "DIFFER",
            ]);
        }
        return TextTable.Format(header, lines, markdown);
    }

    private static string Format(double value, string format) =>
        double.IsNaN(value) ? "—" : value.ToString(format, CultureInfo.InvariantCulture);

    private static void WriteMarkdown(FileInfo markdown, FileInfo model, string machine, string date, IEnumerable<string> ciphers, List<Row> rows, bool verified)
    {
        var md = new StringBuilder();
        md.AppendLine($"# tibet gguf-shuttle, {date}");
        md.AppendLine();
        md.AppendLine($"Machine: {machine}. Model: `{model.Name}`, {model.Length} bytes. Command: `{MachineInfo.TasksetPrefix()}tibet-bench gguf-shuttle --model {model.Name}`.");
        md.AppendLine();
        md.AppendLine("Each size is a fresh arena over the first N bytes of the model, backed by the file as the interposer backs llama.cpp's map. " +
                      "*first touch*: every page copied out in file order, one 4 KiB touch each, each fault reading the file with O_DIRECT (with read-ahead). " +
                      "*after eviction*: every page sealed (*evict MB/s*), then read again, each fault decrypting from the store, as under a budget below the model. " +
                      $"Each page cipher ({string.Join(", ", ciphers)}) has its own engine and arena; it only matters after eviction. " +
                      "The native row reads the same pages from a plain map of the file with a warm page cache.");
        md.AppendLine();
        md.AppendLine(FormatTable(rows, markdown: true));
        md.AppendLine();
        md.AppendLine("Targets (docs/background.md): 1 GiB GGUF through the arena >= 1.5 GB/s; 4 KiB fault p50 <= 10 µs, p99 <= 40 µs. " +
                      "The Rust proof of concept's gguf-shuttle: 50 MB/s, p50 67 µs, p99 83 µs.");
        md.AppendLine();
        md.AppendLine(verified ? "Verification: the arena's bytes hashed equal to the file's at every size." : "Verification FAILED.");
        Directory.CreateDirectory(markdown.DirectoryName ?? ".");
        File.WriteAllText(markdown.FullName, md.ToString());
        Console.WriteLine($"markdown written to {markdown.FullName}");
    }

    /// <summary>The same figures as the table, one object per row (null where not measured), with date and machine.</summary>
    private static void WriteJson(FileInfo json, FileInfo model, string machine, string date, long[] steps, string[] ciphers, List<Row> rows, bool verified)
    {
        using var stream = BenchJson.Create(json);
        using var w = BenchJson.Begin(stream, "gguf-shuttle", date, machine,
            $"{MachineInfo.TasksetPrefix()}tibet-bench gguf-shuttle --model {model.Name}", PageSize, steps, ciphers);
        w.WriteString("model", model.Name);
        w.WriteNumber("modelBytes", model.Length);
        w.WriteStartObject("targets");
        w.WriteNumber("megabytesPerSecond", TargetMegabytesPerSecond);
        w.WriteNumber("faultP50Microseconds", TargetP50);
        w.WriteNumber("faultP99Microseconds", TargetP99);
        w.WriteEndObject();
        w.WriteStartArray("rows");
        foreach (var row in rows)
        {
            var native = rows.First(r => r.Bytes == row.Bytes && r.Cipher == NoCipher);
            w.WriteStartObject();
            w.WriteNumber("bytes", row.Bytes);
            w.WriteString("size", Megabytes(row.Bytes));
            if (row.Cipher == NoCipher) w.WriteNull("cipher");
            else w.WriteString("cipher", row.Cipher);
            w.WriteString("path", row.Path);
            WriteFigure(w, "evictMegabytesPerSecond", row.EvictMegabytesPerSecond, 1);
            WriteFigure(w, "megabytesPerSecond", row.MegabytesPerSecond, 1);
            WriteFigure(w, "ratioToNative", row.MegabytesPerSecond / native.MegabytesPerSecond, 4);
            WriteFigure(w, "touchP50Microseconds", row.P50, 2);
            WriteFigure(w, "touchP99Microseconds", row.P99, 2);
            WriteFigure(w, "handlerP50Microseconds", row.HandlerP50, 2);
            WriteFigure(w, "handlerP99Microseconds", row.HandlerP99, 2);
            WriteFigure(w, "pagesPerFault", row.PagesPerFault, 2);
            w.WriteBoolean("bytesEqual", row.Verified);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteBoolean("verified", verified);
        w.WriteEndObject();
    }

    /// <summary>A figure rounded to <paramref name="decimals"/>, or null where not measured.</summary>
    private static void WriteFigure(Utf8JsonWriter w, string name, double value, int decimals)
    {
        if (double.IsNaN(value) || double.IsInfinity(value)) w.WriteNull(name);
        else w.WriteNumber(name, Math.Round(value, decimals, MidpointRounding.AwayFromZero));
    }
}
