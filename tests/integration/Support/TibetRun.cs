using System.Diagnostics;
using System.Text.Json;

namespace Tibet.IntegrationTests.Support;

/// <summary>Runs real programs natively and under out/bin/tibet-run.</summary>
internal static class TibetRun
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr, JsonElement? Stats)
    {
        public long Stat(string name) => Stats is { } s && s.TryGetProperty(name, out var v) ? v.GetInt64()
            : throw new InvalidOperationException($"no statistic '{name}' (the program never loaded libtibet.so?)\nstderr: {Stderr}");

        public override string ToString() => $"exit {ExitCode}\nstdout: {Stdout}\nstderr: {Stderr}\nstats: {Stats}";
    }

    public static string Launcher
    {
        get
        {
            string path = Path.Combine(RepoPaths.Root, "out", "bin", "tibet-run");
            if (!File.Exists(path) || !File.Exists(Path.Combine(RepoPaths.Root, "out", "lib", "libtibet.so")))
                throw new FileNotFoundException("out/bin/tibet-run or out/lib/libtibet.so is missing: run scripts/build.sh first", path);
            return path;
        }
    }

    /// <summary>Runs <paramref name="command"/> under tibet-run with <paramref name="options"/>,
    /// collecting the interposer's statistics.</summary>
    public static Result Encrypted(string[] options, string[] command, TimeSpan? timeout = null, string? stdin = null)
    {
        string statsFile = Path.Combine(Path.GetTempPath(), $"tibet-stats-{Guid.NewGuid():N}.json");
        try
        {
            var result = Run(Launcher, [.. options, "--stats-json", statsFile, "--", .. command], timeout, stdin);
            JsonElement? stats = File.Exists(statsFile) ? JsonDocument.Parse(File.ReadAllText(statsFile)).RootElement.Clone() : null;
            return result with { Stats = stats };
        }
        finally
        {
            File.Delete(statsFile);
        }
    }

    public static Result Native(string[] command, TimeSpan? timeout = null, string? stdin = null) =>
        Run(command[0], command[1..], timeout, stdin);

    /// <param name="environment">Variables to set (a null value removes one) on top of this process's.</param>
    public static Result Run(string program, string[] args, TimeSpan? timeout = null, string? stdin = null, IDictionary<string, string?>? environment = null)
    {
        var start = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = stdin != null,
            UseShellExecute = false,
        };
        foreach (var a in args) start.ArgumentList.Add(a);
        foreach (var (name, value) in environment ?? new Dictionary<string, string?>())
        {
            if (value == null) start.Environment.Remove(name);
            else start.Environment[name] = value;
        }
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"cannot start {program}");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (stdin != null)
        {
            process.StandardInput.Write(stdin);
            process.StandardInput.Close();
        }
        if (!process.WaitForExit(timeout ?? TimeSpan.FromMinutes(3)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{program} {string.Join(' ', args)} did not finish in time\nstdout so far: {stdout}");
        }
        process.WaitForExit();
        return new Result(process.ExitCode, stdout.Result, stderr.Result, null);
    }

    /// <summary>Finds a tool on PATH, or fails naming the package that provides it.</summary>
    public static string Require(string tool, string package)
    {
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':'))
        {
            string candidate = Path.Combine(dir, tool);
            if (File.Exists(candidate)) return candidate;
        }
        throw new InvalidOperationException($"'{tool}' is not installed: install the Debian package '{package}' (scripts/install-deps.sh does).");
    }
}
