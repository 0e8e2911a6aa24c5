using System.Diagnostics;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Programs;

/// <summary>
/// Memory a program gives up with madvise(MADV_FREE) (garbage collectors, jemalloc and
/// mimalloc release memory so) leaves no plaintext behind under tibet-run. Natively the
/// kernel keeps such pages mapped until it needs the memory; tibet turns the call into
/// MADV_DONTNEED for memory it serves, which MADV_FREE allows, so the pages are gone when
/// madvise returns. Scanned from outside, through pagemap and /proc/PID/mem: the secret
/// is in every page before, and in none after. The program then checks that what it
/// writes again reads back, and that the rest reads as MADV_FREE allows. The pages come
/// from mmap or from a malloc block, each served by the program's engine or the custodian.
/// </summary>
public class MadvFreeTests
{
    private const int Pages = 256;

    [Theory]
    [InlineData("custodian", "mmap")]
    [InlineData("program", "mmap")]
    [InlineData("custodian", "malloc")]
    [InlineData("program", "malloc")]
    public async Task Pages_given_up_with_madv_free_leave_no_plaintext(string serve, string allocation)
    {
        string program = NativeBuild.Compile("prog_madv_free.c");
        var start = new ProcessStartInfo(TibetRun.Launcher)
        {
            RedirectStandardOutput = true, RedirectStandardInput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        foreach (string a in (string[])["--threshold", "64K", "--budget", "16M", "--serve", serve, "--", program, allocation])
            start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        try
        {
            string? secretLine = process.StandardOutput.ReadLine();
            Assert.True(secretLine?.StartsWith("SECRET ") == true, $"unexpected output: {secretLine}");
            byte[] secret = Convert.FromHexString(secretLine![7..]);
            Assert.Equal("WRITTEN", process.StandardOutput.ReadLine());
            // Control: the scan finds the secret while the program holds it (in all 256
            // pages, resident under a 16M budget, unless the kernel swapped some out).
            int before = MemoryScanner.CountInPresentPages(process.Id, secret);
            Assert.True(before >= 1, $"control: the secret was found {before} times in the {Pages} pages the program wrote");

            process.StandardInput.WriteLine("free");
            process.StandardInput.Flush();
            Assert.Equal("FREED", process.StandardOutput.ReadLine());
            int after = MemoryScanner.CountInPresentPages(process.Id, secret);
            Assert.True(after == 0, $"after MADV_FREE the secret is still present {after} times: given-up pages stayed mapped in plaintext");

            process.StandardInput.WriteLine("go on");
            process.StandardInput.Close();
            Assert.True(process.WaitForExit(30_000), "the program did not finish within 30 s");
            string errors = await stderr;
            Assert.True(process.ExitCode == 0, $"exit {process.ExitCode}: {errors}");
        }
        finally
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
        }
    }
}
