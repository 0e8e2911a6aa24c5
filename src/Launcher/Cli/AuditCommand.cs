using System.CommandLine;
using Tibet.Core.Audit;
using Tibet.Core.Identity;

namespace Tibet.Cli;

/// <summary><c>tibet audit verify | head | append</c>.</summary>
internal static class AuditCommand
{
    private const string TruncationCaveat =
        "A hash chain cannot show that lines were cut from the end of the log (what is left still chains). " +
        "Record the head ('tibet audit head') somewhere the log's writers cannot change, and pass it as --anchor N:HASH later.";

    public static Command Create()
    {
        var command = new Command("audit", "Check and extend the hash-chained audit log (one JSON line per decision).");
        command.Subcommands.Add(CreateVerify());
        command.Subcommands.Add(CreateHead());
        command.Subcommands.Add(CreateAppend());
        return command;
    }

    private static Argument<string?> LogArgument() => new("LOG")
    {
        Description = "The audit log. " + AuditLogLocation.Description,
        Arity = ArgumentArity.ZeroOrOne,
    };

    private static Command CreateVerify()
    {
        var log = LogArgument();
        var anchor = new Option<string?>("--anchor") { Description = "Also require line N to have hash HASH (a head recorded earlier). " + TruncationCaveat, HelpName = "N:HASH" };
        var command = new Command("verify", "Check that no line of the log was edited, inserted, reordered or removed, and name the first bad line. Exit 0 only if intact. " + TruncationCaveat);
        command.Arguments.Add(log);
        command.Options.Add(anchor);
        command.SetAction(result => TibetCommand.Guarded(() =>
        {
            AuditAnchor? expected = null;
            if (result.GetValue(anchor) is { } text && !AuditAnchor.TryParse(text, out expected))
                throw new CommandLineException($"--anchor '{text}' is not N:HASH (a line number, a colon and 64 hex digits), as printed by 'tibet audit head'.");
            string path = AuditLogLocation.Resolve(result.GetValue(log));
            AuditVerification verification = AuditVerifier.VerifyFile(path, expected);
            if (!verification.IsIntact)
            {
                Console.WriteLine($"audit log '{path}': BROKEN at line {verification.FirstBadLine}: {verification.Message}");
                Console.Error.WriteLine($"tibet: audit log '{path}' is broken at line {verification.FirstBadLine}: {verification.Message}");
                return ExitCodes.Rejected;
            }
            Console.WriteLine($"audit log '{path}': intact: {verification.Message}");
            Console.WriteLine($"head         {verification.Head}");
            if (expected == null)
                Console.WriteLine("note         " + TruncationCaveat);
            return ExitCodes.Success;
        }));
        return command;
    }

    private static Command CreateHead()
    {
        var log = LogArgument();
        var command = new Command("head", "Print N:HASH for the log's last line (after checking the chain), to record elsewhere and give to 'tibet audit verify --anchor' later.");
        command.Arguments.Add(log);
        command.SetAction(result => TibetCommand.Guarded(() =>
        {
            string path = AuditLogLocation.Resolve(result.GetValue(log));
            AuditVerification verification = AuditVerifier.VerifyFile(path);
            if (!verification.IsIntact)
            {
                Console.Error.WriteLine($"tibet: audit log '{path}' is broken at line {verification.FirstBadLine}: {verification.Message}; its head would vouch for nothing.");
                return ExitCodes.Rejected;
            }
            Console.WriteLine(verification.Head);
            return ExitCodes.Success;
        }));
        return command;
    }

    private static Command CreateAppend()
    {
        var log = LogArgument();
        var obj = new Option<string>("--object") { Description = "What the decision was about (a sealed model, a claim id, ...).", HelpName = "OBJECT", Required = true };
        var decision = new Option<string>("--decision") { Description = "granted or denied.", HelpName = "granted|denied", Required = true };
        var reason = new Option<string>("--reason") { Description = "Why.", HelpName = "TEXT", Required = true };
        var identity = new Option<string?>("--identity") { Description = "The identity the decision concerns (its .pub or .id); its fingerprint is recorded.", HelpName = "FILE" };
        var program = new Option<string?>("--program") { Description = "The program recorded. Default: tibet.", HelpName = "NAME" };
        var command = new Command("append", "Record a decision by hand (the interposer records its own). Prints the new line's N:HASH.");
        command.Arguments.Add(log);
        foreach (Option option in new Option[] { obj, decision, reason, identity, program })
            command.Options.Add(option);
        command.SetAction(result => TibetCommand.Guarded(() =>
        {
            AuditDecision choice = result.GetValue(decision) switch
            {
                "granted" => AuditDecision.Granted,
                "denied" => AuditDecision.Denied,
                var other => throw new CommandLineException($"--decision '{other}' is neither 'granted' nor 'denied'."),
            };
            Fingerprint? fingerprint = result.GetValue(identity) is { } identityPath ? IdentityFile.ReadPublic(identityPath).Fingerprint : null;
            var auditLog = new AuditLog(result.GetValue(log));
            AuditAnchor appended = auditLog.Append(new AuditEntry
            {
                Object = result.GetValue(obj)!,
                Decision = choice,
                Reason = result.GetValue(reason)!,
                Identity = fingerprint,
                Program = result.GetValue(program) ?? "tibet",
            });
            Console.WriteLine(appended);
            return ExitCodes.Success;
        }));
        return command;
    }
}
