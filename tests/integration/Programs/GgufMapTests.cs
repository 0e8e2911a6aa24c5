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
            Assert.True(encrypted.Stat("peakResidentBytes") <= 1 << 20, encrypted.ToString());
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
