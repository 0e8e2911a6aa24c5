using System.Globalization;
using Tibet.IntegrationTests.Hardening;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Sealing;

/// <summary>
/// A live sealed model whose key the custodian keeps is never sealed in the program: a page
/// evicted from the program is dropped, and the custodian decrypts it from the file again
/// when it is touched (Arena.RefetchesSource). So what was evicted is in the program in no
/// form: not as plaintext, and not as ciphertext under a key of the program's, which the
/// program's memory would hold too.
/// </summary>
/// <remarks>The proof from outside is a count, as in Programs.ServeSelfTests: the program
/// reads the whole model twice under an 8 MiB budget, and then holds in RAM far less than
/// the ~90 MB evicted. The control, with the pages sealed in the program
/// (TIBET_REFETCH_SOURCE=0), holds their ciphertext, and the same count sees it.</remarks>
public class SealedRefetchTests(SealedRunWorld world) : IClassFixture<SealedRunWorld>
{
    private const long Budget = 8 << 20;

    private (long PresentBytes, string Hash) HoldTwiceRead(IDictionary<string, string?>? environment)
    {
        var model = world.MediumSealed;
        using var held = HeldProgram.Start([TibetRun.Launcher, "-q", "--audit-log", world.PathOf($"audit-{Guid.NewGuid():N}.jsonl"),
            "--threshold", "64K", "--budget", "8M", "--identity", world.Alice, "--claim", world.ClaimPath("valid"), "--",
            world.Reader, model.Path, model.DataOffset.ToString(CultureInfo.InvariantCulture), model.DataLength.ToString(CultureInfo.InvariantCulture),
            "mmap-twice-hold"], environment);
        long present = MemoryScanner.PresentBytes(held.Pid);
        string hash = held.CanaryAddress; // mmap-twice-hold's ready line carries the hash both passes saw
        var (exitCode, stderr) = held.Finish();
        Assert.True(exitCode == 0, stderr);
        Assert.DoesNotContain("dead material", stderr);
        return (present, hash);
    }

    [Fact]
    public void A_live_sealed_models_evicted_pages_are_in_the_program_in_no_form()
    {
        long evicted = world.MediumSealed.DataLength - Budget;

        var (present, hash) = HoldTwiceRead(environment: null);
        Assert.Equal(world.MediumSealed.LiveHash, hash);
        // Half of what was evicted: the program's runtime and libraries take some 20 MiB.
        Assert.True(present < evicted / 2,
            $"the program holds {present >> 20} MiB after reading a sealed model twice under an 8 MiB budget, {evicted >> 20} MiB of it evicted: enough to keep the evicted pages");

        var (controlPresent, controlHash) = HoldTwiceRead(new Dictionary<string, string?> { ["TIBET_REFETCH_SOURCE"] = "0" });
        Assert.Equal(world.MediumSealed.LiveHash, controlHash);
        Assert.True(controlPresent >= evicted,
            $"with the pages sealed in the program (TIBET_REFETCH_SOURCE=0), the count should see their ciphertext there: {controlPresent >> 20} MiB present, {evicted >> 20} MiB evicted");
    }

    /// <summary>
    /// The custodian installs a live model's pages into the program's map itself, with
    /// UFFDIO_COPY on the userfaultfd the program sent (ProcessPageInstaller): the program's
    /// engine counts every page of the two reads under 8 MiB as installed so, and the bytes
    /// are the model's. Through the shared window instead (TIBET_CUSTODIAN_INSTALL=0),
    /// nothing is installed by the custodian, and the bytes are the same.
    /// </summary>
    [Fact]
    public void The_custodian_installs_a_live_models_pages_itself_and_the_window_gives_the_same_bytes()
    {
        var model = world.MediumSealed;
        long dataPages = model.DataLength / 4096;
        TibetRun.Result Read(string install) => TibetRun.Encrypted(
            ["--audit-log", world.PathOf($"audit-{Guid.NewGuid():N}.jsonl"), "--threshold", "64K", "--budget", "8M",
                "--identity", world.Alice, "--claim", world.ClaimPath("valid")],
            [world.Reader, model.Path, model.DataOffset.ToString(CultureInfo.InvariantCulture), model.DataLength.ToString(CultureInfo.InvariantCulture), "mmap"],
            environment: new Dictionary<string, string?> { ["TIBET_CUSTODIAN_INSTALL"] = install });

        var installed = Read("1");
        Assert.True(installed.ExitCode == 0, installed.ToString());
        Assert.Contains($"hash {model.LiveHash} ", installed.Stdout);
        Assert.DoesNotContain("decrypted in the window", installed.Stderr);
        // Every data page came in at least once, and all but the few of a run's edges the
        // custodian does not install (the header's and the trailer's pages) came that way,
        // or in a whole 2 MiB range the engine placed as a huge page while the budget had
        // room for one (decrypted by the custodian through the window: FaultService.TryPlaceRange).
        long placedPages = installed.Stat("placedRanges") * 512;
        Assert.True(installed.Stat("sourceInstalls") + placedPages >= dataPages - 1024,
            $"the custodian installed {installed.Stat("sourceInstalls")} pages of a model of {dataPages}, and {placedPages} came in whole ranges\n{installed}");

        var windowed = Read("0");
        Assert.True(windowed.ExitCode == 0, windowed.ToString());
        Assert.Contains($"hash {model.LiveHash} ", windowed.Stdout);
        Assert.Equal(0, windowed.Stat("sourceInstalls"));
        Assert.True(windowed.Stat("sourcedPages") >= dataPages - 1024, windowed.ToString());
    }

