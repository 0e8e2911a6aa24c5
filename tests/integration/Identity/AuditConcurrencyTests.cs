using System.Diagnostics;
using System.Text.Json;
using Tibet.Core.Audit;
using Xunit;

namespace Tibet.IntegrationTests.Identities;

/// <summary>Appends from many threads and processes at once keep one valid chain.</summary>
public sealed class AuditConcurrencyTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void Threads_appending_at_once_keep_the_chain_valid()
    {
        string path = _dir.File("threads.jsonl");
        const int threads = 8, perThread = 250;
        var anchors = new System.Collections.Concurrent.ConcurrentBag<AuditAnchor>();
        Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, thread =>
        {
            var log = new AuditLog(path);
            for (int i = 0; i < perThread; i++)
                anchors.Add(log.Append(new AuditEntry { Object = $"t{thread}-{i}", Decision = AuditDecision.Granted, Reason = "Valid" }));
        });

        var verification = AuditVerifier.VerifyFile(path);
        Assert.True(verification.IsIntact, verification.Message);
        Assert.Equal(threads * perThread, verification.LinesChecked);
        // Every append got its own line number: none was lost or written twice.
        Assert.Equal(Enumerable.Range(1, threads * perThread).Select(n => (long)n), anchors.Select(a => a.Line).Order());
    }

    [Fact]
    public void Processes_and_threads_appending_at_once_keep_the_chain_valid()
    {
        string path = _dir.File("processes.jsonl");
        const int processes = 6, appendsPerProcess = 2, threads = 2;

        // Each child is a shell loop of tibet invocations; the threads below keep appending
        // until every child is done, so appends from all of them interleave.
        var children = Enumerable.Range(0, processes).Select(p =>
        {
            var start = new ProcessStartInfo("/bin/sh") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
            start.ArgumentList.Add("-c");
            start.ArgumentList.Add($"for i in $(seq {appendsPerProcess}); do dotnet '{TibetCli.Dll}' audit append --object child-{p}-$i --decision denied --reason NoClaim || exit 1; done");
            start.Environment["TIBET_AUDIT_LOG"] = path;
            return Process.Start(start)!;
        }).ToList();

        int threadAppends = 0;
        Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, thread =>
        {
            var log = new AuditLog(path);
            for (int i = 0; i < 50 || children.Any(child => !child.HasExited); i++)
            {
                log.Append(new AuditEntry { Object = $"thread-{thread}-{i}", Decision = AuditDecision.Granted, Reason = "Valid" });
                Interlocked.Increment(ref threadAppends);
                Thread.Sleep(5);
            }
        });
        foreach (var child in children)
        {
            string stderr = child.StandardError.ReadToEnd();
            child.WaitForExit();
            Assert.True(child.ExitCode == 0, stderr);
            child.Dispose();
        }

        var verification = AuditVerifier.VerifyFile(path);
        Assert.True(verification.IsIntact, verification.Message);
        Assert.Equal(processes * appendsPerProcess + threadAppends, verification.LinesChecked);
        var records = File.ReadLines(path).Select(line => JsonDocument.Parse(line).RootElement).ToList();
        Assert.Equal(1 + processes * appendsPerProcess, records.Select(record => record.GetProperty("pid").GetInt32()).Distinct().Count());

        // The children's lines are not all at the end: they landed between the threads' lines.
        var childLines = records.Select((record, index) => (record, index))
            .Where(pair => pair.record.GetProperty("object").GetString()!.StartsWith("child-", StringComparison.Ordinal))
            .Select(pair => pair.index).ToList();
        Assert.Equal(processes * appendsPerProcess, childLines.Count);
        Assert.True(childLines.Max() < records.Count - 1 || childLines.Min() < records.Count - childLines.Count,
            "the child processes' appends never interleaved with the threads'");
    }
}
