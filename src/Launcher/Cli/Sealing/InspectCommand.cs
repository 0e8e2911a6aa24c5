using System.CommandLine;
using Tibet.Core.Gguf;
using Tibet.Core.Identity;
using Tibet.Core.Sealing;

namespace Tibet.Cli.Sealing;

/// <summary><c>tibet inspect SEALED.gguf</c>: what a sealed model requires, without
/// decrypting anything.</summary>
internal static class InspectCommand
{
    // Shown when present: what a person needs to recognise the model.
    private static readonly string[] DescriptiveKeys =
        ["general.architecture", "general.name", "general.basename", "general.size_label", "general.file_type", "general.quantization_version"];

    public static Command Create()
    {
        var file = new Argument<string>("SEALED.gguf") { Description = "A sealed model." };
        var command = new Command("inspect",
            "Print what a sealed model requires (clearance, trusted issuers, recipients) and what it is, without decrypting it. " +
            "Nothing printed is authenticated until 'tibet unseal' or tibet-run checks the seal.");
        command.Arguments.Add(file);
        command.SetAction(result => SealingConsole.Guarded(() => Run(result.GetValue(file)!)));
        return command;
    }

    private static int Run(string path)
    {
        using var model = SealedModel.Open(path);
        var requirements = model.Requirements;
        var header = model.Header;

        Console.WriteLine($"file         {path}");
        Console.WriteLine($"format       sealed GGUF v{header.Version}, seal version {requirements.Version}");
        Console.WriteLine($"file id      {requirements.FileIdHex}");
        Console.WriteLine($"clearance    {ClearanceLevelNames.ToName(requirements.Clearance)} or higher");
        Console.WriteLine($"scope        {(requirements.Scope == null ? "any (the model names none)" : requirements.Scope + " (the claim must cover it)")}");
        foreach (var issuer in requirements.TrustedIssuers)
            Console.WriteLine($"issuer       {issuer.Fingerprint}");
        foreach (var recipient in requirements.Recipients)
            Console.WriteLine($"recipient    {recipient}");
        Console.WriteLine($"data pages   {model.DataPages} of {SealedModel.PageSize} bytes ({SealingConsole.Megabytes(model.DataPages * SealedModel.PageSize)}) from byte {model.DataOffset}");
        Console.WriteLine($"tensors      {header.Tensors.Count}");
        Console.WriteLine($"metadata     {header.Metadata.Count(entry => !entry.Key.StartsWith("tibet.", StringComparison.Ordinal))} entries");
        foreach (string key in DescriptiveKeys)
        {
            if (header.Metadata.TryGetValue(key, out var value))
                Console.WriteLine($"{key,-28} {Describe(value)}");
        }
        Console.WriteLine("note         read from the header without decrypting; none of it is authenticated until the seal is checked");
        return ExitCodes.Success;
    }

    private static string Describe(GgufValue value) =>
        value.TryGetString(out string text) ? SealingConsole.Printable(text) : SealingConsole.Printable(value.ToString());
}
