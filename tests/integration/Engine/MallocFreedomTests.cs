using System.Text.RegularExpressions;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Engine;

public class MallocFreedomTests
{
    /// <summary>
    /// A faulting thread may hold the host allocator's locks (under the interposer,
    /// jemalloc's own metadata can sit in arena memory), so the handler must never call
    /// malloc. An LD_PRELOAD probe counts malloc-family calls by thread name while the
    /// child drives faults, read-ahead, eviction, compression and madvise; pages of a plain
    /// file (FileSource) and of a sealed model (SealedFileSource); forked children served
    /// from the store and from a file; and tampered pages (of the store and of a sealed
    /// file, read in the process and in children), whose reports must come from the
    /// reporter thread, never from the handler; and a model map's whole ranges placed and
    /// read ahead (the range reader's thread counts as the fault path's), and evicted whole
    /// and decrypted whole into recycled huge pages under a smaller budget.
    /// </summary>
    /// <remarks>With a handler per CPU, a handler may serve for the first time long after
    /// start-up, when the service passes to it: what runs once per thread or per class
    /// then runs on the fault path (seen: a static field read at the first hand-over that
    /// is near ran a static constructor, five operator-new calls, in half the runs).
    /// The child holds itself to two CPUs there, so that there are two handlers to pass
    /// the service between on a machine of any size.</remarks>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void The_handler_thread_never_calls_malloc(bool handlerPerCpu)
    {
        string probe = NativeBuild.Compile("malloc_probe.c", "-shared", "-fPIC");
        string soPath = probe + ".so";
        File.Copy(probe, soPath, overwrite: true);
        var (code, stdout, stderr) = TamperTests.RunChildWith(
            new Dictionary<string, string>
            {
                ["LD_PRELOAD"] = soPath,
                ["TIBET_MALLOC_PROBE"] = soPath,
                // Compile each method once, fully, on first use: no tier-up or on-stack
                // replacement that would run the JIT (which mallocs) on the handler later.
                ["DOTNET_TieredCompilation"] = "0",
                ["TIBET_HANDLER_PER_CPU"] = handlerPerCpu ? "1" : "0",
            },
            "malloc-probe");
        Assert.True(code == 0, $"child failed ({code}): {stdout}\n{stderr}");

        var handovers = Regex.Match(stdout, @"handlers-per-cpu (\S+) handovers-before-arming (\d+) handovers (\d+)");
        Assert.True(handovers.Success, stdout);
        Assert.Equal(handlerPerCpu.ToString(), handovers.Groups[1].Value);
        // With a handler per CPU, the service passed between handlers only while armed (the
        // child warms up on the serving handler's CPU, then moves): what a first hand-over
        // runs once per process ran on the fault path, under the probe.
        Assert.True(handovers.Groups[2].Value == "0", "the service passed between handlers before the probe was armed: " + stdout);
        if (handlerPerCpu)
            Assert.True(long.Parse(handovers.Groups[3].Value) >= 1, "the service never passed between handlers while armed: " + stdout);
        else
            Assert.Equal("0", handovers.Groups[3].Value);
        var counts = Regex.Match(stdout, @"handler-mallocs (\d+) control-mallocs (\d+) reporter-mallocs (\d+)");
        Assert.True(counts.Success, stdout);
        var work = Regex.Match(stdout, @"faults (\d+) evictions (\d+) decrypts (\d+) decompressions (\d+) removes (\d+)");
        Assert.True(work.Success, stdout);
        var sources = Regex.Match(stdout, @"sourced (\d+) authentication-failures (\d+) peak-children (\d+)");
        var clean = Regex.Match(stdout, @"clean-evictions (\d+) write-faults (\d+) worker-decrypts (\d+)");
        Assert.True(clean.Success, stdout);
        Assert.True(sources.Success, stdout);
        var exercise = Regex.Match(stdout, @"exercise (\S+) children-served (\d+) children-killed (\d+) parent-sigbus (\d+)");
        Assert.True(exercise.Success, stdout);
        var reports = Regex.Match(stdout, @"reports (\d+) tamper-callbacks (\d+) report-threads (\S*)");
        Assert.True(reports.Success, stdout);

        // The probe works: the control thread's ten AllocHGlobal/FreeHGlobal pairs counted.
        Assert.True(long.Parse(counts.Groups[2].Value) >= 20, stdout);
        // The handler really did the work…
        Assert.True(long.Parse(work.Groups[1].Value) > 1000, stdout);
        Assert.True(long.Parse(work.Groups[2].Value) > 1000, stdout);
        Assert.True(long.Parse(work.Groups[4].Value) > 100, stdout);
        Assert.True(long.Parse(work.Groups[5].Value) >= 2, stdout);
        // …clean pages evicted by their kept copies, and first writes to them served…
        Assert.True(long.Parse(clean.Groups[1].Value) > 100, stdout);
        Assert.True(long.Parse(clean.Groups[2].Value) > 100, stdout);
        // …long runs shared with the fill worker (a second thread on the fault path)…
        if (Environment.ProcessorCount > 1)
            Assert.True(long.Parse(clean.Groups[3].Value) > 100, stdout);
        // …pages from a plain file and a sealed model (two passes of 257 + 130 pages, and a child's 257)…
        Assert.True(long.Parse(sources.Groups[1].Value) > 2 * (257 + 128), stdout);
        // …children served with exact contents, and tampered pages refused in children and here…
        Assert.Equal("ok", exercise.Groups[1].Value);
        Assert.Equal("2", exercise.Groups[2].Value);
        Assert.Equal("2", exercise.Groups[3].Value);
        Assert.Equal("2", exercise.Groups[4].Value);
        Assert.True(long.Parse(sources.Groups[3].Value) >= 1, stdout);
        // (two passes, four tampered pages each: every one reported, sealed-file ones to the source too)
        Assert.Equal(8, long.Parse(sources.Groups[2].Value));
        Assert.Equal("8", reports.Groups[1].Value);
        Assert.Equal("4", reports.Groups[2].Value);
        // …reported from the reporter thread only…
        Assert.Equal("tibet-report", reports.Groups[3].Value);
        // …a model map's whole ranges placed as huge pages and read ahead (by the range
        // reader, a third thread on the fault path), where the kernel gives THP…
        var placed = Regex.Match(stdout, @"placed (\d+) placed-read-ahead (\d+)");
        Assert.True(placed.Success, stdout);
        if (Tibet.Core.Paging.Collapse.TransparentHugePages.Enabled)
        {
            Assert.True(long.Parse(placed.Groups[1].Value) >= 4, stdout);
            Assert.True(long.Parse(placed.Groups[2].Value) >= 1, stdout);
        }
        // …and, under a budget smaller than the map, ranges evicted whole and decrypted
        // whole into recycled huge pages (the handler and the fill worker)…
        var cycled = Regex.Match(stdout, @"range-evictions (\d+) placed-sealed (\d+) recycled (\d+)");
        Assert.True(cycled.Success, stdout);
        if (Tibet.Core.Paging.Collapse.TransparentHugePages.Enabled)
        {
            Assert.True(long.Parse(cycled.Groups[1].Value) >= 2, stdout);
            Assert.True(long.Parse(cycled.Groups[2].Value) >= 2, stdout);
            Assert.True(long.Parse(cycled.Groups[3].Value) >= 1, stdout);
        }
        // …without one malloc on the fault path's threads (stdout says where the first came from).
        Assert.True(counts.Groups[1].Value == "0", $"{counts.Groups[1].Value} malloc calls on the fault path's threads: {stdout}");
    }
}
