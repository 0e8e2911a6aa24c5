using Tibet.Core.Paging;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Engine;

/// <summary>
/// The handler seals the pages of its own evictions (after a fault, when idle) without the
/// engine lock (Sealing.UnlockedSealer). The test hook EngineOptions.WhileSealingWithoutLock
/// runs inside that window, on the handler thread, and does there what a program's thread
/// may do at any time: ask the engine something, evict, or release the arena being sealed.
/// </summary>
public class UnlockedSealTests
{
    private const int Pages = 2048;
    private const long Budget = 256 * 4096;

    /// <summary>A program writes eight times its budget: the handler evicts after its faults
    /// and seals with the lock let go. An API call made meanwhile gets the lock at once
    /// (under the lock, LockProbe's call from another thread would time out); one that evicts
    /// waits for the window to close, and its nonces and the handler's never meet; every
    /// byte reads back.</summary>
    [Fact]
    public void An_api_call_does_not_wait_for_the_handlers_sealing()
    {
        var probe = new LockProbe(8);
        PageEngine? engine = null;
        int trims = 0;
        engine = Engines.Create(new EngineOptions
        {
            ResidentBudgetBytes = Budget,
            WhileSealingWithoutLock = arena =>
            {
                probe.Probe(arena);
                if (probe.Windows <= 8 && probe.Windows % 2 == 0)
                {
                    // An eviction asked for meanwhile takes out into the same area: it must
                    // wait until the handler is done with it, and not deadlock.
                    var trim = Task.Run(() => engine!.Trim(Budget / 2));
                    if (!trim.Wait(TimeSpan.FromMilliseconds(20)))
                        Interlocked.Increment(ref trims); // waiting, as it must
                }
            },
        });
        probe.Engine = engine;
        using (engine)
        {
            Engines.RequireEviction(engine);
            var arena = engine.CreateArena(Pages * 4096L, "unlocked-seal");
            byte[] written = TestBytes.Random(Pages * 4096, seed: 21);
            for (int page = 0; page < Pages; page++)
                ArenaMemory.Write(arena.Address + page * 4096, written.AsSpan(page * 4096, 4096));

            var read = new byte[written.Length];
            for (int page = 0; page < Pages; page++)
                ArenaMemory.Read(arena.Address + page * 4096, read.AsSpan(page * 4096, 4096));

            var stats = engine.GetStats();
            Assert.True(written.AsSpan().SequenceEqual(read), "the pages read back differ from those written; " + stats.ToJson());
            Assert.True(probe.Windows > 0, "no eviction batch was sealed without the lock; " + stats.ToJson());
            Assert.Equal(0, probe.Unanswered);
            Assert.True(trims > 0, "no eviction asked for by the API waited for the handler's sealing window");
            Assert.Equal(0, stats.AuthenticationFailures);
            Assert.False(stats.HandlerFailed, stats.ToJson());
            Assert.True(stats.PeakResidentBytes <= Budget + 16 * 4096, $"peak {stats.PeakResidentBytes} above the budget {Budget}");

            arena.Evict();
            var nonces = engine.SealedNonces(arena);
            Assert.Equal(Pages, nonces.Count);
            Assert.Equal(nonces.Count, nonces.Distinct().Count());
            arena.Dispose();
            var after = engine.GetStats();
            Assert.Equal(0, after.ResidentBytes);
            Assert.Equal(0, after.SealedPages);
        }
    }

