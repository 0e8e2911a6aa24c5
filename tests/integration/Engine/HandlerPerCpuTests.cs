using Tibet.Core.Interop;
using Tibet.Core.Paging;
using Tibet.Core.Threading;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Engine;

/// <summary>
/// A handler thread per CPU (EngineOptions.HandlerPerCpu): faults are served by the handler
/// pinned to the CPU of the thread that took them, found from /proc/TID/stat
/// (Threading.ThreadCpu), and the service passes on when the program's thread moves.
/// </summary>
public unsafe class HandlerPerCpuTests
{
    private const int Pages = 2048;

    /// <summary>ThreadCpu reads the CPU a thread runs on, for each CPU the test may use,
    /// with a thread name holding spaces and parentheses (the stat line's command field).</summary>
    [Fact]
    public void The_cpu_a_thread_runs_on_is_read_from_proc()
    {
        int[] cpus = AllowedCpus();
        var found = new List<string>();
        var thread = new Thread(() =>
        {
            byte* buffer = stackalloc byte[ThreadCpu.BufferLength];
            foreach (int cpu in cpus)
            {
                Assert.True(ServiceCpus.PinThread(0, cpu), $"cannot pin the test thread to CPU {cpu}");
                Thread.Sleep(1); // runs there from now on
                found.Add($"{cpu}->{ThreadCpu.Of(Libc.gettid(), buffer)}");
            }
            found.Add($"gone->{ThreadCpu.Of(int.MaxValue - 1, buffer)}");
        }) { Name = "a) (b c" };
        thread.Start();
        thread.Join();
        Assert.Equal(cpus.Select(c => $"{c}->{c}").Append("gone->-1"), found);
    }

    /// <summary>
    /// A thread reads a sealed arena on one CPU, then on another: the service passes to the
    /// handler pinned to the second CPU (at least one hand-over), that handler does the
    /// work of the second pass (its CPU time grows more than the first one's), and every
    /// byte reads back. With one handler (HandlerPerCpu off) nothing is handed over.
    /// </summary>
    [Fact]
    public void Faults_are_served_on_the_cpu_of_the_thread_that_takes_them()
    {
        int[] cpus = AllowedCpus()[..2];
        int first = cpus[0], second = cpus[1];
        byte[] written = TestBytes.Random(Pages * 4096, seed: 41);
        var before = HandlerThreads();
        using var engine = CreateOn(cpus, new EngineOptions { ResidentBudgetBytes = 256 * 4096, ReadAheadMaxPages = 1, HandlerPerCpu = true });
        Engines.RequireEviction(engine);
        var handlers = HandlerThreads().Where(t => !before.ContainsKey(t.Key)).ToDictionary(t => t.Key, t => t.Value);
        Assert.True(handlers.Count == cpus.Length,
            $"expected a handler thread per allowed CPU ({cpus.Length}), found {handlers.Count}: {string.Join(", ", handlers.Select(h => $"{h.Key} on {h.Value}"))}");
        int onSecond = handlers.Single(h => h.Value == second.ToString()).Key;
        int onFirst = handlers.Single(h => h.Value == first.ToString()).Key;

        using var arena = engine.CreateArena(Pages * 4096L, "per-cpu");
        ArenaMemory.Write(arena.Address, written);
        arena.Evict();
        long handoversBefore = 0, secondBefore = 0, firstBefore = 0;
        var read = new byte[Pages * 4096];
        var reader = new Thread(() =>
        {
            ServiceCpus.PinThread(0, first);
            Thread.Sleep(1);
            ReadScattered(arena, read);
            Assert.True(written.AsSpan().SequenceEqual(read), "the first pass read other bytes than written");
            arena.Evict();
            handoversBefore = engine.GetStats().HandlerHandovers;
            secondBefore = RunNanoseconds(onSecond);
            firstBefore = RunNanoseconds(onFirst);
            ServiceCpus.PinThread(0, second);
            Thread.Sleep(1);
            Array.Clear(read);
            ReadScattered(arena, read);
        });
        reader.Start();
        reader.Join();
        var stats = engine.GetStats();
        Assert.True(written.AsSpan().SequenceEqual(read), "the second pass read other bytes than written; " + stats.ToJson());
        long secondWork = RunNanoseconds(onSecond) - secondBefore, firstWork = RunNanoseconds(onFirst) - firstBefore;
        Assert.True(stats.HandlerHandovers > handoversBefore,
            $"the service did not pass to the handler on CPU {second} when the reader moved there; " + stats.ToJson());
        Assert.True(secondWork > firstWork,
            $"the second pass ran on CPU {second}, but its handler there worked {secondWork / 1000} µs against {firstWork / 1000} µs on CPU {first}; " + stats.ToJson());
        Assert.Equal(0, stats.AuthenticationFailures);
        Assert.False(stats.HandlerFailed, stats.ToJson());
    }

