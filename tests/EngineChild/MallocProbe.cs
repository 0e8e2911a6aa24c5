using System.Runtime.InteropServices;
using Tibet.Core.Paging;

namespace Tibet.EngineChild;

/// <summary>
/// Drives every part of the fault path while the LD_PRELOAD probe counts malloc calls
/// on the handler thread. A control thread that mallocs on purpose proves the probe
/// is really counting.
/// </summary>
internal static unsafe class MallocProbe
{
    public static int Run()
    {
        string probePath = Environment.GetEnvironmentVariable("TIBET_MALLOC_PROBE")
            ?? throw new InvalidOperationException("TIBET_MALLOC_PROBE must name the probe library");
        nint probe = NativeLibrary.Load(probePath);
        var arm = (delegate* unmanaged<void>)NativeLibrary.GetExport(probe, "tibet_probe_arm");
        var count = (delegate* unmanaged<int, long>)NativeLibrary.GetExport(probe, "tibet_probe_count");

        const int pages = 8192;
        using var engine = PageEngine.Create(new EngineOptions
        {
            ResidentBudgetBytes = 512 * 4096,
            Compression = CompressionMode.Auto,
        });
        using var arena = engine.CreateArena(pages * 4096L, "probe");
        var random = new byte[4096];
        var text = System.Text.Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("compressible text 0123456789 ", 200)))[..4096];
        var scratch = new byte[4096];
        new Random(3).NextBytes(random);

        // One pass before arming, so that every path has been compiled once: CoreCLR's
        // JIT mallocs while it compiles (the parent disables tiered compilation, so
        // nothing is compiled again later). NativeAOT, which the interposer uses, has no JIT.
        for (int i = 0; i < 2048; i++) ArenaMemory.Write(arena.Address + i * 4096, i % 3 == 0 ? text : random);
        arena.Evict();
        for (int i = 0; i < 2048; i += 5) ArenaMemory.Read(arena.Address + i * 4096, scratch);
        madvise(arena.Address, 64 * 4096, 4 /* MADV_DONTNEED */);
        for (int i = 0; i < 64; i++) ArenaMemory.Read(arena.Address + i * 4096, scratch);

        arm();
        var control = new Thread(() =>
        {
            for (int i = 0; i < 10; i++) Marshal.FreeHGlobal(Marshal.AllocHGlobal(64));
        }) { Name = "probe-control" };
        control.Start();
        control.Join();

        for (int round = 0; round < 2; round++)
        {
            for (int i = 0; i < pages; i++)
                ArenaMemory.Write(arena.Address + i * 4096, i % 3 == 0 ? text : random);
            for (int i = 0; i < pages; i += 7)
                ArenaMemory.Read(arena.Address + i * 4096, scratch);
            arena.Evict();
            for (int i = pages - 1; i >= 0; i -= 3)
                ArenaMemory.Read(arena.Address + i * 4096, scratch);
            // A REMOVE event, served by the handler.
            madvise(arena.Address + 100 * 4096, 64 * 4096, 4 /* MADV_DONTNEED */);
        }

        var stats = engine.GetStats();
        Console.WriteLine($"handler-mallocs {count(0)} control-mallocs {count(1)}");
        Console.WriteLine($"faults {stats.Faults} evictions {stats.Evictions} decrypts {stats.Decrypts} " +
                          $"decompressions {stats.Decompressions} removes {stats.RemoveEvents}");
        return 0;
    }

    [DllImport("libc")]
    private static extern int madvise(nint address, nuint length, int advice);
}
