using System.Text.Json;
using Tibet.Core.Paging.Eviction;

namespace Tibet.Bench;

/// <summary>
/// The eviction benchmark: cyclic, uniform and Zipfian access over arenas of 2× and 4×
/// the budget, for each policy, with the hit rate beside the optimum
/// (see <see cref="EvictionWorkload"/>).
/// </summary>
internal static class EvictionBench
{
    public static int Run(int budgetPages, FileInfo? json, FileInfo? markdown)
    {
        var results = new List<EvictionWorkload.Result>();
        foreach (int multiple in (int[])[2, 4])
            foreach (var pattern in Enum.GetValues<EvictionWorkload.Pattern>())
                foreach (var policy in (EvictionPolicy[])[EvictionPolicy.Fifo, EvictionPolicy.ScanResistant])
                    results.Add(EvictionWorkload.Run(policy, pattern, budgetPages * multiple, budgetPages, measuredPasses: 3, seed: 20261205));

        string[] header = ["pattern", "working set", "policy", "hit rate", "optimum", "of optimum", "misses", "pages/s"];
        var rows = results.Select(r => new[]
        {
            r.Pattern.ToString().ToLowerInvariant(), $"{r.Pages / r.BudgetPages}× budget", r.Policy,
            $"{r.HitRate:P1}", $"{r.OptimalHitRate:P1}", $"{r.HitRate / r.OptimalHitRate:P0}", $"{r.Misses}", $"{r.PagesPerSecond:F0}",
        }).ToList();
        string machine = MachineInfo.Read();
        Console.WriteLine($"Eviction policies, budget {budgetPages} pages ({budgetPages * 4096L >> 20} MiB), read-ahead off, 3 measured passes after 2 warm-up passes");
        Console.WriteLine(machine);
        Console.WriteLine(TextTable.Format(header, rows, markdown: false, breakBefore: i => i > 0 && i % 2 == 0));
        if (markdown != null)
            File.WriteAllText(markdown.FullName,
                $"# Eviction policies, {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC\n\n{machine}. Budget {budgetPages} pages, read-ahead off (one page per fault), " +
                "3 measured passes after 2 warm-up passes; misses counted by the engine (one decryption each).\n\n" +
                TextTable.Format(header, rows, markdown: true) + "\n");
        if (json != null)
        {
            using var stream = File.Create(json.FullName);
            using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
            w.WriteStartObject();
            w.WriteString("benchmark", "eviction");
            w.WriteString("date", DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm 'UTC'"));
            w.WriteString("machine", machine);
            w.WriteNumber("budgetPages", budgetPages);
            w.WriteStartArray("rows");
            foreach (var r in results)
            {
                w.WriteStartObject();
                w.WriteString("pattern", r.Pattern.ToString().ToLowerInvariant());
                w.WriteNumber("pages", r.Pages);
                w.WriteString("policy", r.Policy);
                w.WriteNumber("accesses", r.Accesses);
                w.WriteNumber("misses", r.Misses);
                w.WriteNumber("hitRate", Math.Round(r.HitRate, 4));
                w.WriteNumber("optimalHitRate", Math.Round(r.OptimalHitRate, 4));
                w.WriteNumber("pagesPerSecond", Math.Round(r.PagesPerSecond));
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        return 0;
    }
}
