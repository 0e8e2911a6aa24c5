using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Programs;

/// <summary>
/// Sizes no allocator can hold, and calloc products that overflow, answered under
/// tibet-run exactly as glibc answers them natively in the same run; and a redirect that
/// fails (a full region) is announced, and never spoils the region for the next block.
/// </summary>
public class AllocationEdgeTests
{
    private static readonly string[] LowThreshold = ["--threshold", "64K", "--budget", "64M"];

    /// <summary>The region tests fill the program's own engine's 1 TiB region. Under the
    /// default (--serve custodian) the custodian's reservation fills first, and then the
    /// program's engine takes the allocations on, said once (the served pool is a second
    /// region of its own); these tests are about the engine's region.</summary>
    private static readonly string[] OwnEngine = ["--serve", "program"];

    /// <summary>The lines that say whether a block is registered with userfaultfd, which
    /// is what tibet-run changes on purpose; every other line is glibc's answer.</summary>
    private static bool IsUffdLine(string line) => line.StartsWith("uffd ", StringComparison.Ordinal);

    [Fact]
    public void Hostile_sizes_get_glibcs_answers_and_the_next_large_block_is_still_encrypted()
    {
        AssertSameAnswersAsGlibc(requireEncryption: false);
    }

    /// <summary>Under --require-encryption a size tibet can never hold is refused by tibet
    /// itself; the answer (NULL, ENOMEM) must still be glibc's.</summary>
    [Fact]
    public void Hostile_sizes_get_glibcs_answers_when_encryption_is_required()
    {
        AssertSameAnswersAsGlibc(requireEncryption: true);
    }

    private static void AssertSameAnswersAsGlibc(bool requireEncryption)
    {
        string program = NativeBuild.Compile("prog_alloc_edges.c");
        var native = TibetRun.Native([program]);
        Assert.True(native.ExitCode == 0 && native.Stdout.Contains("edges: done"), "native control run failed: " + native);
        string[] options = requireEncryption ? [.. LowThreshold, "--require-encryption"] : LowThreshold;
        var encrypted = TibetRun.Encrypted(options, [program]);
        Assert.True(encrypted.ExitCode == 0 && encrypted.Stdout.Contains("edges: done"), "run under tibet-run failed: " + encrypted);

        string[] nativeLines = Lines(native.Stdout);
        string[] encryptedLines = Lines(encrypted.Stdout);
        // Line by line, so that a failure names every call answered differently.
        var nativeAnswers = nativeLines.Where(l => !IsUffdLine(l)).ToArray();
        var encryptedAnswers = encryptedLines.Where(l => !IsUffdLine(l)).ToArray();
        var differences = nativeAnswers.Zip(encryptedAnswers).Where(p => p.First != p.Second)
            .Select(p => $"glibc: {p.First}  |  tibet-run: {p.Second}").ToArray();
        Assert.True(differences.Length == 0,
            $"{differences.Length} of {nativeAnswers.Length} calls answered differently:\n{string.Join("\n", differences)}\nstderr under tibet-run: {encrypted.Stderr}");
        Assert.Equal(nativeAnswers.Length, encryptedAnswers.Length);

        // The sizes are ones glibc refuses on a machine of our kind; the comparison above
        // holds wherever it does not, but then the rest of this test would prove nothing.
        Assert.Contains("malloc(2^62) = NULL errno 12", nativeAnswers);
        Assert.Contains("calloc(2^32 x 2^32) = NULL errno 12", nativeAnswers);
        Assert.Contains("large block intact: yes", encryptedAnswers);

        // Natively nothing is registered with userfaultfd; under tibet-run the 8 MiB block
        // lives in an arena before and after the hostile calls, and so does the next one.
        Assert.All(nativeLines.Where(IsUffdLine), l => Assert.EndsWith(": no", l));
        Assert.Contains("uffd large block before: yes", encryptedLines);
        Assert.Contains("uffd large block after: yes", encryptedLines);
        Assert.Contains("uffd next 8 MiB block: yes", encryptedLines);

        // Nothing ran unencrypted unless glibc itself served one of the sizes (a machine
        // that overcommits without limit maps 2^40+1 bytes): then it must be announced.
        bool glibcServedSome = nativeAnswers.Any(l => l.EndsWith("= pointer", StringComparison.Ordinal) || l.EndsWith(" = 0 pointer", StringComparison.Ordinal));
        if (glibcServedSome && !requireEncryption)
            Assert.Contains("larger than tibet's 1 TiB address region can ever hold", encrypted.Stderr);
        else
            Assert.DoesNotContain("unencrypted", encrypted.Stderr);
    }

