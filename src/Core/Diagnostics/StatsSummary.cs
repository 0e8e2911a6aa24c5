using System.Text.Json;

namespace Tibet.Core.Diagnostics;

/// <summary>A process's exit statistics (the interposer's JSON) as a summary for people:
/// what <c>tibet-run --stats</c> prints when the program ends.</summary>
public static class StatsSummary
{
    /// <param name="say">Writes one line (the interposer: its report descriptor).</param>
    public static void Print(string json, string command, Action<string> say)
    {
        using var document = JsonDocument.Parse(json);
        JsonElement s = document.RootElement;
        long Get(string name) => s.TryGetProperty(name, out var v) ? v.GetInt64() : 0;
        string Bytes(long b) => b >= 1 << 20 ? $"{b / 1048576.0:F1} MiB" : $"{b / 1024.0:F1} KiB";
        long budget = Get("residentBudgetBytes");

        say($"tibet-run: statistics for {command}");
        if (s.TryGetProperty("encrypted", out var encrypted) && !encrypted.GetBoolean())
        {
            string why = s.TryGetProperty("unencrypted", out var u) && u.TryGetProperty("wholeProcess", out var w) && w.ValueKind == JsonValueKind.String
                ? w.GetString()! : "unknown";
            say($"  UNENCRYPTED: the whole process ran in plaintext ({why})");
            PrintUnencrypted(s, Bytes, say);
            return;
        }
        say($"  faults             {Get("faults"),12:N0}   wait p50 {Get("faultP50Ns") / 1000.0:F1} µs, p99 {Get("faultP99Ns") / 1000.0:F1} µs");
        say($"  pages decrypted    {Get("decrypts"),12:N0}   read ahead {Get("readAheadPages"):N0}, zero-filled {Get("zeroFills"):N0}"
            + (Get("sourceInstalls") > 0 ? $", installed by the custodian {Get("sourceInstalls"):N0}" : ""));
        say($"  pages evicted      {Get("evictions"),12:N0}   of them clean (copy kept) {Get("cleanEvictions"):N0}, dropped to the model file {Get("sourceDrops"):N0}, zero {Get("zeroEvictions"):N0}, refused {Get("evictionsRefused"):N0}");
        say($"  resident now       {Bytes(Get("residentBytes")),12}   peak {Bytes(Get("peakResidentBytes"))}, budget {(budget == long.MaxValue ? "unlimited" : Bytes(budget))}");
        say($"  sealed             {Bytes(Get("sealedBytes")),12}   store mapped {Bytes(Get("storeMappedBytes"))}");
        say($"  auth failures      {Get("authenticationFailures"),12:N0}");
        PrintUnencrypted(s, Bytes, say);
    }

    /// <summary>One line per reason that memory ran unencrypted (or was refused), and the
    /// plaintext buffers mlock could not lock; nothing when all are zero.</summary>
    private static void PrintUnencrypted(JsonElement s, Func<long, string> bytes, Action<string> say)
    {
        if (s.TryGetProperty("unencrypted", out var unencrypted))
            foreach (var reason in unencrypted.EnumerateObject())
            {
                if (reason.Value.ValueKind != JsonValueKind.Object)
                    continue;
                long count = reason.Value.GetProperty("count").GetInt64();
                long refused = reason.Value.GetProperty("refused").GetInt64();
                if (count > 0)
                    say($"  UNENCRYPTED        {count,12:N0}   allocations, {bytes(reason.Value.GetProperty("bytes").GetInt64())}: {reason.Name}");
                if (refused > 0)
                    say($"  refused (ENOMEM)   {refused,12:N0}   allocations that would have run unencrypted: {reason.Name}");
            }
        if (s.TryGetProperty("memoryLocking", out var locking) && locking.GetProperty("failures").GetInt64() is long failures and > 0)
            say($"  mlock failures     {failures,12:N0}   {bytes(locking.GetProperty("unlockedBytes").GetInt64())} of plaintext buffers may be swapped out");
    }
}