    /// <summary>
    /// The custodian, which installs a live model's pages, is killed while the program
    /// holds a map of the model it has not read yet. What the user sees: the program is
    /// killed by SIGBUS on its first read of the model, never given zeros or ciphertext,
    /// and it does not hang.
    /// </summary>
    [Fact]
    public void When_the_custodian_is_killed_a_live_models_unread_pages_raise_SIGBUS_never_zeros()
    {
        var model = world.MediumSealed;
        using var held = HeldProgram.Start([TibetRun.Launcher, "-q", "--audit-log", world.PathOf($"audit-{Guid.NewGuid():N}.jsonl"),
            "--threshold", "64K", "--budget", "8M", "--identity", world.Alice, "--claim", world.ClaimPath("valid"), "--",
            world.Reader, model.Path, model.DataOffset.ToString(CultureInfo.InvariantCulture), model.DataLength.ToString(CultureInfo.InvariantCulture),
            "map-hold-read"]);
        int custodian = CustodianFinder.PidServing(held.Pid);
        System.Diagnostics.Process.GetProcessById(custodian).Kill();
        for (int i = 0; i < 100 && Directory.Exists($"/proc/{custodian}/task"); i++)
            Thread.Sleep(50);
        Assert.False(Directory.Exists($"/proc/{custodian}/task"), $"the custodian (pid {custodian}) did not end when killed");

        var (exitCode, stdout, stderr) = held.FinishWithOutput();

        Assert.True(exitCode == 128 + 7, $"the reader must die of SIGBUS; exit {exitCode}\nstdout: {stdout}\nstderr: {stderr}");
        Assert.DoesNotContain("hash ", stdout);
        // Said as what it is: the custodian ended, not a damaged file.
        Assert.Contains("CustodianGone", stderr);
        Assert.Contains("the custodian, which keeps the model's key, has ended", stderr);
        Assert.DoesNotContain("DataTampered", stderr);
    }

    /// <summary>A page written since it came from the model is sealed, not dropped: the
    /// program maps the model read-only and private, reads it, makes it writable
    /// (mprotect), writes a byte of the first 16 pages of every 32, and reads it twice under
    /// an 8 MiB budget. The faults on the unwritten pages have written (sealed) ones in
    /// their runs, which the custodian must not install over with the file's bytes.</summary>
    [Fact]
    public void Pages_written_after_mprotect_survive_eviction()
    {
        var model = world.MediumSealed;
        var result = TibetRun.Encrypted(["--audit-log", world.PathOf($"audit-{Guid.NewGuid():N}.jsonl"), "--threshold", "64K", "--budget", "8M",
                "--identity", world.Alice, "--claim", world.ClaimPath("valid")],
            [world.Reader, model.Path, model.DataOffset.ToString(CultureInfo.InvariantCulture), model.DataLength.ToString(CultureInfo.InvariantCulture), "private-write"]);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains($"hash {model.WrittenHash} ", result.Stdout);
        // The first read dropped pages back to the model (they were clean); the written ones
        // were sealed when evicted, every one of them at least once in the two reads after.
        long sealedEvictions = result.Stat("evictions") - result.Stat("sourceDrops");
        Assert.True(result.Stat("sourceDrops") > 0, result.ToString());
        Assert.True(sealedEvictions >= (model.DataLength / 2 - Budget) / 4096, result.ToString());
    }

    /// <summary>
    /// Under a budget of a few ranges, a live model's 2 MiB ranges are read whole, and the
    /// handler and the fill worker each have the custodian decrypt a half of each on a lane
    /// of their own (RangePlacer.FillShared). A byte flipped in the second half of a range,
    /// the worker's half, is found there as anywhere: the reader dies of SIGBUS, the failure
    /// is said once, and no zeros or ciphertext are handed out. The control, an intact
    /// copy read the same way, gives the model's bytes, with the worker's share counted.
    /// </summary>
    [Fact]
    public void A_flipped_byte_in_the_half_of_a_range_the_fill_worker_reads_raises_SIGBUS()
    {
        var model = world.MediumSealed;
        TibetRun.Result Read(string path) => TibetRun.Encrypted(
            ["--audit-log", world.PathOf($"audit-{Guid.NewGuid():N}.jsonl"), "--threshold", "64K", "--budget", "8M",
                "--identity", world.Alice, "--claim", world.ClaimPath("valid")],
            [world.Reader, path, model.DataOffset.ToString(CultureInfo.InvariantCulture), model.DataLength.ToString(CultureInfo.InvariantCulture), "mmap"]);

        var intact = Read(model.Path);
        Assert.True(intact.ExitCode == 0, intact.ToString());
        Assert.Contains($"hash {model.LiveHash} ", intact.Stdout);
        Assert.True(intact.Stat("placedRanges") > 0, "no range was read whole under an 8 MiB budget\n" + intact);
        if (Environment.ProcessorCount > 1)
            Assert.True(intact.Stat("workerSourcedPages") > 0, "the fill worker read no half of a range\n" + intact);

        // The 300th page of the file's fifth 2 MiB range from the data's start: in the
        // second half of a range of the map, whichever way the map is aligned to the file.
        string tampered = world.PathOf($"worker-half-{Guid.NewGuid():N}.gguf");
        File.Copy(model.Path, tampered);
        using (var file = new FileStream(tampered, FileMode.Open, FileAccess.ReadWrite))
        {
            file.Position = model.DataOffset + (4 * 512 + 300) * 4096L + 17;
            int original = file.ReadByte();
            file.Position -= 1;
            file.WriteByte((byte)(original ^ 0x80));
        }
        var flipped = Read(tampered);
        Assert.True(flipped.ExitCode == 128 + 7, "the map reader must die of SIGBUS\n" + flipped);
        Assert.DoesNotContain("hash ", flipped.Stdout);
        Assert.Single(flipped.Stderr.Split('\n'), line => line.Contains("DataTampered", StringComparison.Ordinal));
        File.Delete(tampered);
    }
}
