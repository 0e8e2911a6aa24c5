using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Tibet.Core.Diagnostics;

namespace Tibet.Cli;

/// <summary>
/// <c>tibet stats [PID...]</c>: the live statistics of processes running under tibet-run
/// (all of this user's, or those named), per process, per forked child they serve, and in
/// total. Faults per second (the process's and its children's) come from two readings
/// <c>--interval</c> seconds apart.
/// </summary>
internal static class StatsCommand
{
    public static Command Create()
    {
        var pids = new Argument<int[]>("PID") { Description = "Processes to show (default: every process under tibet that answers).", Arity = ArgumentArity.ZeroOrMore };
        var json = new Option<bool>("--json") { Description = "Print the statistics as JSON: each process's own, and the rate." };
        var interval = new Option<double>("--interval") { Description = "Seconds between the two readings faults per second come from (default 1).", DefaultValueFactory = _ => 1.0 };
        var command = new Command("stats",
            "Show the live statistics of processes running under tibet-run: faults per second, resident and sealed bytes, evictions, " +
            "forked children and their evictions, and what ran unencrypted. Only processes of the same user (or all, as root) answer.");
        command.Arguments.Add(pids);
        command.Options.Add(json);
        command.Options.Add(interval);
        command.SetAction(result => Run(result.GetValue(pids) ?? [], result.GetValue(json), result.GetValue(interval)));
        return command;
    }

    private static int Run(int[] requested, bool asJson, double interval)
    {
        if (interval is < 0.05 or > 3600)
        {
            Console.Error.WriteLine("tibet: --interval must be between 0.05 and 3600 seconds.");
            return ExitCodes.Failed;
        }
        IReadOnlyList<int> pids = requested.Length > 0 ? requested : LiveStatsClient.ListProcesses();
        if (pids.Count == 0)
        {
            Console.Error.WriteLine("tibet: no process under tibet-run answers (start one with tibet-run -- COMMAND).");
            return ExitCodes.Failed;
        }

        var first = pids.ToDictionary(pid => pid, pid => LiveStatsClient.TryRead(pid, out _));
        Thread.Sleep(TimeSpan.FromSeconds(interval));
        var rows = new List<Row>();
        foreach (int pid in pids)
        {
            using JsonDocument? before = first[pid];
            JsonDocument? now = LiveStatsClient.TryRead(pid, out string? problem);
            if (now == null)
            {
                Console.Error.WriteLine($"tibet: {problem}");
                continue;
            }
            double rate = before == null ? double.NaN : (TreeFaults(now.RootElement) - TreeFaults(before.RootElement)) / interval;
            bool custodian = now.RootElement.TryGetProperty("custodian", out JsonElement c) && c.ValueKind == JsonValueKind.True;
            rows.Add(new Row(pid, custodian ? "(custodian)" : Command(pid), rate, now));
        }
        if (rows.Count == 0)
            return ExitCodes.Failed;
        try
        {
            if (asJson)
                PrintJson(rows);
            else
                PrintTable(rows);
        }
        finally
        {
            foreach (Row row in rows)
                row.Stats.Dispose();
        }
        return rows.Count == pids.Count ? ExitCodes.Success : ExitCodes.Failed;
    }

    private sealed record Row(int Pid, string Command, double FaultsPerSecond, JsonDocument Stats);

