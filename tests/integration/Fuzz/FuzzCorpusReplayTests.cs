using Tibet.Fuzz.Targets;
using Tibet.IntegrationTests.Support;
using Xunit;
using Xunit.Abstractions;

namespace Tibet.IntegrationTests.Fuzz;

/// <summary>
/// Replays, without instrumentation, every seed of every fuzz target's corpus
/// (tests/fuzz/corpus/TARGET) and every input a campaign found crashing
/// (tests/fuzz/regressions/TARGET) through the same entry points scripts/fuzz.sh runs
/// under AFL++. Each input must be parsed or refused in the way the parser documents;
/// any other exception (IndexOutOfRange, Overflow, a broken invariant) fails here in CI.
/// </summary>
public class FuzzCorpusReplayTests(ITestOutputHelper output)
{
    private static string FuzzRoot => Path.Combine(RepoPaths.Root, "tests", "fuzz");

    public static TheoryData<string, string> Inputs()
    {
        var data = new TheoryData<string, string>();
        foreach (var target in FuzzTarget.All)
        {
            foreach (string kind in new[] { "corpus", "regressions" })
            {
                string dir = Path.Combine(FuzzRoot, kind, target.Name);
                if (!Directory.Exists(dir))
                    continue;
                foreach (string file in Directory.GetFiles(dir).Order(StringComparer.Ordinal))
                    data.Add(target.Name, Path.GetRelativePath(FuzzRoot, file));
            }
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Inputs))]
    public void Input_is_parsed_or_refused_as_documented(string targetName, string relativePath)
    {
        var target = FuzzTarget.Named(targetName)!;
        byte[] input = File.ReadAllBytes(Path.Combine(FuzzRoot, relativePath));

        // Any exception other than the documented refusal escapes Run and fails the test
        // with its type and stack; the refusal itself comes back as an outcome.
        var outcome = target.Run(input);

        output.WriteLine($"{relativePath} ({input.Length} bytes): {(outcome.Accepted ? "accepted" : "refused")}: {outcome.Detail}");
        Assert.False(string.IsNullOrWhiteSpace(outcome.Detail));
    }

    [Fact]
    public void Every_target_has_a_corpus_that_reaches_both_acceptance_and_refusal()
    {
        // A corpus of only refused inputs would keep the fuzzer at the first check, and
        // one of only valid inputs would start it far from the refusals: each needs both.
        // A missing corpus folder fails here rather than leaving the replay empty.
        foreach (var target in FuzzTarget.All)
        {
            string dir = Path.Combine(FuzzRoot, "corpus", target.Name);
            Assert.True(Directory.Exists(dir), $"The corpus of fuzz target '{target.Name}' is missing: {dir}. Regenerate it with 'dotnet Tibet.Fuzz.dll seeds tests/fuzz/corpus'.");
            var outcomes = Directory.GetFiles(dir).Select(file => (File: Path.GetFileName(file), Outcome: target.Run(File.ReadAllBytes(file)))).ToList();
            foreach (var (file, outcome) in outcomes)
                output.WriteLine($"{target.Name}/{file}: {(outcome.Accepted ? "accepted" : "refused")}: {outcome.Detail}");
            Assert.True(outcomes.Any(o => o.Outcome.Accepted), $"No seed of '{target.Name}' is accepted; the corpus must hold valid inputs written by tibet's own writers.");
            Assert.True(outcomes.Any(o => !o.Outcome.Accepted), $"No seed of '{target.Name}' is refused; the corpus must hold near-valid inputs too.");
            Assert.All(outcomes, o => Assert.True(new FileInfo(Path.Combine(dir, o.File)).Length <= 16 * 1024,
                $"Seed {target.Name}/{o.File} is over 16 KiB; AFL++ mutates small seeds far faster."));
        }
    }

    [Fact]
    public void A_sealed_seed_opens_to_a_live_decision_for_the_fuzz_identity()
    {
        // The seal target only reaches the tag table, MAC and claim checks when a seed
        // unwraps with FuzzKeys.Recipient: prove one does, with the fixed claim and time.
        var outcome = new SealTarget().Run(File.ReadAllBytes(Path.Combine(FuzzRoot, "corpus", "seal", "one-page.sealed")));
        Assert.True(outcome.Accepted, outcome.Detail);
        Assert.EndsWith("decision Live", outcome.Detail, StringComparison.Ordinal);
    }
}
