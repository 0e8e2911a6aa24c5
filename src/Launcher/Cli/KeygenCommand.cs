using System.CommandLine;
using Tibet.Core.Identity;

namespace Tibet.Cli;

/// <summary><c>tibet keygen --out NAME</c>: makes a new identity.</summary>
internal static class KeygenCommand
{
    public static Command Create()
    {
        var output = new Option<string>("--out", "-o")
        {
            Description = "Write NAME.id (the secret identity, mode 0600) and NAME.pub (the public identity, to share). A trailing .id or .pub is ignored.",
            HelpName = "NAME",
            Required = true,
        };
        var force = new Option<bool>("--force") { Description = "Replace NAME.id and NAME.pub if they exist (the old identity is lost)." };
        var protect = new Option<bool>("--protect")
        {
            Description = "Encrypt NAME.id under a passphrase (Argon2id, 64 MiB, 3 passes; then AES-256-GCM). Implied by --passphrase-file.",
        };
        var passphraseFile = TibetCommand.PassphraseFileOption("for the new identity");

        var command = new Command("keygen", "Make a new identity: an X25519 key (receives wrapped data keys) and an Ed25519 key (signs claims).");
        foreach (Option option in new Option[] { output, force, protect, passphraseFile })
            command.Options.Add(option);
        command.SetAction(result => TibetCommand.Guarded(() =>
            Run(result.GetValue(output)!, result.GetValue(force), result.GetValue(protect), result.GetValue(passphraseFile))));
        return command;
    }

    private static int Run(string name, bool force, bool protect, string? passphraseFile)
    {
        foreach (string extension in new[] { IdentityFile.SecretExtension, IdentityFile.PublicExtension })
            if (name.EndsWith(extension, StringComparison.Ordinal))
                name = name[..^extension.Length];
        if (name.Length == 0 || name.EndsWith('/'))
            throw new CommandLineException($"--out '{name}' names no file; give a NAME such as keys/alice.");
        string secretPath = name + IdentityFile.SecretExtension;
        string publicPath = name + IdentityFile.PublicExtension;
        if (!force)
        {
            // Both are checked before anything is written, so that a refusal leaves no half pair.
            foreach (string path in new[] { secretPath, publicPath })
                if (File.Exists(path))
                    throw new CommandLineException($"'{path}' already exists; choose another --out NAME, or pass --force to replace it.");
        }

        using Passphrase? passphrase = PassphraseInput.ForNewIdentity(protect, passphraseFile);
        using Identity identity = Identity.Generate();
        IdentityFile.WriteSecret(secretPath, identity, force, passphrase);
        IdentityFile.WritePublic(publicPath, identity.Public, force);

        Console.WriteLine($"wrote {secretPath} (secret identity, mode 0600, {(passphrase != null ? "passphrase-protected" : "not passphrase-protected")})");
        Console.WriteLine($"wrote {publicPath} (public identity, safe to share)");
        Console.WriteLine($"fingerprint  {identity.Fingerprint}");
        return ExitCodes.Success;
    }
}
