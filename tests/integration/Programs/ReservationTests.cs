using System.Text;
using System.Text.Json;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Programs;

/// <summary>
/// A runtime's heap is reserved first (a large PROT_NONE map) and committed piece by
/// piece later: with mprotect (V8) or with MAP_FIXED maps inside the reservation (the JVM,
/// jemalloc where the system does not overcommit). tibet takes the reservation into an
/// arena, so that what is committed in it is encrypted like any large allocation: a scan
/// of the process's present pages finds at most a budget's worth of the 16384 canaries
/// the program wrote (all of them natively, the control), and the program reads every
/// canary back, sees its mprotect round trips keep them, and its decommits read as zeros.
/// A file mapped into the middle of the reservation (as HotSpot maps archived classes into
/// its heap) leaves the rest of it served: a commit after it is encrypted too, not counted
/// as a fixed-address map.
/// </summary>
public class ReservationTests
{
    private const int Pages = 16384; // the 64 MiB prog_reserve_commit commits and marks
    private const int BudgetPages = 2048;
    private static readonly byte[] Canary = Encoding.ASCII.GetBytes("TIBET-RESERVED-CANARY:");
    private static readonly Lazy<string> Program = new(() => NativeBuild.Compile("prog_reserve_commit.c"));

    [Theory]
    [InlineData("mprotect", "custodian", false)]
    [InlineData("fixed", "custodian", false)]
    [InlineData("mprotect", "custodian", true)]
    [InlineData("fixed", "custodian", true)]
    [InlineData("mprotect", "program", false)]
    [InlineData("fixed", "program", false)]
    public void Memory_committed_inside_a_reservation_is_encrypted(string commit, string serve, bool inForkedChild)
    {
        string[] arguments = inForkedChild ? [commit, "child"] : [commit];
        var native = RunHeld([Program.Value, .. arguments], Canary, statsFile: null);
        Assert.True(native.Output.Contains("reserve-commit ok"), "control, natively: " + native);
        Assert.True(native.CanariesPresent >= Pages, $"control: natively all {Pages} canaries must be present; {native}");

        string statsFile = Path.Combine(Path.GetTempPath(), $"tibet-stats-{Guid.NewGuid():N}.json");
        try
        {
            var encrypted = RunHeld([TibetRun.Launcher, "--budget", $"{BudgetPages * 4}K", "--serve", serve, "--stats-json", statsFile, "--",
                Program.Value, .. arguments], Canary, statsFile);
            Assert.True(encrypted.ExitCode == 0 && encrypted.Output.Contains("reserve-commit ok"), encrypted.ToString());
            // The budget's pages, and a margin for the pages of a fault's read-ahead that
            // are in flight when the scan runs.
            Assert.True(encrypted.CanariesPresent <= BudgetPages + 512,
                $"{encrypted.CanariesPresent} of {Pages} canaries are present in plaintext with a budget of {BudgetPages} pages; {encrypted}");
            // Nothing ran unencrypted, so nothing was said or counted.
            Assert.DoesNotContain("MAP_FIXED", encrypted.Errors);
            Assert.DoesNotContain("not encrypted", encrypted.Errors);
            foreach (var reason in encrypted.Stats!.Value.GetProperty("unencrypted").EnumerateObject())
                if (reason.Value.ValueKind == JsonValueKind.Object)
                    Assert.True(reason.Value.GetProperty("count").GetInt64() == 0, $"{reason.Name}: {encrypted}");
        }
        finally
        {
            File.Delete(statsFile);
        }
    }

    /// <summary>
    /// The real thing: HotSpot reserves its heap with PROT_NONE (at an address of its own
    /// below 32 GiB, as a hint, for compressed oops, then wherever it is given) and commits
    /// it with MAP_FIXED maps inside (os::commit_memory); it also maps archived classes
    /// from a file into the middle of the heap. The heap is encrypted: of 30000 arrays of
    /// 8000 bytes, each with a canary, a scan finds at most one per page of the 32 MiB
    /// budget, against all of them natively; every array reads back intact after the
    /// garbage collector and eviction moved it.
    /// </summary>
    [Fact]
    public void A_jvm_heap_is_encrypted()
    {
        string java = TibetRun.Require("java", "openjdk-17-jdk-headless");
        string classes = CompileJava("HeapCanary.java");
        var encrypted = AssertHeapEncrypted([java, "-Xmx512m", "-cp", classes, "HeapCanary", "30000"], [], "TIBET-JAVA-HEAP-CANARY:");
        // What stays the kernel's is the JIT's code cache (executable, left to the kernel
        // and said): megabytes, not the 240 MB of heap.
        long fixedBytes = encrypted.Stats!.Value.GetProperty("unencrypted").GetProperty("fixedAddress").GetProperty("bytes").GetInt64();
        Assert.True(fixedBytes < 32L << 20, $"{fixedBytes} bytes of fixed-address maps ran unencrypted; {encrypted}");
    }

