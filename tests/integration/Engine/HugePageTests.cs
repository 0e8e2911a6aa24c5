using Tibet.Core.Files;
using Tibet.Core.Interop;
using Tibet.Core.Paging;
using Tibet.Core.Paging.Huge;
using Tibet.Core.Storage;
using Xunit;

namespace Tibet.IntegrationTests.Engine;

/// <summary>
/// Read-only file maps served in 2 MiB pages from the hugetlb pool, on a real kernel:
/// exact bytes through repeated eviction, and no write lost when the program makes the
/// map writable. The pool is grown for the test (root) and shrunk back.
/// </summary>
[Collection("hugetlb pool")]
public class HugePageTests
{
    private const int Huge = HugePageService.HugePageSize;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_file_larger_than_the_budget_reads_back_exactly_through_2_MiB_pages(bool keepSealedCopies)
    {
        // 12 huge pages and a bit: the last one is mostly past the end of the file.
        byte[] contents = new byte[12 * Huge + 5000];
        new Random(2026).NextBytes(contents);
        using var served = Served.File(contents, budgetPages: 2, keepSealedCopies);
        var (service, arena) = (served.Service, served.Arena);

        var chunk = new byte[1 << 20];
        for (int pass = 0; pass < 3; pass++)
        {
            for (long offset = 0; offset < arena.Length; offset += chunk.Length)
            {
                ArenaMemory.Read(arena.Address + (nint)offset, chunk);
                for (int i = 0; i < chunk.Length; i++)
                {
                    byte expected = offset + i < contents.Length ? contents[offset + i] : (byte)0;
                    if (chunk[i] != expected)
                        Assert.Fail($"pass {pass}: byte {offset + i} reads {chunk[i]}, the file has {expected}");
                }
            }
        }
        var stats = service.GetStats();
        Assert.True(stats.Faults >= 3 * 13 - 2 && stats.Evictions > 0, $"faults {stats.Faults}, evictions {stats.Evictions}");
        Assert.True(stats.PeakResidentBytes <= 2L * Huge, $"peak resident {stats.PeakResidentBytes} over a budget of {2 * Huge}");
        if (keepSealedCopies)
        {
            // Each page was read from the file once and sealed into RAM; every return was a decryption.
            Assert.Equal(13L * Huge, stats.SourcedBytes);
            Assert.Equal((stats.Faults - 13) * Huge, stats.DecryptedBytes);
        }
        else
        {
            // Every fault read its page from the file; nothing was sealed.
            Assert.Equal(stats.Faults * Huge, stats.SourcedBytes);
            Assert.Equal(0, stats.SealedBytes);
        }
        Assert.Equal(0, stats.AuthenticationFailures);
        Assert.Null(stats.Failure);
    }

    [Fact]
    public void Two_thousand_faults_allocate_nothing_on_the_handler()
    {
        byte[] contents = new byte[12 * Huge];
        new Random(3).NextBytes(contents);
        using var served = Served.File(contents, budgetPages: 2);
        var (service, arena) = (served.Service, served.Arena);

        var one = new byte[1];
        for (int pass = 0; pass < 200; pass++)
            for (int page = 0; page < 12; page++)
                ArenaMemory.Read(arena.Address + (nint)((long)page * Huge), one);
        var stats = service.GetStats();
        Assert.True(stats.Faults >= 2000, $"only {stats.Faults} faults");
        // Even 16 bytes per fault would be 32 KiB. What is tolerated is one allocation
        // context of the runtime's (8 KiB): the first calls of a thread allocate a few
        // bytes, and a garbage collection elsewhere retires the context they came from.
        Assert.True(stats.HandlerAllocatedBytes <= 8192 + 1024,
            $"the handler allocated {stats.HandlerAllocatedBytes} bytes in {stats.Faults} faults");
        Assert.Null(stats.Failure);
    }

