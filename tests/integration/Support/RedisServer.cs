using System.Diagnostics;
using Xunit;

namespace Tibet.IntegrationTests.Support;

/// <summary>
/// Debian's redis-server on a loopback port, natively or under tibet-run, with the
/// redis-cli calls the tests make. Shutting it down (Dispose) never saves.
/// </summary>
internal sealed class RedisServer : IDisposable
{
    private readonly Process _process;
    private readonly string _cli;
    private readonly System.Text.StringBuilder _stderr;

    public int Port { get; }

    /// <summary>The redis-server process itself: the started process, also under tibet-run,
    /// which executes the program in its own process.</summary>
    public int Pid { get; }

    private RedisServer(Process process, string cli, int port, bool underLauncher, System.Text.StringBuilder stderr)
    {
        _process = process;
        _cli = cli;
        _stderr = stderr;
        Port = port;
        WaitForPing();
        Pid = process.Id;
        if (underLauncher && !File.ReadAllText($"/proc/{Pid}/comm").StartsWith("redis-server", StringComparison.Ordinal))
            throw new InvalidOperationException($"pid {Pid}, started as tibet-run, is not redis-server: tibet-run must execute the program");
    }

    /// <param name="launcherOptions">null: natively; else tibet-run with these options.</param>
    public static RedisServer Start(int port, string[]? launcherOptions, string dir, params string[] serverArguments)
    {
        string server = TibetRun.Require("redis-server", "redis-server");
        string cli = TibetRun.Require("redis-cli", "redis-tools");
        string[] arguments = ["--port", $"{port}", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--enable-debug-command", "local", "--dir", dir, .. serverArguments];
        var start = launcherOptions == null ? new ProcessStartInfo(server) : new ProcessStartInfo(TibetRun.Launcher);
        if (launcherOptions != null)
            foreach (string option in (string[])[.. launcherOptions, "--", server])
                start.ArgumentList.Add(option);
        foreach (string argument in arguments)
            start.ArgumentList.Add(argument);
        start.RedirectStandardOutput = true;
        start.RedirectStandardError = true;
        var process = Process.Start(start)!;
        // Drain both pipes, so that a chatty server never blocks on a full pipe.
        var stderr = new System.Text.StringBuilder();
        process.ErrorDataReceived += (_, e) => { if (e.Data != null) lock (stderr) stderr.AppendLine(e.Data); };
        process.OutputDataReceived += (_, _) => { };
        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
        try
        {
            return new RedisServer(process, cli, port, launcherOptions != null, stderr);
        }
        catch
        {
            process.Kill(entireProcessTree: true);
            throw;
        }
    }

    /// <summary>What the launcher and the server wrote on stderr so far.</summary>
    public string Stderr
    {
        get { lock (_stderr) return _stderr.ToString(); }
    }

    public string Cli(params string[] command)
    {
        var result = TibetRun.Run(_cli, ["-h", "127.0.0.1", "-p", $"{Port}", .. command], TimeSpan.FromMinutes(3));
        Assert.True(result.ExitCode == 0, result.ToString());
        return result.Stdout.Trim();
    }

    public string InfoText(string field) =>
        Cli("INFO").Split('\n').Select(l => l.Trim()).First(l => l.StartsWith(field + ":"))[(field.Length + 1)..];

    public long Info(string field) => long.Parse(InfoText(field));

    public long Rss() =>
        long.Parse(File.ReadAllLines($"/proc/{Pid}/status").First(l => l.StartsWith("VmRSS:")).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;

    public void Dispose()
    {
        TibetRun.Run(_cli, ["-h", "127.0.0.1", "-p", $"{Port}", "SHUTDOWN", "NOSAVE"]);
        if (!_process.WaitForExit(20_000))
            _process.Kill(entireProcessTree: true);
        _process.Dispose();
    }

    private void WaitForPing()
    {
        for (int i = 0; i < 150; i++)
        {
            if (_process.HasExited)
                throw new InvalidOperationException($"redis-server on port {Port} exited with {_process.ExitCode} before answering PING");
            if (TibetRun.Run(_cli, ["-h", "127.0.0.1", "-p", $"{Port}", "PING"]).Stdout.Contains("PONG")) return;
            Thread.Sleep(100);
        }
        throw new TimeoutException($"redis on port {Port} did not answer PING");
    }

    /// <summary>The child of <paramref name="parent"/> whose command name starts with <paramref name="name"/>.</summary>
    public static int ChildNamed(int parent, string name)
    {
        foreach (string task in Directory.GetDirectories($"/proc/{parent}/task"))
            foreach (string child in File.ReadAllText(Path.Combine(task, "children")).Split(' ', StringSplitOptions.RemoveEmptyEntries))
                if (File.ReadAllText($"/proc/{child}/comm").StartsWith(name))
                    return int.Parse(child);
        throw new InvalidOperationException($"no {name} among the children of pid {parent}");
    }
}
