using System.Diagnostics;
using Tibet.Core.Identity;

// Not "Tibet.IntegrationTests.Identity": a namespace of that name would hide the type
// Tibet.Core.Identity.Identity from every other test namespace under Tibet.IntegrationTests.
namespace Tibet.IntegrationTests.Identities;

/// <summary>A private temporary directory, deleted with everything in it.</summary>
internal sealed class TempDirectory : IDisposable
{
    public TempDirectory() => Path = Directory.CreateTempSubdirectory("tibet-identity-").FullName;

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose() => Directory.Delete(Path, recursive: true);
}

internal static class IdentityTestSupport
{
    /// <summary>The cheapest accepted Argon2id cost, so that tests with protected
    /// identities take milliseconds; the format and code path are the same as with the default.</summary>
    public static readonly Argon2Cost CheapCost = new(Argon2Cost.MinMemoryKiB, Argon2Cost.MinPasses);

    public static int ModeOf(string path)
    {
        if (!OperatingSystem.IsLinux())
            throw new PlatformNotSupportedException();
        return (int)File.GetUnixFileMode(path) & 0b111_111_111;
    }

    public static void SetMode(string path, int mode)
    {
        if (!OperatingSystem.IsLinux())
            throw new PlatformNotSupportedException();
        File.SetUnixFileMode(path, (UnixFileMode)mode);
    }

    public static Func<Passphrase> PassphraseOf(string text) => () => Passphrase.FromUtf8(System.Text.Encoding.UTF8.GetBytes(text));
}

/// <summary>Runs the built tibet command (tibet.dll, copied beside the tests by the
/// project reference) as a separate process.</summary>
internal static class TibetCli
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr)
    {
        public override string ToString() => $"exit {ExitCode}\nstdout: {Stdout}\nstderr: {Stderr}";
    }

    public static string Dll
    {
        get
        {
            string dll = Path.Combine(AppContext.BaseDirectory, "tibet.dll");
            if (!File.Exists(dll))
                throw new FileNotFoundException("tibet.dll was not built beside the tests (the project reference to src/Launcher/Cli is missing?).", dll);
            return dll;
        }
    }

    public static Process Start(string workingDirectory, IDictionary<string, string?>? environment, params string[] args)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory,
        };
        start.ArgumentList.Add(Dll);
        foreach (string arg in args)
            start.ArgumentList.Add(arg);
        // The tests must not pick up a passphrase or log from the environment they run in.
        foreach (string name in new[] { "TIBET_PASSPHRASE", "TIBET_PASSPHRASE_FILE", "TIBET_AUDIT_LOG" })
            start.Environment.Remove(name);
        foreach (var (name, value) in environment ?? new Dictionary<string, string?>())
            start.Environment[name] = value;
        return Process.Start(start) ?? throw new InvalidOperationException("cannot start dotnet");
    }

    public static Result Run(string workingDirectory, params string[] args) => Run(workingDirectory, null, null, args);

    public static Result Run(string workingDirectory, IDictionary<string, string?>? environment, string? stdin, params string[] args)
    {
        using Process process = Start(workingDirectory, environment, args);
        return Finish(process, stdin);
    }

    public static Result Finish(Process process, string? stdin = null)
    {
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        // Standard input is always a pipe, never the terminal, so tibet never waits at a prompt.
        if (stdin != null)
            process.StandardInput.Write(stdin);
        process.StandardInput.Close();
        if (!process.WaitForExit(60_000))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException("tibet did not finish in 60 s");
        }
        process.WaitForExit();
        return new Result(process.ExitCode, stdout.Result, stderr.Result);
    }
}
