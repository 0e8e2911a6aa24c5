using System.Diagnostics;
using System.Globalization;
using Tibet.IntegrationTests.Support;

namespace Tibet.IntegrationTests.Hardening;

/// <summary>
/// A program started (under tibet-run or otherwise) and held still until disposed, so that
/// a test can look at its memory from outside, once it has printed "ready PID [WORD]":
/// native/prog_hold.c (WORD: the address of its canary), prog_sealed_read's holding modes,
/// prog_serve_self.
/// </summary>
internal sealed class HeldProgram : IDisposable
{
    public const string Canary = "tibet-dumpable-canary-012345678";

    private static readonly Lazy<string> Build = new(() => NativeBuild.Compile("prog_hold.c"));
    private readonly Process _process;
    private readonly Task<string> _stderr;

    private HeldProgram(Process process, int pid, string canaryAddress)
    {
        _process = process;
        _stderr = process.StandardError.ReadToEndAsync();
        Pid = pid;
        CanaryAddress = canaryAddress;
    }

    /// <summary>The program's executable, for building command lines.</summary>
    public static string Path => Build.Value;

    /// <summary>The pid of prog_hold itself (not of tibet-run).</summary>
    public int Pid { get; }

    /// <summary>The ready line's third word: for prog_hold, where the canary is, in
    /// hexadecimal with 0x; empty when the line has none.</summary>
    public string CanaryAddress { get; }

    /// <summary>Starts <paramref name="command"/> and waits for its program's "ready" line.</summary>
    public static HeldProgram Start(string[] command, IDictionary<string, string?>? environment = null)
    {
        var start = new ProcessStartInfo(command[0])
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string argument in command[1..])
            start.ArgumentList.Add(argument);
        foreach (var (name, value) in environment ?? new Dictionary<string, string?>())
        {
            if (value == null) start.Environment.Remove(name);
            else start.Environment[name] = value;
        }
        var process = Process.Start(start) ?? throw new InvalidOperationException($"cannot start {command[0]}");
        var line = process.StandardOutput.ReadLineAsync();
        // A guard against a hang, not a timing assertion: a healthy start takes a second or two.
        if (!line.Wait(TimeSpan.FromMinutes(2)) || line.Result is not { } ready || !ready.StartsWith("ready ", StringComparison.Ordinal))
        {
            process.Kill(entireProcessTree: true);
            throw new InvalidOperationException($"{string.Join(' ', command)} never said ready; stderr: {process.StandardError.ReadToEnd()}");
        }
        string[] words = ready.Split(' ');
        return new HeldProgram(process, int.Parse(words[1], CultureInfo.InvariantCulture), words.Length > 2 ? words[2] : "");
    }

    /// <summary>Lets the program finish; returns its exit code and standard error.</summary>
    public (int ExitCode, string Stderr) Finish()
    {
        var (exitCode, _, stderr) = FinishWithOutput();
        return (exitCode, stderr);
    }

    /// <summary>Lets the program go on (ends its standard input) without waiting for it.</summary>
    public void Release() => _process.StandardInput.Close();

    /// <summary>Lets the program finish; returns its exit code, what it wrote on standard
    /// output after its ready line, and its standard error.</summary>
    public (int ExitCode, string Stdout, string Stderr) FinishWithOutput()
    {
        _process.StandardInput.Close();
        var stdout = _process.StandardOutput.ReadToEndAsync();
        if (!_process.WaitForExit(TimeSpan.FromMinutes(2)))
            _process.Kill(entireProcessTree: true);
        _process.WaitForExit();
        return (_process.ExitCode, stdout.Result, _stderr.Result);
    }

    public void Dispose()
    {
        if (!_process.HasExited)
            Finish();
        _process.Dispose();
    }
}
