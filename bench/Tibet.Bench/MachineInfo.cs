namespace Tibet.Bench;

/// <summary>Kernel release (as `uname -r`), CPU model and CPU count, for result headers.</summary>
internal static class MachineInfo
{
    public static string Read()
    {
        string kernel = ReadFirst("/proc/sys/kernel/osrelease") ?? Environment.OSVersion.VersionString;
        string cpu = "unknown CPU";
        try
        {
            string? line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
            if (line != null) cpu = line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException) { }
        // Affinity matters here: a fault served on the faulting thread's own vCPU avoids
        // waking an idle one, so say which CPUs the run was allowed (taskset).
        string? allowed = null;
        try
        {
            allowed = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("Cpus_allowed_list:", StringComparison.Ordinal))?
                .Split(':', 2)[1].Trim();
        }
        catch (IOException) { }
        return $"Linux {kernel}, {cpu}, nproc {Environment.ProcessorCount}, CPUs allowed {allowed ?? "?"}, idle {IdlePolicy()}, .NET {Environment.Version}";
    }

    /// <summary>"taskset -c LIST " when this process may run on fewer CPUs than are online, else "".</summary>
    public static string TasksetPrefix()
    {
        try
        {
            string? allowed = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("Cpus_allowed_list:", StringComparison.Ordinal))?
                .Split(':', 2)[1].Trim();
            string? online = ReadFirst("/sys/devices/system/cpu/online");
            return allowed != null && online != null && allowed != online ? $"taskset -c {allowed} " : "";
        }
        catch (IOException)
        {
            return "";
        }
    }

    /// <summary>How idle CPUs wait: the cpuidle driver and, for a VM's haltpoll, how long an
    /// idle vCPU polls before it halts. With 0 every cross-CPU wake-up of a fault is a VM
    /// exit: random faults measured 16.5 µs at p50 against 7.8 µs with 200 µs of polling
    /// (README, Requirements), so results are only comparable with this said.</summary>
    public static string IdlePolicy()
    {
        string driver = ReadFirst("/sys/devices/system/cpu/cpuidle/current_driver") ?? "unknown";
        string? poll = ReadFirst("/sys/module/haltpoll/parameters/guest_halt_poll_ns");
        return poll != null && driver == "haltpoll" ? $"haltpoll, guest_halt_poll_ns {poll}" : driver;
    }

    private static string? ReadFirst(string path)
    {
        try { return File.ReadAllText(path).Trim(); }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }
}
