using Tibet.Core.Paging;

// Scenarios that must end this process: a reader of a tampered page receives SIGBUS.
// The parent test checks how the process died and what it printed.
//   tamper flip    one ciphertext byte of a sealed page is flipped
//   tamper swap    a sealed page's ciphertext is replaced by another page's
//   tamper replay  a page's ciphertext is replaced by an older sealing of the same page
// Output on stdout: "sealed", then "reading"; if the read returns, "READ-RETURNED" and
// whether the bytes matched, and exit code 3 (the test then fails).

//   malloc-probe   (under LD_PRELOAD of tests/integration/native/malloc_probe.c) runs
//                  faults, eviction, compression and madvise, then prints how many
//                  malloc-family calls the handler thread made: "handler-mallocs N
//                  control-mallocs M"

//   handler-failure [routed]
//                  the ciphertext store is limited to one 1 MiB chunk, and 4 MiB of random
//                  pages are written under a 256 KiB budget: sealing fails inside the
//                  handler. Prints "writing"; the writer must then die of SIGBUS after one
//                  line on stderr (or, "routed", on stdout through OnHandlerFailure). If the
//                  writes return, "WRITE-RETURNED" and exit code 3.

//   tamper-range [aes-256-gcm|aegis-256]
//                  a model map twice its budget is read until its 2 MiB ranges are evicted
//                  whole and come back whole from their sealed copies; then one ciphertext
//                  byte of a page in the middle of an evicted range is flipped, and the page
//                  read. Prints "whole-ranges placed-sealed N range-evictions M", then
//                  "reading"; if the read returns, "READ-RETURNED" and exit code 3.

//   heap-canary N  a plain .NET program whose GC heap holds N canaries (HeapCanary), for
//                  the test that a .NET program's heap is encrypted under tibet-run.

if (args is ["heap-canary", var canaries] && int.TryParse(canaries, out int canaryCount))
    return Tibet.EngineChild.HeapCanary.Run(canaryCount);
if (args is ["malloc-probe"])
    return Tibet.EngineChild.MallocProbe.Run();
if (args is ["tamper-range", .. var rangeCipher])
    return TamperRange(Tibet.Core.Crypto.PageCipherSuite.FromName(rangeCipher is [var c] ? c : "aes-256-gcm")!);
if (args is ["handler-failure", .. var how])
    return HandlerFailure(routed: how is ["routed"]);
if (args is not ["tamper", var mode, .. var cipherName] || cipherName.Length > 1
    || Tibet.Core.Crypto.PageCipherSuite.FromName(cipherName is [var named] ? named : "aes-256-gcm") is not { } cipher)
{
    Console.Error.WriteLine("usage: Tibet.EngineChild tamper flip|swap|replay [aes-256-gcm|aegis-256] | malloc-probe | handler-failure [routed]");
    return 2;
}

const int Pages = 8;
const int Victim = 3;
using var engine = PageEngine.Create(new EngineOptions { Cipher = cipher });
using var arena = engine.CreateArena(Pages * 4096, "tamper");
var original = new byte[Pages * 4096];
new Random(1234).NextBytes(original);
ArenaMemory.Write(arena.Address, original);
arena.Evict();

unsafe
{
    if (!engine.TryLocateCiphertext(arena, Victim, out nint slot, out int length))
        return Fail("page was not sealed after Evict()");

    switch (mode)
    {
        case "flip":
            ((byte*)slot)[length / 2] ^= 0x01;
            break;
        case "swap":
            if (!engine.TryLocateCiphertext(arena, Victim + 1, out nint other, out int otherLength) || otherLength != length)
                return Fail("neighbour page was not sealed with the same length");
            new ReadOnlySpan<byte>((void*)other, length).CopyTo(new Span<byte>((void*)slot, length));
            break;
        case "replay":
            byte[] old = new ReadOnlySpan<byte>((void*)slot, length).ToArray();
            // Rewrite the page so it is sealed again under a fresh nonce, then put the old
            // (authentic, but stale) ciphertext back.
            ArenaMemory.Fill(arena.Address + Victim * 4096, 0x5A, 4096);
            arena.Evict();
            if (!engine.TryLocateCiphertext(arena, Victim, out slot, out length) || length != old.Length)
                return Fail("page was not sealed again");
            old.CopyTo(new Span<byte>((void*)slot, length));
            break;
        default:
            return Fail($"unknown mode '{mode}'");
    }
}