    /// <summary>A region filled up does not hide that the next allocation is plaintext,
    /// and once a block is freed the next allocation is encrypted again.</summary>
    [Fact]
    public void A_full_region_is_announced_once_and_recovers()
    {
        string program = NativeBuild.Compile("prog_region_fill.c");
        var encrypted = TibetRun.Encrypted([.. OwnEngine, .. LowThreshold], [program]);
        Assert.True(encrypted.ExitCode == 0, encrypted.ToString());
        Assert.Contains("malloc(8 MiB) served unencrypted", encrypted.Stdout);
        Assert.Contains("malloc(8 MiB) is encrypted", encrypted.Stdout);
        // One line for the reason, however many calls fell back, saying what to do.
        Assert.Equal(1, Occurrences(encrypted.Stderr, "no free stretch large enough"));
        Assert.Contains("runs unencrypted", encrypted.Stderr);
        Assert.Contains("--require-encryption", encrypted.Stderr);
    }

    [Fact]
    public void A_full_region_refuses_when_encryption_is_required()
    {
        string program = NativeBuild.Compile("prog_region_fill.c");
        var encrypted = TibetRun.Encrypted([.. OwnEngine, .. LowThreshold, "--require-encryption"], [program]);
        Assert.True(encrypted.ExitCode == 0, encrypted.ToString());
        Assert.Contains("malloc(8 MiB) NULL errno 12", encrypted.Stdout);
        Assert.Contains("malloc(8 MiB) is encrypted", encrypted.Stdout);
        Assert.Equal(1, Occurrences(encrypted.Stderr, "no free stretch large enough"));
        Assert.Contains("was refused with ENOMEM", encrypted.Stderr);
        Assert.DoesNotContain("runs unencrypted", encrypted.Stderr);
    }

    private static string[] Lines(string text) => text.Split('\n', StringSplitOptions.RemoveEmptyEntries);

    private static int Occurrences(string text, string what)
    {
        int count = 0;
        for (int at = text.IndexOf(what, StringComparison.Ordinal); at >= 0; at = text.IndexOf(what, at + 1, StringComparison.Ordinal))
            count++;
        return count;
    }

    /// <summary>
    /// A writable anonymous map at an address the program chose, over memory that is not
    /// an arena (here a read-only map; inside a reservation tibet took, it would be a
    /// commit in the arena, see ReservationTests), gets fresh memory from the kernel: it
    /// runs in plaintext, so it is said once and counted (fixedAddress), and refused
    /// (ENOMEM) under --require-encryption.
    /// </summary>
    [Fact]
    public void A_fixed_address_map_is_said_and_counted_or_refused_when_encryption_is_required()
    {
        string program = NativeBuild.Compile("prog_fixed_map.c");

        var plain = TibetRun.Encrypted(["-q"], [program]);
        Assert.True(plain.ExitCode == 0, plain.ToString());
        Assert.Contains("fixed-map ok", plain.Stdout);
        Assert.Single(plain.Stderr.Split('\n'), line => line.Contains("MAP_FIXED", StringComparison.Ordinal));
        var fixedAddress = plain.Stats!.Value.GetProperty("unencrypted").GetProperty("fixedAddress");
        Assert.Equal(1, fixedAddress.GetProperty("count").GetInt64());
        Assert.Equal(64L << 20, fixedAddress.GetProperty("bytes").GetInt64());

        var required = TibetRun.Encrypted(["-q", "--require-encryption"], [program]);
        Assert.True(required.ExitCode == 0, required.ToString());
        Assert.Contains("fixed-map error 12", required.Stdout); // ENOMEM
        Assert.Equal(1, required.Stats!.Value.GetProperty("unencrypted").GetProperty("fixedAddress").GetProperty("refused").GetInt64());
    }

    /// <summary>The same in a forked child, which runs no managed code: the shim counts it
    /// into the page its parent's statistics read, and says so once for the child.</summary>
    [Fact]
    public void A_forked_childs_fixed_address_map_is_said_and_counted_or_refused_when_encryption_is_required()
    {
        string program = NativeBuild.Compile("prog_fixed_map.c");

        var plain = TibetRun.Encrypted(["-q"], [program, "child"]);
        Assert.True(plain.ExitCode == 0, plain.ToString());
        Assert.Contains("fixed-map ok", plain.Stdout);
        Assert.Single(plain.Stderr.Split('\n'), line => line.Contains("a forked child of pid", StringComparison.Ordinal) && line.Contains("MAP_FIXED", StringComparison.Ordinal));
        var fixedAddress = plain.Stats!.Value.GetProperty("unencrypted").GetProperty("fixedAddress");
        Assert.Equal(1, fixedAddress.GetProperty("count").GetInt64());
        Assert.Equal(64L << 20, fixedAddress.GetProperty("bytes").GetInt64());

        var required = TibetRun.Encrypted(["-q", "--require-encryption"], [program, "child"]);
        Assert.True(required.ExitCode == 0, required.ToString());
        Assert.Contains("fixed-map error 12", required.Stdout); // ENOMEM
        Assert.Equal(1, required.Stats!.Value.GetProperty("unencrypted").GetProperty("fixedAddress").GetProperty("refused").GetInt64());
    }
}
