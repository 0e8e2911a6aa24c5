using System.CommandLine;
using Tibet.Core.Identity;

namespace Tibet.Cli;

/// <summary><c>tibet claim issue | show | verify</c>.</summary>
internal static class ClaimCommand
{
    public static Command Create()
    {
        var command = new Command("claim", "Issue, show and verify signed clearance claims.");
        command.Subcommands.Add(CreateIssue());
        command.Subcommands.Add(CreateShow());
        command.Subcommands.Add(CreateVerify());
        return command;
    }

    private static Command CreateIssue()
    {
        var issuer = new Option<string>("--issuer") { Description = "The issuer's secret identity, which signs the claim.", HelpName = "ISSUER.id", Required = true };
        var subject = new Option<string>("--subject") { Description = "The identity the claim is for (its .pub, or its .id).", HelpName = "SUBJECT.pub", Required = true };
        var clearance = new Option<string>("--clearance") { Description = $"The clearance granted: {ClearanceLevelNames.Syntax}.", HelpName = "LEVEL", Required = true };
        var expires = new Option<string>("--expires") { Description = "When the claim stops being in force (e.g. +30d, 2026-01-31T00:00:00Z).", HelpName = "WHEN", Required = true };
        var notBefore = new Option<string?>("--not-before") { Description = "When the claim comes into force. Default: now.", HelpName = "WHEN" };
        var scope = new Option<string[]>("--scope")
        {
            Description = "Limit the claim to this scope (repeatable; 1..64 of A-Z a-z 0-9 . _ : / @ + -). Without --scope the claim covers every scope.",
            HelpName = "LABEL",
            Arity = ArgumentArity.OneOrMore,
        };
        var output = new Option<string>("--out", "-o") { Description = "Write the claim (armored text) to FILE.", HelpName = "FILE", Required = true };
        var force = new Option<bool>("--force") { Description = "Replace FILE if it exists." };
        var passphraseFile = TibetCommand.PassphraseFileOption("of ISSUER.id");

        var command = new Command("issue", "Sign a claim that SUBJECT holds LEVEL until WHEN.");
        foreach (Option option in new Option[] { issuer, subject, clearance, expires, notBefore, scope, output, force, passphraseFile })
            command.Options.Add(option);
        command.SetAction(result => TibetCommand.Guarded(() =>
        {
            DateTimeOffset now = DateTimeOffset.UtcNow;
            ClearanceLevel level = TibetCommand.ParseLevel("--clearance", result.GetValue(clearance)!);
            DateTimeOffset until = TibetCommand.ParseWhen("--expires", result.GetValue(expires)!, now);
            DateTimeOffset from = result.GetValue(notBefore) is { } text ? TibetCommand.ParseWhen("--not-before", text, now) : now;
            string[] scopes = result.GetValue(scope) ?? [];
            foreach (string label in scopes)
                if (!Claim.IsValidScope(label))
                    throw new CommandLineException($"--scope '{label}' is not a valid scope; use 1..{Claim.MaxScopeLength} characters of A-Z a-z 0-9 . _ : / @ + -.");
            if (until <= from)
                throw new CommandLineException($"--expires ({ClaimVerifier.FormatTime(until)}) is not after the time the claim comes into force ({ClaimVerifier.FormatTime(from)}); give a later --expires.");

            string issuerPath = result.GetValue(issuer)!;
            PublicIdentity subjectIdentity = IdentityFile.ReadPublic(result.GetValue(subject)!);
            Claim claim;
            using (Identity issuerIdentity = IdentityFile.ReadSecret(issuerPath, PassphraseInput.ForOpening(issuerPath, result.GetValue(passphraseFile))))
            {
                try
                {
                    claim = Claim.Issue(issuerIdentity, subjectIdentity, level, from, until, scopes, now);
                }
                catch (ArgumentException e)
                {
                    throw new CommandLineException(e.Message);
                }
            }
            string path = result.GetValue(output)!;
            ClaimFile.Write(path, claim, result.GetValue(force));
            PrintFields(claim, now);
            Console.WriteLine($"wrote        {path}");
            if (until <= now)
                Console.Error.WriteLine($"tibet: warning: this claim expired at {ClaimVerifier.FormatTime(until)}, before it was issued; it will never be valid now.");
            return ExitCodes.Success;
        }));
        return command;
    }