    /// <summary>An arena released while its pages are sealed without the lock: nothing of
    /// it enters the store, its pages leave the books once (the counts come back to zero,
    /// not below), the handler does not fail, and the engine goes on serving another arena
    /// exactly. The arena is written first; the evictions that take its last resident
    /// pages come from the faults of another arena, so that nobody touches it when it goes
    /// (a thread still writing to it would meet an unmapped range).</summary>
    [Fact]
    public void An_arena_released_under_the_sealing_is_left_alone()
    {
        Arena? victim = null;
        bool armed = false, releasedInTime = false;
        int released = 0;
        using var hookDone = new ManualResetEventSlim();
        using var engine = Engines.Create(new EngineOptions
        {
            ResidentBudgetBytes = Budget,
            WhileSealingWithoutLock = arena =>
            {
                if (!Volatile.Read(ref armed) || arena != victim || Interlocked.Exchange(ref released, 1) != 0)
                    return;
                // Another thread, as a program's munmap would come: the lock is free.
                releasedInTime = Task.Run(() => arena.Dispose()).Wait(TimeSpan.FromSeconds(10));
                hookDone.Set();
            },
        });
        Engines.RequireEviction(engine);
        victim = engine.CreateArena(Pages * 4096L, "released-under-sealing");
        ArenaMemory.Write(victim.Address, TestBytes.Random(Pages * 4096, seed: 5));
        Volatile.Write(ref armed, true);

        using var other = engine.CreateArena(Pages * 4096L, "after-the-release");
        byte[] written = TestBytes.Random(Pages * 4096, seed: 23);
        for (int page = 0; page < Pages; page++)
            ArenaMemory.Write(other.Address + page * 4096, written.AsSpan(page * 4096, 4096));
        Assert.True(hookDone.Wait(TimeSpan.FromSeconds(30)), "no eviction of the first arena was sealed without the lock");
        Assert.True(releasedInTime, "the release from another thread waited for the handler's sealing");

        Engines.AssertReadsBack(engine, other, written, "another arena");

        other.Evict();
        Assert.Equal(Pages, engine.SealedNonces(other).Count);
        other.Dispose();
        var after = engine.GetStats();
        Assert.Equal(0, after.ResidentBytes);
        Assert.Equal(0, after.SealedPages);
        Assert.Equal(0, after.SealedBytes);
    }

    /// <summary>Four threads create, write, read back and release arenas in a loop under a
    /// budget far below what they hold together, so that the handler seals and decrypts
    /// with the lock let go while arenas come and go around it: every thread reads back
    /// exactly what it wrote, nothing fails, and once every arena is gone the books are
    /// empty (no resident page counted twice or left over, no ciphertext left in the store).</summary>
    [Fact]
    public void Arenas_that_come_and_go_beside_the_handlers_windows_keep_exact_books()
    {
        const int threads = 4, rounds = 24, arenaPages = 96;
        using var engine = Engines.Create(new EngineOptions { ResidentBudgetBytes = 64 * 4096 });
        Engines.RequireEviction(engine);
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            for (int round = 0; round < rounds; round++)
            {
                using var arena = engine.CreateArena(arenaPages * 4096L, $"churn-{t}-{round}");
                byte[] written = TestBytes.Random(arenaPages * 4096, seed: t * 1000 + round);
                for (int page = 0; page < arenaPages; page++)
                    ArenaMemory.Write(arena.Address + page * 4096, written.AsSpan(page * 4096, 4096));
                var read = new byte[written.Length];
                for (int page = arenaPages - 1; page >= 0; page--)
                    ArenaMemory.Read(arena.Address + page * 4096, read.AsSpan(page * 4096, 4096));
                if (!written.AsSpan().SequenceEqual(read))
                    failures.Enqueue($"thread {t}, round {round}: the bytes read back differ");
            }
        })).ToList();
        workers.ForEach(w => w.Start());
        workers.ForEach(w => w.Join());

        var stats = engine.GetStats();
        Assert.True(failures.IsEmpty, string.Join("; ", failures) + "; " + stats.ToJson());
        Assert.False(stats.HandlerFailed, stats.ToJson());
        Assert.Equal(0, stats.AuthenticationFailures);
        Assert.True(stats.Evictions > threads * rounds * arenaPages / 2, "too little was sealed to prove anything: " + stats.ToJson());
        Assert.Equal(0, stats.ResidentBytes);
        Assert.Equal(0, stats.SealedPages);
        Assert.Equal(0, stats.SealedBytes);
    }
}
