using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Programs;

/// <summary>
/// A read-only map of a GGUF file, made the way llama.cpp makes it, is served from an
/// encrypted arena: the program reads the file's exact bytes, the file's pages are not
/// left in the page cache, and llama.cpp's partial munmap works.
/// </summary>
public class GgufMapTests
{
    private const long FileSize = (8 << 20) + 100; // a partial last page, as model files have

    [Fact]
    public void Mapped_model_file_reads_exactly_and_stays_out_of_the_page_cache()
    {
        string program = NativeBuild.Compile("prog_gguf_map.c");
        string file = Path.Combine(RepoPaths.DiskTemp, $"tibet-map-{Guid.NewGuid():N}.gguf");
        try
        {
            var native = TibetRun.Native([program, file, FileSize.ToString()]);
            Assert.True(native.ExitCode == 0, "native control run failed: " + native);
            // The control: natively, reading the map fills the page cache with the file.
            Assert.True(CachedPages(native) > 1000, native.ToString());

            var encrypted = TibetRun.Encrypted(["--threshold", "64K", "--budget", "1M"], [program, file, FileSize.ToString()]);
            Assert.True(encrypted.ExitCode == 0, encrypted.ToString());
            Assert.Equal(0, CachedPages(encrypted));
            Assert.Equal(MappedHash(native), MappedHash(encrypted));
            // The map really went through an arena: every page read from the file on first
            // touch (O_DIRECT, nothing imported up front), evicted under the 1 MiB budget,
            // and faulted back in through decryption on the later passes.
            Assert.True(encrypted.Stat("sourcedPages") >= FileSize / 4096, encrypted.ToString());
            Assert.True(encrypted.Stat("decrypts") >= FileSize / 4096, encrypted.ToString());
            Assert.True(encrypted.Stat("evictions") > 1000, encrypted.ToString());
            Assert.True(encrypted.Stat("peakResidentBytes") <= (1 << 20) + SharedBudget.SlackBytes, encrypted.ToString());
        }
        finally
        {
            File.Delete(file);
        }
    }

    /// <summary>
    /// The adverse case, built in rather than left to the machine's read_ahead_kb: before
    /// mapping, the program asks for sequential readahead, reads the header through stdio
    /// (as llama.cpp does) and starts readahead(2) of the whole file, so the map is made
    /// while reads of the file are in flight. Pages under I/O are skipped by the kernel's
    /// drop, which is how 544 plaintext pages stayed cached on a machine with 8 MiB
    /// readahead. Every one of 20 runs must leave 0 pages cached: right after mmap
    /// returns, after the map was read, and after exit, seen from outside with fincore.
    /// </summary>
    [Fact]
    public void Readahead_in_flight_at_map_time_never_leaves_the_model_in_the_page_cache()
    {
        const long size = (16 << 20) + 100;
        const int runs = 20;
        string program = NativeBuild.Compile("prog_gguf_map.c");
        string file = Path.Combine(RepoPaths.DiskTemp, $"tibet-map-ra-{Guid.NewGuid():N}.gguf");
        try
        {
            // The control: natively the program's own reads fill the cache before the map.
            var native = TibetRun.Native([program, file, size.ToString(), "readahead"]);
            Assert.True(native.ExitCode == 0, "native control run failed: " + native);
            Assert.True(long.Parse(Field(native, "cached-before-map")) > 16, native.ToString());
            Assert.True(PageCache.CachedPages(file) > 1000, "natively the file should stay cached after exit: " + native);

            var failures = new List<string>();
            for (int run = 0; run < runs; run++)
            {
                var encrypted = TibetRun.Encrypted(["--threshold", "64K", "--budget", "1M"], [program, file, size.ToString(), "readahead"]);
                Assert.True(encrypted.ExitCode == 0, $"run {run}: {encrypted}");
                Assert.Equal(MappedHash(native), MappedHash(encrypted));
                // The program's own reads were cached when it mapped the file: the case is real.
                Assert.True(long.Parse(Field(encrypted, "cached-before-map")) > 0, $"run {run}: the header read left nothing cached: {encrypted}");
                long atMap = long.Parse(Field(encrypted, "cached-at-map"));
                long afterRead = CachedPages(encrypted);
                long afterExit = PageCache.CachedPages(file);
                if (atMap != 0 || afterRead != 0 || afterExit != 0)
                    failures.Add($"run {run}: cached at map {atMap}, after reading the map {afterRead}, after exit {afterExit}; stderr: {encrypted.Stderr}");
            }
            Assert.True(failures.Count == 0, $"{failures.Count} of {runs} runs left the model in the page cache:\n" + string.Join("\n", failures));
        }
        finally
        {
            File.Delete(file);
        }
    }

    private static long CachedPages(TibetRun.Result result) => long.Parse(Field(result, "cached"));

    private static string MappedHash(TibetRun.Result result) => Field(result, "mapped-hash");

    private static string Field(TibetRun.Result result, string name)
    {
        string[] words = result.Stdout.Split((char[])[' ', '\n'], StringSplitOptions.RemoveEmptyEntries);
        int at = Array.IndexOf(words, name);
        Assert.True(at >= 0 && at + 1 < words.Length, $"no '{name}' in the output: {result}");
        return words[at + 1];
    }
}
