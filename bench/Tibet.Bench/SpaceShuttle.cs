using System.Diagnostics;
using System.Text;
using Tibet.Core.Diagnostics;
using Tibet.Core.Paging;

namespace Tibet.Bench;

/// <summary>
/// The demo: 64 pages of 4 KiB written, sealed, and read back through page faults, then
/// the same under a resident budget of 16 pages, then as a sealed model opened with a
/// valid and with invalid claims. Every step is printed for a person watching.
/// </summary>
internal static class SpaceShuttle
{
    private const int Pages = 64;
    private const int PageSize = TestData.PageSize;
    private const int BudgetPages = 16;
    private const int HeaderBytes = 64;

    public static int Run(FileInfo? jsonFile)
    {
        bool ok = true;
        Console.WriteLine("tibet spaceshuttle — 64 pages of 4 KiB in encrypted RAM");
        Console.WriteLine(new string('=', 72));

        byte[] expected = new byte[Pages * PageSize];
        for (int p = 0; p < Pages; p++)
            FillPage(expected.AsSpan(p * PageSize, PageSize), p);

        // ---- 0. warm-up ----------------------------------------------------------------
        Step(0, "Warm-up: a throwaway engine runs every step once, so JIT compilation is not timed below");
        var (coldFirst, coldMax) = WarmUp(expected);
        Say($"cold first fault             {coldFirst,7:F1} µs   (slowest cold fault {coldMax:F1} µs: the handler's code is compiled on first use)");

        // ---- 1. engine and arena -------------------------------------------------------
        Step(1, "Create an engine and an arena of 64 pages");
        // Read-ahead off, so that every first touch below is a fault of its own.
        var options = new EngineOptions { ReadAheadMaxPages = 1 };
        using var engine = PageEngine.Create(options);
        using var arena = engine.CreateArena(Pages * PageSize, "spaceshuttle");
        Say($"kernel userfaultfd features  {engine.Features} (eviction {(engine.Features.CanEvict ? "available" : "UNAVAILABLE")})");
        Say($"arena                        {Pages} pages x {PageSize} B = {Pages * PageSize / 1024} KiB at 0x{arena.Address:x}");
        Say($"cipher                       AES-256-GCM, one random key per arena (arena id {arena.Id:x16})");
        Say($"compression                  {options.Compression}, read-ahead {options.ReadAheadMaxPages} page (every touch below is its own fault)");
        Say("legend                       . untouched   R resident (plaintext in RAM)   S sealed (ciphertext only)   0 zero");
        ShowStates(arena, "page states, untouched");

        // ---- 2. write ------------------------------------------------------------------
        Step(2, "Write a recognisable message and seeded random bytes into every page");
        for (int p = 0; p < Pages; p++)
            ArenaMemory.Write(arena.Address + p * PageSize, expected.AsSpan(p * PageSize, PageSize));
        Say($"page 00 begins with          \"{Header(expected, 0)}\"");
        Say($"page 63 begins with          \"{Header(expected, 63)}\"");
        Say($"rest of each page            {PageSize - HeaderBytes} random bytes (seed 1969 + page)");
        ShowStates(arena, "page states, after writing");
        ShowMemory(engine.GetStats());

        // ---- 3. evict ------------------------------------------------------------------
        Step(3, "Evict: encrypt every page and take the plaintext out of RAM");
        long t0 = Stopwatch.GetTimestamp();
        arena.Evict();
        double evictMs = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        EngineStats sealedStats = engine.GetStats();
        ShowStates(arena, "page states, after eviction");
        ShowMemory(sealedStats);
        Say($"eviction took                {evictMs:F2} ms for {Pages} pages ({evictMs * 1000 / Pages:F1} µs per page)");
        int sealedCount = CountStates(arena, PageState.Sealed);
        if (sealedCount != Pages || sealedStats.ResidentBytes != 0)
        {
            Say($"FAIL: expected {Pages} sealed pages and 0 resident bytes, found {sealedCount} sealed and {sealedStats.ResidentBytes} B resident");
            ok = false;
        }

        // ---- 4. read back --------------------------------------------------------------
        Step(4, "Read every page back; each first touch is a page fault (decrypt + inject)");
        engine.ResetLatency();
        long faultsBefore = sealedStats.Faults;
        long[] ticks = new long[Pages];
        byte[] readBack = new byte[Pages * PageSize];
        readBack.AsSpan().Fill(0xEE); // touch the destination now, not inside the timing
        for (int p = 0; p < Pages; p++)
        {
            long start = Stopwatch.GetTimestamp();
            ArenaMemory.Read(arena.Address + p * PageSize, readBack.AsSpan(p * PageSize, PageSize));
            ticks[p] = Stopwatch.GetTimestamp() - start;
        }
        EngineStats readStats = engine.GetStats();

        Say($"{"page",-6}{"first touch",12}  {"begins with",-34}check");
        int mismatches = 0;
        for (int p = 0; p < Pages; p++)
        {
            bool same = readBack.AsSpan(p * PageSize, PageSize).SequenceEqual(expected.AsSpan(p * PageSize, PageSize));
            if (!same) mismatches++;
            if (p < 4 || p >= Pages - 2 || !same)
                Say($"{p,-6}{Percentiles.TicksToMicroseconds(ticks[p]),9:F1} µs  {"\"" + Header(readBack, p).TrimEnd() + "\"",-34}{(same ? "ok" : "MISMATCH")}");
            else if (p == 4)
                Say($"{"...",-6}{"",12}  {$"(pages 4 to {Pages - 3} alike)",-34}");
        }
        var (p50, p99) = Percentiles.Of(ticks, Pages);
        Say("");
        Say($"faults served                {readStats.Faults - faultsBefore} for {Pages} pages, {readStats.Decrypts - sealedStats.Decrypts} decrypted");
        Say($"first touch, app side        p50 {p50,7:F1} µs   p99 {p99,7:F1} µs   (fault + wake + 4 KiB copy, {Pages} samples)");
        Say($"fault service, handler side  p50 {Us(readStats.FaultP50Nanoseconds),7:F1} µs   p99 {Us(readStats.FaultP99Nanoseconds),7:F1} µs   (message read to wake)");
        Say($"original Rust PoC            p50 {112.0,7:F1} µs   p99 {207.0,7:F1} µs   target p50 <= 10 µs, p99 <= 40 µs");
        ShowStates(arena, "page states, after reading");
        Say(mismatches == 0
            ? $"PASS: all {Pages} pages read back byte for byte equal ({Pages * PageSize} bytes)"
            : $"FAIL: {mismatches} of {Pages} pages differ");
        ok &= mismatches == 0;
        EngineStats finalDemoStats = readStats;

        // ---- 5. budget -----------------------------------------------------------------
        Step(5, $"Budget run: 64 pages through a resident budget of {BudgetPages} pages ({BudgetPages * PageSize / 1024} KiB)");
        var budgetOptions = new EngineOptions { ResidentBudgetBytes = BudgetPages * PageSize };
        using var budgetEngine = PageEngine.Create(budgetOptions);
        using var budgetArena = budgetEngine.CreateArena(Pages * PageSize, "spaceshuttle-budget");
        long maxSeenResident = 0;
        for (int p = 0; p < Pages; p++)
        {
            ArenaMemory.Write(budgetArena.Address + p * PageSize, expected.AsSpan(p * PageSize, PageSize));
            maxSeenResident = Math.Max(maxSeenResident, budgetEngine.GetStats().ResidentBytes);
        }
        EngineStats afterWrite = budgetEngine.GetStats();
        Say($"wrote {Pages} pages one by one; resident after each write never above {maxSeenResident / 1024} KiB");
        ShowStates(budgetArena, "page states, after writing");
        ShowMemory(afterWrite);
        Say($"evictions so far             {afterWrite.Evictions} pages sealed to stay within the budget");

        var readBudget = new byte[PageSize];
        int budgetMismatches = 0;
        long[] budgetTicks = new long[Pages];
        for (int p = 0; p < Pages; p++)
        {
            long start = Stopwatch.GetTimestamp();
            ArenaMemory.Read(budgetArena.Address + p * PageSize, readBudget);
            budgetTicks[p] = Stopwatch.GetTimestamp() - start;
            if (!readBudget.AsSpan().SequenceEqual(expected.AsSpan(p * PageSize, PageSize)))
                budgetMismatches++;
            maxSeenResident = Math.Max(maxSeenResident, budgetEngine.GetStats().ResidentBytes);
        }
        EngineStats budgetStats = budgetEngine.GetStats();
        var (bp50, bp99) = Percentiles.Of(budgetTicks, Pages);
        Say($"read all {Pages} pages back      p50 {bp50,7:F1} µs   p99 {bp99,7:F1} µs per page (app side; {budgetStats.Faults - afterWrite.Faults} faults, read-ahead maps up to {BudgetPages / 4} pages per fault)");
        ShowStates(budgetArena, "page states, after reading");
        Say($"budget                       {budgetStats.ResidentBudgetBytes / 1024,6} KiB");
        Say($"peak resident (engine stats) {budgetStats.PeakResidentBytes / 1024,6} KiB");
        Say($"evictions / faults           {budgetStats.Evictions} / {budgetStats.Faults}");
        bool withinBudget = budgetStats.PeakResidentBytes <= budgetStats.ResidentBudgetBytes;
        Say(withinBudget
            ? "PASS: resident plaintext never exceeded the budget"
            : $"FAIL: peak resident {budgetStats.PeakResidentBytes} B exceeds the budget of {budgetStats.ResidentBudgetBytes} B");
        Say(budgetMismatches == 0
            ? $"PASS: all {Pages} pages read back byte for byte equal through the budget"
            : $"FAIL: {budgetMismatches} of {Pages} pages differ");
        ok &= withinBudget && budgetMismatches == 0;

        // ---- 6. access control ---------------------------------------------------------
        ok &= SpaceShuttleAccess.Run(6, expected, Say, ShowStates);

        if (jsonFile != null)
        {
            string json = "{\n\"demo\": " + finalDemoStats.ToJson() + ",\n\"budget\": " + budgetStats.ToJson() + "\n}\n";
            File.WriteAllText(jsonFile.FullName, json);
            Say($"engine stats written to {jsonFile.FullName}");
        }

        Console.WriteLine(new string('=', 72));
        Console.WriteLine(ok ? "spaceshuttle: PASS" : "spaceshuttle: FAIL");
        return ok ? 0 : 1;
    }

