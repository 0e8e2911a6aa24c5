using System.Diagnostics;
using System.Globalization;

namespace Tibet.IntegrationTests.Support;

/// <summary>
/// llama.cpp for the tests: the prebuilt libraries that scripts/install-llama.sh puts in
/// .tools/llama, our C host (native/llama/llama_driver.c), the Go stand-in for Ollama's
/// runner (native/llama/ollama-standin) and generated GGUF models. Each is built or
/// generated once per test run, on first use; a missing prerequisite fails the test with
/// the command that installs it.
/// </summary>
internal static class Llama
{
    /// <summary>The fixed prompt of every run, so that all runs decode the same tokens.</summary>
    public const string Prompt = "Hello";

    private static readonly string WorkDirectory = Path.Combine(Path.GetTempPath(), "tibet-tests");
    private static readonly Lazy<string> DriverBuild = new(BuildDriver);
    private static readonly Lazy<string> StandinBuild = new(BuildOllamaStandin);
    private static readonly Lazy<string[]> GeneratorCommand = new(LocateOrBuildGenerator);
    private static readonly Lazy<GeneratedModel> Small = new(() => Generate("small.gguf", "--preset", "small"));
    private static readonly Lazy<GeneratedModel> Large = new(() => Generate("large.gguf", "--preset", "large"));
    private static readonly Lazy<GeneratedModel> Medium = new(() => Generate("medium.gguf", "--preset", "medium"));

    /// <summary>.tools/llama: lib/ (libllama, libggml*, the CPU backends) and include/.</summary>
    public static string Home
    {
        get
        {
            string home = Path.Combine(RepoPaths.Root, ".tools", "llama");
            if (!File.Exists(Path.Combine(home, "lib", "libllama.so")) || !File.Exists(Path.Combine(home, "include", "llama.h")))
                throw new DirectoryNotFoundException(
                    $"llama.cpp is not installed in {home}: run scripts/install-llama.sh (it fetches node-llama-cpp's prebuilt llama.cpp from npm).");
            return home;
        }
    }

    /// <summary>The C host, llama_driver (see its header for options and output).</summary>
    public static string Driver => DriverBuild.Value;

    /// <summary>The Go host with llama.cpp inside through cgo; same options and output as <see cref="Driver"/>.</summary>
    public static string OllamaStandin => StandinBuild.Value;

    /// <summary>The small preset (2 layers, ~2 MB, F32), seed 1.</summary>
    public static GeneratedModel SmallModel => Small.Value;

    /// <summary>The large preset (~1 GiB, Q8_0), seed 1.</summary>
    public static GeneratedModel LargeModel => Large.Value;

    /// <summary>About 100 MB (Q8_0): larger than a 2 MiB page many times over.</summary>
    public static GeneratedModel MediumModel => Medium.Value;

    /// <summary>Writes a model into the tests' work directory with tibet-gguf-gen.</summary>
    /// <param name="fileName">The file's name; a run regenerates it, never reuses an old one.</param>
    /// <param name="options">tibet-gguf-gen's options other than --out.</param>
    public static GeneratedModel Generate(string fileName, params string[] options)
    {
        string path = Path.Combine(WorkDirectory, "llama-models", fileName);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        string[] command = GeneratorCommand.Value;
        string[] arguments = [.. command[1..], "--out", path, .. options];
        var result = TibetRun.Run(command[0], arguments, TimeSpan.FromMinutes(10));
        if (result.ExitCode != 0)
            throw new InvalidOperationException($"tibet-gguf-gen {string.Join(' ', arguments)} failed:\n{result}");
        var lines = KeyValueLines.Parse(result.Stdout);
        return new GeneratedModel(path, long.Parse(lines.Single("size"), CultureInfo.InvariantCulture), lines.Single("sha256"),
            lines.TryGet("canary_offset") is { } offset ? long.Parse(offset, CultureInfo.InvariantCulture) : null);
    }

    /// <summary>The arguments of a run of <see cref="Driver"/> or <see cref="OllamaStandin"/>.</summary>
    public static string[] Arguments(string model, int tokens, string load = "mmap") =>
        ["--model", model, "--tokens", tokens.ToString(CultureInfo.InvariantCulture), "--prompt", Prompt, "--load", load];

    /// <summary>Runs a host natively and parses its output; fails on a non-zero exit.</summary>
    public static LlamaOutput RunNative(string host, string model, int tokens, string load = "mmap")
    {
        var result = TibetRun.Run(host, Arguments(model, tokens, load), TimeSpan.FromMinutes(10));
        if (result.ExitCode != 0)
            throw new InvalidOperationException($"{Path.GetFileName(host)} failed:\n{result}");
        return LlamaOutput.Parse(result.Stdout);
    }

    private static string LibraryDirectory => Path.Combine(Home, "lib");

    private static string BuildDriver()
    {
        string lib = LibraryDirectory;
        return NativeBuild.Compile(Path.Combine("llama", "llama_driver.c"),
            "-I" + Path.Combine(Home, "include"), "-L" + lib, "-Wl,-rpath," + lib, "-lllama", "-lggml");
    }

