namespace Tibet.IntegrationTests.Support;

/// <summary>CPU lists as /proc prints them ("0-1", "0,2-5": Cpus_allowed_list).</summary>
internal static class CpuList
{
    /// <summary>Every CPU the list names, in order.</summary>
    public static int[] Parse(string list)
    {
        var cpus = new List<int>();
        foreach (string part in list.Split(','))
        {
            string[] range = part.Split('-');
            int low = int.Parse(range[0]), high = range.Length > 1 ? int.Parse(range[1]) : low;
            for (int cpu = low; cpu <= high; cpu++)
                cpus.Add(cpu);
        }
        return cpus.ToArray();
    }

    /// <summary>The CPUs a task may run on, from its status file (/proc/self/status, or a
    /// thread's /proc/PID/task/TID/status).</summary>
    public static string AllowedList(string statusPath) =>
        File.ReadLines(statusPath).First(l => l.StartsWith("Cpus_allowed_list:", StringComparison.Ordinal)).Split(':', 2)[1].Trim();
}
