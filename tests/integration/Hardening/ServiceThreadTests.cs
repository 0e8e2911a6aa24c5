using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Hardening;

/// <summary>
/// The engine's handler and fill worker run pinned to two different CPUs of those the
/// program may use (Threading.ServiceCpus), seen from outside in /proc; a program held to
/// one CPU keeps its engine there, with no fill worker; TIBET_PIN_THREADS=0 leaves them to
/// the scheduler.
/// </summary>
public class ServiceThreadTests
{
    [Fact]
    public void Handler_and_fill_worker_are_pinned_to_two_different_allowed_cpus()
    {
        Assert.True(Environment.ProcessorCount >= 2,
            $"this test needs at least 2 CPUs to see the engine's threads pinned apart; the test process may use {Environment.ProcessorCount}");
        var threads = EngineThreads(null, null, pinned: true);
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
        var held = EngineThreads([taskset, "-c", cpu.ToString(System.Globalization.CultureInfo.InvariantCulture)], null, pinned: false);
        Assert.Equal(cpu.ToString(System.Globalization.CultureInfo.InvariantCulture), Assert.Single(held, t => t.Name == "tibet-uffd").Cpus);
        Assert.DoesNotContain(held, t => t.Name == "tibet-fill"); // one CPU: no second thread to share runs with

        var loose = EngineThreads(null, new Dictionary<string, string?> { ["TIBET_PIN_THREADS"] = "0" }, pinned: false);
        string all = Assert.Single(loose, t => t.Name == "prog_hold").Cpus;
        Assert.Equal(all, Assert.Single(loose, t => t.Name == "tibet-uffd").Cpus);
        Assert.Equal(all, Assert.Single(loose, t => t.Name == "tibet-fill").Cpus);
    }

    /// <summary>The threads of prog_hold under tibet-run (its own engine serving it), with
    /// the CPUs each may run on (Cpus_allowed_list), read from /proc while it holds. With
    /// <paramref name="pinned"/>, read again (for up to 10 s) until both engine threads have
    /// pinned themselves, which each does first thing when it starts.</summary>
    private static List<(string Name, string Cpus)> EngineThreads(string[]? prefix, IDictionary<string, string?>? environment, bool pinned)
    {
        using var held = HeldProgram.Start([.. prefix ?? [], TibetRun.Launcher, "--serve", "program", "--budget", "8M", "--", HeldProgram.Path], environment);
        var threads = new List<(string Name, string Cpus)>();
        for (int attempt = 0; attempt < 500; attempt++)
        {
            threads.Clear();
            foreach (string task in Directory.GetDirectories($"/proc/{held.Pid}/task"))
            {
                string name = File.ReadAllText(Path.Combine(task, "comm")).Trim();
                string cpus = File.ReadLines(Path.Combine(task, "status")).First(l => l.StartsWith("Cpus_allowed_list:", StringComparison.Ordinal))
                    .Split(':', 2)[1].Trim();
                threads.Add((name, cpus));
            }
            if (!pinned || threads.Count(t => t.Name is "tibet-uffd" or "tibet-fill" && int.TryParse(t.Cpus, out _)) == 2)
                break;
            Thread.Sleep(20);
        }
        var (exitCode, stderr) = held.Finish();
        Assert.True(exitCode == 0, $"prog_hold under tibet-run failed ({exitCode}): {stderr}");
        return threads;
    }
}
