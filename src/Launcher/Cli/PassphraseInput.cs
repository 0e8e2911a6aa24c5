using System.Security.Cryptography;
using Tibet.Core.Identity;

namespace Tibet.Cli;

/// <summary>
/// Where tibet gets passphrases, in this order: --passphrase-file FILE; the file named by
/// $TIBET_PASSPHRASE_FILE; a prompt on the terminal (no echo) when standard input is one.
/// </summary>
/// <remarks>
/// A passphrase is never taken from the command line or from an environment variable's
/// value: both can be read by other processes of the same user (/proc/PID/cmdline,
/// /proc/PID/environ), an environment variable is inherited by every program started
/// afterwards (including one run under tibet-run), and .NET holds both in immutable
/// strings that cannot be wiped. $TIBET_PASSPHRASE is therefore refused with an
/// explanation. FILE may be a pipe: --passphrase-file &lt;(pass show tibet) or /dev/stdin.
/// </remarks>
internal static class PassphraseInput
{
    public const string FileVariable = "TIBET_PASSPHRASE_FILE";
    private const string RefusedVariable = "TIBET_PASSPHRASE";

    /// <summary>A provider for opening <paramref name="identityPath"/>; called only if
    /// the identity turns out to be protected.</summary>
    public static Func<Passphrase> ForOpening(string identityPath, string? passphraseFile) => () =>
    {
        if (FromFileOrEnvironment(passphraseFile) is { } fromFile)
            return fromFile;
        if (Console.IsInputRedirected)
            throw new IdentityException(IdentityErrorKind.PassphraseRequired,
                $"'{identityPath}' is protected by a passphrase. Give --passphrase-file FILE, or set {FileVariable}=FILE " +
                "(standard input is not a terminal, so tibet cannot ask for it).");
        return Prompt($"Passphrase for {identityPath}: ");
    };

    /// <summary>The passphrase for a new identity: none unless <paramref name="protect"/>
    /// or <paramref name="passphraseFile"/> asks for one.</summary>
    public static Passphrase? ForNewIdentity(bool protect, string? passphraseFile)
    {
        if (passphraseFile == null && !protect)
            return null;
        if (FromFileOrEnvironment(passphraseFile) is { } fromFile)
            return fromFile;
        if (Console.IsInputRedirected)
            throw new CommandLineException(
                $"--protect needs a passphrase: give --passphrase-file FILE or set {FileVariable}=FILE (standard input is not a terminal, so tibet cannot ask for it).");
        Passphrase first = Prompt("New passphrase: ");
        using Passphrase again = Prompt("Type it again: ");
        if (first.Matches(again))
            return first;
        first.Dispose();
        throw new CommandLineException("the two passphrases differ; nothing was written. Run the command again.");
    }

    private static Passphrase? FromFileOrEnvironment(string? passphraseFile)
    {
        if (passphraseFile != null)
            return Passphrase.FromFile(passphraseFile);
        string? fromEnvironment = Environment.GetEnvironmentVariable(FileVariable);
        if (!string.IsNullOrEmpty(fromEnvironment))
            return Passphrase.FromFile(fromEnvironment);
        if (Environment.GetEnvironmentVariable(RefusedVariable) != null)
            throw new CommandLineException(
                $"{RefusedVariable} is not supported: an environment variable can be read in /proc by other processes of yours and is passed on to every program " +
                $"started later. Put the passphrase in a file only you can read and set {FileVariable}=FILE, or use --passphrase-file FILE.");
        return null;
    }

    /// <summary>Reads a line from the terminal without echo into a pinned buffer that is
    /// wiped afterwards.</summary>
    private static Passphrase Prompt(string prompt)
    {
        Console.Error.Write(prompt);
        char[] typed = GC.AllocateArray<char>(Passphrase.MaxLength, pinned: true);
        int length = 0;
        try
        {
            while (true)
            {
                ConsoleKeyInfo key = Console.ReadKey(intercept: true);
                if (key.Key == ConsoleKey.Enter)
                    break;
                if (key.Key == ConsoleKey.Backspace)
                {
                    if (length > 0)
                        length--;
                    continue;
                }
                if (key.KeyChar == '\0')
                    continue;
                if (length == typed.Length)
                    throw new CommandLineException($"the passphrase is longer than {Passphrase.MaxLength} characters.");
                typed[length++] = key.KeyChar;
            }
            Console.Error.WriteLine();
            return Passphrase.FromChars(typed.AsSpan(0, length));
        }
        finally
        {
            CryptographicOperations.ZeroMemory(System.Runtime.InteropServices.MemoryMarshal.AsBytes(typed.AsSpan()));
        }
    }
}
