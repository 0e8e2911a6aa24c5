using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Tibet.Core.Diagnostics;
using Tibet.Core.Interop;

namespace Tibet.Launcher;

/// <summary>
/// In the custodian: keeps the program's latest statistics while it runs, and when the
/// program ends without writing its own (<c>--stats-json</c>, <c>--stats</c>), writes and
/// prints those, marked as such.
/// </summary>
/// <remarks>
/// <para>Why: the program writes its statistics in its exit handler, and a program killed
/// by a signal (SIGKILL from a supervisor or the OOM killer, a crash) or ending by
/// <c>_exit</c> runs none. The user asked for the file and would find nothing, or last
/// run's. The custodian outlives the program (tibet-run becomes the program; the custodian
/// is not its child, so it cannot learn how it ended).</para>
/// <para>How: every second while the program lives, its live statistics
/// (<see cref="LiveStatsClient"/>: the same JSON as the exit file, the custodian's part
/// included) are read and kept. When the program's pidfd reads ready, the file is looked
/// at: written since the program started (its size or modification time changed), it is
/// the program's, and left alone; else the last figures are written with
/// <c>"endedWithoutStatistics": true</c> and the age of the figures. With --stats alone
/// the program writes to a file of the run's (tibet-run names it in /tmp), which tells
/// the same, and is removed here.</para>
/// </remarks>
internal sealed class StatisticsWitness
{
    /// <summary>The custodian's environment: the --stats-json path (tibet-run's %p pattern
    /// allowed), or with --stats alone the run's own file the program writes them to (read
    /// and removed here), and "1" for --stats.</summary>
    public const string JsonVariable = "TIBET_WITNESS_STATS_JSON", PrivateJsonVariable = "TIBET_WITNESS_STATS_PRIVATE",
        SummaryVariable = "TIBET_WITNESS_STATS_SUMMARY";

    // Read often at first, so that a program killed early still leaves figures, then once a second.
    private static readonly TimeSpan FirstInterval = TimeSpan.FromMilliseconds(100), Interval = TimeSpan.FromSeconds(1);
    private const int FirstReads = 10;

    private readonly int _programFd;
    private readonly int _pid;
    private readonly string _path;
    private readonly bool _private; // the run's own file, not the user's: removed, never written here
    private readonly bool _summary;
    private readonly (bool Exists, long Length, DateTime Modified) _before;
    private string? _last;
    private DateTime _lastAt;
    private readonly ManualResetEventSlim _done = new();

    private StatisticsWitness(int programFd, int pid, string path, bool isPrivate, bool summary)
    {
        _programFd = programFd;
        _pid = pid;
        _path = path;
        _private = isPrivate;
        _summary = summary;
        _before = Look(path);
    }

    /// <summary>Starts watching program <paramref name="pid"/> (through a duplicate of its
    /// pidfd <paramref name="programFd"/>) when tibet-run asked for statistics; null when
    /// it did not.</summary>
    public static StatisticsWitness? Start(int programFd, int pid)
    {
        string? path = Environment.GetEnvironmentVariable(JsonVariable) is { Length: > 0 } pattern
            ? pattern.Replace("%p", pid.ToString(CultureInfo.InvariantCulture), StringComparison.Ordinal)
            : null;
        string? own = path == null && Environment.GetEnvironmentVariable(PrivateJsonVariable) is { Length: > 0 } file && IsRunFile(file, pid) ? file : null;
        bool summary = Environment.GetEnvironmentVariable(SummaryVariable) == "1";
        if ((path ?? own) is not { } watched || pid <= 0)
            return null;
        int fd = Libc.fcntl(programFd, Libc.F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
            return null;
        var witness = new StatisticsWitness(fd, pid, watched, isPrivate: own != null, summary);
        new Thread(witness.Watch) { IsBackground = true, Name = "tibet-witness" }.Start();
        return witness;
    }

    private unsafe void Watch()
    {
        for (int reads = 0; ; reads++)
        {
            Libc.PollFd ended = new() { Fd = _programFd, Events = Libc.POLLIN };
            int ready = Libc.poll(&ended, 1, (int)(reads < FirstReads ? FirstInterval : Interval).TotalMilliseconds);
            if (ready < 0 && Libc.LastErrno == Libc.EINTR)
                continue;
            if (ready != 0)
                break;
            using JsonDocument? now = LiveStatsClient.TryRead(_pid, out _);
            if (now != null)
            {
                _last = now.RootElement.GetRawText();
                _lastAt = DateTime.UtcNow;
            }
        }
        try
        {
            ProgramEnded();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException)
        {
            Console.Error.WriteLine($"tibet-run: the program ended without writing its statistics, and they cannot be written to {_path}: {e.Message}");
        }
        finally
        {
            Libc.close(_programFd);
            _done.Set();
        }
    }

    /// <summary>Waits (at most <paramref name="timeout"/>) until the program has ended and
    /// what it left undone is written: the custodian must not end before.</summary>
    public void WaitDone(TimeSpan timeout) => _done.Wait(timeout);

    // The custodian is not the program's parent: it cannot tell which.
    private const string HowItMayEnd = "killed by a signal, ended by _exit, or became by exec a program tibet does not reach";

    private void ProgramEnded()
    {
        bool written = Look(_path) != _before;
        if (_private)
            File.Delete(_path);
        if (written)
            return; // the program wrote (and printed) its own
        double age = (DateTime.UtcNow - _lastAt).TotalSeconds;
        if (_last == null)
        {
            Console.Error.WriteLine($"tibet-run: the program (pid {_pid}) ended without writing its statistics ({HowItMayEnd}), " +
                                    "before the custodian had read any: there are none" + (_private ? "." : $"; {_path} was not written."));
            return;
        }
        var json = JsonNode.Parse(_last)!.AsObject();
        json["endedWithoutStatistics"] = true;
        json["secondsBeforeEnd"] = Math.Round(age, 1);
        string text = json.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
        Console.Error.WriteLine($"tibet-run: the program (pid {_pid}) ended without writing its statistics ({HowItMayEnd}); " +
                                $"its figures from {age:F1} s before it ended follow" + (_private ? "." : $", and are in {_path}."));
        if (!_private)
            File.WriteAllText(_path, text);
        if (_summary)
            StatsSummary.Print(text, $"pid {_pid} (its last figures)", line => Console.Error.WriteLine(line));
    }

    /// <summary>Whether <paramref name="path"/> has the shape of the file tibet-run names for
    /// a run of <paramref name="pid"/> (tibet-stats-PID-16 hex digits.json), the only kind
    /// the custodian removes.</summary>
    internal static bool IsRunFile(string path, int pid)
    {
        string name = Path.GetFileName(path);
        string prefix = $"tibet-stats-{pid.ToString(CultureInfo.InvariantCulture)}-";
        return Path.IsPathRooted(path) && name.StartsWith(prefix, StringComparison.Ordinal) && name.EndsWith(".json", StringComparison.Ordinal)
            && name.Length == prefix.Length + 16 + 5 && name.AsSpan(prefix.Length, 16).IndexOfAnyExcept("0123456789abcdef") < 0;
    }

    /// <summary>The name tibet-run gives the run's own file (see <see cref="IsRunFile"/>).</summary>
    public static string RunFile(int pid) =>
        Path.GetFullPath(Path.Combine(Path.GetTempPath(), $"tibet-stats-{pid.ToString(CultureInfo.InvariantCulture)}-{Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(8))}.json"));

    private static (bool Exists, long Length, DateTime Modified) Look(string path)
    {
        var file = new FileInfo(path);
        return file.Exists ? (true, file.Length, file.LastWriteTimeUtc) : default;
    }
}