    private static string BuildOllamaStandin()
    {
        string go = TibetRun.Require("go", "golang-go");
        string source = Path.Combine(AppContext.BaseDirectory, "native", "llama", "ollama-standin");
        string output = Path.Combine(WorkDirectory, "ollama-standin");
        string lib = LibraryDirectory;
        var environment = new Dictionary<string, string>
        {
            ["CGO_ENABLED"] = "1",
            ["CGO_CFLAGS"] = "-O2 -I" + Path.Combine(Home, "include"),
            ["CGO_LDFLAGS"] = $"-L{lib} -Wl,-rpath,{lib}",
            // Offline: go.mod has no requirements, so nothing may be fetched.
            ["GOFLAGS"] = "-mod=mod",
            ["GOPROXY"] = "off",
            ["GOTOOLCHAIN"] = "local",
            // Independent of HOME, which test runners may leave unset.
            ["GOCACHE"] = Path.Combine(WorkDirectory, "go-cache"),
            ["GOPATH"] = Path.Combine(WorkDirectory, "go-path"),
        };
        var result = RunIn(source, go, ["build", "-o", output, "."], environment);
        if (result.ExitCode != 0)
            throw new InvalidOperationException($"go build of the Ollama stand-in failed:\n{result}");
        return output;
    }

    /// <summary>The command that runs tibet-gguf-gen: the installed out/bin/tibet-gguf-gen
    /// when scripts/build.sh has made it, else the project built here in Debug.</summary>
    private static string[] LocateOrBuildGenerator()
    {
        string installed = Path.Combine(RepoPaths.Root, "out", "bin", "tibet-gguf-gen");
        if (File.Exists(installed))
            return [installed];
        string project = Path.Combine(RepoPaths.Root, "tools", "Tibet.GgufGen", "Tibet.GgufGen.csproj");
        var build = TibetRun.Run("dotnet", ["build", project, "-c", "Debug", "--nologo", "-v", "q"], TimeSpan.FromMinutes(10));
        if (build.ExitCode != 0)
            throw new InvalidOperationException($"building tools/Tibet.GgufGen failed:\n{build}");
        string assembly = Path.Combine(RepoPaths.Root, "tools", "Tibet.GgufGen", "bin", "Debug", "net10.0", "tibet-gguf-gen.dll");
        if (!File.Exists(assembly))
            throw new FileNotFoundException("the build of tools/Tibet.GgufGen left no tibet-gguf-gen.dll", assembly);
        return ["dotnet", assembly];
    }

    private static TibetRun.Result RunIn(string directory, string program, string[] args, Dictionary<string, string> environment)
    {
        var start = new ProcessStartInfo(program)
        {
            WorkingDirectory = directory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var a in args) start.ArgumentList.Add(a);
        foreach (var (name, value) in environment) start.Environment[name] = value;
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"cannot start {program}");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(10)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{program} {string.Join(' ', args)} did not finish in 10 minutes");
        }
        process.WaitForExit();
        return new TibetRun.Result(process.ExitCode, stdout.Result, stderr.Result, null);
    }
}

/// <summary>A model written by tibet-gguf-gen.</summary>
/// <param name="CanaryOffset">Where --canary put its bytes in the file, if given.</param>
internal sealed record GeneratedModel(string Path, long Size, string Sha256, long? CanaryOffset);

/// <summary>What llama_driver and the Ollama stand-in print.</summary>
internal sealed record LlamaOutput(double LoadMilliseconds, int[] PromptTokens, int[] Tokens, string Hash, double TokensPerSecond)
{
    public static LlamaOutput Parse(string stdout)
    {
        var lines = KeyValueLines.Parse(stdout);
        return new LlamaOutput(
            double.Parse(lines.Single("load_ms"), CultureInfo.InvariantCulture),
            ParseIds(lines.Single("prompt_tokens")),
            ParseIds(lines.Single("tokens")),
            lines.Single("hash"),
            double.Parse(lines.Single("tokens_per_second"), CultureInfo.InvariantCulture));
    }

    /// <summary>FNV-1a 64 over the ids as 4 little-endian bytes each, as both hosts
    /// compute their hash line.</summary>
    public static string HashOf(IEnumerable<int> ids)
    {
        ulong hash = 0xcbf29ce484222325;
        foreach (int id in ids)
            for (int shift = 0; shift < 32; shift += 8)
            {
                hash ^= (byte)((uint)id >> shift);
                hash *= 0x100000001b3;
            }
        return hash.ToString("x16", CultureInfo.InvariantCulture);
    }

    private static int[] ParseIds(string text) =>
        text.Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(id => int.Parse(id, CultureInfo.InvariantCulture)).ToArray();
}

/// <summary>"key: value" lines, the output format of the llama hosts and tibet-gguf-gen.</summary>
internal sealed class KeyValueLines
{
    private readonly Dictionary<string, string> _values;
    private readonly string _text;

    private KeyValueLines(Dictionary<string, string> values, string text) => (_values, _text) = (values, text);

    public static KeyValueLines Parse(string text)
    {
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            int colon = line.IndexOf(':');
            if (colon > 0)
                values[line[..colon]] = line[(colon + 1)..].Trim();
        }
        return new KeyValueLines(values, text);
    }

    public string Single(string key) =>
        _values.TryGetValue(key, out string? value) ? value : throw new FormatException($"no '{key}:' line in:\n{_text}");

    public string? TryGet(string key) => _values.GetValueOrDefault(key);
}
