using System.Diagnostics;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Llama;

/// <summary>
/// llama.cpp on encrypted RAM: unmodified hosts (our C driver and the Go stand-in for
/// Ollama's runner) decode exactly the tokens they decode natively, with a resident
/// budget far smaller than the model, so that weights are evicted and faulted back
/// through decryption while the model runs. A byte pattern planted in the weights is
/// then nowhere in the process's present memory and not in the page cache.
/// </summary>
public class LlamaEncryptedTests
{
    private const int Tokens = 32;
    private const long Budget = 256 << 10; // a seventh of the small model

    private static readonly string[] Tight = ["--threshold", "64K", "--budget", "256K"];

    [Theory]
    [InlineData("mmap")]
    [InlineData("read")]
    public void Greedy_tokens_are_identical_on_encrypted_RAM_with_a_budget_below_the_model(string load)
    {
        var model = Support.Llama.SmallModel;
        Assert.True(model.Size > 4 * Budget, $"the small model ({model.Size} bytes) must be well above the budget");
        var native = Support.Llama.RunNative(Support.Llama.Driver, model.Path, Tokens, load);

        var encrypted = TibetRun.Encrypted(Tight, [Support.Llama.Driver, .. Support.Llama.Arguments(model.Path, Tokens, load)], TimeSpan.FromMinutes(10));
        Assert.True(encrypted.ExitCode == 0, encrypted.ToString());
        Assert.Equal(native.Tokens, LlamaOutput.Parse(encrypted.Stdout).Tokens);

        long modelPages = model.Size / 4096;
        if (load == "mmap")
        {
            // The map of the model was served from the file, page by page on first touch
            // (decoding touches most of the weights; unused embedding rows stay untouched).
            Assert.True(encrypted.Stat("sourcedPages") >= modelPages / 2, encrypted.ToString());
        }
        else
        {
            // llama.cpp read the weights into one large posix_memalign buffer, which the
            // malloc path redirected: nothing was mapped from the file, yet at least the
            // model's worth of pages went through sealing.
            Assert.Equal(0, encrypted.Stat("sourcedPages"));
            Assert.True(encrypted.Stat("evictions") >= modelPages, encrypted.ToString());
        }
        Assert.True(encrypted.Stat("decrypts") >= modelPages / 2, encrypted.ToString());
        Assert.True(encrypted.Stat("peakResidentBytes") <= Budget + SharedBudget.SlackBytes, encrypted.ToString());
        Assert.Equal(0, encrypted.Stat("authenticationFailures"));
    }

    [Fact]
    public void Go_stand_in_for_Ollama_decodes_the_same_tokens_on_encrypted_RAM()
    {
        var model = Support.Llama.SmallModel;
        var native = Support.Llama.RunNative(Support.Llama.OllamaStandin, model.Path, Tokens, load: "read");

        var encrypted = TibetRun.Encrypted(Tight, [Support.Llama.OllamaStandin, .. Support.Llama.Arguments(model.Path, Tokens, "read")], TimeSpan.FromMinutes(10));
        Assert.True(encrypted.ExitCode == 0, encrypted.ToString());
        Assert.Equal(native.Tokens, LlamaOutput.Parse(encrypted.Stdout).Tokens);
        // The Go runtime host's weights went through the arenas too.
        Assert.True(encrypted.Stat("evictions") >= model.Size / 4096, encrypted.ToString());
    }

    /// <summary>The canary sits in a row of token_embd.weight that decoding never reads.
    /// Natively it is present twice over: in the page cache and in the map. Under tibet
    /// the imported page was sealed before the program could touch it.</summary>
    [Fact]
    public void A_planted_weight_pattern_is_not_in_present_memory_or_the_page_cache()
    {
        byte[] canary = Convert.FromHexString("c0ffee7469626574ca7a12bd0e55a1e5");
        var model = Support.Llama.Generate("small-canary-scan.gguf", "--preset", "small", "--canary", Convert.ToHexString(canary));
        string[] arguments = [.. Support.Llama.Arguments(model.Path, 8, "mmap"), "--hold"];

        var (nativeHits, _) = ScanWhileHeld([Support.Llama.Driver, .. arguments], model.Path, canary);
        Assert.True(nativeHits >= 1, "control: natively the canary must be found in the process's present pages");

        var (encryptedHits, cachedPages) = ScanWhileHeld([TibetRun.Launcher, .. Tight, "--", Support.Llama.Driver, .. arguments], model.Path, canary);
        Assert.Equal(0, encryptedHits);
        Assert.Equal(0, cachedPages);
    }

    /// <summary>Starts the command, waits for the driver to say it is holding (model loaded,
    /// tokens decoded), then counts the canary in the driver's present pages and the
    /// model file's pages in the page cache.</summary>
    private static (int Hits, long CachedPages) ScanWhileHeld(string[] command, string modelPath, byte[] canary)
    {
        var start = new ProcessStartInfo(command[0]) { RedirectStandardOutput = true, RedirectStandardInput = true, UseShellExecute = false };
        foreach (var a in command[1..]) start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        try
        {
            string? line;
            while ((line = process.StandardOutput.ReadLine()) != null && line != "holding") { }
            Assert.True(line == "holding", "the driver ended without holding");
            int pid = FindDriver(process.Id);
            return (MemoryScanner.CountInPresentPages(pid, canary), PageCache.CachedPages(modelPath));
        }
        finally
        {
            process.StandardInput.Close();
            if (!process.WaitForExit(60_000)) process.Kill(entireProcessTree: true);
        }
    }

    private static int FindDriver(int pid)
    {
        const string name = "llama_driver";
        if (File.ReadAllText($"/proc/{pid}/comm").Trim() == name)
            return pid;
        foreach (string task in Directory.GetDirectories($"/proc/{pid}/task"))
            foreach (string child in File.ReadAllText(Path.Combine(task, "children")).Split(' ', StringSplitOptions.RemoveEmptyEntries))
                if (File.ReadAllText($"/proc/{child}/comm").Trim() == name)
                    return int.Parse(child);
        throw new InvalidOperationException($"no {name} process under pid {pid}");
    }
}
