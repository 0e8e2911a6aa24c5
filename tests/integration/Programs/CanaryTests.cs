using System.Diagnostics;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Programs;

/// <summary>
/// The point of tibet: a secret in memory the program is not using is not in RAM as
/// plaintext. A program writes a random secret into a large allocation and moves on;
/// a scan of every present page of the process finds it zero times under tibet-run,
/// and at least once without it (the control).
/// </summary>
public class CanaryTests
{
    [Fact]
    public void An_evicted_secret_is_nowhere_in_the_process_present_memory()
    {
        string program = NativeBuild.Compile("prog_canary.c");
        Assert.True(Scan([program, "8"]) >= 1, "control: the secret must be found without tibet");
        Assert.Equal(0, Scan([TibetRun.Launcher, "--threshold", "64K", "--budget", "2M", "--", program, "8"]));
    }

    private static int Scan(string[] command)
    {
        var start = new ProcessStartInfo(command[0]) { RedirectStandardOutput = true, RedirectStandardInput = true, UseShellExecute = false };
        foreach (var a in command[1..]) start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        try
        {
            string? secretLine = process.StandardOutput.ReadLine();
            Assert.True(secretLine?.StartsWith("SECRET ") == true, $"unexpected output: {secretLine}");
            Assert.Equal("READY", process.StandardOutput.ReadLine());
            byte[] secret = Convert.FromHexString(secretLine![7..]);
            int pid = FindProgram(process.Id, Path.GetFileName(command.Last(c => c.Contains("prog_canary"))));
            return MemoryScanner.CountInPresentPages(pid, secret);
        }
        finally
        {
            process.StandardInput.Close();
            if (!process.WaitForExit(30_000)) process.Kill(entireProcessTree: true);
        }
    }

    /// <summary>The program itself: the started process, or tibet-run's child.</summary>
    private static int FindProgram(int pid, string name)
    {
        if (File.ReadAllText($"/proc/{pid}/comm").Trim() == name[..Math.Min(name.Length, 15)])
            return pid;
        foreach (string task in Directory.GetDirectories($"/proc/{pid}/task"))
            foreach (string child in File.ReadAllText(Path.Combine(task, "children")).Split(' ', StringSplitOptions.RemoveEmptyEntries))
                if (File.ReadAllText($"/proc/{child}/comm").Trim() == name[..Math.Min(name.Length, 15)])
                    return int.Parse(child);
        throw new InvalidOperationException($"no process named {name} under pid {pid}");
    }
}