    private static Command CreateShow()
    {
        var file = new Argument<string>("FILE") { Description = "A claim file." };
        var command = new Command("show", "Print every field of a claim and check that its signature matches its issuer key (not whether that issuer is trusted).");
        command.Arguments.Add(file);
        command.SetAction(result => TibetCommand.Guarded(() =>
        {
            string path = result.GetValue(file)!;
            byte[] data = ClaimFile.ReadAllBytes(path);
            if (!Claim.TryDecode(data, out var claim, out var failure, out string problem))
                return Reject(path, failure, $"this is not a claim tibet can read: {problem}.");
            PrintFields(claim, DateTimeOffset.UtcNow);
            if (!claim.HasValidSignature())
                return Reject(path, ClaimVerdictReason.BadSignature, "the signature does not match the claim's contents and issuer key: the claim was altered or forged.");
            Console.WriteLine("verdict      well-formed and signed by the issuer key it names; 'tibet claim verify' decides whether that issuer is trusted");
            return ExitCodes.Success;
        }));
        return command;
    }

    private static Command CreateVerify()
    {
        var file = new Argument<string>("FILE") { Description = "A claim file." };
        var issuer = new Option<string[]>("--issuer")
        {
            Description = "A trusted issuer's public identity (repeatable). The claim must be signed by one of them.",
            HelpName = "ISSUER.pub",
            Arity = ArgumentArity.OneOrMore,
            Required = true,
        };
        var subject = new Option<string?>("--subject") { Description = "Require the claim to be issued to this identity.", HelpName = "SUBJECT.pub" };
        var clearance = new Option<string?>("--clearance") { Description = "Require at least this clearance.", HelpName = "LEVEL" };
        var scope = new Option<string?>("--scope") { Description = "Require the claim to cover this scope.", HelpName = "LABEL" };
        var at = new Option<string?>("--at") { Description = "Check the claim for this moment instead of now.", HelpName = "WHEN" };

        var command = new Command("verify", "Decide whether a claim is valid: exit 0 only if it is (the verdict names the first failed check otherwise).");
        command.Arguments.Add(file);
        foreach (Option option in new Option[] { issuer, subject, clearance, scope, at })
            command.Options.Add(option);
        command.SetAction(result => TibetCommand.Guarded(() =>
        {
            DateTimeOffset now = DateTimeOffset.UtcNow;
            var requirements = new ClaimRequirements
            {
                TrustedIssuers = (result.GetValue(issuer) ?? []).Select(IdentityFile.ReadPublic).ToArray(),
                Subject = result.GetValue(subject) is { } subjectPath ? IdentityFile.ReadPublic(subjectPath) : null,
                MinimumClearance = result.GetValue(clearance) is { } level ? TibetCommand.ParseLevel("--clearance", level) : ClearanceLevel.Unclassified,
                Scope = result.GetValue(scope),
                At = result.GetValue(at) is { } when ? TibetCommand.ParseWhen("--at", when, now) : now,
            };
            string path = result.GetValue(file)!;
            ClaimVerdict verdict = ClaimVerifier.Verify(ClaimFile.ReadAllBytes(path), requirements);
            if (verdict.Claim != null)
                PrintFields(verdict.Claim, requirements.At);
            if (!verdict.IsValid)
                return Reject(path, verdict.Reason, verdict.Message);
            Console.WriteLine($"verdict      {verdict}");
            return ExitCodes.Success;
        }));
        return command;
    }

    private static int Reject(string path, ClaimVerdictReason reason, string message)
    {
        Console.WriteLine($"verdict      {ClaimVerdict.NameOf(reason)}: {message}");
        Console.Error.WriteLine($"tibet: claim '{path}' is not valid: {ClaimVerdict.NameOf(reason)}: {message}");
        return ExitCodes.Rejected;
    }

    private static void PrintFields(Claim claim, DateTimeOffset at)
    {
        string status = at < claim.NotBefore ? "not yet in force" : at >= claim.Expires ? "expired" : "in force";
        Console.WriteLine($"claim        {claim.IdHex}");
        Console.WriteLine($"version      {Claim.EncodingVersion}");
        Console.WriteLine($"issuer       {claim.Issuer.Fingerprint}");
        Console.WriteLine($"subject      {claim.Subject.Fingerprint}");
        Console.WriteLine($"clearance    {ClearanceLevelNames.ToName(claim.Clearance)}");
        Console.WriteLine($"issued-at    {ClaimVerifier.FormatTime(claim.IssuedAt)}");
        Console.WriteLine($"not-before   {ClaimVerifier.FormatTime(claim.NotBefore)}");
        Console.WriteLine($"expires      {ClaimVerifier.FormatTime(claim.Expires)}");
        Console.WriteLine($"scopes       {(claim.Scopes.Count == 0 ? "(any)" : string.Join(", ", claim.Scopes))}");
        Console.WriteLine($"status       {status} at {ClaimVerifier.FormatTime(at)}");
        Console.WriteLine($"signature    {Convert.ToHexStringLower(claim.Signature)}");
    }
}
