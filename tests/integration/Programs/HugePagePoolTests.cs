using System.Globalization;
using Tibet.IntegrationTests.Hardening;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Programs;

/// <summary>
/// Two runs with <c>--huge-pages</c> at once: tibet-run grows the hugetlb pool for each
/// run by what is not free. A run that reserved its pages but has not used them yet left
/// them free in the pool, and a second run counted them as its own: the pool then held
/// one run's pages for two, and a handler met EEXIST, then SIGBUS. In the same way a run
/// that ended gave back pages a run started meanwhile had counted (back-to-back runs of
/// llama-budget.sh). The machine's ledger of reservations
/// (Tibet.Core.Paging.Huge.HugePageLedger) counts what live runs reserved and have not
/// used as taken, and gives pages back only when the last run ends.
/// </summary>
public class HugePagePoolTests
{
    private const int ModelBytes = 24 << 20; // 12 pages of 2 MiB, under --huge-pages 8M (4)
    private const string NrHugePages = "/proc/sys/vm/nr_hugepages";

    [Fact]
    public void Two_runs_that_reserved_before_either_touched_its_model_both_get_their_pages()
    {
        string reader = NativeBuild.Compile("prog_sealed_read.c");
        string model = Path.Combine(RepoPaths.DiskTemp, $"tibet-pool-{Guid.NewGuid():N}.gguf");
        byte[] data = new byte[ModelBytes];
        new Random(7).NextBytes(data);
        "GGUF"u8.CopyTo(data);
        File.WriteAllBytes(model, data);
        string expected = Fnv1a(data);
        // Free pages no run has reserved (an administrator's pool, or one a killed run left)
        // would let both runs start without growing the pool, and hide the miscount this
        // test looks for: the pool is shrunk to the pages in use for the test (the kernel
        // frees only free pages), and given back its size after.
        long original = PoolPages();
        long free = MeminfoPages("HugePages_Free:");
        if (free > 0)
            File.WriteAllText(NrHugePages, (original - free).ToString(CultureInfo.InvariantCulture));
        long before = PoolPages();
        string[] Run() => [TibetRun.Launcher, "-q", "--threshold", "64K", "--huge-pages", "8M", "--",
            reader, model, "0", ModelBytes.ToString(CultureInfo.InvariantCulture), "map-hold-read"];
        try
        {
            // Both map their model and wait, with nothing of it touched: each reserved 4
            // pages, and neither took one from the pool yet.
            using var first = HeldProgram.Start(Run());
            using var second = HeldProgram.Start(Run());
            Assert.True(PoolPages() >= before + 8,
                $"two runs of 4 pages grew the hugetlb pool from {before} to {PoolPages()} pages: the second counted the first's as free (or this is not root, which --huge-pages needs to grow the pool)");
            int firstCustodian = CustodianFinder.PidServing(first.Pid);
            int secondCustodian = CustodianFinder.PidServing(second.Pid);

            // Both read their whole model at once, evicting and refaulting 2 MiB pages.
            first.Release();
            second.Release();
            var (firstExit, firstOut, firstErr) = first.FinishWithOutput();
            var (secondExit, secondOut, secondErr) = second.FinishWithOutput();
            Assert.True(firstExit == 0 && firstOut.Contains($"hash {expected} "), $"first run: exit {firstExit}\n{firstOut}\n{firstErr}");
            Assert.True(secondExit == 0 && secondOut.Contains($"hash {expected} "), $"second run: exit {secondExit}\n{secondOut}\n{secondErr}");
            WaitForExit(firstCustodian);
            WaitForExit(secondCustodian);
            Assert.Equal(before, PoolPages()); // the last run to end gave everything back
        }
        finally
        {
            File.Delete(model);
            if (PoolPages() < original)
                File.WriteAllText(NrHugePages, original.ToString(CultureInfo.InvariantCulture));
        }
    }

    private static long MeminfoPages(string field) =>
        long.Parse(File.ReadLines("/proc/meminfo").First(l => l.StartsWith(field, StringComparison.Ordinal))[field.Length..].Trim(), CultureInfo.InvariantCulture);

    private static long PoolPages() => long.Parse(File.ReadAllText(NrHugePages).Trim(), CultureInfo.InvariantCulture);

    /// <summary>Waits for a process to end (a guard against a hang, not a timing assertion).</summary>
    private static void WaitForExit(int pid)
    {
        var deadline = DateTime.UtcNow.AddMinutes(1);
        while (Directory.Exists($"/proc/{pid}") && DateTime.UtcNow < deadline)
            Thread.Sleep(20);
        Assert.False(Directory.Exists($"/proc/{pid}"), $"custodian {pid} did not end within a minute of its program");
    }

    private static string Fnv1a(byte[] data)
    {
        ulong hash = 0xcbf29ce484222325UL;
        foreach (byte b in data)
            hash = (hash ^ b) * 0x100000001b3UL;
        return hash.ToString("x16", CultureInfo.InvariantCulture);
    }
}
