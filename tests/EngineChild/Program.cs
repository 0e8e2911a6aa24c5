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

if (args is ["malloc-probe"])
    return Tibet.EngineChild.MallocProbe.Run();
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

static int Fail(string why)
{
    Console.Error.WriteLine("setup failed: " + why);
    return 4;
}
