using Tibet.IntegrationTests.Sealing;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Llama;

/// <summary>
/// Unmodified llama.cpp on a sealed model: with the identity it is sealed to and a valid
/// claim, it decodes exactly the tokens it decodes natively on the plain model, through
/// every load path (mmap; load_mode NONE, which reads with fopen/fread; DIRECT_IO, which reads an O_DIRECT descriptor with read), with a
/// resident budget a seventh of the model. Without them the weights are zeros.
/// </summary>
[Collection("hugetlb pool")]
public class LlamaSealedTests(SealedRunWorld world) : IClassFixture<SealedRunWorld>
{
    private const int Tokens = 16;

    [Theory]
    [InlineData("mmap")]
    [InlineData("read")]
    [InlineData("direct")] // O_DIRECT descriptor and read(2): tibet's magic test cannot read 4 bytes from it
    public void Tokens_on_the_sealed_model_equal_native_tokens_on_the_plain_model(string load)
    {
        var native = Support.Llama.RunNative(Support.Llama.Driver, world.PlainModel, Tokens, load);
        string log = world.PathOf($"audit-llama-{load}.jsonl");

        var run = TibetRun.Encrypted(
            ["--identity", world.Alice, "--claim", world.ClaimPath("valid"), "--audit-log", log, "--threshold", "64K", "--budget", "256K"],
            [Support.Llama.Driver, .. Support.Llama.Arguments(world.SealedModel, Tokens, load)], TimeSpan.FromMinutes(10));

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal(native.Tokens, LlamaOutput.Parse(run.Stdout).Tokens);
        Assert.True(run.Stat("peakResidentBytes") <= (256 << 10) + SharedBudget.SlackBytes, run.ToString());
        Assert.Equal(0, run.Stat("authenticationFailures"));
        // The map is served straight from the file's ciphertext, page by page on first
        // touch; the read path decrypts through reads and never maps the file.
        if (load == "mmap")
            Assert.True(run.Stat("sourcedPages") >= world.DataLength / 4096 / 2, run.ToString());
        else
            Assert.Equal(0, run.Stat("sourcedPages"));
        var record = Assert.Single(SealedRunWorld.ReadAudit(log));
        Assert.Equal("granted", record.GetProperty("decision").GetString());
    }

    /// <summary>The sealed model's map in 2 MiB pages (--huge-pages): each is read as
    /// ciphertext in one request and decrypted page by page before it is mapped.</summary>
    [Fact]
    public void Tokens_on_the_sealed_model_in_2_MiB_pages_equal_native_tokens()
    {
        var native = Support.Llama.RunNative(Support.Llama.Driver, world.PlainModel, Tokens, "mmap");
        string log = world.PathOf("audit-llama-huge.jsonl");

        var run = TibetRun.Encrypted(
            ["--identity", world.Alice, "--claim", world.ClaimPath("valid"), "--audit-log", log, "--huge-pages", "4M"],
            [Support.Llama.Driver, .. Support.Llama.Arguments(world.SealedModel, Tokens, "mmap")], TimeSpan.FromMinutes(10));

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal(native.Tokens, LlamaOutput.Parse(run.Stdout).Tokens);
        Assert.True(run.Stats is { } stats && stats.TryGetProperty("hugePages", out var huge) && huge.GetProperty("faults").GetInt64() > 0
                    && huge.GetProperty("poisonedPages").GetInt64() == 0, run.ToString());
        Assert.Equal("granted", Assert.Single(SealedRunWorld.ReadAudit(log)).GetProperty("decision").GetString());
    }

    [Fact]
    public void The_Go_stand_in_for_Ollama_decodes_the_sealed_model_like_the_plain_one()
    {
        var native = Support.Llama.RunNative(Support.Llama.OllamaStandin, world.PlainModel, Tokens, "read");
        string log = world.PathOf("audit-llama-go.jsonl");

        var run = TibetRun.Encrypted(
            ["--identity", world.Alice, "--claim", world.ClaimPath("valid"), "--audit-log", log, "--threshold", "64K", "--budget", "256K"],
            [Support.Llama.OllamaStandin, .. Support.Llama.Arguments(world.SealedModel, Tokens, "read")], TimeSpan.FromMinutes(10));

        // llama.cpp inside a cgo binary reads through libc's fopen/fread, which tibet answers.
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal(native.Tokens, LlamaOutput.Parse(run.Stdout).Tokens);
        Assert.Equal("granted", Assert.Single(SealedRunWorld.ReadAudit(log)).GetProperty("decision").GetString());
    }

    [Fact]
    public void Without_a_claim_llama_cpp_runs_on_dead_material_and_its_tokens_differ()
    {
        var native = Support.Llama.RunNative(Support.Llama.Driver, world.PlainModel, Tokens, "mmap");
        string log = world.PathOf("audit-llama-dead.jsonl");

        var run = TibetRun.Encrypted(["--identity", world.Alice, "--audit-log", log],
            [Support.Llama.Driver, .. Support.Llama.Arguments(world.SealedModel, Tokens, "mmap")], TimeSpan.FromMinutes(10));

        // No crash of ours and no wrong bytes: all-zero weights decode a constant token.
        Assert.True(run.ExitCode == 0, run.ToString());
        int[] tokens = LlamaOutput.Parse(run.Stdout).Tokens;
        Assert.NotEqual(native.Tokens, tokens);
        Assert.Single(tokens.Distinct());
        Assert.Contains("NoClaim:", run.Stderr);
        Assert.Equal("denied", Assert.Single(SealedRunWorld.ReadAudit(log)).GetProperty("decision").GetString());
    }
}
