using System.Diagnostics;
using System.Globalization;
using System.Text;
using Tibet.IntegrationTests.Hardening;
using Tibet.IntegrationTests.Identities;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Programs;

/// <summary>
/// The program's own large allocations are served by the custodian (tibet-run --serve
/// custodian, the default): their keys, ciphertext and books are never in the program.
/// </summary>
/// <remarks>
/// The proof from outside is a count, not a key search: the arena keys are random and
/// kept raw (no key schedule to recognise), so a scan could not tell one from other
/// random bytes. Instead the program holds 96 MiB of incompressible data under an 8 MiB
/// budget: what was evicted, about 88 MiB, cannot be in the program in any form
/// (plaintext, ciphertext, or anything a key would open) when all the program holds in
/// RAM and swap is far less than that. With <c>--serve program</c> the same scan finds
/// the ciphertext in the program, so the scan would see it; under the default it finds it
/// in the custodian.
/// </remarks>
public class ServeSelfTests
{
    private const int MiB = 96;
    private const int Pages = MiB * 256;
    private const int BudgetPages = 2048; // --budget 8M
    private const long Evicted = (long)(Pages - BudgetPages) * 4096;
    private static readonly byte[] Marker = Encoding.ASCII.GetBytes("tibet-self-canary:");

    [Fact]
    public void The_programs_evicted_memory_and_its_keys_are_in_the_custodian_not_in_the_program()
    {
        using var run = Hold([]);
        int plaintext = MemoryScanner.CountInPresentPages(run.Pid, Marker);
        long inProgram = MemoryScanner.PresentBytes(run.Pid);
        int custodian = CustodianFinder.PidServing(run.Pid);
        long inCustodian = MemoryScanner.PresentBytes(custodian);
        string context = $"program: {plaintext} of {Pages} pages in plaintext, {inProgram >> 20} MiB present; custodian: {inCustodian >> 20} MiB present; {Evicted >> 20} MiB evicted";

        Assert.True(plaintext <= BudgetPages, context);
        // Half of what was evicted: the program's runtime and libraries take some 20 MiB.
        Assert.True(inProgram < Evicted / 2, "the program holds enough memory to keep the evicted data: " + context);
        Assert.True(inCustodian >= Evicted, "the custodian does not hold the evicted data's ciphertext: " + context);

        var (exitCode, stdout, stderr) = run.FinishWithOutput();
        Assert.True(exitCode == 0 && stdout.Contains($"self: 0 bad pages of {Pages}"), $"{context}\nexit {exitCode}\n{stdout}\n{stderr}");
        Assert.DoesNotContain("own engine encrypts it", stderr); // no allocation fell back to the program's engine
    }

    /// <summary>The control: with --serve program the program's own engine keeps the
    /// ciphertext (and its keys) in the program, and the same count sees it there.</summary>
    [Fact]
    public void With_serve_program_the_same_scan_finds_the_evicted_data_in_the_program()
    {
        using var run = Hold(["--serve", "program"]);
        int plaintext = MemoryScanner.CountInPresentPages(run.Pid, Marker);
        long inProgram = MemoryScanner.PresentBytes(run.Pid);
        string context = $"program: {plaintext} of {Pages} pages in plaintext, {inProgram >> 20} MiB present; {Evicted >> 20} MiB evicted";
        Assert.True(plaintext <= BudgetPages, context);
        Assert.True(inProgram >= Evicted, "the program's own engine should hold the ciphertext in the program: " + context);
        var (exitCode, stdout, stderr) = run.FinishWithOutput();
        Assert.True(exitCode == 0 && stdout.Contains($"self: 0 bad pages of {Pages}"), $"{context}\nexit {exitCode}\n{stdout}\n{stderr}");
    }

    /// <summary>--stats reports what the custodian's engine did for the program, under the
    /// program's one budget.</summary>
    [Fact]
    public void The_programs_statistics_include_what_the_custodian_served_for_it()
    {
        string program = NativeBuild.Compile("prog_serve_self.c");
        using var directory = new TempDirectory();
        string stats = directory.File("stats.json");
        var run = TibetRun.Run(TibetRun.Launcher, ["-q", "--budget", "8M", "--stats-json", stats, "--", program, $"{MiB}"], TimeSpan.FromMinutes(3), stdin: "");
        Assert.True(run.ExitCode == 0 && run.Stdout.Contains($"self: 0 bad pages of {Pages}"), run.ToString());
        using var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(stats));
        long Stat(string name) => json.RootElement.GetProperty(name).GetInt64();
        Assert.True(Stat("evictions") >= Pages - BudgetPages, File.ReadAllText(stats));
        Assert.True(Stat("faults") > 0, File.ReadAllText(stats));
        Assert.Equal(BudgetPages * 4096L, Stat("residentBudgetBytes"));
        Assert.True(Stat("peakResidentBytes") <= BudgetPages * 4096L, File.ReadAllText(stats));
        Assert.Equal(0, Stat("authenticationFailures"));
        // Each eviction step is a round trip to the program's thread: taken in batches
        // (ResidentWatermarks.ForRoundTrips), not a page or two per fault as the check's
        // scattered faults would have it (measured: 21 pages a step, against 1.9 with the
        // in-process engine's watermarks).
        Assert.True(Stat("evictions") >= 12 * Stat("evictionBatches"),
            $"{Stat("evictions")} evictions in {Stat("evictionBatches")} steps: fewer than 12 pages per round trip\n{File.ReadAllText(stats)}");
    }

    /// <summary>prog_serve_self under tibet-run with <paramref name="options"/>, held once
    /// it has written its pages, until <see cref="HeldProgram.FinishWithOutput"/>.</summary>
    private static HeldProgram Hold(string[] options) =>
        HeldProgram.Start([TibetRun.Launcher, "-q", "--budget", "8M", .. options, "--", NativeBuild.Compile("prog_serve_self.c"), $"{MiB}"]);
}