    private static void PrintTable(List<Row> rows)
    {
        Console.WriteLine($"{"PID",-8} {"COMMAND",-16} {"FAULTS/S",10} {"RESIDENT",11} {"SEALED",11} {"EVICTIONS",11} {"CHILDREN",8} {"UNENCRYPTED",12}");
        double totalRate = 0;
        long totalResident = 0, totalSealed = 0, totalEvictions = 0, totalChildren = 0, totalUnencrypted = 0;
        foreach (Row row in rows)
        {
            JsonElement r = row.Stats.RootElement;
            bool encrypted = r.TryGetProperty("encrypted", out JsonElement e) && e.GetBoolean();
            long unencrypted = UnencryptedBytes(r);
            string unencryptedText = encrypted ? Size(unencrypted) : "whole process";
            Console.WriteLine($"{row.Pid,-8} {row.Command,-16} {Rate(row.FaultsPerSecond),10} {Size(Long(r, "residentBytes")),11} {Size(Long(r, "sealedBytes")),11} " +
                              $"{Long(r, "evictions"),11} {Long(r, "forkedChildren"),8} {unencryptedText,12}");
            if (r.TryGetProperty("children", out JsonElement children))
                foreach (JsonElement child in children.EnumerateArray())
                {
                    int childPid = child.GetProperty("pid").GetInt32();
                    string who = childPid == 0 ? "?" : childPid.ToString(CultureInfo.InvariantCulture);
                    if (child.TryGetProperty("served", out JsonElement served) && served.ValueKind == JsonValueKind.True)
                        Console.WriteLine($"  served {who,-6} {"",-8} faults {child.GetProperty("faults").GetInt64()}, resident {Size(Long(child, "residentBytes"))}, " +
                                          $"sealed {Size(Long(child, "sealedBytes"))}, evictions {child.GetProperty("evictions").GetInt64()}");
                    else
                        Console.WriteLine($"  child {who,-7} {"",-8} faults {child.GetProperty("faults").GetInt64()}, " +
                                          $"clean resident {Size(child.GetProperty("cleanResidentBytes").GetInt64())}, evictions {child.GetProperty("evictions").GetInt64()}" +
                                          (child.GetProperty("agent").GetBoolean() ? "" : " (no agent: nothing it reads is evicted)"));
                }
            if (!double.IsNaN(row.FaultsPerSecond))
                totalRate += row.FaultsPerSecond;
            totalResident += Long(r, "residentBytes");
            totalSealed += Long(r, "sealedBytes");
            totalEvictions += Long(r, "evictions") + Long(r, "childEvictions");
            totalChildren += Long(r, "forkedChildren");
            totalUnencrypted += unencrypted;
        }
        Console.WriteLine($"{"TOTAL",-8} {rows.Count + " process(es)",-16} {Rate(totalRate),10} {Size(totalResident),11} {Size(totalSealed),11} {totalEvictions,11} {totalChildren,8} {Size(totalUnencrypted),12}");
    }

    private static void PrintJson(List<Row> rows)
    {
        using var stdout = Console.OpenStandardOutput();
        using var w = new Utf8JsonWriter(stdout, new JsonWriterOptions { Indented = true });
        w.WriteStartObject();
        w.WriteStartArray("processes");
        foreach (Row row in rows)
        {
            w.WriteStartObject();
            w.WriteNumber("pid", row.Pid);
            w.WriteString("command", row.Command);
            if (double.IsNaN(row.FaultsPerSecond))
                w.WriteNull("faultsPerSecond");
            else
                w.WriteNumber("faultsPerSecond", row.FaultsPerSecond);
            w.WritePropertyName("stats");
            row.Stats.RootElement.WriteTo(w);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
        w.Flush();
        stdout.WriteByte((byte)'\n');
    }

    private static long Long(JsonElement root, string name) =>
        root.TryGetProperty(name, out JsonElement e) && e.ValueKind == JsonValueKind.Number ? e.GetInt64() : 0;

    /// <summary>The process's faults and those of the forked children it serves.</summary>
    private static long TreeFaults(JsonElement root)
    {
        long faults = Long(root, "faults");
        if (root.TryGetProperty("children", out JsonElement children))
            foreach (JsonElement child in children.EnumerateArray())
                faults += Long(child, "faults");
        return faults;
    }

    private static long UnencryptedBytes(JsonElement root)
    {
        long bytes = 0;
        if (root.TryGetProperty("unencrypted", out JsonElement unencrypted))
            foreach (JsonProperty reason in unencrypted.EnumerateObject())
                if (reason.Value.ValueKind == JsonValueKind.Object)
                    bytes += Long(reason.Value, "bytes");
        return bytes;
    }

    private static string Command(int pid)
    {
        try
        {
            return File.ReadAllText($"/proc/{pid}/comm").Trim();
        }
        catch (IOException)
        {
            return "?";
        }
    }

    private static string Rate(double rate) => double.IsNaN(rate) ? "-" : rate.ToString("F1", CultureInfo.InvariantCulture);

    private static string Size(long bytes) => bytes switch
    {
        < 1 << 10 => $"{bytes} B",
        < 1 << 20 => (bytes / 1024.0).ToString("F1", CultureInfo.InvariantCulture) + " KiB",
        < 1 << 30 => (bytes / 1048576.0).ToString("F1", CultureInfo.InvariantCulture) + " MiB",
        _ => (bytes / 1073741824.0).ToString("F2", CultureInfo.InvariantCulture) + " GiB",
    };
}