    [Fact]
    public void A_write_to_a_map_made_writable_survives_eviction()
    {
        byte[] contents = new byte[8 * Huge];
        new Random(7).NextBytes(contents);
        using var served = Served.File(contents, budgetPages: 2);
        var (service, arena) = (served.Service, served.Arena);

        Assert.Equal(0, Libc.mprotect(arena.Address, (nuint)arena.Length, Libc.PROT_READ | Libc.PROT_WRITE));
        byte[] written = Enumerable.Repeat((byte)0xA5, 4096).ToArray();
        ArenaMemory.Write(arena.Address + Huge + 8192, written);
        // Every other page, twice: the written page would be the first to go.
        var chunk = new byte[Huge];
        for (int pass = 0; pass < 2; pass++)
            for (int page = 0; page < 8; page++)
                if (page != 1)
                    ArenaMemory.Read(arena.Address + (nint)((long)page * Huge), chunk);

        var back = new byte[4096];
        ArenaMemory.Read(arena.Address + Huge + 8192, back);
        Assert.Equal(written, back);
        ArenaMemory.Read(arena.Address + Huge, back);
        Assert.Equal(contents.AsSpan(Huge, 4096).ToArray(), back);
        var stats = service.GetStats();
        Assert.Equal((long)Huge, stats.WrittenBytes);
        Assert.True(stats.Evictions > 0, $"evictions {stats.Evictions}");
    }

    /// <summary>A file of the given contents, the pool grown for it, a service with a
    /// budget of <c>budgetPages</c> 2 MiB pages, and an arena mapping the file.</summary>
    private sealed class Served : IDisposable
    {
        private readonly TempFile _file;
        private readonly HugePagePool _pool;

        private Served(byte[] contents, int budgetPages, bool keepSealedCopies)
        {
            _file = TempFile.With(contents);
            _pool = HugePagePool.Reserve(budgetPages + 1);
            Service = HugePageService.Start(budgetBytes: (long)budgetPages * Huge, keepSealedCopies: keepSealedCopies);
            Arena = MapFile(Service, _file, contents.Length);
        }

        public HugePageService Service { get; }

        public HugePageArena Arena { get; }

        public static Served File(byte[] contents, int budgetPages, bool keepSealedCopies = false) => new(contents, budgetPages, keepSealedCopies);

        public void Dispose()
        {
            Arena.Dispose();
            Service.Dispose();
            _pool.Dispose();
            _file.Dispose();
        }
    }

    private static HugePageArena MapFile(HugePageService service, TempFile file, long length)
    {
        long rounded = (length + Huge - 1) & ~(long)(Huge - 1);
        // A 2 MiB-aligned PROT_NONE reservation, as the interposer carves from its region.
        nint reservation = Libc.mmap(0, (nuint)(rounded + Huge), Libc.PROT_NONE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE, -1, 0);
        Assert.NotEqual(Libc.MAP_FAILED, reservation);
        nint aligned = (reservation + Huge - 1) & ~(nint)(Huge - 1);
        return service.CreateArena(aligned, length, FileSource.Open(file.Descriptor, 0), "test model");
    }

    private sealed class TempFile : IDisposable
    {
        private readonly FileStream _stream;
        private readonly string _path;

        private TempFile(string path, FileStream stream)
        {
            _path = path;
            _stream = stream;
        }

        public int Descriptor => (int)_stream.SafeFileHandle.DangerousGetHandle();

        // The file lives on /work's disk, not tmpfs, so that O_DIRECT reads are exercised.
        public static TempFile With(byte[] contents)
        {
            string path = Path.Combine(AppContext.BaseDirectory, $"huge-{Guid.NewGuid():N}.bin");
            File.WriteAllBytes(path, contents);
            return new TempFile(path, new FileStream(path, FileMode.Open, FileAccess.Read));
        }

        public void Dispose()
        {
            _stream.Dispose();
            File.Delete(_path);
        }
    }
}
