using System.Text.Json;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Llama;

/// <summary>
/// llama.cpp with its model map served in 2 MiB pages (tibet-run --huge-pages) and half
/// the model resident: the tokens are the native ones, pages were dropped and read back,
/// the hugetlb pool is given back, and the page cache holds none of the model.
/// </summary>
[Collection("hugetlb pool")]
public class LlamaHugePageTests
{
    private const int Tokens = 8;
    private const long Huge = 2 << 20;

    [Fact]
    public void Greedy_tokens_are_identical_with_half_the_model_in_2_MiB_pages()
    {
        var model = Support.Llama.MediumModel;
        var native = Support.Llama.RunNative(Support.Llama.Driver, model.Path, Tokens, "mmap");
        long budget = model.Size / 2 & ~(Huge - 1);
        long poolBefore = PoolTotal();

        var encrypted = TibetRun.Encrypted(["--huge-pages", budget.ToString()],
            [Support.Llama.Driver, .. Support.Llama.Arguments(model.Path, Tokens, "mmap")], TimeSpan.FromMinutes(10));
        Assert.True(encrypted.ExitCode == 0, encrypted.ToString());
        Assert.Equal(native.Tokens, LlamaOutput.Parse(encrypted.Stdout).Tokens);

        Assert.True(encrypted.Stats is { } stats && stats.TryGetProperty("hugePages", out _), $"no 2 MiB-page statistics:\n{encrypted}");
        JsonElement huge = encrypted.Stats!.Value.GetProperty("hugePages");
        long Stat(string name) => huge.GetProperty(name).GetInt64();
        // Every token reads the whole model: with half of it resident, pages went and came back.
        Assert.True(Stat("evictions") > 0 && Stat("refaults") > 0, huge.ToString());
        Assert.True(Stat("peakResidentBytes") <= budget, huge.ToString());
        Assert.Equal(0, Stat("poisonedPages"));
        Assert.Equal(0, Stat("writtenBytes"));
        // Read with O_DIRECT: the model's plaintext never entered the page cache (fincore, from outside).
        Assert.Equal(0, PageCache.CachedPages(model.Path));
        // tibet-run grew the pool for the run and gave the pages back.
        Assert.Equal(poolBefore, PoolTotal());
    }

    [Fact]
    public void A_budget_the_pool_cannot_hold_falls_back_to_4_KiB_pages_with_a_line()
    {
        var model = Support.Llama.SmallModel;
        var native = Support.Llama.RunNative(Support.Llama.Driver, model.Path, Tokens, "mmap");
        // Far more than this machine's memory: the kernel cannot grow the pool that much.
        var encrypted = TibetRun.Encrypted(["--huge-pages", "64T", "--threshold", "64K"],
            [Support.Llama.Driver, .. Support.Llama.Arguments(model.Path, Tokens, "mmap")], TimeSpan.FromMinutes(10));
        Assert.True(encrypted.ExitCode == 0, encrypted.ToString());
        Assert.Equal(native.Tokens, LlamaOutput.Parse(encrypted.Stdout).Tokens);
        Assert.Contains("--huge-pages", encrypted.Stderr);
        Assert.Contains("4 KiB pages", encrypted.Stderr);
        Assert.True(encrypted.Stat("sourcedPages") > 0, encrypted.ToString());
    }

    private static long PoolTotal() => long.Parse(File.ReadAllText("/proc/sys/vm/nr_hugepages").Trim());
}
