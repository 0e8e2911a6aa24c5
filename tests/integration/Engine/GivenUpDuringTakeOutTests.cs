using Tibet.Core.Interop;
using Tibet.Core.Paging;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Engine;

/// <summary>
/// A program thread gives pages up with madvise while an eviction is taking the same
/// arena's pages out of the address space. The kernel holds the madvising thread until the
/// engine reads the REMOVE event, and the engine reads events only under its lock, which
/// the eviction holds. A take-out is a UFFDIO_MOVE issued on the scratch area's own
/// userfaultfd, so the event pending on the arena's does not make it answer EAGAIN: it
/// goes on and takes pages as they were before the madvise (their thread is still held),
/// and the event, read once the eviction is done, drops what was sealed of them. The
/// orderings are forced with the engine's test hooks; the madvising thread is a real
/// thread in the real kernel.
/// </summary>
public class GivenUpDuringTakeOutTests
{
    private const int Pages = 64;
    private const int GivenUp = 14; // pages 0..13: some taken before the madvise, some after
    private const int Written = 8;  // MADV_FREE: pages 0..7 written again at once

    [Theory]
    [InlineData(Libc.MADV_DONTNEED)]
    [InlineData(Libc.MADV_FREE)]
    public void Pages_given_up_while_an_eviction_takes_them_out_read_as_the_madvise_says(int advice)
    {
        // The batch is two runs: pages 0..3 and 5..63 (page 4 is a zero page, off the books).
        // Before the first run is taken out, the program gives up pages 0..13.
        using var madviser = new MadvisingThread();
        byte[] rewritten = TestBytes.Random(Written * 4096, 13);
        Arena? target = null;
        string? hookFailure = null;
        bool started = false, secondRun = false, heldThrough = false;
        using var engine = Engines.Create(new EngineOptions
        {
            // Whatever goes wrong in the hook is kept for the test to report: thrown there,
            // it would fail the engine instead.
            BeforeTakingOut = (arena, firstPage) =>
            {
                if (arena != target)
                    return;
                try
                {
                    if (firstPage == 0 && !started)
                    {
                        started = true;
                        hookFailure = madviser.StartAndWaitUntilBlocked(() =>
                        {
                            int rc = Libc.madvise(arena.Address, GivenUp * 4096, advice);
                            if (rc == 0 && advice == Libc.MADV_FREE)
                                ArenaMemory.Write(arena.Address, rewritten); // the program's data again
                            return rc;
                        }, arena.Address, GivenUp);
                    }
                    else if (firstPage == 5 && started && !secondRun)
                    {
                        // The first run was taken out without the event being read.
                        secondRun = true;
                        heldThrough = madviser.IsBlockedInMadvise();
                    }
                }
                catch (Exception e)
                {
                    hookFailure ??= e.ToString();
                }
            },
        });
        Engines.RequireEviction(engine);
        using var arena = engine.CreateArena(Pages * 4096L, "given-up-while-taken");
        byte[] data = TestBytes.Random(Pages * 4096, 11);
        ArenaMemory.Write(arena.Address, data);
        NativeCalls.Check(Libc.madvise(arena.Address + 4 * 4096, 4096, Libc.MADV_DONTNEED), "madvise");
        Assert.Equal(PageState.Zero, arena.GetPageState(4));
        target = arena;
        var before = engine.GetStats();

        arena.Evict();

        // Every resident page (all but page 4) was taken out and sealed, none refused: the
        // take-out went on while the event waited. (Page states are not looked at: once
        // the event is read, the madvising thread's writes fault and read ahead.)
        var after = engine.GetStats();
        Assert.Equal(before.EvictionsRefused, after.EvictionsRefused);
        Assert.True(after.Evictions - before.Evictions >= Pages - 1,
            $"{after.Evictions - before.Evictions} pages sealed by the eviction, expected {Pages - 1}: {after.ToJson()}");
        byte[] seen = madviser.Finish();
        Assert.Null(hookFailure);
        Assert.True(started && secondRun, $"hooks ran: before the first run {started}, before the second {secondRun}: the batch was not split as the test expects");
        Assert.True(heldThrough,
            "the madvising thread left madvise while the first run was taken out: something read its event in the middle of the batch");
        var stats = engine.GetStats();
        Assert.True(stats.RemoveEvents >= 2, stats.ToJson());
        for (int p = 0; p < GivenUp; p++)
        {
            ReadOnlySpan<byte> page = seen.AsSpan(p * 4096, 4096);
            if (advice == Libc.MADV_FREE && p < Written)
                Assert.True(page.SequenceEqual(rewritten.AsSpan(p * 4096, 4096)),
                    $"page {p}, written after MADV_FREE while an eviction took it out, lost what was written: {stats.ToJson()}");
            else
                Assert.False(page.ContainsAnyExcept((byte)0),
                    $"page {p}, given up while an eviction took it out, read back bytes it had before: {stats.ToJson()}");
        }
        var rest = new byte[(Pages - GivenUp) * 4096];
        ArenaMemory.Read(arena.Address + GivenUp * 4096, rest);
        Assert.True(rest.AsSpan().SequenceEqual(data.AsSpan(GivenUp * 4096)), "pages the program kept lost their data");
        Assert.Equal(0, stats.AuthenticationFailures);
        Assert.False(stats.HandlerFailed, stats.ToJson());
    }

