using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Programs;

/// <summary>
/// Real C programs, compiled here, run natively and under tibet-run with a small
/// threshold and a budget far below their data, so that their memory really lives in
/// arenas and is evicted and faulted back. Each program checks its own results byte for
/// byte and names the first failed check.
/// </summary>
public class CProgramTests
{
    private static readonly string[] Tight = ["--threshold", "64K", "--budget", "4M"];

    /// <remarks>Two programs make pages that cannot be moved out, a limit the README
    /// states: prog_mmap mprotects part of a mapping read-only (UFFDIO_MOVE needs a
    /// writable source), and after a fork the pages shared copy-on-write with the child
    /// are refused (EBUSY). For those the budget is checked with that allowance. The
    /// handler must not allocate per fault; serving a fork allocates the child's snapshot
    /// once, which stays far below the bound.</remarks>
    [Theory]
    [InlineData("prog_alloc.c", "alloc: OK", true)]   // every allocator function, calloc zeroing, realloc both ways, alignments
    [InlineData("prog_mmap.c", "mmap: OK", false)]    // partial munmap, mremap, MAP_FIXED, mprotect, madvise
    [InlineData("prog_fork.c", "fork: OK", false)]    // fork and raw fork(2) read fork-time contents of evicted pages
    public void Program_gives_the_same_results_on_encrypted_RAM(string source, string expected, bool everyPageMovable)
    {
        string program = NativeBuild.Compile(source, "-pthread");

        var native = TibetRun.Native([program]);
        Assert.True(native.ExitCode == 0 && native.Stdout.Contains(expected), "native control run failed: " + native);

        var encrypted = TibetRun.Encrypted(Tight, [program]);
        Assert.True(encrypted.ExitCode == 0, encrypted.ToString());
        Assert.Contains(expected, encrypted.Stdout);
        // The memory really went through arenas: pages were sealed and decrypted again,
        // and the resident plaintext stayed within the budget.
        Assert.True(encrypted.Stat("evictions") > 1000, encrypted.ToString());
        Assert.True(encrypted.Stat("decrypts") > 1000, encrypted.ToString());
        long unmovableAllowance = everyPageMovable ? 0 : 4 << 20; // the 4 MiB mprotected, or shared at fork
        Assert.True(encrypted.Stat("peakResidentBytes") <= (4 << 20) + unmovableAllowance, encrypted.ToString());
        Assert.Equal(0, encrypted.Stat("authenticationFailures"));
        Assert.True(encrypted.Stat("handlerAllocatedBytes") < 4096, encrypted.ToString());
    }

    [Fact]
    public void Python_bytearray_of_300MB_hashes_the_same_under_a_32MB_budget()
    {
        string python = TibetRun.Require("python3", "python3");
        string script = """
            import hashlib, random
            r = random.Random(20261123)
            b = bytearray()
            for i in range(300):
                b += r.randbytes(1 << 20)
            print(hashlib.sha256(b).hexdigest(), len(b))
            """;
        var native = TibetRun.Native([python, "-c", script]);
        Assert.True(native.ExitCode == 0, native.ToString());
        var encrypted = TibetRun.Encrypted(["--budget", "32M"], [python, "-c", script]);
        Assert.True(encrypted.ExitCode == 0, encrypted.ToString());
        Assert.Equal(native.Stdout.Trim(), encrypted.Stdout.Trim());
        Assert.EndsWith(" 314572800", native.Stdout.Trim());
        Assert.True(encrypted.Stat("evictions") > 50_000, encrypted.ToString());
        Assert.True(encrypted.Stat("peakResidentBytes") <= 32 << 20, encrypted.ToString());
    }

    [Fact]
    public void Node_buffer_of_200MB_hashes_the_same_under_a_32MB_budget()
    {
        string node = TibetRun.Require("node", "nodejs");
        string script = """
            const crypto = require('crypto');
            const size = 200 * 1024 * 1024;
            const b = Buffer.allocUnsafe(size);
            let x = 2463534242;
            for (let i = 0; i < size; i += 4) { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; b.writeUInt32LE(x, i); }
            console.log(crypto.createHash('sha256').update(b).digest('hex'), b.length);
            """;
        var native = TibetRun.Native([node, "-e", script]);
        Assert.True(native.ExitCode == 0, native.ToString());
        var encrypted = TibetRun.Encrypted(["--budget", "32M"], [node, "-e", script]);
        Assert.True(encrypted.ExitCode == 0, encrypted.ToString());
        Assert.Equal(native.Stdout.Trim(), encrypted.Stdout.Trim());
        Assert.True(encrypted.Stat("evictions") > 30_000, encrypted.ToString());
        Assert.True(encrypted.Stat("peakResidentBytes") <= 32 << 20, encrypted.ToString());
    }

    /// <summary>Eight threads increment owned counters in a calloc'ed region sixteen times
    /// the budget, while churning 4 MiB blocks: every increment faults, evicts and
    /// decrypts, and the final sum must be exact.</summary>
    [Fact]
    public void Eight_threads_lose_no_increment_under_eviction()
    {
        string program = NativeBuild.Compile("prog_threads.c", "-pthread");
        var encrypted = TibetRun.Encrypted(["--threshold", "64K", "--budget", "1M"], [program], TimeSpan.FromMinutes(4));
        Assert.True(encrypted.ExitCode == 0, encrypted.ToString());
        Assert.Contains("threads: OK 480000", encrypted.Stdout);
        Assert.True(encrypted.Stat("evictions") > 100_000, encrypted.ToString());
    }
}
