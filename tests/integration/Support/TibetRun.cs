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

    private static readonly Lazy<string> SharedLibrary = new(() => OperatingSystem.IsLinux() ? CopyLibraryForOtherUsers() : throw new PlatformNotSupportedException("tibet runs on Linux only"));

    /// <summary>
    /// libtibet.so (with the libsodium.so beside it) where any user can load it, for runs
    /// as another user (nobody). The checkout itself may not be reachable for them: CI
    /// clones into a mktemp directory, which is mode 0700, and ld.so then refuses the
    /// preload as "cannot open shared object file".
    /// </summary>
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public static string LibraryForOtherUsers => SharedLibrary.Value;

    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    private static string CopyLibraryForOtherUsers()
    {
        _ = Launcher; // fails with the build instruction when out/ is missing
        var directory = Directory.CreateTempSubdirectory("tibet-shared-lib-");
        File.SetUnixFileMode(directory.FullName, (UnixFileMode)0b111_101_101);
        foreach (string name in (string[])["libtibet.so", "libsodium.so"])
        {
            string copy = Path.Combine(directory.FullName, name);
            File.Copy(Path.Combine(RepoPaths.Root, "out", "lib", name), copy);
            File.SetUnixFileMode(copy, (UnixFileMode)0b111_101_101);
        }
        // A test that runs as another user must reach the copy: say so if it cannot.
        for (string? parent = directory.Parent?.FullName; parent != null; parent = Path.GetDirectoryName(parent))
            if ((File.GetUnixFileMode(parent) & UnixFileMode.OtherExecute) == 0)
                throw new InvalidOperationException($"{parent} is not searchable by other users, so tests that run as nobody cannot load the interposer; set TMPDIR to a directory others can reach (such as /tmp)");
        return Path.Combine(directory.FullName, "libtibet.so");
    }

    /// <summary>Runs <paramref name="command"/> under tibet-run with <paramref name="options"/>,
    /// collecting the interposer's statistics.</summary>
    /// <param name="environment">Variables to set for tibet-run (a null value removes one).</param>
    public static Result Encrypted(string[] options, string[] command, TimeSpan? timeout = null, string? stdin = null,
        IDictionary<string, string?>? environment = null)
    {
        string statsFile = Path.Combine(Path.GetTempPath(), $"tibet-stats-{Guid.NewGuid():N}.json");
        try
        {
            var result = Run(Launcher, [.. options, "--stats-json", statsFile, "--", .. command], timeout, stdin, environment);
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
            string state = ProcessTree.Describe(process.Id);
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            throw new TimeoutException($"{program} {string.Join(' ', args)} did not finish in time\n{state}stdout: {stdout.Result}\nstderr: {stderr.Result}");
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