    /// <summary>Runs write, evict, read and a budget pass on throwaway engines; returns
    /// the first and the slowest fault time of the read, in µs.</summary>
    private static (double First, double Max) WarmUp(byte[] expected)
    {
        long[] ticks = new long[Pages];
        var page = new byte[PageSize];
        using (var engine = PageEngine.Create(new EngineOptions { ReadAheadMaxPages = 1 }))
        using (var arena = engine.CreateArena(Pages * PageSize, "warm-up"))
        {
            ArenaMemory.Write(arena.Address, expected);
            arena.Evict();
            for (int p = 0; p < Pages; p++)
            {
                long start = Stopwatch.GetTimestamp();
                ArenaMemory.Read(arena.Address + p * PageSize, page);
                ticks[p] = Stopwatch.GetTimestamp() - start;
            }
            _ = engine.GetStats().ToJson();
            _ = arena.GetPageState(0);
        }
        using (var engine = PageEngine.Create(new EngineOptions { ResidentBudgetBytes = BudgetPages * PageSize }))
        using (var arena = engine.CreateArena(Pages * PageSize, "warm-up-budget"))
        {
            for (int round = 0; round < 2; round++)
                for (int p = 0; p < Pages; p++)
                    ArenaMemory.Write(arena.Address + p * PageSize, expected.AsSpan(p * PageSize, PageSize));
            for (int p = 0; p < Pages; p++)
                ArenaMemory.Read(arena.Address + p * PageSize, page);
        }
        _ = Percentiles.Of(ticks, Pages);
        return (Percentiles.TicksToMicroseconds(ticks[0]), Percentiles.TicksToMicroseconds(ticks.Max()));
    }

