using System.Globalization;
using System.Text;
using System.Text.Json;
using Tibet.Core.Interop;

namespace Tibet.Core.Diagnostics;

/// <summary>
/// Reads the live statistics of processes running under tibet: each answers on the
/// abstract unix socket <c>tibet-stats-PID</c> with the JSON it would write at exit
/// (the interposer's LiveStatistics). Used by <c>tibet stats</c> and
/// <c>tibet-run --metrics</c>.
/// </summary>
public static unsafe class LiveStatsClient
{
    /// <summary>The socket's abstract name, without its leading zero byte, is this plus the pid.</summary>
    public const string NamePrefix = "tibet-stats-";

    /// <summary>The pids that answer, from the abstract names in /proc/net/unix.</summary>
    public static IReadOnlyList<int> ListProcesses()
    {
        var pids = new SortedSet<int>();
        foreach (string line in File.ReadLines("/proc/net/unix").Skip(1))
        {
            int at = line.IndexOf("@" + NamePrefix, StringComparison.Ordinal);
            if (at >= 0 && int.TryParse(line.AsSpan(at + 1 + NamePrefix.Length).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int pid))
                pids.Add(pid);
        }
        return [.. pids];
    }

    /// <summary>The statistics of <paramref name="pid"/>, or null with the reason in
    /// <paramref name="problem"/> (not running under tibet, another user's, ended).</summary>
    public static JsonDocument? TryRead(int pid, out string? problem)
    {
        problem = null;
        int fd = Libc.socket(Libc.AF_UNIX, Libc.SOCK_STREAM | Libc.SOCK_CLOEXEC, 0);
        if (fd < 0)
        {
            problem = $"socket: {Libc.Describe(Libc.LastErrno)}";
            return null;
        }
        try
        {
            Libc.SockAddrUnix address = Libc.SockAddrUnix.Abstract(NamePrefix + pid.ToString(CultureInfo.InvariantCulture), out uint length);
            if (Libc.connect(fd, &address, length) != 0)
            {
                problem = $"pid {pid} does not answer ({Libc.Describe(Libc.LastErrno)}): it is not running under tibet-run, or has ended";
                return null;
            }
            // The name is global: whoever listens must be the process asked about (a forked
            // child keeps its parent's listener, and any user can bind a free name).
            Libc.UCred peer;
            uint credLength = (uint)sizeof(Libc.UCred);
            if (Libc.getsockopt(fd, Libc.SOL_SOCKET, Libc.SO_PEERCRED, &peer, &credLength) != 0 || peer.Pid != pid)
            {
                problem = $"the statistics socket of pid {pid} is held by pid {peer.Pid}: ignored";
                return null;
            }
            // A process that holds the name but never answers (a forked child that kept the
            // listener) must not hang the reader.
            Libc.SetSocketTimeouts(fd, 2);
            var received = new MemoryStream();
            byte[] buffer = new byte[16384];
            fixed (byte* p = buffer)
                while (true)
                {
                    nint n = Libc.recv(fd, p, (nuint)buffer.Length, 0);
                    if (n < 0 && Libc.LastErrno == Libc.EINTR)
                        continue;
                    if (n <= 0)
                        break;
                    received.Write(buffer, 0, (int)n);
                }
            if (received.Length == 0)
            {
                problem = $"pid {pid} answered nothing: it runs as another user (statistics go to the same user and root only), or is busy";
                return null;
            }
            return JsonDocument.Parse(received.ToArray());
        }
        catch (JsonException e)
        {
            problem = $"pid {pid} answered with malformed statistics: {e.Message}";
            return null;
        }
        finally
        {
            Libc.close(fd);
        }
    }

