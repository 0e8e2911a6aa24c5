using System.CommandLine;
using Tibet.Bench;
using Tibet.Core.Paging;

var jsonOption = new Option<FileInfo?>("--json")
{
    Description = "Write the final engine statistics (demo and budget run) as JSON to this file.",
};
var spaceshuttle = new Command("spaceshuttle",
    "Demo: 64 pages of 4 KiB written, sealed with AES-256-GCM, evicted and read back through page faults; then the same under a 16-page resident budget; then as a sealed model read with a valid claim (live) and invalid ones (dead material).");
spaceshuttle.Options.Add(jsonOption);
spaceshuttle.SetAction(parseResult => Guard(() => SpaceShuttle.Run(parseResult.GetValue(jsonOption))));

var maxPagesOption = new Option<int>("--max-pages")
{
    Description = "Largest arena to measure, in 4 KiB pages (sizes are 64, 256, 1024, 4096, 16384).",
    DefaultValueFactory = _ => 16384,
};
var repeatOption = new Option<int>("--repeat")
{
    Description = "Runs per measurement; the median is reported.",
    DefaultValueFactory = _ => 3,
};
maxPagesOption.Validators.Add(result =>
{
    if (result.GetValueOrDefault<int>() < 1) result.AddError("--max-pages must be at least 1.");
});
repeatOption.Validators.Add(result =>
{
    if (result.GetValueOrDefault<int>() < 1) result.AddError("--repeat must be at least 1.");
});
var markdownOption = new Option<FileInfo?>("--markdown")
{
    Description = "Also write the result table as Markdown (with date, kernel, CPU) to this file, e.g. bench/results/DATE-scaletest.md.",
};
var scaletestJsonOption = new Option<FileInfo?>("--json")
{
    Description = "Also write every measurement and the summary against the targets as JSON (with date and machine) to this file.",
};
var handlerPerCpuOption = new Option<bool>("--handler-per-cpu")
{
    Description = "Run the engines with a handler thread per CPU, the one on the faulting thread's CPU serving (EngineOptions.HandlerPerCpu, TIBET_HANDLER_PER_CPU=1 under tibet-run); default: one handler.",
};
var scaletest = new Command("scaletest",
    "Benchmark: page-by-page reads of sealed arenas (64 to 16384 pages), encrypt-only and zstd+encrypt, with AES-256-GCM and AEGIS-256, random and text-like data, beside native memory.");
scaletest.Options.Add(maxPagesOption);
scaletest.Options.Add(repeatOption);
scaletest.Options.Add(scaletestJsonOption);
scaletest.Options.Add(markdownOption);
scaletest.Options.Add(handlerPerCpuOption);
scaletest.SetAction(parseResult => Guard(() => ScaleTest.Run(
    parseResult.GetValue(maxPagesOption), parseResult.GetValue(repeatOption),
    parseResult.GetValue(scaletestJsonOption), parseResult.GetValue(markdownOption),
    parseResult.GetValue(handlerPerCpuOption))));

var modelOption = new Option<FileInfo>("--model")
{
    Description = "The GGUF model to shuttle through the arena (make a ~1 GiB one with: tibet-gguf-gen --preset large --out FILE).",
    Required = true,
};
var shuttleMarkdownOption = new Option<FileInfo?>("--markdown")
{
    Description = "Also write the result table as Markdown (with date, kernel, CPU) to this file, e.g. bench/results/DATE-gguf-shuttle.md.",
};
var shuttleJsonOption = new Option<FileInfo?>("--json")
{
    Description = "Also write every row of the table (null where not measured) as JSON (with date and machine) to this file.",
};
var ggufShuttle = new Command("gguf-shuttle",
    "Benchmark: a GGUF model's weights imported into an encrypted arena and read back page by page, 64 MiB up to the whole model, beside a plain map of the file.");
ggufShuttle.Options.Add(modelOption);
ggufShuttle.Options.Add(shuttleMarkdownOption);
ggufShuttle.Options.Add(shuttleJsonOption);
ggufShuttle.SetAction(parseResult => Guard(() => GgufShuttle.Run(
    parseResult.GetValue(modelOption)!, parseResult.GetValue(shuttleMarkdownOption), parseResult.GetValue(shuttleJsonOption))));

var budgetPagesOption = new Option<int>("--budget-pages")
{
    Description = "The resident budget, in 4 KiB pages; arenas are 2× and 4× this.",
    DefaultValueFactory = _ => 4096,
};
budgetPagesOption.Validators.Add(result =>
{
    if (result.GetValueOrDefault<int>() is < 64 or > 1 << 20) result.AddError("--budget-pages must be 64 to 1048576.");
});
var evictionJsonOption = new Option<FileInfo?>("--json") { Description = "Write the results as JSON to this file." };
var evictionMarkdownOption = new Option<FileInfo?>("--markdown") { Description = "Also write the table as Markdown to this file." };
var eviction = new Command("eviction",
    "Benchmark: hit rates of the eviction policies (fifo, scan-resistant) under cyclic, uniform and Zipfian access over 2× and 4× the budget, beside the optimum.");
eviction.Options.Add(budgetPagesOption);
eviction.Options.Add(evictionJsonOption);
eviction.Options.Add(evictionMarkdownOption);
eviction.SetAction(parseResult => Guard(() => EvictionBench.Run(
    parseResult.GetValue(budgetPagesOption), parseResult.GetValue(evictionJsonOption), parseResult.GetValue(evictionMarkdownOption))));

var root = new RootCommand("tibet-bench: demos and benchmarks of the tibet encrypted-RAM page engine.");
root.Subcommands.Add(spaceshuttle);
root.Subcommands.Add(scaletest);
root.Subcommands.Add(ggufShuttle);
root.Subcommands.Add(eviction);
return root.Parse(args).Invoke();

static int Guard(Func<int> run)
{
    try
    {
        return run();
    }
    catch (UserfaultfdUnavailableException e)
    {
        Console.Error.WriteLine($"tibet-bench: userfaultfd cannot be used here: {e.Message}");
        return 2;
    }
}