    /// <summary>
    /// A program thread that, when told to, makes one madvise call (and what goes with it),
    /// then reads pages back. The engine's hook waits until the thread is blocked inside
    /// madvise, which it is until the engine reads the REMOVE event: that is what makes the
    /// take-out meet EAGAIN. Told from /proc/self/task/TID/syscall, which names the system
    /// call a blocked thread is in.
    /// </summary>
    private sealed class MadvisingThread : IDisposable
    {
        private const long SYS_gettid = 186; // x86_64
        private const string SysMadvise = "28"; // x86_64
        private readonly Thread _thread;
        private readonly ManualResetEventSlim _ready = new(), _go = new();
        private Func<int>? _call;
        private nint _readFrom;
        private int _readPages;
        private int _tid;
        private byte[] _seen = [];
        private string? _failure;

        public MadvisingThread()
        {
            _thread = new Thread(Run) { IsBackground = true, Name = "madvising program thread" };
            _thread.Start();
            if (!_ready.Wait(TimeSpan.FromSeconds(10)))
                throw new InvalidOperationException("the madvising thread did not start");
        }

        private void Run()
        {
            _tid = (int)Libc.syscall(SYS_gettid, 0, 0, 0);
            _ready.Set();
            _go.Wait();
            if (_call!() != 0)
                _failure = "madvise failed: " + Libc.ErrorMessage(Libc.LastErrno);
            _seen = new byte[_readPages * 4096];
            if (_readPages > 0)
                ArenaMemory.Read(_readFrom, _seen);
        }

        /// <summary>Lets the thread make <paramref name="call"/> and waits until it is blocked
        /// in madvise. Null, or what went wrong.</summary>
        public string? StartAndWaitUntilBlocked(Func<int> call, nint readFrom, int readPages)
        {
            _call = call;
            _readFrom = readFrom;
            _readPages = readPages;
            _go.Set();
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
            string state = "";
            while (DateTime.UtcNow < deadline)
            {
                state = SyscallState();
                if (state.Split(' ')[0] == SysMadvise)
                    return null;
                Thread.Sleep(1);
            }
            return $"the madvising thread was not blocked in madvise within 10 s (its syscall file: {state.Trim()})";
        }

        /// <summary>Whether the thread is blocked in madvise right now.</summary>
        public bool IsBlockedInMadvise() => SyscallState().Split(' ')[0] == SysMadvise;

        private string SyscallState()
        {
            try
            {
                return File.ReadAllText($"/proc/self/task/{_tid}/syscall");
            }
            catch (IOException e)
            {
                throw new InvalidOperationException($"cannot read the madvising thread's /proc/self/task/{_tid}/syscall: {e.Message}", e);
            }
        }

        /// <summary>Waits for the thread; what it read back.</summary>
        public byte[] Finish()
        {
            if (!_thread.Join(TimeSpan.FromSeconds(30)))
                throw new InvalidOperationException("the madvising thread did not finish within 30 s");
            if (_failure != null)
                throw new InvalidOperationException(_failure);
            return _seen;
        }

        public void Dispose()
        {
            // A test that failed before starting it must not leave it waiting.
            _call ??= () => 0;
            _go.Set();
        }
    }
}
