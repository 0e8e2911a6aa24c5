using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Llama;

/// <summary>
/// llama.cpp natively, without tibet: the generated models load and greedy-decode
/// deterministically, the way the weights reach memory (mmap or read) and the host
/// (C or Go) do not change the tokens, and the generator's canary sits where it says
/// without changing them. The tibet-run tests rely on all of this when they compare a
/// run under the interposer with a native one.
/// </summary>
public class LlamaNativeTests
{
    private const int Tokens = 32;

    [Fact]
    public void Small_model_decodes_the_same_varied_tokens_every_run()
    {
        string model = Support.Llama.SmallModel.Path;

        var first = Support.Llama.RunNative(Support.Llama.Driver, model, Tokens);
        var second = Support.Llama.RunNative(Support.Llama.Driver, model, Tokens);

        Assert.Equal(Tokens, first.Tokens.Length);
        Assert.NotEmpty(first.PromptTokens);
        Assert.Equal(first.Tokens, second.Tokens);
        Assert.Equal(LlamaOutput.HashOf(first.Tokens), first.Hash);
        Assert.Equal(first.Hash, second.Hash);
        Assert.True(first.Tokens.Distinct().Count() >= 2, $"degenerate output: {string.Join(' ', first.Tokens)}");
        Assert.True(first.TokensPerSecond > 0, $"tokens_per_second is {first.TokensPerSecond}");
    }

    [Fact]
    public void Mapped_and_read_weights_give_the_same_tokens()
    {
        string model = Support.Llama.SmallModel.Path;

        var mapped = Support.Llama.RunNative(Support.Llama.Driver, model, Tokens, load: "mmap");
        var read = Support.Llama.RunNative(Support.Llama.Driver, model, Tokens, load: "read");

        Assert.Equal(mapped.Tokens, read.Tokens);
    }

    [Fact]
    public void Go_stand_in_for_Ollama_decodes_the_same_tokens_as_the_C_driver()
    {
        string model = Support.Llama.SmallModel.Path;

        var driver = Support.Llama.RunNative(Support.Llama.Driver, model, Tokens);
        var standin = Support.Llama.RunNative(Support.Llama.OllamaStandin, model, Tokens, load: "read");

        Assert.Equal(driver.PromptTokens, standin.PromptTokens);
        Assert.Equal(driver.Tokens, standin.Tokens);
        Assert.Equal(LlamaOutput.HashOf(standin.Tokens), standin.Hash);
    }

    [Fact]
    public void Large_model_decodes_the_same_tokens_mapped_and_read()
    {
        const int fewTokens = 4;
        var model = Support.Llama.LargeModel;
        Assert.True(model.Size > 900L << 20, $"the large model has only {model.Size} bytes");

        var mapped = Support.Llama.RunNative(Support.Llama.Driver, model.Path, fewTokens, load: "mmap");
        var read = Support.Llama.RunNative(Support.Llama.Driver, model.Path, fewTokens, load: "read");

        Assert.Equal(fewTokens, mapped.Tokens.Length);
        Assert.Equal(mapped.Tokens, read.Tokens);
    }

    [Fact]
    public void Canary_is_at_the_printed_offset_and_leaves_the_tokens_alone()
    {
        byte[] canary = Convert.FromHexString("7469626574cafe00c0ffee0123456789");
        var plain = Support.Llama.SmallModel;
        var marked = Support.Llama.Generate("small-canary.gguf", "--preset", "small", "--canary", Convert.ToHexString(canary));

        Assert.NotNull(marked.CanaryOffset);
        byte[] file = File.ReadAllBytes(marked.Path);
        Assert.Equal(marked.Size, file.Length);
        Assert.Equal(canary, file.AsSpan((int)marked.CanaryOffset.Value, canary.Length).ToArray());
        Assert.Equal(1, CountOccurrences(file, canary));
        Assert.NotEqual(plain.Sha256, marked.Sha256);

        var plainRun = Support.Llama.RunNative(Support.Llama.Driver, plain.Path, Tokens);
        var markedRun = Support.Llama.RunNative(Support.Llama.Driver, marked.Path, Tokens);
        Assert.Equal(plainRun.Tokens, markedRun.Tokens);
    }

    [Fact]
    public void Generator_output_depends_on_the_seed_alone()
    {
        var again = Support.Llama.Generate("small-again.gguf", "--preset", "small");
        var otherSeed = Support.Llama.Generate("small-seed2.gguf", "--preset", "small", "--seed", "2");

        Assert.Equal(Support.Llama.SmallModel.Sha256, again.Sha256);
        Assert.Equal(Support.Llama.SmallModel.Size, otherSeed.Size);
        Assert.NotEqual(Support.Llama.SmallModel.Sha256, otherSeed.Sha256);
    }

    [Fact]
    public void Hosts_refuse_a_file_that_is_not_a_model_with_one_line()
    {
        string notAModel = Path.Combine(Path.GetTempPath(), $"tibet-not-a-model-{Guid.NewGuid():N}.gguf");
        File.WriteAllText(notAModel, "this is not a GGUF file\n");
        try
        {
            foreach (string host in new[] { Support.Llama.Driver, Support.Llama.OllamaStandin })
            {
                var result = TibetRun.Run(host, Support.Llama.Arguments(notAModel, Tokens));

                Assert.NotEqual(0, result.ExitCode);
                Assert.Empty(result.Stdout);
                string[] errorLines = result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
                Assert.True(errorLines.Length == 1 && errorLines[0].Contains(notAModel), result.ToString());
            }
        }
        finally
        {
            File.Delete(notAModel);
        }
    }

    private static int CountOccurrences(ReadOnlySpan<byte> haystack, ReadOnlySpan<byte> needle)
    {
        int count = 0;
        for (int start = 0; ;)
        {
            int found = haystack[start..].IndexOf(needle);
            if (found < 0)
                return count;
            count++;
            start += found + 1;
        }
    }
}