    /// <summary>
    /// .NET's GC reserves its regions with PROT_NONE (256 GiB of address space) and commits
    /// them with mprotect: a plain .NET program (Tibet.EngineChild heap-canary, which uses
    /// nothing of tibet's) keeps its heap encrypted, 30000 arrays of 8000 bytes found at
    /// most once per page of the budget, against all of them natively.
    /// </summary>
    [Fact]
    public void A_dotnet_heap_is_encrypted()
    {
        string dotnet = TibetRun.Require("dotnet", "the .NET 10 SDK (scripts/install-deps.sh says where to get it)");
        string program = Path.Combine(AppContext.BaseDirectory, "Tibet.EngineChild.dll");
        AssertHeapEncrypted([dotnet, program, "heap-canary", "30000"], [], "TIBET-DOTNET-HEAP-CANARY:");
    }

    /// <summary>
    /// V8 reserves each 256 KiB page of its heap on its own: 508 KiB at a random address
    /// of its choosing (a hint), trimmed to alignment with munmap, committed with mprotect.
    /// Reservations are taken from 256 KiB (below the 1 MiB threshold of allocations), so
    /// a Node.js program's heap is encrypted as it comes: 30000 strings of 4100 bytes, each
    /// with a canary, are found at most once per page of the budget, against all of them
    /// natively.
    /// </summary>
    [Fact]
    public void A_node_heap_is_encrypted()
    {
        string node = TibetRun.Require("node", "nodejs");
        string script = Path.Combine(AppContext.BaseDirectory, "native", "heap_canary.js");
        AssertHeapEncrypted([node, script, "30000"], [], "TIBET-NODE-HEAP-CANARY:");
    }

    /// <summary>Runs a runtime whose heap holds 30000 canaries, at most one per page:
    /// natively (the control: all present), then under tibet-run with a 32 MiB budget (at
    /// most a budget's worth present); both must read every canary back.</summary>
    private static Held AssertHeapEncrypted(string[] command, string[] options, string canary)
    {
        const int count = 30000, budgetPages = 8192;
        byte[] needle = Encoding.ASCII.GetBytes(canary);
        var native = RunHeld(command, needle, statsFile: null);
        Assert.True(native.Output.Contains($"heap ok {count}") && native.CanariesPresent >= count,
            "control: natively every canary must be present; " + native);

        string statsFile = Path.Combine(Path.GetTempPath(), $"tibet-stats-{Guid.NewGuid():N}.json");
        try
        {
            var encrypted = RunHeld([TibetRun.Launcher, "--budget", $"{budgetPages * 4}K", .. options, "--stats-json", statsFile, "--", .. command], needle, statsFile);
            Assert.True(encrypted.ExitCode == 0 && encrypted.Output.Contains($"heap ok {count}"), encrypted.ToString());
            Assert.True(encrypted.CanariesPresent <= budgetPages,
                $"{encrypted.CanariesPresent} of {count} canaries are present in plaintext with a budget of {budgetPages} pages; {encrypted}");
            return encrypted;
        }
        finally
        {
            File.Delete(statsFile);
        }
    }

    /// <summary>Compiles a Java source of the tests with javac, into a directory of its own.</summary>
    private static string CompileJava(string sourceName)
    {
        string javac = TibetRun.Require("javac", "openjdk-17-jdk-headless");
        string source = Path.Combine(AppContext.BaseDirectory, "native", sourceName);
        string output = Path.Combine(Path.GetTempPath(), "tibet-tests", "java", Path.GetFileNameWithoutExtension(sourceName));
        Directory.CreateDirectory(output);
        var (code, _, stderr) = NativeBuild.Run(javac, ["-d", output, source]);
        Assert.True(code == 0, $"javac failed for {sourceName} (exit {code}):\n{stderr}");
        return output;
    }

    private sealed record Held(int ExitCode, string Output, string Errors, int CanariesPresent, JsonElement? Stats)
    {
        public override string ToString() => $"exit {ExitCode}, {CanariesPresent} canaries present\nstdout: {Output}\nstderr: {Errors}\nstats: {Stats}";
    }

    /// <summary>Runs the command until the program says it is ready, with its pid, counts
    /// the canaries in that process's present pages, and lets it finish.</summary>
    private static Held RunHeld(string[] command, byte[] needle, string? statsFile)
    {
        using var held = Hardening.HeldProgram.Start(command);
        int present = MemoryScanner.CountInPresentPages(held.Pid, needle);
        var (exitCode, output, errors) = held.FinishWithOutput();
        JsonElement? stats = statsFile != null && File.Exists(statsFile)
            ? JsonDocument.Parse(File.ReadAllText(statsFile)).RootElement.Clone() : null;
        return new Held(exitCode, output, errors, present, stats);
    }
}
