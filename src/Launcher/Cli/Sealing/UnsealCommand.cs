using System.CommandLine;
using System.Diagnostics;
using Tibet.Core.Identity;
using Tibet.Core.Sealing;

namespace Tibet.Cli.Sealing;

/// <summary><c>tibet unseal SEALED.gguf --identity NAME.id --claim NAME.claim --out PLAIN.gguf</c>.</summary>
internal static class UnsealCommand
{
    public static Command Create()
    {
        var file = new Argument<string>("SEALED.gguf") { Description = "The sealed model." };
        var identity = new Option<string>("--identity")
        {
            Description = "Your secret identity; the model must be sealed to it.",
            HelpName = "NAME.id",
            Required = true,
        };
        var claim = new Option<string>("--claim")
        {
            Description = "Your clearance claim, issued to that identity by an issuer the model trusts.",
            HelpName = "NAME.claim",
            Required = true,
        };
        var output = new Option<string>("--out", "-o")
        {
            Description = "Where to write the plain model (mode 0600); the file must not exist. It appears only when every page has authenticated.",
            HelpName = "PLAIN.gguf",
            Required = true,
        };
        var passphraseFile = TibetCommand.PassphraseFileOption("of NAME.id");

        var command = new Command("unseal",
            "Decide access to a sealed model exactly as tibet-run does and, if it is live, write the plain GGUF model. " +
            "Exit 1 with the reason when it stays dead.");
        command.Arguments.Add(file);
        foreach (Option option in new Option[] { identity, claim, output, passphraseFile })
            command.Options.Add(option);
        command.SetAction(result => SealingConsole.Guarded(() => Run(
            result.GetValue(file)!, result.GetValue(identity)!, result.GetValue(claim)!, result.GetValue(output)!, result.GetValue(passphraseFile))));
        return command;
    }

    private static int Run(string sealedPath, string identityPath, string claimPath, string outputPath, string? passphraseFile)
    {
        using var model = SealedModel.Open(sealedPath);
        byte[] claimBytes = ClaimFile.ReadAllBytes(claimPath);
        if (!Claim.TryDecode(claimBytes, out var claim, out var failure, out string problem))
        {
            Console.Error.WriteLine($"tibet: '{sealedPath}' stays dead: {failure}: '{claimPath}' is not a claim tibet can read: {problem}.");
            return ExitCodes.Rejected;
        }

        using (Identity identity = IdentityFile.ReadSecret(identityPath, PassphraseInput.ForOpening(identityPath, passphraseFile)))
        using (AccessDecision decision = model.Decide(identity, claim, DateTimeOffset.UtcNow))
        {
            if (!decision.IsLive)
            {
                Console.Error.WriteLine($"tibet: '{sealedPath}' stays dead: {decision.Reason}: {decision.Message}");
                return ExitCodes.Rejected;
            }

            long total = model.DataPages * SealedModel.PageSize;
            var clock = Stopwatch.StartNew();
            using (var progress = new TerminalProgress("unsealing", total))
                ModelUnsealer.Unseal(model, decision.Key, outputPath, progress);
            clock.Stop();

            Console.WriteLine($"unsealed     {sealedPath} -> {outputPath} (mode 0600)");
            Console.WriteLine($"decision     {decision.Message}");
            Console.WriteLine($"data         {SealingConsole.Megabytes(total)} in {model.DataPages} pages, " +
                              $"decrypted in {SealingConsole.Seconds(clock.Elapsed)} ({SealingConsole.Rate(total, clock.Elapsed)})");
        }
        return ExitCodes.Success;
    }
}