Console.WriteLine("sealed");
Console.Out.Flush();
Console.WriteLine("reading");
Console.Out.Flush();
var back = new byte[4096];
ArenaMemory.Read(arena.Address + Victim * 4096, back);
bool same = back.AsSpan().SequenceEqual(original.AsSpan(Victim * 4096, 4096));
Console.WriteLine($"READ-RETURNED matches-original={same}");
return 3;

static int HandlerFailure(bool routed)
{
    const int pages = 1024;
    using var engine = PageEngine.Create(new EngineOptions
    {
        ResidentBudgetBytes = 64 * 4096,
        StoreLimitBytes = 1 << 20, // about 254 sealed pages
        OnHandlerFailure = routed ? line => { Console.WriteLine("routed: " + line); Console.Out.Flush(); } : null,
    });
    using var arena = engine.CreateArena(pages * 4096L, "failure");
    var page = new byte[4096];
    var random = new Random(5);
    Console.WriteLine("writing");
    Console.Out.Flush();
    for (int i = 0; i < pages; i++)
    {
        random.NextBytes(page);
        ArenaMemory.Write(arena.Address + i * 4096, page);
    }
    Console.WriteLine($"WRITE-RETURNED handler-failed={engine.GetStats().HandlerFailed}");
    return 3;
}

static int TamperRange(Tibet.Core.Crypto.PageCipherSuite cipher)
{
    const int rangePages = 512, pages = 12 * rangePages; // 24 MiB, under a 10 MiB budget
    string path = Path.Combine(Path.GetTempPath(), $"tamper-range-{Guid.NewGuid():N}.bin");
    var contents = new byte[pages * 4096L];
    new Random(1207).NextBytes(contents);
    File.WriteAllBytes(path, contents);
    try
    {
        using var engine = PageEngine.Create(new EngineOptions { Cipher = cipher, ResidentBudgetBytes = 10L << 20 });
        using var arena = engine.CreateArena(contents.Length, "model");
        using var file = File.OpenHandle(path);
        arena.AttachSource(Tibet.Core.Files.FileSource.Open((int)file.DangerousGetHandle(), 0), mappedReadOnly: true);
        var page = new byte[4096];
        for (int pass = 0; pass < 3; pass++)
            for (int i = 0; i < pages; i++)
                ArenaMemory.Read(arena.Address + (nint)(i * 4096L), page);
        // An aligned range every page of which is sealed now: evicted whole, it comes back
        // whole from the store (RangePlacer), unless one of its pages fails to open.
        long first = (2L * 1024 * 1024 - arena.Address % (2L * 1024 * 1024)) % (2L * 1024 * 1024) / 4096;
        long victim = -1;
        for (long range = first; range + rangePages <= pages && victim < 0; range += rangePages)
        {
            bool sealedWhole = true;
            for (long p = range; p < range + rangePages && sealedWhole; p++)
                sealedWhole = arena.GetPageState(p) == PageState.Sealed;
            if (sealedWhole)
                victim = range + rangePages / 2;
        }
        var stats = engine.GetStats();
        Console.WriteLine($"whole-ranges placed-sealed {stats.PlacedSealedRanges} range-evictions {stats.RangeEvictions}");
        if (victim < 0)
            return Fail("no range of the map was sealed whole");
        unsafe
        {
            if (!engine.TryLocateCiphertext(arena, victim, out nint slot, out int length))
                return Fail("the victim page has no ciphertext");
            ((byte*)slot)[length / 2] ^= 0x01;
        }
        Console.WriteLine("reading");
        Console.Out.Flush();
        // A page before the victim first: the fault is on the range, whose placement whole
        // must fail on the victim, and the victim must then be refused on its own.
        ArenaMemory.Read(arena.Address + (nint)((victim - 7) * 4096), page);
        ArenaMemory.Read(arena.Address + (nint)(victim * 4096), page);
        bool same = page.AsSpan().SequenceEqual(contents.AsSpan((int)(victim * 4096), 4096));
        Console.WriteLine($"READ-RETURNED matches-original={same}");
        return 3;
    }
    finally
    {
        File.Delete(path);
    }
}

static int Fail(string why)
{
    Console.Error.WriteLine("setup failed: " + why);
    return 4;
}