    [Fact]
    public void One_handler_when_asked()
    {
        int[] cpus = AllowedCpus()[..2];
        var before = HandlerThreads();
        using var engine = CreateOn(cpus, new EngineOptions { ResidentBudgetBytes = 256 * 4096, HandlerPerCpu = false });
        var handlers = HandlerThreads().Where(t => !before.ContainsKey(t.Key)).ToList();
        Assert.Single(handlers);
        Engines.RequireEviction(engine);
        using var arena = engine.CreateArena(Pages * 4096L, "one-handler");
        byte[] written = TestBytes.Random(Pages * 4096, seed: 43);
        ArenaMemory.Write(arena.Address, written);
        arena.Evict();
        Engines.AssertReadsBack(engine, arena, written, "one handler");
        Assert.Equal(0, engine.GetStats().HandlerHandovers);
    }

    /// <summary>Every page once, in an order that jumps about, so that each is a fault.</summary>
    private static void ReadScattered(Arena arena, byte[] read)
    {
        for (int step = 0; step < Pages; step++)
        {
            int page = (int)((step * 389L) % Pages);
            ArenaMemory.Read(arena.Address + page * 4096, read.AsSpan(page * 4096, 4096));
        }
    }

    /// <summary>The CPUs this process may run on; the tests need two.</summary>
    private static int[] AllowedCpus()
    {
        string list = CpuList.AllowedList("/proc/self/status");
        int[] cpus = CpuList.Parse(list);
        Assert.True(cpus.Length >= 2, $"this test needs two CPUs to run on; this process may use {list} (taskset, cgroups, or a one-CPU machine)");
        return cpus;
    }

    /// <summary>An engine created by a thread that may run on <paramref name="cpus"/> only:
    /// its handlers go there (Threading.ServiceCpus chooses from the creator's CPUs), on a
    /// machine of any size.</summary>
    private static PageEngine CreateOn(int[] cpus, EngineOptions options)
    {
        PageEngine? engine = null;
        Exception? failure = null;
        var creator = new Thread(() =>
        {
            try
            {
                Assert.True(ServiceCpus.HoldThread(0, cpus), $"cannot hold the creating thread to CPUs {string.Join(",", cpus)}");
                engine = Engines.Create(options);
            }
            catch (Exception e)
            {
                failure = e;
            }
        });
        creator.Start();
        creator.Join();
        if (failure != null)
            throw new InvalidOperationException("creating the engine failed: " + failure.Message, failure);
        return engine!;
    }

    /// <summary>This process's handler threads (named tibet-uffd): tid → the CPU list it is pinned to.</summary>
    private static Dictionary<int, string> HandlerThreads()
    {
        var threads = new Dictionary<int, string>();
        foreach (string task in Directory.GetDirectories("/proc/self/task"))
        {
            try
            {
                if (File.ReadAllText(Path.Combine(task, "comm")).Trim() != "tibet-uffd")
                    continue;
                threads[int.Parse(Path.GetFileName(task))] = CpuList.AllowedList(Path.Combine(task, "status"));
            }
            catch (IOException)
            {
                // gone meanwhile
            }
        }
        return threads;
    }

    /// <summary>How long thread <paramref name="tid"/> has run on a CPU (schedstat's first field).</summary>
    private static long RunNanoseconds(int tid) =>
        long.Parse(File.ReadAllText($"/proc/self/task/{tid}/schedstat").Split(' ')[0]);
}
