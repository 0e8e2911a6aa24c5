using System.Diagnostics;
using Xunit;

namespace Tibet.IntegrationTests.Engine;

/// <summary>
/// A sealed page whose ciphertext was altered is never mapped as data: its reader dies
/// of SIGBUS. The reader runs in a child process (Tibet.EngineChild) so that the test
/// survives to look at how it died.
/// </summary>
public class TamperTests
{
    private const int SigBus = 7;

    [Theory]
    [InlineData("flip", "aes-256-gcm")]    // one ciphertext byte flipped
    [InlineData("swap", "aes-256-gcm")]    // another page's ciphertext put in this page's slot
    [InlineData("replay", "aes-256-gcm")]  // an older, authentic sealing of this same page put back
    [InlineData("flip", "aegis-256")]
    [InlineData("swap", "aegis-256")]
    [InlineData("replay", "aegis-256")]
    public void Reader_of_a_tampered_page_gets_SIGBUS_and_never_the_bytes(string mode, string cipher)
    {
        var (exitCode, stdout, stderr) = RunChild("tamper", mode, cipher);

        Assert.Contains("reading", stdout);
        Assert.DoesNotContain("READ-RETURNED", stdout);
        Assert.True(exitCode == 128 + SigBus,
            $"expected death by SIGBUS (exit {128 + SigBus}), got {exitCode}\nstdout: {stdout}\nstderr: {stderr}");
        Assert.Contains("failed authentication", stderr);
    }

    /// <summary>A tampered page inside a model range evicted whole: the range is not placed
    /// whole (its decryption fails on that page), and the page, served on its own, is
    /// refused and reported. Its neighbours still read.</summary>
    [Theory]
    [InlineData("aes-256-gcm")]
    [InlineData("aegis-256")]
    public void A_tampered_page_in_a_range_evicted_whole_gets_SIGBUS_and_never_the_bytes(string cipher)
    {
        var (exitCode, stdout, stderr) = RunChild("tamper-range", cipher);

        var counts = System.Text.RegularExpressions.Regex.Match(stdout, @"whole-ranges placed-sealed (\d+) range-evictions (\d+)");
        Assert.True(counts.Success, $"stdout: {stdout}\nstderr: {stderr}");
        if (Tibet.Core.Paging.Collapse.TransparentHugePages.Enabled)
        {
            Assert.True(long.Parse(counts.Groups[1].Value) >= 1, "no range came back whole from its sealed copies before the tampering: " + stdout);
            Assert.True(long.Parse(counts.Groups[2].Value) >= 1, "no range was evicted whole before the tampering: " + stdout);
        }
        Assert.Contains("reading", stdout);
        Assert.DoesNotContain("READ-RETURNED", stdout);
        Assert.True(exitCode == 128 + SigBus,
            $"expected death by SIGBUS (exit {128 + SigBus}), got {exitCode}\nstdout: {stdout}\nstderr: {stderr}");
        Assert.Contains("failed authentication", stderr);
    }

    internal static (int ExitCode, string Stdout, string Stderr) RunChild(params string[] args) =>
        RunChildWith(new Dictionary<string, string>(), args);

    internal static (int ExitCode, string Stdout, string Stderr) RunChildWith(
        Dictionary<string, string> environment, params string[] args)
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "Tibet.EngineChild.dll");
        if (!File.Exists(dll))
            throw new FileNotFoundException("The child program was not built next to the tests.", dll);
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(dll);
        foreach (var a in args) start.ArgumentList.Add(a);
        // Core dumps of the expected SIGBUS are noise.
        start.Environment["DOTNET_DbgEnableMiniDump"] = "0";
        foreach (var (name, value) in environment) start.Environment[name] = value;
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(60_000))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"child {string.Join(' ', args)} did not finish in 60 s");
        }
        return (process.ExitCode, stdout.Result, stderr.Result);
    }
}
