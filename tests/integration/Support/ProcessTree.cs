using System.Text;

namespace Tibet.IntegrationTests.Support;

/// <summary>
/// What every process under a root is doing, from /proc: for a test whose program stopped
/// answering, said before anything is killed, so that the failure shows where each thread
/// waits (its state, the kernel function it sleeps in, and its kernel stack).
/// </summary>
internal static class ProcessTree
{
    public static string Describe(int root)
    {
        var text = new StringBuilder();
        var children = new Dictionary<int, List<int>>();
        foreach (string dir in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid) || ReadStat(pid) is not { } stat)
                continue;
            if (!children.TryGetValue(stat.ParentPid, out var list))
                children[stat.ParentPid] = list = [];
            list.Add(pid);
        }
        var queue = new Queue<int>([root]);
        while (queue.Count > 0)
        {
            int pid = queue.Dequeue();
            text.AppendLine($"process {pid}: {Read($"/proc/{pid}/cmdline").Replace('\0', ' ').Trim()}");
            foreach (string task in SafeDirectories($"/proc/{pid}/task"))
            {
                string stack = string.Join(" < ", Read($"{task}/stack").Split('\n', StringSplitOptions.RemoveEmptyEntries)
                    .Take(6).Select(l => l.Split(' ').Last()));
                text.AppendLine($"  thread {Path.GetFileName(task)} {Read($"{task}/comm").Trim()}: {ReadStat(task)?.State} in {Read($"{task}/wchan")} [{stack}]");
            }
            foreach (int child in children.GetValueOrDefault(pid, []))
                queue.Enqueue(child);
        }
        return text.ToString();
    }

    private static (int ParentPid, char State)? ReadStat(int pid) => ReadStat($"/proc/{pid}");

    private static (int ParentPid, char State)? ReadStat(string dir)
    {
        string stat = Read($"{dir}/stat");
        int end = stat.LastIndexOf(')'); // the name may hold spaces and parentheses
        if (end < 0)
            return null;
        string[] fields = stat[(end + 2)..].Split(' ');
        return fields.Length > 1 && int.TryParse(fields[1], out int parent) ? (parent, fields[0][0]) : null;
    }

    private static string Read(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return ""; // gone meanwhile
        }
    }

    private static string[] SafeDirectories(string path)
    {
        try
        {
            return Directory.GetDirectories(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return [];
        }
    }
}
