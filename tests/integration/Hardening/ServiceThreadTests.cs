using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Hardening;

/// <summary>
/// With TIBET_HANDLER_PER_CPU=1 the engine runs a handler pinned to each CPU the program
/// may use, and a fill worker pinned to one of them (Threading.ServiceCpus), seen from
/// outside in /proc; with one handler (0, the default) it and the fill worker are pinned
/// to two different CPUs; a program held to one CPU keeps its engine there, with no fill worker;
/// TIBET_PIN_THREADS=0 leaves them to the scheduler.
/// </summary>
public class ServiceThreadTests
{
    /// <summary>The program held to two CPUs (taskset), so that the test means the same on
    /// a machine of any size (a handler per CPU is for 2 to ServiceCpus.MaxHandlers CPUs).</summary>
    [Fact]
    public void A_handler_is_pinned_to_each_allowed_cpu_and_the_fill_worker_to_one()
    {
        int[] allowed = CpuList.Parse(CpuList.AllowedList("/proc/self/status"));
        Assert.True(allowed.Length >= 2,
            $"this test needs at least 2 CPUs to see a handler pinned to each; the test process may use {allowed.Length}");
        string taskset = TibetRun.Require("taskset", "util-linux");
        string two = $"{allowed[0]},{allowed[1]}";
        var threads = EngineThreads([taskset, "-c", two], new Dictionary<string, string?> { ["TIBET_HANDLER_PER_CPU"] = "1" }, pinnedThreads: 3);
        string program = Assert.Single(threads, t => t.Name == "prog_hold").Cpus;
        Assert.False(int.TryParse(program, out _), $"the program's own thread must keep every CPU it had, not only {program}");
        var handlers = threads.Where(t => t.Name == "tibet-uffd").Select(t => t.Cpus).Order().ToList();
        Assert.True(handlers.All(c => int.TryParse(c, out _)), $"every handler should be pinned to one CPU: {string.Join(", ", handlers)}");
        Assert.Equal(CpuList.Parse(program).Select(c => c.ToString(System.Globalization.CultureInfo.InvariantCulture)).Order().ToList(), handlers);
        string fill = Assert.Single(threads, t => t.Name == "tibet-fill").Cpus;
        Assert.True(int.TryParse(fill, out _), $"the fill worker should be pinned to one CPU, it may run on {fill}");
    }

    [Fact]
    public void One_handler_and_the_fill_worker_are_pinned_to_two_different_allowed_cpus()
    {
        Assert.True(Environment.ProcessorCount >= 2,
            $"this test needs at least 2 CPUs to see the engine's threads pinned apart; the test process may use {Environment.ProcessorCount}");
        var threads = EngineThreads(null, new Dictionary<string, string?> { ["TIBET_HANDLER_PER_CPU"] = "0" }, pinnedThreads: 2);
        string handler = Assert.Single(threads, t => t.Name == "tibet-uffd").Cpus;
        string fill = Assert.Single(threads, t => t.Name == "tibet-fill").Cpus;
        Assert.True(int.TryParse(handler, out _), $"the handler should be pinned to one CPU, it may run on {handler}");
        Assert.True(int.TryParse(fill, out _), $"the fill worker should be pinned to one CPU, it may run on {fill}");
        Assert.NotEqual(handler, fill);
        string program = Assert.Single(threads, t => t.Name == "prog_hold").Cpus;
        Assert.False(int.TryParse(program, out _), $"the program's own thread must keep every CPU it had, not only {program}");
    }

    [Fact]
    public void A_program_held_to_one_cpu_keeps_its_engine_there_and_pinning_can_be_turned_off()
    {
        Assert.True(Environment.ProcessorCount >= 2,
            $"this test needs at least 2 CPUs to hold a program to one of them; the test process may use {Environment.ProcessorCount}");
        string taskset = TibetRun.Require("taskset", "util-linux");
        int cpu = Environment.ProcessorCount - 1;
        var held = EngineThreads([taskset, "-c", cpu.ToString(System.Globalization.CultureInfo.InvariantCulture)], null, pinnedThreads: 0);
        Assert.Equal(cpu.ToString(System.Globalization.CultureInfo.InvariantCulture), Assert.Single(held, t => t.Name == "tibet-uffd").Cpus);
        Assert.DoesNotContain(held, t => t.Name == "tibet-fill"); // one CPU: no second thread to share runs with

        var loose = EngineThreads(null, new Dictionary<string, string?> { ["TIBET_PIN_THREADS"] = "0" }, pinnedThreads: 0);
        string all = Assert.Single(loose, t => t.Name == "prog_hold").Cpus;
        Assert.Equal(all, Assert.Single(loose, t => t.Name == "tibet-uffd").Cpus);
        Assert.Equal(all, Assert.Single(loose, t => t.Name == "tibet-fill").Cpus);
    }

    /// <summary>The threads of prog_hold under tibet-run (its own engine serving it), with
    /// the CPUs each may run on (Cpus_allowed_list), read from /proc while it holds, again
    /// (for up to 10 s) until <paramref name="pinnedThreads"/> engine threads have pinned
    /// themselves, which each does first thing when it starts.</summary>
    private static List<(string Name, string Cpus)> EngineThreads(string[]? prefix, IDictionary<string, string?>? environment, int pinnedThreads)
    {
        using var held = HeldProgram.Start([.. prefix ?? [], TibetRun.Launcher, "--serve", "program", "--budget", "8M", "--", HeldProgram.Path], environment);
        var threads = new List<(string Name, string Cpus)>();
        for (int attempt = 0; attempt < 500; attempt++)
        {
            threads.Clear();
            foreach (string task in Directory.GetDirectories($"/proc/{held.Pid}/task"))
            {
                string name = File.ReadAllText(Path.Combine(task, "comm")).Trim();
                threads.Add((name, CpuList.AllowedList(Path.Combine(task, "status"))));
            }
            if (threads.Count(t => t.Name is "tibet-uffd" or "tibet-fill" && int.TryParse(t.Cpus, out _)) >= pinnedThreads)
                break;
            Thread.Sleep(20);
        }
        var (exitCode, stderr) = held.Finish();
        Assert.True(exitCode == 0, $"prog_hold under tibet-run failed ({exitCode}): {stderr}");
        return threads;
    }
}
