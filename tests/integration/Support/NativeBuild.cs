using System.Diagnostics;

namespace Tibet.IntegrationTests.Support;

/// <summary>Compiles and runs the tests' C programs with the machine's gcc.</summary>
internal static class NativeBuild
{
    public static string Compile(string sourceName, params string[] extraArgs)
    {
        string source = Path.Combine(AppContext.BaseDirectory, "native", sourceName);
        // A build with other flags (-static, -ljemalloc) gets a directory of its own, so it never
        // replaces the plain build another test runs. The file name stays the source's name:
        // tests find their program by /proc/PID/comm.
        string variant = extraArgs.Length == 0 ? "" : Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(
            System.Text.Encoding.UTF8.GetBytes(string.Join('\0', extraArgs))))[..8].ToLowerInvariant();
        string output = Path.Combine(Path.GetTempPath(), "tibet-tests", variant, Path.GetFileNameWithoutExtension(sourceName));
        Directory.CreateDirectory(Path.GetDirectoryName(output)!);
        var (code, _, stderr) = Run("gcc", ["-O2", "-Wall", "-Werror", "-o", output, source, .. extraArgs]);
        if (code != 0)
            throw new InvalidOperationException($"gcc failed for {sourceName} (exit {code}):\n{stderr}");
        return output;
    }

    public static (int ExitCode, string Stdout, string Stderr) Run(string program, IEnumerable<string> args)
    {
        var start = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) start.ArgumentList.Add(a);
        Process process;
        try
        {
            process = Process.Start(start)!;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException($"'{program}' cannot be started ({e.Message}); install it (scripts/install-deps.sh does).", e);
        }
        using (process)
        {
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            process.WaitForExit();
            return (process.ExitCode, stdout.Result, stderr.Result);
        }
    }
}
