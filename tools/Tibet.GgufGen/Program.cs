using System.CommandLine;
using System.Diagnostics;
using Tibet.Core.Gguf;
using Tibet.GgufGen;

// tibet-gguf-gen: makes the llama-architecture GGUF models the tests run llama.cpp on.
return GeneratorCommand.Run(args);

internal static class GeneratorCommand
{
    private const int ExitFailed = 1;

    private const string Description = """
        Usage: tibet-gguf-gen --out PATH --preset small|medium|large [--type f32|f16|q8_0] [--seed N] [--canary HEX]

        Writes a llama-architecture GGUF model with seeded random weights and a byte-level
        SentencePiece vocabulary (<unk>, <s>, </s>, <0x00>..<0xFF>, <reserved>) that llama.cpp
        loads and greedy-decodes deterministically. The same options always give the same file.

        Presets: small is 2 layers of width 128 (about 2 MB at the default f32); medium has
        large's layers, as many as make about 100 MB (2 at q8_0); large is
        2048-wide TinyLlama-shaped layers, as many as make about 1 GiB in the chosen type
        (default q8_0: 22 layers; f16: 12).

        --canary HEX plants those bytes at the start of the <reserved> token's row of
        token_embd.weight (the last row). That row is read by neither a prompt nor greedy
        decoding, so the generated tokens are the same with or without a canary.

        Prints key: value lines: path, preset, type, layers, size, sha256, canary_offset (the
        canary's absolute file offset, with --canary), elapsed_ms.
        """;

    public static int Run(string[] args)
    {
        var output = new Option<string>("--out") { Description = "The GGUF file to write (replaced if it exists).", HelpName = "PATH", Required = true };
        var preset = new Option<string>("--preset") { Description = "small (~2 MB), medium (~100 MB) or large (~1 GiB).", HelpName = "small|medium|large", Required = true };
        preset.AcceptOnlyFromAmong("small", "medium", "large");
        var type = new Option<string?>("--type") { Description = "Weight matrix type. Default: f32 for small, q8_0 for large.", HelpName = "f32|f16|q8_0" };
        type.AcceptOnlyFromAmong("f32", "f16", "q8_0");
        var seed = new Option<ulong>("--seed") { Description = "Seed of the random weights.", DefaultValueFactory = _ => 1 };
        var canary = new Option<string?>("--canary") { Description = "Bytes to plant in the tensor data, as hex.", HelpName = "HEX" };

        var root = new RootCommand(Description) { output, preset, type, seed, canary };
        int exitCode = ExitFailed;
        root.SetAction(result =>
        {
            exitCode = Generate(result.GetValue(output)!, result.GetValue(preset)!, result.GetValue(type),
                result.GetValue(seed), result.GetValue(canary));
        });
        ParseResult parsed = root.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            foreach (var error in parsed.Errors)
                Console.Error.WriteLine($"tibet-gguf-gen: {error.Message}");
            return ExitFailed;
        }
        int invoked = parsed.Invoke();
        return invoked != 0 ? invoked : exitCode;
    }

    private static int Generate(string path, string preset, string? typeName, ulong seed, string? canaryHex)
    {
        byte[]? canary;
        try
        {
            canary = canaryHex == null ? null : Convert.FromHexString(canaryHex);
        }
        catch (FormatException)
        {
            Console.Error.WriteLine($"tibet-gguf-gen: --canary '{canaryHex}' is not an even number of hex digits");
            return ExitFailed;
        }
        if (canary is { Length: 0 })
        {
            Console.Error.WriteLine("tibet-gguf-gen: --canary must hold at least one byte");
            return ExitFailed;
        }
        GgmlType? type = typeName switch
        {
            "f32" => GgmlType.F32,
            "f16" => GgmlType.F16,
            "q8_0" => GgmlType.Q8_0,
            _ => null,
        };
        var spec = ModelSpec.ForPreset(preset, type);

        var stopwatch = Stopwatch.StartNew();
        GeneratedModel model;
        try
        {
            model = ModelGenerator.Generate(path, spec, seed, canary);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            Console.Error.WriteLine($"tibet-gguf-gen: cannot write {path}: {e.Message}");
            return ExitFailed;
        }

        var lines = new List<string>
        {
            $"path: {Path.GetFullPath(path)}",
            $"preset: {preset}",
            $"type: {spec.WeightType}",
            $"layers: {spec.LayerCount}",
            $"size: {model.Size}",
            $"sha256: {Convert.ToHexStringLower(model.Sha256)}",
        };
        if (model.CanaryOffset is long offset)
            lines.Add($"canary_offset: {offset}");
        lines.Add($"elapsed_ms: {stopwatch.ElapsedMilliseconds}");
        foreach (var line in lines)
            Console.WriteLine(line);
        return 0;
    }
}
