using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Tibet.Core.Diagnostics;

namespace Tibet.Launcher;

/// <summary>
/// <c>tibet-run --metrics HOST:PORT</c>: the live statistics of the program, of every
/// process it started that runs under tibet, and of the forked children they serve, in
/// the Prometheus text format, over plain HTTP on HOST:PORT (every path answers).
/// </summary>
/// <remarks>
/// The statistics hold counts and sizes, never contents or keys; still, bind a local
/// address (127.0.0.1) unless the network is trusted. The listener is bound before the
/// program starts, so a port in use stops tibet-run before anything runs.
/// </remarks>
internal sealed class MetricsServer : IDisposable
{
    private readonly Socket _listener;
    private int _programPid;
    private int _custodianPid;

    private MetricsServer(Socket listener) => _listener = listener;

    /// <summary>The listening socket's descriptor (tibet-run hands it to the custodian).</summary>
    public int ListeningDescriptor => (int)_listener.Handle;

    /// <summary>Serves on a listening socket tibet-run bound and handed over (the custodian).</summary>
    public static MetricsServer Adopt(int descriptor) => new(new Socket(new SafeSocketHandle(descriptor, ownsHandle: true)));

    /// <summary>Parses HOST:PORT ("127.0.0.1:9464", "[::1]:9464", "localhost:9464").</summary>
    public static bool TryParse(string text, out IPEndPoint? endPoint, out string? problem)
    {
        endPoint = null;
        problem = null;
        int colon = text.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(text.AsSpan(colon + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int port) || port is < 1 or > 65535)
        {
            problem = $"--metrics '{text}' is not HOST:PORT with a port from 1 to 65535 (for example 127.0.0.1:9464)";
            return false;
        }
        string host = text[..colon].Trim('[', ']');
        if (host == "localhost")
            host = "127.0.0.1";
        if (!IPAddress.TryParse(host, out IPAddress? address))
        {
            problem = $"--metrics '{text}': '{host}' is not an IP address (or localhost)";
            return false;
        }
        endPoint = new IPEndPoint(address, port);
        return true;
    }

    /// <summary>Listens on <paramref name="endPoint"/>; null with the reason when it cannot.</summary>
    public static MetricsServer? TryListen(IPEndPoint endPoint, out string? problem)
    {
        problem = null;
        var listener = new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            listener.Bind(endPoint);
            listener.Listen(16);
        }
        catch (SocketException e)
        {
            listener.Dispose();
            problem = $"--metrics {endPoint}: cannot listen there ({e.Message})";
            return null;
        }
        return new MetricsServer(listener);
    }

    /// <summary>Starts answering, for the program (tibet-run's child) and its descendants.</summary>
    /// <param name="custodianPid">The custodian's, whose answer covers the forked children it serves; 0: none.</param>
    public void Serve(int programPid, int custodianPid)
    {
        _programPid = programPid;
        _custodianPid = custodianPid;
        var thread = new Thread(Loop) { IsBackground = true, Name = "tibet-metrics" };
        thread.Start();
    }

    public void Dispose() => _listener.Dispose();

    private void Loop()
    {
        while (true)
        {
            Socket client;
            try
            {
                client = _listener.Accept();
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException or InvalidOperationException)
            {
                return; // stopped
            }
            using (client)
            {
                try
                {
                    Answer(client);
                }
                catch (Exception e) when (e is IOException or SocketException)
                {
                    // The scraper went away.
                }
                catch (Exception e)
                {
                    // Whatever else goes wrong answering one scrape must not end the
                    // custodian, which serves the tree.
                    Console.Error.WriteLine($"tibet custodian: --metrics: a scrape failed: {e.Message}");
                }
            }
        }
    }

    private void Answer(Socket client)
    {
        client.ReceiveTimeout = 5000;
        using var stream = new NetworkStream(client, ownsSocket: false);
        // The request line and headers, up to the blank line: which path is asked does not matter.
        var request = new StringBuilder();
        var buffer = new byte[4096];
        while (!request.ToString().Contains("\r\n\r\n", StringComparison.Ordinal) && request.Length < 65536)
        {
            int n = stream.Read(buffer);
            if (n == 0)
                break;
            request.Append(Encoding.ASCII.GetString(buffer, 0, n));
        }

        var processes = new List<(int Pid, JsonDocument? Stats)>();
        try
        {
            foreach (int pid in ServedProcesses())
                processes.Add((pid, LiveStatsClient.TryRead(pid, out _)));
            byte[] body = Encoding.UTF8.GetBytes(LiveStatsClient.ToPrometheus(processes));
            byte[] head = Encoding.ASCII.GetBytes(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n" +
                $"Content-Length: {body.Length}\r\nConnection: close\r\n\r\n");
            stream.Write(head);
            stream.Write(body);
        }
        finally
        {
            foreach (var (_, stats) in processes)
                stats?.Dispose();
        }
    }

    /// <summary>The program and its descendants that answer on a statistics socket (each
    /// process that runs under tibet has its own; forked children are in their parent's).</summary>
    private IEnumerable<int> ServedProcesses()
    {
        var answering = new HashSet<int>(LiveStatsClient.ListProcesses());
        if (_custodianPid != 0 && answering.Contains(_custodianPid))
            yield return _custodianPid;
        var pending = new Stack<int>();
        pending.Push(_programPid);
        var seen = new HashSet<int>();
        while (pending.Count > 0)
        {
            int pid = pending.Pop();
            if (!seen.Add(pid))
                continue;
            if (answering.Contains(pid) || pid == _programPid)
                yield return pid; // the program always gets a series: tibet_up 0 says it is not answering
            foreach (int child in Children(pid))
                pending.Push(child);
        }
    }

    private static IEnumerable<int> Children(int pid)
    {
        string[] tasks;
        try
        {
            tasks = Directory.GetDirectories($"/proc/{pid}/task");
        }
        catch (IOException)
        {
            yield break;
        }
        catch (UnauthorizedAccessException)
        {
            yield break;
        }
        foreach (string task in tasks)
        {
            string children;
            try
            {
                children = File.ReadAllText(Path.Combine(task, "children"));
            }
            catch (IOException)
            {
                continue;
            }
            foreach (string child in children.Split(' ', StringSplitOptions.RemoveEmptyEntries))
                if (int.TryParse(child, out int childPid))
                    yield return childPid;
        }
    }
}
