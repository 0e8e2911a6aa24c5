using System.CommandLine;
using Tibet.Core.Identity;

namespace Tibet.Cli;

/// <summary><c>tibet identity show FILE</c>: prints an identity's public facts.</summary>
internal static class IdentityCommand
{
    public static Command Create()
    {
        var file = new Argument<string>("FILE") { Description = "A NAME.pub or NAME.id file (a protected .id needs no passphrase: its public keys are stored in the clear)." };
        var show = new Command("show", "Print an identity's fingerprint and public keys.");
        show.Arguments.Add(file);
        show.SetAction(result => TibetCommand.Guarded(() => Show(result.GetValue(file)!)));

        var command = new Command("identity", "Inspect identity files.");
        command.Subcommands.Add(show);
        return command;
    }

    private static int Show(string path)
    {
        PublicIdentity identity = IdentityFile.ReadPublic(path, out var kind);
        Console.WriteLine($"file         {path}");
        Console.WriteLine($"kind         {kind switch
        {
            IdentityFileKind.Public => "public identity",
            IdentityFileKind.Secret => "secret identity (not passphrase-protected)",
            _ => "secret identity (passphrase-protected)",
        }}");
        Console.WriteLine($"fingerprint  {identity.Fingerprint}");
        Console.WriteLine($"x25519       {Convert.ToHexStringLower(identity.AgreementKey)}");
        Console.WriteLine($"ed25519      {Convert.ToHexStringLower(identity.SigningKey)}");
        return ExitCodes.Success;
    }
}
