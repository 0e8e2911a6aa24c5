using System.CommandLine;
using Tibet.Core.Audit;
using Tibet.Core.Identity;

namespace Tibet.Cli;

/// <summary>The root command: builds the command tree, reports usage errors in the
/// house style ("tibet: ...", exit 2) and turns expected failures into messages.</summary>
internal static class TibetCommand
{
    private static readonly string Description = $"""
        Usage: tibet COMMAND [options]

        Identities, signed clearance claims, sealed models and the audit trail of tibet. A
        sealed model opens only for a recipient identity holding a valid claim from an issuer
        the model trusts, with enough clearance; otherwise it stays dead material. Run a
        program on a sealed model with tibet-run --identity NAME.id --claim NAME.claim -- CMD:
        its maps and reads of the model are decrypted page by page, never to disk.
        The cryptographic gate is the identity alone: whoever holds NAME.id can unwrap the
        data key. Clearance, expiry and scope are checked by tibet's code (tibet-run and
        tibet unseal), not enforced by the cipher; see docs/threat-model.md.

          tibet keygen --out NAME                 make NAME.id (secret, mode 0600) and NAME.pub (public)
          tibet identity show FILE                print an identity's fingerprint and public keys
          tibet claim issue --issuer ISSUER.id --subject SUBJECT.pub --clearance LEVEL --expires WHEN --out FILE
          tibet claim show FILE                   print a claim's fields and check its signature
          tibet claim verify FILE --issuer ISSUER.pub [--subject SUBJECT.pub] [--clearance LEVEL] [--at WHEN]
          tibet audit verify [LOG] [--anchor N:HASH]   check the audit log's hash chain
          tibet audit head [LOG]                  print the log's head N:HASH, to record elsewhere
          tibet audit append [LOG] --object OBJECT --decision granted|denied --reason TEXT
          tibet seal MODEL.gguf --to RECIPIENT.pub... --clearance LEVEL --issuer ISSUER.pub... --out SEALED.gguf
          tibet inspect SEALED.gguf                 print what a sealed model requires, without decrypting it
          tibet unseal SEALED.gguf --identity NAME.id --claim NAME.claim --out PLAIN.gguf
          tibet stats [PID...] [--json]           live statistics of processes under tibet-run, their forked children, and the total

        LEVEL: {ClearanceLevelNames.Syntax}
        WHEN:  {WhenParser.Syntax}

        Passphrases (for a protected NAME.id) come from --passphrase-file FILE, else from the
        file named by ${PassphraseInput.FileVariable}, else from a prompt when standard input is a
        terminal; never from the command line or an environment variable's value.

        Audit log: {AuditLogLocation.Description}

        Exit status: 0 success (for verify: valid claim, intact log); 1 claim not valid or log
        broken; 2 error (bad usage, missing or unreadable file, permissions, wrong passphrase).
        """;

    public static int Run(string[] args)
    {
        var root = new RootCommand(Description);
        root.Subcommands.Add(KeygenCommand.Create());
        root.Subcommands.Add(IdentityCommand.Create());
        root.Subcommands.Add(ClaimCommand.Create());
        root.Subcommands.Add(AuditCommand.Create());
        root.Subcommands.Add(Sealing.SealCommand.Create());
        root.Subcommands.Add(Sealing.InspectCommand.Create());
        root.Subcommands.Add(Sealing.UnsealCommand.Create());
        root.Subcommands.Add(StatsCommand.Create());

        ParseResult parsed = root.Parse(args);
        bool wantsHelp = args.Any(arg => arg is "--help" or "-h" or "-?");
        if (parsed.Errors.Count > 0 && !wantsHelp)
        {
            foreach (var error in parsed.Errors)
                Console.Error.WriteLine($"tibet: {error.Message}");
            Console.Error.WriteLine("Try 'tibet --help'.");
            return ExitCodes.Failed;
        }
        return parsed.Invoke();
    }

    /// <summary>Runs a command's work, reporting the failures a user can act on as one
    /// line on stderr with exit status 2.</summary>
    public static int Guarded(Func<int> work)
    {
        try
        {
            return work();
        }
        catch (Exception e) when (e is IdentityException or AuditLogException or CommandLineException)
        {
            Console.Error.WriteLine($"tibet: {e.Message}");
            return ExitCodes.Failed;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"tibet: {e.Message}");
            return ExitCodes.Failed;
        }
    }

    /// <summary>--passphrase-file, shared by the commands that open or create a secret identity.</summary>
    public static Option<string?> PassphraseFileOption(string purpose) => new("--passphrase-file")
    {
        Description = $"Read the passphrase {purpose} from FILE (its whole contents, less one final newline; a pipe such as /dev/stdin works). " +
                      $"Default: the file named by ${PassphraseInput.FileVariable}, else a terminal prompt.",
        HelpName = "FILE",
    };

    /// <summary>Parses a WHEN value or stops with a message naming the option.</summary>
    public static DateTimeOffset ParseWhen(string option, string text, DateTimeOffset now) =>
        WhenParser.TryParse(text, now, out var when)
            ? when
            : throw new CommandLineException($"{option} '{text}' is not a time; expected {WhenParser.Syntax}.");

    /// <summary>Parses a LEVEL value or stops with a message naming the option.</summary>
    public static ClearanceLevel ParseLevel(string option, string text) =>
        ClearanceLevelNames.TryParse(text, out var level)
            ? level
            : throw new CommandLineException($"{option} '{text}' is not a clearance level; use one of {ClearanceLevelNames.Syntax}.");
}