    /// <summary>
    /// The statistics of <paramref name="processes"/> in the Prometheus text format (0.0.4):
    /// one series per process (label pid), and per forked child it serves (labels pid and
    /// child). <c>tibet_up</c> is 0 for a process that did not answer.
    /// </summary>
    public static string ToPrometheus(IEnumerable<(int Pid, JsonDocument? Stats)> processes)
    {
        var list = processes.ToList();
        var text = new StringBuilder();
        void Family(string name, string type, string help, Func<JsonElement, double?> value)
        {
            text.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n');
            text.Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n');
            foreach (var (pid, stats) in list)
                if (stats != null && value(stats.RootElement) is double v)
                    text.Append(name).Append("{pid=\"").Append(pid).Append("\"} ").Append(v.ToString(CultureInfo.InvariantCulture)).Append('\n');
        }
        static double? Number(JsonElement root, string name) =>
            root.ValueKind == JsonValueKind.Object && root.TryGetProperty(name, out JsonElement e) && e.ValueKind == JsonValueKind.Number ? e.GetDouble() : null;

        text.Append("# HELP tibet_up Whether the process answered (1) or not (0).\n# TYPE tibet_up gauge\n");
        foreach (var (pid, stats) in list)
            text.Append("tibet_up{pid=\"").Append(pid).Append("\"} ").Append(stats != null ? 1 : 0).Append('\n');
        Family("tibet_encrypted", "gauge", "Whether the process runs on encrypted RAM (1) or entirely unencrypted (0).",
            r => r.TryGetProperty("encrypted", out JsonElement e) && e.ValueKind is JsonValueKind.True or JsonValueKind.False ? (e.GetBoolean() ? 1 : 0) : null);
        Family("tibet_faults_total", "counter", "Page faults served for the process.", r => Number(r, "faults"));
        Family("tibet_decrypts_total", "counter", "Pages decrypted.", r => Number(r, "decrypts"));
        Family("tibet_evictions_total", "counter", "Pages sealed or dropped to keep the budget.", r => Number(r, "evictions"));
        Family("tibet_resident_bytes", "gauge", "Plaintext bytes resident in arenas.", r => Number(r, "residentBytes"));
        Family("tibet_resident_budget_bytes", "gauge", "The resident plaintext budget (-1: unlimited).", r => Number(r, "residentBudgetBytes"));
        Family("tibet_sealed_bytes", "gauge", "Ciphertext bytes in the sealed-page store.", r => Number(r, "sealedBytes"));
        Family("tibet_authentication_failures_total", "counter", "Sealed pages that failed authentication.", r => Number(r, "authenticationFailures"));
        Family("tibet_forked_children", "gauge", "Forked children served now.", r => Number(r, "forkedChildren"));
        Family("tibet_child_evictions_total", "counter", "Pages forked children's agents took out.", r => Number(r, "childEvictions"));

        text.Append("# HELP tibet_unencrypted_bytes Bytes allocated unencrypted, by reason (see tibet-run --stats).\n# TYPE tibet_unencrypted_bytes counter\n");
        foreach (var (pid, stats) in list)
        {
            if (stats == null || !stats.RootElement.TryGetProperty("unencrypted", out JsonElement unencrypted))
                continue;
            if (unencrypted.ValueKind != JsonValueKind.Object)
                continue;
            foreach (JsonProperty reason in unencrypted.EnumerateObject())
                if (reason.Value.ValueKind == JsonValueKind.Object && Number(reason.Value, "bytes") is double bytes)
                    text.Append("tibet_unencrypted_bytes{pid=\"").Append(pid).Append("\",reason=\"").Append(LabelValue(reason.Name)).Append("\"} ")
                        .Append(bytes.ToString(CultureInfo.InvariantCulture)).Append('\n');
        }

        text.Append("# HELP tibet_child_faults_total Page faults served for a forked child.\n# TYPE tibet_child_faults_total counter\n");
        var clean = new StringBuilder("# HELP tibet_child_clean_resident_bytes Bytes a forked child read from sealed copies and holds, not written.\n# TYPE tibet_child_clean_resident_bytes gauge\n");
        foreach (var (pid, stats) in list)
        {
            if (stats == null || !stats.RootElement.TryGetProperty("children", out JsonElement children) || children.ValueKind != JsonValueKind.Array)
                continue;
            foreach (JsonElement child in children.EnumerateArray())
            {
                if (child.ValueKind != JsonValueKind.Object || Number(child, "pid") is not double childPid)
                    continue;
                string labels = $"{{pid=\"{pid}\",child=\"{childPid.ToString(CultureInfo.InvariantCulture)}\"}}";
                if (Number(child, "faults") is double faults)
                    text.Append("tibet_child_faults_total").Append(labels).Append(' ').Append(faults.ToString(CultureInfo.InvariantCulture)).Append('\n');
                if (Number(child, "cleanResidentBytes") is double cleanBytes)
                    clean.Append("tibet_child_clean_resident_bytes").Append(labels).Append(' ').Append(cleanBytes.ToString(CultureInfo.InvariantCulture)).Append('\n');
            }
        }
        text.Append(clean);
        return text.ToString();
    }

    /// <summary>A label value as the text format allows it: only letters, digits and
    /// underscores pass (the reasons are such names; anything else would break the line).</summary>
    private static string LabelValue(string value)
    {
        var clean = new StringBuilder(value.Length);
        foreach (char c in value)
            clean.Append(char.IsAsciiLetterOrDigit(c) || c == '_' ? c : '_');
        return clean.ToString();
    }
}