    private static void FillPage(Span<byte> page, int index)
    {
        page.Fill((byte)' ');
        Encoding.ASCII.GetBytes($"page {index:D2}: the eagle has landed", page);
        new Random(1969 + index).NextBytes(page[HeaderBytes..]);
    }

    private static string Header(byte[] data, int page)
    {
        var header = data.AsSpan(page * PageSize, 30);
        var chars = new char[header.Length];
        for (int i = 0; i < header.Length; i++)
            chars[i] = header[i] is >= 0x20 and < 0x7f ? (char)header[i] : '·';
        return new string(chars);
    }

    private static void Step(int number, string text)
    {
        Console.WriteLine();
        Console.WriteLine($"[{number}] {text}");
    }

    private static void Say(string text) => Console.WriteLine("    " + text);

    private static double Us(long nanoseconds) => nanoseconds / 1000.0;

    private static int CountStates(Arena arena, PageState state)
    {
        int n = 0;
        for (long p = 0; p < arena.Length / PageSize; p++)
            if (arena.GetPageState(p) == state) n++;
        return n;
    }

    private static void ShowStates(Arena arena, string title)
    {
        long pages = arena.Length / PageSize;
        var map = new StringBuilder();
        var counts = new Dictionary<PageState, int>();
        for (long p = 0; p < pages; p++)
        {
            PageState state = arena.GetPageState(p);
            counts[state] = counts.GetValueOrDefault(state) + 1;
            map.Append(state switch
            {
                PageState.Untouched => '.',
                PageState.Resident => 'R',
                PageState.Sealed => 'S',
                PageState.Zero => '0',
                PageState.Poisoned => 'X',
                _ => '?',
            });
            if (p % 16 == 15 && p != pages - 1) map.Append(' ');
        }
        string summary = string.Join(", ", counts.OrderBy(c => c.Key).Select(c => $"{c.Value} {c.Key.ToString().ToLowerInvariant()}"));
        Say($"{title + ":",-29}{map}   ({summary})");
    }

    private static void ShowMemory(EngineStats s) =>
        Say($"{"memory:",-29}resident {s.ResidentBytes / 1024,4} KiB | sealed {s.SealedPages,3} pages, {s.SealedBytes,7:N0} B ciphertext+tags | store mapped {s.StoreMappedBytes / 1024:N0} KiB");
}
