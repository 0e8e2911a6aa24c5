using System.CommandLine;
using System.Diagnostics;
using Tibet.Core.Gguf;
using Tibet.Core.Identity;
using Tibet.Core.Sealing;

namespace Tibet.Cli.Sealing;

/// <summary><c>tibet seal MODEL.gguf --to RECIPIENT.pub... --clearance LEVEL --issuer ISSUER.pub... --out SEALED.gguf</c>.</summary>
internal static class SealCommand
{
    public static Command Create()
    {
        var model = new Argument<string>("MODEL.gguf") { Description = "The plain GGUF model to seal." };
        var recipients = new Option<string[]>("--to")
        {
            Description = "An identity that may open the model: its .pub (or .id). Repeat --to for each recipient.",
            HelpName = "RECIPIENT.pub",
            Arity = ArgumentArity.OneOrMore,
            Required = true,
        };
        var clearance = new Option<string>("--clearance")
        {
            Description = $"The lowest clearance a recipient's claim must grant: {ClearanceLevelNames.Syntax}.",
            HelpName = "LEVEL",
            Required = true,
        };
        var issuers = new Option<string[]>("--issuer")
        {
            Description = "A claim issuer the sealed model trusts: its .pub. Repeat --issuer for each.",
            HelpName = "ISSUER.pub",
            Arity = ArgumentArity.OneOrMore,
            Required = true,
        };
        var scope = new Option<string?>("--scope")
        {
            Description = "Open only with a claim that covers this scope (tibet claim issue --scope); a claim issued without scopes covers every scope.",
            HelpName = "LABEL",
        };
        var output = new Option<string>("--out", "-o")
        {
            Description = "Where to write the sealed model; the file must not exist. It appears only when complete.",
            HelpName = "SEALED.gguf",
            Required = true,
        };

        var command = new Command("seal",
            "Encrypt a GGUF model so that only the recipients, each with a claim of at least LEVEL from a trusted issuer, can use it. " +
            "The result is still a GGUF file: its metadata and tensor table stay readable, its tensor data is AES-256-GCM ciphertext.");
        command.Arguments.Add(model);
        foreach (Option option in new Option[] { recipients, clearance, issuers, scope, output })
            command.Options.Add(option);
        command.SetAction(result => SealingConsole.Guarded(() => Run(
            result.GetValue(model)!,
            result.GetValue(recipients) ?? [],
            TibetCommand.ParseLevel("--clearance", result.GetValue(clearance)!),
            result.GetValue(issuers) ?? [],
            result.GetValue(scope),
            result.GetValue(output)!)));
        return command;
    }

    private static int Run(string modelPath, string[] recipientPaths, ClearanceLevel clearance, string[] issuerPaths, string? scope, string outputPath)
    {
        if (scope != null && !Claim.IsValidScope(scope))
            throw new CommandLineException($"--scope '{scope}' is not a valid scope; use 1..{Claim.MaxScopeLength} characters of A-Z a-z 0-9 . _ : / @ + -.");
        var recipients = ReadDistinct("--to", recipientPaths);
        var issuers = ReadDistinct("--issuer", issuerPaths);
        long total;
        try
        {
            total = ModelSealer.SealedDataBytes(GgufFile.Read(modelPath));
        }
        catch (GgufFormatException e)
        {
            throw new CommandLineException($"'{modelPath}' is not a GGUF model tibet can seal: {SealingConsole.Printable(e.Message, 400)}");
        }

        var clock = Stopwatch.StartNew();
        SealResult sealedModel;
        using (var progress = new TerminalProgress("sealing", total))
            sealedModel = ModelSealer.Seal(modelPath, outputPath, recipients, clearance, issuers, progress, scope);
        clock.Stop();

        Console.WriteLine($"sealed       {modelPath} -> {outputPath}");
        Console.WriteLine($"file id      {sealedModel.FileIdHex}");
        Console.WriteLine($"clearance    {ClearanceLevelNames.ToName(clearance)}");
        if (scope != null)
            Console.WriteLine($"scope        {scope}");
        foreach (var recipient in recipients)
            Console.WriteLine($"recipient    {recipient.Fingerprint}");
        foreach (var issuer in issuers)
            Console.WriteLine($"issuer       {issuer.Fingerprint}");
        Console.WriteLine($"data         {SealingConsole.Megabytes(sealedModel.DataBytes)} in {sealedModel.DataPages} pages, " +
                          $"sealed in {SealingConsole.Seconds(clock.Elapsed)} ({SealingConsole.Rate(sealedModel.DataBytes, clock.Elapsed)})");
        return ExitCodes.Success;
    }

    /// <summary>Reads each public identity, refusing one named twice (under any file name).</summary>
    private static List<PublicIdentity> ReadDistinct(string option, string[] paths)
    {
        var identities = new List<PublicIdentity>();
        var pathByIdentity = new Dictionary<PublicIdentity, string>();
        foreach (string path in paths)
        {
            var identity = IdentityFile.ReadPublic(path);
            if (!pathByIdentity.TryAdd(identity, path))
                throw new CommandLineException(
                    $"{option} '{path}' is the same identity as {option} '{pathByIdentity[identity]}' ({identity.Fingerprint.ToShortString()}); give each once.");
            identities.Add(identity);
        }
        return identities;
    }
}
