using System.Text.RegularExpressions;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Programs;

/// <summary>
/// Under <c>tibet-run --serve custodian</c> (the default) a program's memory is served by
/// two engines under one budget: its model maps by its own, its other large allocations by
/// the custodian's (Tibet.Core.Paging.Eviction.ResidentBudgetShare). The engine whose faults
/// never stop (a model scanned every round, larger than the budget) must not take the
/// other's working set from it: each is owed half the budget when it wants it.
/// </summary>
public class SharedBudgetTests
{
    private const long Budget = 8 << 20;
    private const long ModelBytes = 24 << 20; // three budgets: the model engine always wants more
    private const long BufferBytes = 3 << 20; // under half the budget: it must stay resident
    private const int Rounds = 20;

    [Fact]
    public void A_model_scanned_every_round_leaves_the_working_buffer_its_half_of_the_budget()
    {
        string program = NativeBuild.Compile("prog_shared_budget.c");
        string file = Path.Combine(RepoPaths.DiskTemp, $"tibet-shared-budget-{Guid.NewGuid():N}.gguf");
        try
        {
            string[] command = [program, file, ModelBytes.ToString(), BufferBytes.ToString(), Rounds.ToString()];
            var native = TibetRun.Native(command);
            Assert.True(native.ExitCode == 0, "native control run failed: " + native);

            var encrypted = TibetRun.Encrypted(["-v", "--threshold", "64K", "--budget", "8M", "--serve", "custodian"], command);
            Assert.True(encrypted.ExitCode == 0, encrypted.ToString());
            Assert.Equal(native.Stdout.Trim(), encrypted.Stdout.Trim());
            // The model really was scanned through the program's engine under the budget.
            Assert.True(encrypted.Stat("evictions") > Rounds * (ModelBytes - Budget) / 4096 / 2, encrypted.ToString());
            Assert.True(encrypted.Stat("peakResidentBytes") <= Budget + SharedBudget.SlackBytes, encrypted.ToString());

            // What the custodian's engine did for the buffer, in the line it writes when the
            // program ends. Measured before the budget was arbitrated: 34376 evictions (the
            // buffer sealed and faulted back every round); after: 0.
            Match ended = Regex.Match(encrypted.Stderr, @"tibet custodian: pid \d+ ended: .*?; (\d+) faults, (\d+) evictions");
            Assert.True(ended.Success, "the custodian did not report what it served for the program (was the buffer served by it?): " + encrypted);
            long bufferPages = BufferBytes / 4096;
            long custodianEvictions = long.Parse(ended.Groups[2].Value);
            Assert.True(custodianEvictions <= bufferPages / 4,
                $"the custodian evicted {custodianEvictions} pages of a {bufferPages}-page buffer that fits in half the budget: the model engine took its room\n{encrypted}");
        }
        finally
        {
            File.Delete(file);
        }
    }
}
